"""Depth from a picture, with a Depth Anything estimator found in the model folders.

The estimator predicts relative inverse depth (near = large). It is scaled to 0..255
per image, so near is white and far is black: what depth ControlNets are trained on.
One estimator is kept loaded (they are small: Depth Anything V2 Small is 25M
parameters); a lock keeps the preprocess endpoint and the job worker from running it
at the same time.
"""

from __future__ import annotations

import threading
from typing import Any

from PIL import Image

from kd_server.control.loading import load_depth_estimator
from kd_server.devices import DeviceChoice
from kd_server.generation import EngineError, EngineErrorCode
from kd_server.library import EntryKind, ModelEntry, ModelLibrary

INSTALL_HINT = "python3 -m installer download depth-anything-v2-small"


def find_estimator(library: ModelLibrary) -> ModelEntry:
    """The first usable depth estimator by name, or an error saying how to get one."""
    usable = [e for e in library.entries(EntryKind.DEPTH_ESTIMATOR) if e.usable]
    if usable:
        return usable[0]
    raise EngineError(
        EngineErrorCode.PREPROCESSOR_UNAVAILABLE,
        "Depth from a picture needs a depth estimator, and none is installed. Run "
        f"`{INSTALL_HINT}` on the server (or put a Depth Anything V2 model in transformers "
        "format in a depth/ model folder), then refresh the models; or send a depth map "
        "you painted, without preprocessing.",
    )


class DepthEstimator:
    """Loads the library's estimator on first use and keeps it."""

    def __init__(self, library: ModelLibrary, device: DeviceChoice) -> None:
        self.library = library
        self.device = device
        self._lock = threading.Lock()
        self._loaded: tuple[str, Any, Any] | None = None  # (signature, processor, model)

    def check(self) -> None:
        find_estimator(self.library)

    def __call__(self, picture: Image.Image) -> Image.Image:
        import torch

        entry = find_estimator(self.library)
        with self._lock:
            processor, model = self._model(entry)
            inputs = processor(images=picture.convert("RGB"), return_tensors="pt")
            pixels = inputs["pixel_values"].to(self.device.device, dtype=self.device.dtype)
            with torch.inference_mode():
                predicted = model(pixel_values=pixels).predicted_depth
            depth = torch.nn.functional.interpolate(
                predicted.unsqueeze(1).float(),
                size=(picture.height, picture.width),
                mode="bicubic",
                align_corners=False,
            )[0, 0]
        low, high = depth.min(), depth.max()
        scaled = (depth - low) / (high - low).clamp_min(1e-6)
        grey = (scaled * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        return Image.fromarray(grey, mode="L").convert("RGB")

    def _model(self, entry: ModelEntry) -> tuple[Any, Any]:
        signature = f"{entry.name}|{entry.path}"
        if self._loaded is None or self._loaded[0] != signature:
            self._loaded = None
            processor, model = load_depth_estimator(entry, self.device)
            self._loaded = (signature, processor, model)
        return self._loaded[1], self._loaded[2]
