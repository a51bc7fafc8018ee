"""Wire protocol v1 as the plugin speaks it: request bodies, events, errors, URLs.

Plain Python so every rule about the seam is testable without a network or Qt. The
names match `docs/protocol.md` exactly.
"""

from __future__ import annotations

import base64
import enum
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit


class Task(str, enum.Enum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"
    UPSCALE = "upscale"  # (protocol 5) one image enlarged, then refined tile by tile

    @property
    def sends_image(self) -> bool:
        """The task starts from the region's pixels (the server's `image` input)."""
        return self is not Task.TXT2IMG

    @property
    def sends_mask(self) -> bool:
        """The task repaints only where the selection is (the server's `mask` input)."""
        return self is Task.INPAINT


@dataclass(frozen=True)
class Lora:
    name: str
    weight: float = 1.0


#: The first protocol with the `upscale` task, `hires`, `fill` and `upscalers`.
UPSCALE_PROTOCOL = 5


class FillMode(str, enum.Enum):
    """(protocol 5) What the area to repaint and transparent pixels hold before
    denoising: at a strength below 100% the sampler keeps much of what is there, so an
    empty (transparent) area must hold something plausible."""

    KEEP = "keep"  # the pixels as they are (transparent ones: neutral)
    NEUTRAL = "neutral"  # mid grey
    BLUR = "blur"  # the surrounding picture, blurred into the area
    EDGE = "edge"  # the nearest pixels outside the area, stretched into it
    NOISE = "noise"  # random colours


@dataclass(frozen=True)
class Enlarge:
    """(protocol 5) How an image grows: the body of an `upscale` job's `upscale` and of
    a txt2img job's `hires`. Either `factor` or the final `width` x `height`;
    `upscaler` None = Lanczos; `strength` the diffusion refine after enlarging (0 =
    none; None = the server's default); `tile_size`, `steps` None = the server's."""

    factor: float | None = None
    width: int | None = None
    height: int | None = None
    upscaler: str | None = None
    strength: float | None = None
    tile_size: int | None = None
    steps: int | None = None

    def body(self, tiles: bool = True) -> dict[str, Any]:
        """`tiles` False for `hires`, which has no `tile_size`."""
        data: dict[str, Any] = {"upscaler": self.upscaler}
        if self.width is not None and self.height is not None:
            data["width"], data["height"] = self.width, self.height
        else:
            data["factor"] = self.factor
        if self.strength is not None:
            data["strength"] = self.strength
        if self.steps is not None:
            data["steps"] = self.steps
        if tiles and self.tile_size is not None:
            data["tile_size"] = self.tile_size
        return data


@dataclass(frozen=True)
class Control:
    """One entry of a job's `control` list: a ControlNet (`model`) following `image`
    (PNG bytes here, base64 on the wire) of exactly the region being generated.
    `mode` says what the image shows (required by union models; None: used as sent)."""

    model: str
    image: bytes
    mode: str | None = None
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.model,
            "image": base64.b64encode(self.image).decode("ascii"),
            "strength": self.strength,
            "start": self.start,
            "end": self.end,
        }
        if self.mode is not None:
            data["mode"] = self.mode
        return data


@dataclass(frozen=True)
class Reference:
    """A job's `reference` (protocol 4): a picture whose look the result borrows,
    through the IP-Adapter `model`; `image` is PNG bytes of any size."""

    model: str
    image: bytes
    weight: float = 0.6

    def body(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "image": base64.b64encode(self.image).decode("ascii"),
            "weight": self.weight,
        }


