"""The plugin's own settings rules, read from the plugin's source in this checkout.

The installer presets a few of the plugin's settings (server URL, token, server
command) and must know the plugin's defaults to tell a value the user chose from one
nobody set. Instead of a copy that could drift, it loads the plugin's settings module
(`krita_plugin/krita_diffusers/settings.py`, pure Python, no Krita or Qt) straight
from its file and uses its `Settings` defaults, its group name and its `validate`.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from installer.errors import InstallError

SETTINGS_FILE = Path("krita_plugin") / "krita_diffusers" / "settings.py"
_MODULE = "_kd_installer_plugin_settings"
PRESET_KEYS = ("server_url", "token", "server_command")  # what the installer may write


@dataclass(frozen=True)
class PluginSettingsRules:
    """What the installer needs from the plugin: where its settings live and their rules."""

    group: str  # the kritarc section ([krita_diffusers])
    defaults: dict[str, str]  # the plugin's defaults for PRESET_KEYS
    module: ModuleType

    def problems(self, values: dict[str, str]) -> list[str]:
        """The plugin's own complaints about `values`: what it would refuse to load
        (it silently falls back to its default for such a value)."""
        settings: Any = replace(self.module.Settings(), **values)
        return [problem.message for problem in self.module.validate(settings)]


def _load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(_MODULE, path)
    if spec is None or spec.loader is None:
        raise ImportError(path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE] = module  # dataclasses look their module up while decorating
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(_MODULE, None)
    return module


def load(repo: Path) -> PluginSettingsRules:
    """The rules of the plugin in `repo`; a clear error when its settings module is
    missing or no longer has what the installer relies on."""
    path = repo / SETTINGS_FILE
    try:
        module = _load_module(path)
        defaults = module.Settings()
        values = {key: str(getattr(defaults, key)) for key in PRESET_KEYS}
        return PluginSettingsRules(str(module.SETTINGS_GROUP), values, module)
    except (OSError, ImportError, SyntaxError, AttributeError, TypeError) as exc:
        raise InstallError(
            f"Cannot read the plugin's settings rules from {path} ({exc}).",
            "Run the installer from a complete, unmodified checkout of Krita Diffusers.",
        ) from exc
