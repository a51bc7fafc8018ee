"""A record of what the installer added, so `uninstall` removes exactly that.

Kept as JSON in our data folder. Re-runs merge into it: the first-seen state of
kritarc is kept (so uninstall restores what the user had, not what we set), and a
path is listed once however often it is installed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMAT = 1


@dataclass
class KritarcKey:
    path: str
    section: str
    key: str
    value: str  # what we set
    previous: str | None  # value before the first install; None = the key was absent


@dataclass
class SettingsEntry:
    path: str
    sha256: str  # of the text we last wrote: a different file means the user edited it


@dataclass
class CommandLink:
    path: str  # the link we made (~/.local/bin/krita-diffusers-server)
    target: str  # what it pointed at: uninstall removes it only while it still does


@dataclass
class Manifest:
    paths: list[str] = field(default_factory=list)  # files and folders we created
    kritarc_keys: list[KritarcKey] = field(default_factory=list)
    settings: SettingsEntry | None = None
    venv: str | None = None
    models_dir: str | None = None  # never removed; recorded to say so
    # Folders the install had to create, and settings files (kritarc) it created:
    # uninstall removes them when they are empty again, and nothing that existed before.
    created_dirs: list[str] = field(default_factory=list)
    created_files: list[str] = field(default_factory=list)
    command_link: CommandLink | None = None

    def add_path(self, path: Path) -> None:
        text = str(path)
        if text not in self.paths:
            self.paths.append(text)

    def note_new_dirs(self, folder: Path) -> None:
        """Remember `folder` and each missing folder above it, before they are created."""
        folder = folder.absolute()
        while not folder.exists() and folder != folder.parent:
            if str(folder) not in self.created_dirs:
                self.created_dirs.append(str(folder))
            folder = folder.parent

    def note_new_file(self, path: Path) -> None:
        if not path.exists() and str(path) not in self.created_files:
            self.created_files.append(str(path))

    def kritarc_key(self, path: str, section: str, key: str) -> KritarcKey | None:
        for entry in self.kritarc_keys:
            if (entry.path, entry.section, entry.key) == (path, section, key):
                return entry
        return None

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        data.pop("format", None)
        keys = data.pop("kritarc_keys", [])
        settings = data.pop("settings", None)
        link = data.pop("command_link", None)
        manifest = cls(**data)
        manifest.kritarc_keys = [KritarcKey(**key) for key in keys]
        manifest.settings = SettingsEntry(**settings) if settings else None
        manifest.command_link = CommandLink(**link) if link else None
        return manifest


def load(path: Path) -> Manifest | None:
    if not path.is_file():
        return None
    try:
        return Manifest.from_json(path.read_text(encoding="utf-8"))
    except (ValueError, TypeError):
        return None


def save(path: Path, manifest: Manifest) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(temp, path)
