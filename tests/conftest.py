"""Suite-wide set-up: no network, offscreen Qt, the plugin's package importable."""

import os
import sys
from pathlib import Path

# Before anything imports diffusers or huggingface_hub: a slip to the hub fails at once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "krita_plugin"))
sys.path.insert(0, str(ROOT / "tests"))  # shared test support: `from support.x import ...`


def pytest_addoption(parser):
    """`--hardening-full`: run tests/hardening in full mode (thousands of fuzz cases,
    bigger load); the default quick mode keeps the suite short. KD_HARDENING_FULL=1
    does the same."""
    parser.addoption(
        "--hardening-full",
        action="store_true",
        default=False,
        help="tests/hardening: thousands of fuzz cases and a bigger load (slow)",
    )
