"""Test-only Krita plugin that drives the Krita Diffusers docker from a plan file.

It does nothing unless `KD_SCENARIO_PLAN` names a plan, so an installed copy is inert
in a normal Krita session. The harness in `tests/e2e/harness.py` installs it beside the
real plugin in a throw-away profile.
"""

import os

if os.environ.get("KD_SCENARIO_PLAN"):
    from .main import install

    install(os.environ["KD_SCENARIO_PLAN"])
