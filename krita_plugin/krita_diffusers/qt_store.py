"""`SettingsStore` on QSettings, so settings survive Krita restarts (Krita's own
QSettings file, under the `krita_diffusers` group)."""

from __future__ import annotations

from .qt import QSettings


class QtSettingsStore:
    def __init__(self, settings: QSettings | None = None) -> None:
        self._settings = settings if settings is not None else QSettings()

    def value(self, key: str) -> str | None:
        raw = self._settings.value(key)
        return None if raw is None else str(raw)

    def set_value(self, key: str, value: str) -> None:
        self._settings.setValue(key, value)

    def sync(self) -> None:
        self._settings.sync()
