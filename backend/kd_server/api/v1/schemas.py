"""Request, response and event models of wire protocol v1.

The field names are the contract (docs/protocol.md); descriptions end up in
`/openapi.json`, which is the reference a client author reads. Static rules (ranges,
multiples of 8) live here; rules that depend on the server's settings (pixel budget,
prompt length) or on decoded images are checked in `convert.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kd_server.generation import MAX_CONTROLS, MAX_LORAS, MAX_SEED, ControlMode, FillMode, Task

#: The protocol's version, reported by `/v1/health`. Raised when a field or event is
#: added (clients may then use it); a body that worked before keeps working.
PROTOCOL_VERSION = 6

CLIENT_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"

CLIENT_ID_DESCRIPTION = (
    "Chosen by the client (e.g. a UUID per Krita session): events of this job go to "
    "WebSocket connections opened with the same `client_id`, and jobs of different "
    "clients take turns in the queue. 1..128 letters, digits and `._:-`."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraRequest(_Strict):
    name: str = Field(
        min_length=1, max_length=512, description="A LoRA name as `GET /v1/models` lists it."
    )
    weight: float = Field(
        1.0, ge=-10, le=10, allow_inf_nan=False, description="Strength of the LoRA."
    )


MODE_DESCRIPTION = (
    "What the image shows: `depth`, `canny`, `lineart`, `scribble`, `softedge`, `pose`, "
    "`tile`, `normal`, `segment`. Line modes (`canny`, `lineart`, `scribble`, `softedge`) "
    "are normalised to light lines on black, as ControlNets are trained: dark lines on a "
    "light ground are inverted, lines on a transparent layer are read from its alpha. "
    "Other modes put transparent parts on black."
)


class ControlRequest(_Strict):
    """Since 4. One control layer: a ControlNet and the image it follows."""

    model: str = Field(
        min_length=1,
        max_length=512,
        description="A ControlNet from `GET /v1/models` (`controls` of kind `controlnet` or "
        "`union`) of the checkpoint's family.",
    )
    image: str = Field(
        description="Base64 PNG of exactly the region being generated: `width` x `height` "
        "for txt2img, the size of `image` for img2img and inpaint (a layer's pixels under "
        "the same rectangle). RGB or RGBA."
    )
    mode: ControlMode | None = Field(
        None,
        description=MODE_DESCRIPTION + " Required for a `union` ControlNet (it picks the "
        "control type); null: the image is used exactly as sent.",
    )
    preprocess: bool = Field(
        False,
        description="Derive the control image from a picture first: `canny` finds edges, "
        "`depth` estimates depth (needs a depth estimator on the server, see "
        "`depth_estimators` in `GET /v1/models`); other modes pass the picture through. "
        "`POST /v1/preprocess` returns the same image without generating.",
    )
    strength: float = Field(
        1.0,
        ge=0,
        le=2,
        allow_inf_nan=False,
        description="How strongly the image steers, 0 (not at all) .. 1 (as trained) .. 2.",
    )
    start: float = Field(
        0.0,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Fraction of the denoising steps at which the control starts acting.",
    )
    end: float = Field(
        1.0,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Fraction of the steps at which it stops; must be above `start`.",
    )
    low_threshold: int = Field(
        100, ge=0, le=255, description="`canny` preprocessing: weaker edges are dropped."
    )
    high_threshold: int = Field(
        200,
        ge=0,
        le=255,
        description="`canny` preprocessing: stronger edges are kept; edges between the two "
        "thresholds are kept where they connect to a strong one.",
    )


class ReferenceRequest(_Strict):
    """Since 4. A reference image: the picture borrows its look (IP-Adapter)."""

    model: str = Field(
        min_length=1,
        max_length=512,
        description="An IP-Adapter from `GET /v1/models` (`controls` of kind `ip-adapter`) "
        "of the checkpoint's family.",
    )
    image: str = Field(description="Base64 PNG of the reference picture, any size.")
    weight: float = Field(
        0.6, ge=0, le=2, allow_inf_nan=False, description="How much it steers, 0..2."
    )


#: The largest side an upscale may reach (api.policy.MAX_UPSCALE_SIDE).
MAX_UPSCALE_SIDE = 8192


class UpscaleRequest(_Strict):
    """Since 5. How an `upscale` job enlarges its image: a `factor`, or a `width` and
    `height`. docs/upscale.md explains the enlargement and the refine."""

    factor: float | None = Field(
        None,
        ge=1,
        le=8,
        allow_inf_nan=False,
        description="Enlarge by this factor (1..8); give it, or `width` and `height`.",
    )
    width: int | None = Field(
        None,
        ge=64,
        le=MAX_UPSCALE_SIDE,
        description=f"Final width, 64..{MAX_UPSCALE_SIDE} (with `height`, instead of "
        "`factor`). The pixel budget does not apply: the work is tiled.",
    )
    height: int | None = Field(
        None, ge=64, le=MAX_UPSCALE_SIDE, description="Final height, as `width`."
    )
    upscaler: str | None = Field(
        None,
        max_length=512,
        description="An upscaler from `upscalers` in `GET /v1/models`; null: Lanczos.",
    )
    strength: float = Field(
        0.35,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="The refine: img2img strength on each tile, 0 (no diffusion at all, "
        "the upscaler alone) .. 1.",
    )
    tile_size: int | None = Field(
        None,
        ge=64,
        le=2048,
        multiple_of=8,
        description="Side of the refine's tiles, a multiple of 8; null: the model's "
        "`working_size`.",
    )
    steps: int | None = Field(
        None,
        ge=1,
        le=150,
        description="The refine's steps (as img2img counts them: strength x steps run); "
        "null: the job's `steps`.",
    )


class HiresRequest(UpscaleRequest):
    """Since 5. A txt2img hi-res pass: the picture is made at `width` x `height`, then
    enlarged to this size and refined, as an `upscale` job would."""

    factor: float | None = Field(
        None,
        ge=1,
        le=8,
        allow_inf_nan=False,
        description="The final size as a factor of the job's `width` and `height`.",
    )
    width: int | None = Field(
        None,
        ge=64,
        le=MAX_UPSCALE_SIDE,
        description="The final width (with `height`, instead of `factor`).",
    )
    strength: float = Field(
        0.5,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="The refine's img2img strength; 0: no second diffusion pass.",
    )


class JobRequest(_Strict):
    """A generation job. Unknown fields are refused so that a misspelt field is noticed."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "task": "txt2img",
                    "prompt": "a lighthouse at dusk, oil painting",
                    "steps": 20,
                    "width": 512,
                    "height": 512,
                    "preview_every": 5,
                    "client_id": "krita-7f3a",
                }
            ]
        },
    )

    task: Task = Field(
        description="`txt2img` (from noise), `img2img` (repaint `image`), "
        "`inpaint` (repaint where `mask` is white), `upscale` (since 5: enlarge `image` "
        "as `upscale` says)."
    )
    prompt: str = Field(
        "",
        description="What to draw, in A1111's syntax (since 5): `(word:1.3)`, `(word)`, "
        "`[word]`, `BREAK`, `<lora:name:weight>`, embeddings by name (docs/prompts.md).",
    )
    negative_prompt: str = Field(
        "", description="What to keep out of the picture (the same syntax)."
    )
    clip_skip: int = Field(
        1,
        ge=1,
        le=12,
        description="(since 5) A1111's clip skip: 1 reads the text encoder's last layer, "
        "2 the one before ... (SD 1.5; SDXL always reads its penultimate layers).",
    )
    vae: str | None = Field(
        None,
        max_length=512,
        description="(since 5) A VAE file from the server's VAE folders (models/VAE, "
        "models/vae) to decode with; null = the checkpoint's own.",
    )
    model: str | None = Field(
        None,
        max_length=512,
        description="Checkpoint name from `GET /v1/models`; null = the server's default.",
    )
    loras: list[LoraRequest] = Field(
        default_factory=list,
        max_length=MAX_LORAS,
        description=f"LoRAs to apply, at most {MAX_LORAS}.",
    )
    sampler: str = Field(
        "DPM++ 2M Karras",
        max_length=64,
        description="Sampler in A1111 spelling, one of `GET /v1/samplers`.",
    )
    steps: int = Field(20, ge=1, le=150, description="Denoising steps, 1..150.")
    cfg_scale: float = Field(
        7.0,
        ge=0,
        le=30,
        allow_inf_nan=False,
        description="Prompt guidance (CFG), 0..30; Flux ignores it (see `guidance`).",
    )
    guidance: float | None = Field(
        None,
        ge=0,
        le=30,
        allow_inf_nan=False,
        description="(since 6) Flux's distilled guidance (families with `guidance` in "
        "`/v1/models`: Flux.1 dev and Fill); null = the family's default (dev 3.5, Fill "
        "30). Refused for other families. Flux ignores `cfg_scale` and `negative_prompt` "
        "(docs/models.md, 'Settings per family').",
    )
    memory_mode: str | None = Field(
        None,
        max_length=32,
        description="(since 6) A memory mode (`full`, `vae-tiling`, `fp8`, `model-offload`, "
        "`sequential-offload`) to run this job in; null = the server's choice.",
    )
    seed: int | None = Field(
        None,
        ge=-1,
        le=MAX_SEED,
        description="null or -1: random. Image i of a batch uses seed + i; the seeds "
        "used are reported with each result.",
    )
    batch_size: int = Field(1, ge=1, le=8, description="Images to generate, 1..8.")
    width: int = Field(
        512,
        ge=64,
        le=2048,
        multiple_of=8,
        description="txt2img output width, 64..2048, a multiple of 8. Ignored by "
        "img2img and inpaint, whose results have the size of `image`.",
    )
    height: int = Field(
        512, ge=64, le=2048, multiple_of=8, description="txt2img output height, as `width`."
    )
    strength: float = Field(
        0.75,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="img2img/inpaint: how much to change, 0 (nothing) .. 1 (everything).",
    )
    image: str | None = Field(
        None,
        description="img2img/inpaint: base64 PNG of the region to work on (RGB or RGBA; "
        "greyscale, palette and 16-bit PNGs are converted).",
    )
    mask: str | None = Field(
        None,
        description="inpaint: base64 8-bit greyscale PNG of the same size as `image`, "
        "white = repaint, grey levels kept (colour masks are converted to grey).",
    )
    mask_grow: int = Field(0, ge=0, le=256, description="inpaint: grow the mask by pixels.")
    mask_feather: int = Field(
        0, ge=0, le=256, description="inpaint: soften the mask edge over pixels."
    )
    preview_every: int = Field(
        0,
        ge=0,
        le=150,
        description="Send a `preview` event every n steps (and at the last step); 0 = none.",
    )
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=CLIENT_ID_PATTERN,
        description=CLIENT_ID_DESCRIPTION + " null: no events, poll `GET /v1/jobs/{id}`.",
    )
    sampling: Literal["manual", "auto"] = Field(
        "manual",
        description="Since 3. `manual`: `sampler`, `steps` and `cfg_scale` as sent (or "
        "their defaults). `auto`: a fast model in the job (its first fast LoRA, else its "
        "checkpoint; see `fast` in `GET /v1/models`) sets those of the three that the "
        "body leaves out; for img2img/inpaint the steps are divided by `strength` so that "
        "the recommended number of steps runs. Without a fast model `auto` = `manual`.",
    )
    live: bool = Field(
        False,
        description="Since 3. A live-painting frame: it replaces this client's waiting "
        "live job (which is cancelled with `reason: superseded`) and stops its running "
        "live job at the next step. Other jobs, and other clients' jobs, are untouched. "
        "Needs `client_id`. Live jobs are not kept across a server restart.",
    )
    control: list[ControlRequest] = Field(
        default_factory=list,
        max_length=MAX_CONTROLS,
        description=f"Since 4. Control layers (ControlNets), at most {MAX_CONTROLS}, on every "
        "task. docs/control.md explains modes, strength and the step range.",
    )
    reference: ReferenceRequest | None = Field(
        None, description="Since 4. A reference image for an IP-Adapter; null: none."
    )
    upscale: UpscaleRequest | None = Field(
        None, description="Since 5. Required for, and only for, `task: upscale`."
    )
    hires: HiresRequest | None = Field(
        None,
        description="Since 5. txt2img only: a hi-res pass to this final size; null: none.",
    )
    fill: FillMode = Field(
        FillMode.KEEP,
        description="Since 5. img2img/inpaint: what the area to repaint (and transparent "
        "pixels) holds before denoising: `keep` (the pixels as they are), `neutral` (mid "
        "grey), `blur` (the surroundings blurred in), `edge` (the nearest outside pixels "
        "stretched in), `noise` (random colours).",
    )


