"""Krita Diffusers: Stable Diffusion in a Krita docker.

The bundled third-party libraries (requests, websockets) live in `vendor/`, put there
by the installer; that folder goes first on `sys.path` so the plugin never depends on
what Krita's Python happens to have. Outside Krita (tests, scripts) the package imports
without registering anything.
"""

import importlib.util
import os
import sys

_VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor")
if os.path.isdir(_VENDOR) and _VENDOR not in sys.path:
    sys.path.insert(0, _VENDOR)

if importlib.util.find_spec("krita") is not None:
    from .krita_adapter import register

    register()
