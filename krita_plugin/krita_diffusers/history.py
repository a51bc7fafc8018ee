"""Results the artist has received, newest first, bounded in number.

A history item holds the PNG as the server sent it plus where it belongs on the
canvas, so the artist can preview, apply or discard it long after the job ended.
Applied items are already layers; trimming the history never touches the canvas.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .geometry import Rect
from .protocol import Task
from .recipes import Recipe
from .upscaling import Destination


@dataclass
class HistoryItem:
    item_id: int
    job_id: str
    index: int
    seed: int
    prompt: str
    task: Task
    region: Rect
    png: bytes
    document_id: str = ""
    applied: bool = False
    name: str | None = None  # an upscale's name (its prompt may be empty)
    destination: Destination | None = None  # an upscale's: a new document or a layer
    recipe: Recipe | None = None  # for Reuse, and the document's saved history

    @property
    def layer_name(self) -> str:
        return self.name or layer_name(self.prompt, self.seed)


def layer_name(prompt: str, seed: int, limit: int = 40) -> str:
    """A layer name an artist can recognise in the layer stack: the prompt, shortened
    on a word boundary, and the seed that reproduces it."""
    words = " ".join(prompt.split()) or "untitled"
    if len(words) > limit:
        cut = words[:limit].rsplit(" ", 1)[0] or words[:limit]
        words = cut.rstrip(" ,.;:") + "…"
    return f"{words} (seed {seed})"


class History:
    def __init__(self, limit: int = 20) -> None:
        self._items: list[HistoryItem] = []  # newest first
        self._ids = itertools.count(1)
        self.limit = max(1, limit)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def items(self) -> list[HistoryItem]:
        return list(self._items)

    def add(
        self,
        job_id: str,
        index: int,
        seed: int,
        prompt: str,
        task: Task,
        region: Rect,
        png: bytes,
        document_id: str = "",
        name: str | None = None,
        destination: Destination | None = None,
        recipe: Recipe | None = None,
    ) -> tuple[HistoryItem, list[HistoryItem]]:
        """Add a result; returns it and the items dropped to stay within the limit."""
        for existing in self._items:
            if existing.job_id == job_id and existing.index == index:
                return existing, []
        item = HistoryItem(
            next(self._ids), job_id, index, seed, prompt, task, region, png, document_id
        )
        item.name, item.destination, item.recipe = name, destination, recipe
        self._items.insert(0, item)
        return item, self._trim()

    def get(self, item_id: int) -> HistoryItem | None:
        return next((item for item in self._items if item.item_id == item_id), None)

    def remove(self, item_id: int) -> HistoryItem | None:
        item = self.get(item_id)
        if item is not None:
            self._items.remove(item)
        return item

    def set_limit(self, limit: int) -> list[HistoryItem]:
        self.limit = max(1, limit)
        return self._trim()

    def _trim(self) -> list[HistoryItem]:
        dropped = self._items[self.limit :]
        del self._items[self.limit :]
        return dropped
