"""The plugin's menu/shortcut actions and what each one does to the docker.

Krita lists script actions under Settings > Configure Krita > Keyboard Shortcuts
(search "Diffusers"), where the artist assigns or changes their shortcuts; they start
without one so they never steal a key Krita already uses. Plain Qt: the Krita side
(`krita_adapter.DiffusersExtension`) only creates the actions and calls `trigger`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .qt import QDockWidget, QWidget

DOCKER_ID = "krita_diffusers_docker"
MENU = "tools/scripts"


@dataclass(frozen=True)
class ActionSpec:
    action_id: str
    text: str
    method: str  # the panel method it runs


ACTIONS = (
    ActionSpec("krita_diffusers_generate", "Diffusers: Generate / Refine / Inpaint", "generate"),
    ActionSpec("krita_diffusers_cancel", "Diffusers: Cancel", "cancel"),
    ActionSpec("krita_diffusers_apply", "Diffusers: Apply Selected Result", "apply_selected"),
    ActionSpec("krita_diffusers_upscale", "Diffusers: Upscale", "upscale"),
    ActionSpec("krita_diffusers_expand", "Diffusers: Expand Canvas", "expand"),
)


def find_panel(main_window: QWidget | None) -> QWidget | None:
    """The docker's panel in this Krita window, or None when the docker is closed.

    Krita names a docker's QDockWidget after its factory id.
    """
    if main_window is None:
        return None
    dock = main_window.findChild(QDockWidget, DOCKER_ID)
    if dock is None:
        return None
    panel = dock.widget()
    return panel if panel is not None and hasattr(panel, "generate") else None


def trigger(main_window: QWidget | None, spec: ActionSpec) -> bool:
    """Run an action on the window's docker; shows the docker if it was hidden."""
    panel = find_panel(main_window)
    if panel is None:
        return False
    dock = main_window.findChild(QDockWidget, DOCKER_ID) if main_window else None
    if dock is not None and not dock.isVisible():
        dock.show()
    getattr(panel, spec.method)()
    return True