@dataclass
class JobRequest:
    """The body of `POST /v1/jobs`. `image` and `mask` are PNG bytes here and base64
    on the wire; fields that do not apply to the task are left out of the body."""

    task: Task
    prompt: str
    negative_prompt: str = ""
    model: str | None = None
    loras: list[Lora] = field(default_factory=list)
    sampler: str = "DPM++ 2M Karras"
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int | None = None
    batch_size: int = 1
    width: int | None = None
    height: int | None = None
    strength: float | None = None
    image: bytes | None = None
    mask: bytes | None = None
    mask_grow: int = 0
    mask_feather: int = 0
    preview_every: int = 0
    client_id: str = ""
    control: list[Control] = field(default_factory=list)
    reference: Reference | None = None
    #: (protocol 3) a live frame: it supersedes this client's earlier live job.
    live: bool = False
    #: (protocol 3) "auto": the server picks sampler, steps and CFG from the job's fast
    #: LoRA or checkpoint, so those three are left out of the body.
    sampling: str | None = None
    #: (protocol 5) the `upscale` task's target and refine
    upscale: Enlarge | None = None
    #: (protocol 5) txt2img: a second pass from `width` x `height` to this size
    hires: Enlarge | None = None
    #: (protocol 5) img2img / inpaint: what the area to repaint holds; None: not sent
    fill: FillMode | None = None
    #: (protocol 5) A1111's clip skip (2+); None: not sent (the server's 1)
    clip_skip: int | None = None
    #: (protocol 5) a VAE file of the server's; None: the checkpoint's own
    vae: str | None = None
    #: (protocol 6) Flux's distilled guidance; None: not sent (the family's default)
    guidance: float | None = None
    #: (protocol 6) a memory mode (`full` ... `sequential-offload`); None: the server's
    memory_mode: str | None = None

    def body(self) -> dict[str, Any]:

        data: dict[str, Any] = {
            "task": self.task.value,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "model": self.model,
            "loras": [{"name": lora.name, "weight": lora.weight} for lora in self.loras],
            "sampler": self.sampler,
            "steps": self.steps,
            "cfg_scale": self.cfg_scale,
            "seed": -1 if self.seed is None else self.seed,
            "batch_size": self.batch_size,
            "preview_every": self.preview_every,
            "client_id": self.client_id,
        }
        if not self.task.sends_image:
            data["width"] = self.width
            data["height"] = self.height
        else:
            if self.task is not Task.UPSCALE:  # its refine strength is in `upscale`
                data["strength"] = self.strength
            if self.image is not None:
                data["image"] = base64.b64encode(self.image).decode("ascii")
        # The protocol 5 fields are left out unless set: older servers refuse them.
        if self.task is Task.UPSCALE and self.upscale is not None:
            data["upscale"] = self.upscale.body()
        if self.task is Task.TXT2IMG and self.hires is not None:
            data["hires"] = self.hires.body(tiles=False)
        if self.task in (Task.IMG2IMG, Task.INPAINT) and self.fill is not None:
            data["fill"] = self.fill.value
        if self.task.sends_mask:
            if self.mask is not None:
                data["mask"] = base64.b64encode(self.mask).decode("ascii")
            data["mask_grow"] = self.mask_grow
            data["mask_feather"] = self.mask_feather
        if self.control:  # left out otherwise: servers before protocol 4 do not know it
            data["control"] = [entry.body() for entry in self.control]
        if self.reference is not None:
            data["reference"] = self.reference.body()
        if self.sampling is not None:
            data["sampling"] = self.sampling
            for name in ("sampler", "steps", "cfg_scale"):
                del data[name]
        if self.live:  # left out otherwise: servers before protocol 3 do not know it
            data["live"] = True
        # Left out unless set: the caller sends them only to servers that know them
        # (family_settings.job_fields).
        for name in ("clip_skip", "vae", "guidance", "memory_mode"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data


class EventType(str, enum.Enum):
    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    PREVIEW = "preview"
    RESULT = "result"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STATE = "state"  # (protocol 2) a job's whole record, sent when a connection resumes
    WARNING = "warning"  # (protocol 2) something beside the job went wrong; it carries on


@dataclass(frozen=True)
class Event:
    """One frame of `WS /v1/events`; only the fields of its type are set.

    A `state` keeps the frame's fields in `record`, in the shape of
    `GET /v1/jobs/{id}`, so both reach a job through the same code
    (`jobs.Job.apply_status`)."""

    type: EventType
    job_id: str
    position: int | None = None
    step: int | None = None
    total: int | None = None
    preview: str | None = None  # base64 JPEG
    index: int | None = None
    seed: int | None = None
    url: str | None = None
    error: str | None = None
    loading_model: str | None = None
    images: tuple[tuple[int, int, str], ...] = ()  # (index, seed, url) on `finished`
    record: dict[str, Any] | None = field(default=None, compare=False)  # on `state`
    code: str | None = None  # on `warning`
    message: str | None = None  # on `warning`
    reason: str | None = None  # on `cancelled` (protocol 3): "superseded" by a live frame


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def error_text(value: object) -> str | None:
    """A failure's sentence, whether the server sent a string or {"code", "message"}."""
    if value is None:
        return None
    if isinstance(value, dict):
        message = value.get("message")
        return str(message) if message else str(value.get("code") or "unknown error")
    return str(value)


def error_code(value: object) -> str | None:
    if isinstance(value, dict) and value.get("code"):
        return str(value["code"])
    return None


def parse_event(frame: str | bytes) -> Event | None:
    """The event in one frame, or None for anything this plugin does not understand
    (a newer server may send more types; they are ignored, never a crash)."""
    try:
        data = json.loads(frame)
        kind = EventType(data["type"])
        job_id = str(data["job_id"])
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    preview = data.get("preview") or data.get("image")
    images = tuple(
        (item["index"], item.get("seed", -1), item["url"])
        for item in data.get("images") or []
        if isinstance(item, dict)
        and isinstance(item.get("index"), int)
        and isinstance(item.get("url"), str)
    )
    loading = data.get("loading_model")
    code, message = data.get("code"), data.get("message")
    return Event(
        type=kind,
        job_id=job_id,
        position=_int_or_none(data.get("position")),
        step=_int_or_none(data.get("step")),
        total=_int_or_none(data.get("total")),
        preview=preview if isinstance(preview, str) else None,
        index=_int_or_none(data.get("index")),
        seed=_int_or_none(data.get("seed")),
        url=data.get("url") if isinstance(data.get("url"), str) else None,
        error=error_text(data.get("error")),
        loading_model=loading if isinstance(loading, str) else None,
        images=images,
        record={k: v for k, v in data.items() if k != "type"} if kind is EventType.STATE else None,
        code=code if isinstance(code, str) else None,
        message=message if isinstance(message, str) else None,
        reason=data.get("reason") if isinstance(data.get("reason"), str) else None,
    )


class ServerError(Exception):
    """A refusal or failure the server explained: HTTP status, error code, sentence."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


#: What a job the server does not know any more becomes: failed, with a sentence, so
#: the panel stops waiting for it. A server that keeps its queue on disk (protocol 2,
#: a state folder) resumes its jobs after a restart; this is only for one that did not
#: (no state folder, or an older server) or whose results expired.
LOST_JOB_MESSAGE = (
    "The server lost this job: it was restarted without keeping its queue (or the result "
    "expired). Generate again."
)


def lost_job_status(job_id: str) -> dict[str, Any]:
    """A `GET /v1/jobs/{id}` body standing in for a 404 `job_not_found`."""
    return {
        "job_id": job_id,
        "status": "failed",
        "images": [],
        "error": {"code": "job_lost", "message": LOST_JOB_MESSAGE},
    }


def error_from_response(status: int, text: str) -> ServerError:
    """The `{"error": {"code", "message"}}` body as an exception; a body that is not
    in that shape (a proxy's HTML page) still gives a usable sentence."""
    try:
        data = json.loads(text)
        error = data["error"]
        return ServerError(status, str(error.get("code", "error")), str(error["message"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    if status in (401, 403):
        return ServerError(status, "unauthorized", "The server refused the request.")
    snippet = " ".join(text.split())[:120]
    return ServerError(status, "http_error", f"The server answered {status}: {snippet}")


def join_url(base: str, path: str) -> str:
    """`path` (absolute like `/v1/jobs/x/images/0`, as results give it) on the server
    root, keeping any path prefix the URL has (a server behind a reverse proxy)."""
    if path.startswith(("http://", "https://")):
        return path
    return base.rstrip("/") + "/" + path.lstrip("/")


def events_url(base: str, client_id: str) -> str:
    """The WebSocket URL of the event stream for this client, always resuming: a server
    of protocol 2 or later then first sends a `state` of each job of this client it
    knows; an older one ignores the parameter (it reads only the ones it declares)."""
    parts = urlsplit(base.rstrip("/"))
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path + "/v1/events"
    query = f"client_id={quote(client_id)}&resume=true"
    return urlunsplit((scheme, parts.netloc, path, query, ""))


def server_protocol(health: object) -> int:
    """The protocol version a `/v1/health` answer reports (1 when it says none)."""
    version = _int_or_none(health.get("protocol")) if isinstance(health, dict) else None
    return version if version is not None and version > 0 else 1


#: The first protocol whose event stream resumes (`resume=true`, `state` events).
RESUMING_PROTOCOL = 2


def auth_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass(frozen=True)
class Checkpoint:
    name: str
    family: str
    default: bool = False
    working_size: int | None = None  # pixels; None from servers before protocol 2
    fast: bool = False  # (protocol 3) few-step settings known: good for live use


@dataclass(frozen=True)
class ControlModel:
    """A `controls` entry of `/v1/models` (protocol 4): `kind` is `controlnet`,
    `union` or `ip-adapter`; `family` the base family it serves (`sd15`, `sdxl`)."""

    name: str
    family: str
    kind: str


@dataclass(frozen=True)
class Upscaler:
    """An `upscalers` entry of `/v1/models` (protocol 5): a model that enlarges
    pictures (`scale` times); one that is not `usable` says why in `reason`."""

    name: str
    usable: bool = True
    reason: str = ""
    scale: int | None = None
    architecture: str = ""


@dataclass(frozen=True)
class ModelFile:
    """A file of `/v1/models` that is not a checkpoint: an `unusable` entry (`kind`
    what it would have been), or (protocol 5) an `embeddings` or `vaes` entry, usable
    or with the reason. `family` where the server knows it."""

    name: str
    kind: str
    family: str = ""
    usable: bool = True
    reason: str = ""


@dataclass(frozen=True)
class ModelList:
    checkpoints: list[Checkpoint]
    loras: list[str]
    controls: list[ControlModel] = field(default_factory=list)
    fast_loras: frozenset[str] = frozenset()  # (protocol 3) LoRAs with `fast` info
    upscalers: list[Upscaler] = field(default_factory=list)  # (protocol 5)
    lora_families: dict[str, str] = field(default_factory=dict)  # by name; known ones
    unusable: list[ModelFile] = field(default_factory=list)  # found but not usable
    embeddings: list[ModelFile] = field(default_factory=list)  # (protocol 5)
    vaes: list[ModelFile] = field(default_factory=list)  # (protocol 5)
    preview_decoders: list[ModelFile] = field(default_factory=list)  # (protocol 3)
    #: (protocol 5) by LoRA name, those that have any: the words it was trained on
    lora_trigger_words: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def is_fast(self, model: str | None, loras: list[str]) -> bool:
        """Whether a live frame of this checkpoint with these LoRAs runs in few steps:
        the checkpoint or one of the LoRAs has the server's `fast` info."""
        checkpoint = self.find(model)
        return bool(checkpoint and checkpoint.fast) or any(n in self.fast_loras for n in loras)

    def find(self, name: str | None) -> Checkpoint | None:
        """The checkpoint called `name`, or the server's default when `name` is None."""
        for checkpoint in self.checkpoints:
            if (name is None and checkpoint.default) or checkpoint.name == name:
                return checkpoint
        return None

    def family_of(self, name: str | None) -> str | None:
        """The family of `name`, or of the server's default when `name` is None."""
        checkpoint = self.find(name)
        return checkpoint.family if checkpoint else None

    def working_size_of(self, name: str | None) -> int:
        """The side, in pixels, the model works best at: what the server says
        (`working_size`, protocol 2), else guessed from the family's name for older
        servers."""
        checkpoint = self.find(name)
        if checkpoint is not None and checkpoint.working_size:
            return checkpoint.working_size
        return working_resolution_for(checkpoint.family if checkpoint else None)


def _working_size(value: object) -> int | None:
    """A usable `working_size` (a positive whole number of pixels), else None."""
    size = _int_or_none(value)
    return size if size is not None and size > 0 else None


def parse_models(data: object) -> ModelList:
    if not isinstance(data, dict):
        return ModelList([], [])
    checkpoints = [
        Checkpoint(
            str(item["name"]),
            str(item.get("family", "")),
            bool(item.get("default")),
            _working_size(item.get("working_size")),
            isinstance(item.get("fast"), dict),
        )
        for item in data.get("checkpoints") or []
        if isinstance(item, dict) and "name" in item
    ]
    loras = [
        str(item["name"]) if isinstance(item, dict) else str(item)
        for item in data.get("loras") or []
        if not isinstance(item, dict) or "name" in item
    ]
    controls = [
        ControlModel(str(item["name"]), str(item.get("family", "")), str(item.get("kind", "")))
        for item in data.get("controls") or []
        if isinstance(item, dict) and "name" in item
    ]
    fast_loras = frozenset(
        str(item["name"])
        for item in data.get("loras") or []
        if isinstance(item, dict) and "name" in item and isinstance(item.get("fast"), dict)
    )
    upscalers = [
        Upscaler(
            str(item["name"]),
            item.get("usable") is not False,
            str(item.get("reason") or ""),
            _working_size(item.get("scale")),
            str(item.get("architecture") or ""),
        )
        for item in data.get("upscalers") or []
        if isinstance(item, dict) and "name" in item
    ]
    lora_families = {
        str(item["name"]): str(item["family"])
        for item in data.get("loras") or []
        if isinstance(item, dict) and "name" in item and isinstance(item.get("family"), str)
    }
    return ModelList(
        checkpoints,
        loras,
        controls,
        fast_loras,
        upscalers,
        lora_families,
        _files(data.get("unusable"), None, usable=False),
        _files(data.get("embeddings"), "embedding"),
        _files(data.get("vaes"), "vae"),
        _files(data.get("preview_decoders"), "preview-decoder"),
        _trigger_words(data.get("loras")),
    )


def _trigger_words(loras: object) -> dict[str, tuple[str, ...]]:
    """Each LoRA's `trigger_words` (protocol 5; absent on older servers: none), the
    non-empty strings only, so a garbled list cannot put junk into a prompt."""
    found: dict[str, tuple[str, ...]] = {}
    for item in loras if isinstance(loras, list) else []:
        if not isinstance(item, dict) or "name" not in item:
            continue
        raw = item.get("trigger_words")
        words = (
            tuple(w.strip() for w in raw if isinstance(w, str) and w.strip())
            if isinstance(raw, list)
            else ()
        )
        if words:
            found[str(item["name"])] = words
    return found


def _files(items: object, kind: str | None, usable: bool = True) -> list[ModelFile]:
    """The entries of one `/v1/models` list of files; `kind` None: each says its own."""
    if not isinstance(items, list):
        return []
    return [
        ModelFile(
            str(item["name"]),
            kind or str(item.get("kind") or "model"),
            str(item.get("family") or ""),
            usable and item.get("usable") is not False,
            str(item.get("reason") or ""),
        )
        for item in items
        if isinstance(item, dict) and "name" in item
    ]


def working_resolution_for(family: str | None) -> int:
    """The family's native size, for servers that do not say it: SDXL, Flux and
    SD 3.5 models are trained at 1024, SD1.5 at 512."""
    name = (family or "").lower()
    return 1024 if "xl" in name or name.startswith(("flux", "sd35")) else 512


def friendly_message(error: ServerError) -> str:
    """The server's sentence, plus what to do where the code makes that clear."""
    hints = {
        "unauthorized": " Put the server's token in the settings (gear button).",
        "out_of_memory": " Try a smaller selection, batch count 1, or a smaller model.",
        "model_not_found": " Pick another model, or refresh the list from the server.",
        "lora_not_found": " Remove it from the LoRA list, or put the file in the LoRA folder.",
        "sampler_not_found": " Choose another sampler in the settings (gear button).",
    }
    message = error.message.strip()
    if error.status in (401, 403) and error.code != "unauthorized":
        return message + hints["unauthorized"]
    hint = hints.get(error.code, "")
    if hint and hint.strip() in message:
        hint = ""
    return message + hint


UNREACHABLE_PREFIX = "Cannot reach the server at "


def is_unreachable_message(text: str) -> bool:
    """True for the message a (re)connection makes stale."""
    return text.startswith(UNREACHABLE_PREFIX)


def unreachable_message(url: str) -> str:
    """Short, because the docker adds what to do (`guidance.unreachable_hint`)."""
    return f"{UNREACHABLE_PREFIX}{url}."