class JobAccepted(BaseModel):
    job_id: str = Field(description="Identifies the job in every later call and event.")
    position: int = Field(
        description="Jobs waiting ahead of this one; 0 = it starts next (or at once)."
    )


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable, machine-readable, e.g. `queue_full`.")
    message: str = Field(description="A sentence a person can act on.")


class ErrorResponse(BaseModel):
    error: ErrorInfo


class ImageInfo(BaseModel):
    index: int = Field(description="Position in the batch, from 0.")
    seed: int = Field(description="The seed this image was made with.")
    url: str = Field(description="Path of the PNG, relative to the server's root.")


JobStatusName = Literal["queued", "running", "finished", "failed", "cancelled"]


class JobState(BaseModel):
    job_id: str
    status: JobStatusName = Field(description="Where the job is in its life.")
    position: int | None = Field(description="While queued: jobs ahead; otherwise null.")
    step: int = Field(description="Last finished denoising step (0 before the first).")
    total: int = Field(description="Denoising steps this job runs (0 until known).")
    images: list[ImageInfo] = Field(description="Results delivered so far.")
    error: ErrorInfo | None = Field(description="Why the job failed; null otherwise.")
    loading_model: str | None = Field(
        None, description="Set while the job waits for this checkpoint to load."
    )


class ModelMemory(BaseModel):
    """Since 6. How one loaded checkpoint uses the GPU's memory (docs/memory.md)."""

    model: str = Field(description="The checkpoint's name.")
    mode: Literal["full", "vae-tiling", "fp8", "model-offload", "sequential-offload"] = Field(
        description="Its memory mode, highest (fastest, most memory) first as listed."
    )
    reason: str = Field(
        description="Why: the auto choice's estimate against the free memory, the "
        "server's setting, a job's request, or a retry after running out of memory."
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str = Field(description="Server version.")
    protocol: int = Field(
        PROTOCOL_VERSION,
        description="Wire protocol version: 1 = the first release; 2 adds this field, "
        "`working_size` in `/v1/models`, `resume=true` on `/v1/events` with `state` "
        "events, and `warning` events; 3 adds `fast` in `/v1/models`, `sampling` and "
        "`live` on jobs and `reason` on `cancelled` events; 4 adds `control` and "
        "`reference` on jobs, `controls`, `image_encoders` and `depth_estimators` in "
        "`/v1/models`, and `POST /v1/preprocess`; 5 adds the `upscale` task with its "
        "`upscale` object, `hires` on txt2img, `fill` on img2img/inpaint, `upscalers` in "
        "`/v1/models`, A1111's prompt syntax, `clip_skip` and `vae` on jobs, `embeddings` "
        "and `vaes` in `/v1/models`; 6 adds the Flux and SD 3.5 families, `guidance` and "
        "`memory_mode` on jobs and memory modes in `/v1/health`. Bodies valid in an older "
        "version stay valid.",
    )
    device: str = Field(description="Where diffusion runs: `cuda`, `mps` or `cpu`.")
    dtype: str = Field(description="Weights' precision, e.g. `float16`.")
    queue_length: int = Field(description="Jobs waiting, not counting the running one.")
    busy: bool = Field(
        description="A job is being generated. (Its id is not shown: a job's id is what "
        "lets a client read its results, so only the client that submitted it knows it.)"
    )
    model_loaded: str | None = Field(description="The checkpoint used last (warm), if any.")
    loaded_models: list[str] = Field(description="All checkpoints held in memory.")
    memory_mode: str = Field(
        "auto",
        description="(since 6) The server's memory mode setting: `auto` (chosen per model "
        "from the free GPU memory and its size) or a mode's name (docs/memory.md).",
    )
    memory: list[ModelMemory] = Field(
        default_factory=list,
        description="(since 6) The memory mode each loaded checkpoint runs in, and why.",
    )


class FastMode(BaseModel):
    """Since 3. A few-step model and the sampling it is made for (docs/models.md)."""

    kind: Literal["lcm", "lightning", "hyper-sd", "turbo"]
    sampler: str = Field(description="Its sampler, one of `GET /v1/samplers`.")
    steps: int = Field(description="Denoising steps it is made for.")
    cfg_scale: float = Field(description="Its prompt guidance (1 = none, the fastest).")
    found_in: str = Field(
        description="Where the kind was read: `name` (file or folder name) or the "
        "safetensors metadata key, e.g. `modelspec.title`."
    )


class Checkpoint(BaseModel):
    name: str
    family: str = Field(description="`sd15`, `sd15-inpaint`, `sdxl`, `sdxl-inpaint`.")
    default: bool = Field(description="Used when a job's `model` is null.")
    working_size: int = Field(
        description="The side of the square, in pixels, the model works best at (512 for "
        "SD 1.5, 1024 for SDXL): clients size their regions from it."
    )
    fast: FastMode | None = Field(None, description="Since 3. Set for a fast checkpoint.")


class Lora(BaseModel):
    name: str
    family: str | None = Field(None, description="Model family it fits, when known.")
    fast: FastMode | None = Field(
        None, description="Since 3. Set for a fast LoRA (LCM, Lightning, Hyper-SD, Turbo)."
    )
    trigger_words: list[str] = Field(
        default_factory=list,
        description="Since 5. Words the LoRA was trained on, from the file's metadata "
        "(`modelspec.trigger_phrase`, else the most frequent tags of `ss_tag_frequency`); "
        "empty when the file records none.",
    )


class ControlModel(BaseModel):
    """Since 4. A model a job names in `control` or `reference`."""

    name: str
    family: str = Field(description="The checkpoint family it fits: `sd15` or `sdxl`.")
    kind: Literal["controlnet", "union", "ip-adapter"] = Field(
        description="`controlnet`: one control type; `union`: one network for every mode "
        "(needs `mode`); `ip-adapter`: for `reference`."
    )


class UnusableModel(BaseModel):
    name: str
    kind: Literal["checkpoint", "lora", "control", "image-encoder", "depth-estimator"] = Field(
        description="What was found; the last three since 4."
    )
    reason: str | None = Field(description="Why it cannot be used.")


class PreviewDecoder(BaseModel):
    """Since 3. A tiny VAE (TAESD) decoder found in the model folders, for previews."""

    name: str = Field(description="The file's name without extension, e.g. `taesd_decoder`.")
    family: str | None = Field(
        description="`sd15` or `sdxl`: whose latents it decodes (their inpaint models' too)."
    )
    usable: bool
    reason: str | None = Field(description="Why it cannot be used; null when usable.")


class Upscaler(BaseModel):
    """Since 5. An upscaler model file found in the model folders."""

    name: str = Field(description="What `upscale.upscaler` and `hires.upscaler` name.")
    usable: bool
    reason: str | None = Field(description="Why it cannot be used; null when usable.")
    scale: int | None = Field(description="How many times larger it makes a picture.")
    architecture: str | None = Field(description="e.g. `ESRGAN`, `SwinIR`, `HAT`.")
    found_in: str = Field(
        description="The folder it is in, relative to its model folder, e.g. "
        "`models/ESRGAN` (A1111) or `upscale_models` (ComfyUI)."
    )


class Embedding(BaseModel):
    """Since 5. A textual-inversion embedding: written by `name` in a prompt."""

    name: str = Field(description="What a prompt writes (or `embedding:name`).")
    family: str | None = Field(
        description="`sd15` or `sdxl` by the vectors' width; null when unknown."
    )
    vectors: int = Field(description="Tokens it takes in the prompt.")
    usable: bool
    reason: str | None = Field(description="Why it cannot be used; null when usable.")


class Vae(BaseModel):
    """Since 5. A VAE file: what a job's `vae` names."""

    name: str = Field(description="Its path in the VAE folder, without extension.")
    usable: bool
    reason: str | None = Field(description="Why it cannot be used; null when usable.")


class Models(BaseModel):
    checkpoints: list[Checkpoint] = Field(description="Usable checkpoints.")
    loras: list[Lora] = Field(description="Usable LoRAs.")
    preview_decoders: list[PreviewDecoder] = Field(
        default_factory=list,
        description="Since 3. The first usable decoder of a family makes that family's "
        "step previews (sharp); without one previews use the latent map (blurry).",
    )
    controls: list[ControlModel] = Field(
        default_factory=list, description="Since 4. Usable ControlNets and IP-Adapters."
    )
    image_encoders: list[str] = Field(
        default_factory=list,
        description="Since 4. CLIP image encoders (each IP-Adapter listed has one).",
    )
    depth_estimators: list[str] = Field(
        default_factory=list,
        description="Since 4. Depth estimators; empty: `depth` preprocessing is not "
        "available (the installer's `download depth-anything-v2-small` adds one).",
    )
    unusable: list[UnusableModel] = Field(
        default_factory=list,
        description="Files found but not usable, with the reason (to show the artist).",
    )
    upscalers: list[Upscaler] = Field(
        default_factory=list,
        description="Since 5. Upscaler files, usable or not (with the reason).",
    )
    embeddings: list[Embedding] = Field(
        default_factory=list,
        description="Since 5. Textual-inversion embeddings, usable or not.",
    )
    vaes: list[Vae] = Field(default_factory=list, description="Since 5. VAE files, usable or not.")


# ----------------------------------------------------------------- WebSocket events
# Sent as JSON text frames on `WS /v1/events`; listed in the OpenAPI components so a
# client author finds them next to the REST models.


class QueuedEvent(BaseModel):
    type: Literal["queued"] = "queued"
    job_id: str
    position: int = Field(description="Jobs ahead; sent on submit and when it changes.")


class StartedEvent(BaseModel):
    type: Literal["started"] = "started"
    job_id: str
    loading_model: str | None = Field(
        description="null when the job starts; a second `started` with the checkpoint's "
        "name follows when that checkpoint must be loaded first."
    )


class ProgressEvent(BaseModel):
    type: Literal["progress"] = "progress"
    job_id: str
    step: int
    total: int


class PreviewEvent(BaseModel):
    type: Literal["preview"] = "preview"
    job_id: str
    step: int
    image: str = Field(description="Base64 JPEG, long side at most `preview_max_size`.")


class ResultEvent(BaseModel):
    type: Literal["result"] = "result"
    job_id: str
    index: int
    seed: int
    url: str


class WarningEvent(BaseModel):
    """Since 2. Something beside the job went wrong; the job carries on."""

    type: Literal["warning"] = "warning"
    job_id: str
    code: str = Field(
        description="e.g. `result_not_saved`: the disk copy failed; the "
        "result is still served until the server restarts."
    )
    message: str


class StateEvent(JobState):
    """Since 2, only on connections opened with `resume=true`: the state of each of
    the client's jobs the server knows, sent first, so a client that was away (a lost
    connection, a restarted server) learns what it missed."""

    type: Literal["state"] = "state"


class FinishedEvent(BaseModel):
    type: Literal["finished"] = "finished"
    job_id: str
    images: list[ImageInfo]


class FailedEvent(BaseModel):
    type: Literal["failed"] = "failed"
    job_id: str
    error: ErrorInfo


class CancelledEvent(BaseModel):
    type: Literal["cancelled"] = "cancelled"
    job_id: str
    reason: Literal["superseded"] | None = Field(
        None,
        description="Since 3. `superseded`: a newer `live` job of the same client "
        "replaced this one; null: cancelled by a client or by the server's shutdown.",
    )


EVENT_MODELS: tuple[type[BaseModel], ...] = (
    QueuedEvent,
    StartedEvent,
    ProgressEvent,
    PreviewEvent,
    ResultEvent,
    WarningEvent,
    FinishedEvent,
    FailedEvent,
    CancelledEvent,
    StateEvent,
)


class PreprocessRequest(_Strict):
    """Since 4. A picture to turn into a control image, without generating."""

    mode: ControlMode = Field(description=MODE_DESCRIPTION)
    image: str = Field(description="Base64 PNG of the picture (a layer's pixels).")
    low_threshold: int = Field(100, ge=0, le=255, description="As in `control`.")
    high_threshold: int = Field(200, ge=0, le=255, description="As in `control`.")
    resolution: int | None = Field(
        None,
        ge=64,
        le=2048,
        description="The short side to work at (edges come out as thick as at this size); "
        "null: the picture's own size. The result always has the picture's size.",
    )


class PreprocessResult(BaseModel):
    """Since 4. The control image, the same size as the picture sent."""

    mode: ControlMode
    image: str = Field(description="Base64 PNG (RGB) of the control image.")
    width: int
    height: int
