"""The diffusion engine: one request in, finished images out, with progress on the way.

It owns the warm-model cache, LoRA adapters, schedulers, seeds, the resolution rules
and the inpaint contract. It knows nothing about HTTP or queues: the API's worker
thread calls `generate` for one job at a time, and the CLI calls it directly.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from kd_server import memory_modes
from kd_server.control.pipeline import ControlRuntime
from kd_server.devices import DeviceChoice, choose_device, free_memory, is_out_of_memory
from kd_server.embeddings import comfy_names
from kd_server.families import Architecture, Family
from kd_server.generation import (
    MAX_LORAS,
    MAX_SEED,
    Cancelled,
    ControlMode,
    EngineError,
    EngineErrorCode,
    GeneratedImage,
    GenerationRequest,
    LoraSpec,
    Preview,
    Progress,
    resolve_seed,
)
from kd_server.library import ModelEntry, ModelLibrary
from kd_server.load_lock import LOAD_LOCK
from kd_server.loading import LoadedModel, load_model
from kd_server.preview_worker import PreviewWorker
from kd_server.previews import Decode, LatentMap, latent_map, render, snapshot, unpack_flux
from kd_server.prompt_encoding import with_prompt_embeddings
from kd_server.samplers import (
    UnknownSampler,
    build_scheduler,
    canonical_name,
    max_steps,
    sampler_names,
)
from kd_server.speed import SpeedOptions, unfuse_for_lora
from kd_server.taesd import PreviewDecoders, decode_preview
from kd_server.taesd_files import latent_family
from kd_server.tasks import Prepared, TaskSpec, spec_for
from kd_server.tasks.base import check_family, invalid
from kd_server.upscale.models import LoadedUpscaler, UpscalerRuntime, enlarge
from kd_server.vae_files import VaeCache, swapped_vae

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], None]
PreviewCallback = Callable[[Preview], None]
CancelCheck = Callable[[], bool]
LoadingCallback = Callable[[str], None]
WarningCallback = Callable[[str, str], None]  # (code, message)

MAX_WARM_ADAPTERS = MAX_LORAS


class _StopRequested(Exception):
    """Raised inside the step callback to leave the denoising loop at once (no decode)."""


class Engine:
    def __init__(
        self,
        library: ModelLibrary,
        device: str = "auto",
        cache_size: int = 2,
        speed: SpeedOptions | None = None,
        memory_mode: str | None = None,
        t5_tokenizer: Path | str | None = None,
    ) -> None:
        self.library = library
        # the T5 tokenizer folder of Flux / SD 3.5 (the `t5_tokenizer` setting), searched
        # before the usual places (kd_server.t5_tokenizer); None: only those
        self.t5_tokenizer = Path(t5_tokenizer).expanduser() if t5_tokenizer else None
        self.device: DeviceChoice = choose_device(device)
        # the server's memory mode (kd_server.memory_modes); None/"auto": chosen per model
        # from the free GPU memory and its size. Jobs may ask for another.
        self.memory_mode = memory_modes.parse(memory_mode)
        if self.memory_mode is not None:
            why = memory_modes.applicable(self.memory_mode, None, self.device.device.type)
            if why is not None:
                raise memory_modes.UnknownMemoryMode(
                    f"memory_mode {self.memory_mode.value} cannot run on {self.device.name}: "
                    f"{why}; use auto or another mode (docs/memory.md)."
                )
        self._modes: dict[str, memory_modes.Choice] = {}  # loaded model -> its mode, why
        self.cache_size = max(1, cache_size)
        self.speed = speed  # optional speed-ups applied at load time (kd_server.speed)
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.RLock()
        self._previews = PreviewWorker()  # previews are made off the denoising thread
        self._preview_decoders = PreviewDecoders(self.device)  # TAESD, when the artist has one
        self.controls = ControlRuntime(library, self.device)  # ControlNets, IP-Adapters
        self._vaes = VaeCache()  # VAE files jobs chose instead of their checkpoint's
        self.upscalers = UpscalerRuntime(self.device)  # ESRGAN & co (kd_server.upscale)

    # -- facts for the API -------------------------------------------------------------

    @property
    def device_name(self) -> str:
        return self.device.name

    @property
    def dtype_name(self) -> str:
        return self.device.dtype_name

    def samplers(self) -> list[str]:
        return sampler_names()

    def loaded_models(self) -> list[str]:
        return list(self._cache)

    # -- validation ------------------------------------------------------------------

    def check(self, request: GenerationRequest) -> ModelEntry:
        """Refuse what cannot run before it is queued: model, LoRAs, sampler, inputs."""
        entry = self.check_model(request.model)
        names = [lora.name for lora in request.conditioning.loras]
        if len(set(names)) != len(names):
            raise EngineError(
                EngineErrorCode.INVALID_INPUT,
                "loras: each LoRA may appear once; give one weight per LoRA.",
            )
        for name in names:
            self.library.get_lora(name)
        family = entry.family
        try:
            canonical_name(request.sampling.sampler, family=family)
            limit = max_steps(request.sampling.sampler, family)
        except UnknownSampler as exc:
            raise EngineError(EngineErrorCode.SAMPLER_NOT_FOUND, str(exc)) from exc
        if limit is not None and request.sampling.steps > limit:
            raise EngineError(
                EngineErrorCode.INVALID_INPUT,
                f"steps: {request.sampling.sampler} runs at most {limit} steps; "
                f"ask for {limit} or fewer (fast models need 2 to 8).",
            )
        spec_for(request.task).check(request)
        if family is not None:
            check_family(request, family)
            self._check_embeddings(request, family)
        if request.vae is not None:
            self.library.get_vae(request.vae)
        if request.upscaling is not None and request.upscaling.upscaler is not None:
            self.library.get_upscaler(request.upscaling.upscaler)
        self.controls.check(request, entry)
        return entry

    def _check_embeddings(self, request: GenerationRequest, family: Family) -> None:
        """Textual inversions are CLIP word vectors of SD 1.5 and SDXL; a prompt for
        Flux or SD 3.5 that names one (a whole word, or `embedding:name`) is refused."""
        info = family.info
        if not info.is_transformer:
            return
        texts = [request.conditioning.prompt]
        if info.uses_cfg:
            texts.append(request.conditioning.negative_prompt)
        words = " ".join(comfy_names(text) for text in texts).casefold()
        for embedding in self.library.embeddings():
            if embedding.usable and re.search(
                rf"(?<![\w-]){re.escape(embedding.name.casefold())}(?![\w-])", words
            ):
                raise invalid(
                    f"The prompt names the embedding '{embedding.name}': textual inversions "
                    f"are for SD 1.5 and SDXL, and {info.label} cannot read them. Remove "
                    "it, or describe what it stands for in words."
                )

    def preprocess(
        self,
        image: Image.Image,
        mode: ControlMode,
        low_threshold: int = 100,
        high_threshold: int = 200,
        resolution: int | None = None,
    ) -> Image.Image:
        """A picture -> the control image of `mode` (kd_server.control.preprocess)."""
        return self.controls.preprocess(image, mode, low_threshold, high_threshold, resolution)

    def upscale_image(
        self, image: Image.Image, upscaler: str | None, width: int, height: int
    ) -> Image.Image:
        """`image` enlarged to `width` x `height` with the named upscaler (None:
        Lanczos), no diffusion. Waits for the running job: one thing at a time runs."""
        with self._lock:
            try:
                return enlarge(image, self.upscaler(upscaler), width, height)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                free_memory()
                raise EngineError(
                    EngineErrorCode.OUT_OF_MEMORY,
                    "The upscaler ran out of memory; try a smaller picture.",
                ) from exc

    def upscaler(self, name: str | None) -> LoadedUpscaler | None:
        """The named upscaler, loaded (None for Lanczos); EngineError if unknown."""
        if name is None:
            return None
        return self.upscalers.load(self.library.get_upscaler(name))

    def check_model(self, name: str | None) -> ModelEntry:
        """The checkpoint a job will use: the named one, or the library's default."""
        if name is None:
            return self.library.default_checkpoint()
        return self.library.get_checkpoint(name)

    # -- the cache -------------------------------------------------------------------

    def preload(self, name: str | None = None, memory_mode: str | None = None) -> str:
        """Load a checkpoint (the default one without a name) before the first job asks,
        in `memory_mode` (None: the server's setting, or the auto choice)."""
        entry = self.check_model(name)
        asked = self._asked_mode(memory_mode)
        with self._lock:
            self._model(entry, on_loading=None, asked=asked)
        return entry.name

    def unload(self, name: str | None = None) -> None:
        """Drop one model (or all) from memory; the next job that needs it reloads it."""
        with self._lock:
            names = list(self._cache) if name is None else [name]
            for key in names:
                self._cache.pop(key, None)
                self._modes.pop(key, None)
            self._vaes.clear()
            free_memory()

    def loaded_memory_modes(self) -> list[tuple[str, str, str]]:
        """(model, mode, reason) of every loaded model, oldest first (/v1/health).

        Read without the engine's lock, which the running job holds for its whole length:
        health must answer at once. The job thread may change the tables meanwhile, so
        the copy is retried; a torn read only shows a load a moment early or late."""
        for _ in range(10):
            try:
                names, modes = list(self._cache), dict(self._modes)
            except RuntimeError:  # changed size while copied
                continue
            return [(n, modes[n].mode.value, modes[n].reason) for n in names if n in modes]
        return []

    def _asked_mode(self, text: str | None) -> memory_modes.MemoryMode | None:
        """A job's (or preload's) memory mode, or EngineError with the reason it cannot run."""
        try:
            mode = memory_modes.parse(text)
        except memory_modes.UnknownMemoryMode as exc:
            raise EngineError(EngineErrorCode.INVALID_INPUT, f"memory_mode: {exc}") from exc
        if mode is not None:
            why = memory_modes.applicable(mode, None, self.device.device.type)
            if why is not None:
                raise EngineError(
                    EngineErrorCode.INVALID_INPUT,
                    f"memory_mode: {mode.value} cannot run on this server: {why}. Leave "
                    "memory_mode unset for the server's choice.",
                )
        return mode

    def _model(
        self,
        entry: ModelEntry,
        on_loading: LoadingCallback | None,
        asked: memory_modes.MemoryMode | None = None,
    ) -> LoadedModel:
        """The loaded model, in the mode a job asked for. Without one, a loaded model
        keeps its mode, and one loading takes the server's setting, else the auto
        choice (kd_server.memory_modes.choose)."""
        if entry.name in self._cache:
            self._cache.move_to_end(entry.name)
            model = self._cache[entry.name]
            current = self._modes.get(entry.name)
            if asked is None or current is None:
                return model
            step = memory_modes.transition(current.mode, asked)
            if step == "none":
                return model
            if step == "in-place":
                memory_modes.apply(model.base, asked, self.device.device)
                self._modes[entry.name] = memory_modes.Choice(asked, self._why(asked))
                log.info("%s now runs in %s mode", entry.name, asked.value)
                return model
            log.info("Reloading %s to run it in %s mode", entry.name, asked.value)
            del self._cache[entry.name]
            self._vaes.clear()
            free_memory()
        wanted = asked or self.memory_mode
        while len(self._cache) >= self.cache_size:
            evicted, _ = self._cache.popitem(last=False)
            self._modes.pop(evicted, None)
            log.info("Unloading %s to make room", evicted)
            self._vaes.clear()  # a chosen VAE holds on to its checkpoint's VAE
            free_memory()
        if wanted is not None:
            choice = memory_modes.Choice(wanted, self._why(asked))
        else:
            choice = memory_modes.choose(
                memory_modes.free_gpu_memory(self.device.device),
                memory_modes.entry_size(entry),
                self.device.device.type,
            )
        # recorded before loading: an out-of-memory while loading is retried lower too
        self._modes[entry.name] = choice
        if on_loading is not None:
            on_loading(entry.name)
        try:
            model = load_model(
                entry, self.device, self.speed, choice.mode, t5_tokenizer=self.t5_tokenizer
            )
            memory_modes.apply(model.base, choice.mode, self.device.device)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise
            self._modes.pop(entry.name, None)
            if isinstance(exc, EngineError):  # the loader named what is wrong (a missing part)
                raise
            log.exception("Loading %s failed", entry.name)
            raise EngineError(
                EngineErrorCode.MODEL_UNUSABLE,
                f"The model '{entry.name}' could not be loaded ({type(exc).__name__}; the "
                "server log has the details). Check that the file is complete, or choose "
                "another model.",
            ) from exc
        log.info("%s runs in %s mode: %s", entry.name, choice.mode.value, choice.reason)
        self._cache[entry.name] = model
        return model

    def _why(self, asked: memory_modes.MemoryMode | None) -> str:
        if asked is not None:
            return "asked for by the job"
        return "set in the server's settings (memory_mode)"

    # -- generation ------------------------------------------------------------------

    def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        on_loading: LoadingCallback | None = None,
        on_preview: PreviewCallback | None = None,
        on_warning: WarningCallback | None = None,
    ) -> list[GeneratedImage]:
        """Run one job. Raises Cancelled, or EngineError with a message for the artist.
        `on_preview` is called on the engine's preview thread (see `Preview`).

        A job that runs out of GPU memory runs once more in a lower memory mode
        (kd_server.memory_modes.retry_mode); `on_warning` ("memory_mode_lowered", a
        sentence) tells its client. A second out-of-memory fails the job."""
        entry = self.check(request)
        asked = self._asked_mode(request.memory_mode)
        with self._lock:
            try:
                self._model_for_job(entry, request, on_loading, asked)
                return self._generate(
                    entry, request, on_progress, should_cancel, on_loading, on_preview
                )
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                failed = self._modes.get(entry.name)
                retry = self._recover_from_oom(entry)
                if retry is None or failed is None:
                    raise self._out_of_memory(failed) from exc
            text = memory_modes.message(failed.mode, retry)
            log.warning("%s: %s", entry.name, text)
            if on_warning is not None:
                on_warning("memory_mode_lowered", text)
            try:
                self._model_for_job(entry, request, on_loading, retry)
                self._modes[entry.name] = memory_modes.Choice(
                    retry, f"ran out of memory in {failed.mode.value} mode, lowered"
                )
                return self._generate(
                    entry, request, on_progress, should_cancel, on_loading, on_preview
                )
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                self._recover_from_oom(entry)
                raise self._out_of_memory(failed, retry) from exc

    def _model_for_job(
        self,
        entry: ModelEntry,
        request: GenerationRequest,
        on_loading: LoadingCallback | None,
        asked: memory_modes.MemoryMode | None,
    ) -> None:
        """The job's model in its memory mode. In float8 and model-offload modes the
        job's LoRAs are loaded here (`_generate` then finds them loaded): LoRA layers
        are brought to the compute dtype (memory_modes.fit_adapters), and the offload
        hooks come off while they load and go on again for this device (diffusers would
        put them back for the default accelerator, and refuses on the CPU)."""
        model = self._model(entry, on_loading, asked)
        state = self._modes.get(entry.name)
        if state is None or not request.conditioning.loras:
            return
        mode = state.mode
        if mode is memory_modes.MemoryMode.MODEL_OFFLOAD:
            model.base.remove_all_hooks()
        if mode.casts_fp8:
            self._apply_loras(model, request.conditioning.loras)
            memory_modes.fit_adapters(model.base)
        if mode is memory_modes.MemoryMode.MODEL_OFFLOAD:
            memory_modes.apply(model.base, mode, self.device.device)

    def _out_of_memory(
        self,
        failed: memory_modes.Choice | None,
        retried: memory_modes.MemoryMode | None = None,
    ) -> EngineError:
        tried = ""
        if failed is not None:
            tried = f" (in {failed.mode.value} mode"
            tried += f", and again in {retried.value} mode)" if retried else ")"
        return EngineError(
            EngineErrorCode.OUT_OF_MEMORY,
            f"The GPU ran out of memory for this job{tried}. Try a smaller size or batch, "
            "a lower memory mode, or close other programs using the GPU; the server is "
            "ready for the next job.",
        )

    def _recover_from_oom(self, entry: ModelEntry) -> memory_modes.MemoryMode | None:
        """Free the GPU after an out-of-memory: the model is dropped (its hooks and
        weights may be half moved) and reloaded by the retry. Returns the mode to retry
        in (None: none is lower)."""
        log.warning("Out of memory while running %s; freeing memory", entry.name)
        failed = self._modes.pop(entry.name, None)
        self._cache.pop(entry.name, None)
        self._vaes.clear()
        free_memory()
        if failed is None:
            return None
        return memory_modes.retry_mode(
            failed.mode,
            memory_modes.entry_size(entry),
            self.device.device.type,
            memory_modes.free_gpu_memory(self.device.device),
        )

    def _generate(
        self,
        entry: ModelEntry,
        request: GenerationRequest,
        on_progress: ProgressCallback | None,
        should_cancel: CancelCheck | None,
        on_loading: LoadingCallback | None,
        on_preview: PreviewCallback | None = None,
    ) -> list[GeneratedImage]:
        model = self._model(entry, on_loading)
        self._apply_loras(model, request.conditioning.loras)
        spec = spec_for(request.task)
        if spec.runs_passes(request):
            passes = _Passes(self, model, on_progress, on_preview, should_cancel)
            results = spec.run_passes(request, passes)
            passes.finish()
            return [
                self._record(spec, request, model, image, index, seed)
                for index, (image, seed) in enumerate(results)
            ]
        reporter = self._step_reporter(request, model, on_progress, on_preview, should_cancel)
        images, seeds = self._denoise(spec, request, model, reporter)
        return [
            self._record(spec, request, model, image, index, seeds[index])
            for index, image in enumerate(images)
        ]

    def _denoise(
        self,
        spec: TaskSpec,
        request: GenerationRequest,
        model: LoadedModel,
        callback: _StepReporter,
    ) -> tuple[list[Image.Image], list[int]]:
        """One pipeline call of a single-pass task: its finished images and seeds."""
        seed = resolve_seed(request.sampling.seed)
        # The seed is fixed before the inputs are prepared: a noise fill draws from it,
        # so the reported seed reproduces the whole picture.
        request = replace(request, sampling=replace(request.sampling, seed=seed))
        sampling = request.sampling
        prepared = spec.prepare(request, model)
        callback.picture_size(prepared)
        control = self.controls.setup(request, model, prepared)
        pipe = control.pipeline or model.pipeline_for(request.task)
        pipe.scheduler = build_scheduler(
            sampling.sampler, model.scheduler_config, family=model.family
        )
        seeds = [(seed + i) % (MAX_SEED + 1) for i in range(sampling.batch_size)]
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        try:
            with swapped_vae(pipe, self._vae_for(model, request.vae)):
                output = pipe(
                    generator=generators,
                    callback_on_step_end=callback,
                    callback_on_step_end_tensor_inputs=["latents"],
                    output_type="pil",
                    **with_prompt_embeddings(
                        pipe,
                        spec.pipeline_arguments(request, prepared, model.family),
                        request.conditioning.clip_skip,
                        self.library.embeddings(),
                    ),
                    **control.kwargs,
                )
        except _StopRequested:
            callback.drop_waiting_preview()
            raise Cancelled() from None
        finally:
            control.done()
            callback.close()
        return [spec.finish(image, prepared) for image in output.images], seeds

    def _vae_for(self, model: LoadedModel, name: str | None) -> Any:
        """The VAE file a job chose, loaded like the checkpoint's own (None: its own)."""
        if name is None:
            return None
        file = self.library.get_vae(name)
        try:
            return self._vaes.get(file, model.base.vae)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise
            log.warning("The VAE %s does not load for %s: %s", name, model.name, exc)
            raise EngineError(
                EngineErrorCode.MODEL_UNUSABLE,
                f"The VAE '{file.name}' does not fit the model '{model.name}' "
                f"({model.info.label}); choose a VAE made for this model family.",
            ) from exc

    def _step_reporter(
        self,
        request: GenerationRequest,
        model: LoadedModel,
        on_progress: ProgressCallback | None,
        on_preview: PreviewCallback | None,
        should_cancel: CancelCheck | None,
        job: _JobProgress | None = None,
    ) -> _StepReporter:
        previews = None
        if on_preview is not None and request.preview_every > 0:
            decoder = self._preview_decoders.module_for(
                self.library.preview_decoder(latent_family(model.family))
            )
            decode: Decode | None = None
            if decoder is not None:
                decode = partial(decode_preview, decoder)
            previews = _Previews(self._previews, on_preview, latent_map(model.family), decode)
        return _StepReporter(request, on_progress, should_cancel, previews, job)

    def _record(
        self,
        spec: TaskSpec,
        request: GenerationRequest,
        model: LoadedModel,
        image: Image.Image,
        index: int,
        seed: int,
    ) -> GeneratedImage:
        """A finished image with the recipe its PNG records."""
        sampler = canonical_name(request.sampling.sampler, family=model.family)
        parameters = spec.parameters(
            request, image, seed, model.name, sampler, model.family
        ).render()
        return GeneratedImage(index=index, seed=seed, image=image, parameters=parameters)

    # -- LoRA ------------------------------------------------------------------------

    def _apply_loras(self, model: LoadedModel, loras: list[LoraSpec]) -> None:
        """Activate exactly the asked-for adapters; every other one is switched off."""
        pipe = model.base
        if not loras:
            if model.adapters:
                pipe.disable_lora()
            return
        unfuse_for_lora(pipe)
        names = dict.fromkeys(lora.name for lora in loras)
        wanted = {name: self._adapter_for(name) for name in names}
        for name, adapter in wanted.items():
            stale = model.adapters.get(name)
            if stale is not None and stale != adapter:  # the file changed since it loaded
                pipe.delete_adapters(stale)
                del model.adapters[name]
        new = [name for name in wanted if name not in model.adapters]
        if len(model.adapters) + len(new) > MAX_WARM_ADAPTERS:
            pipe.unload_lora_weights()
            model.adapters.clear()
            new = list(wanted)
        for name in new:
            model.adapters[name] = self._load_adapter(model, name, wanted[name])
        pipe.enable_lora()
        pipe.set_adapters(
            [model.adapters[lora.name] for lora in loras], [lora.weight for lora in loras]
        )

    def _adapter_for(self, name: str) -> str:
        """The adapter name for the LoRA file as it is now on disk."""
        entry = self.library.get_lora(name)
        try:
            stat = entry.path.stat()  # type: ignore[union-attr]
        except OSError as exc:
            raise EngineError(
                EngineErrorCode.LORA_NOT_FOUND,
                f"The LoRA file for '{name}' is gone from its folder; refresh the model list.",
            ) from exc
        return _adapter_name(name, f"{entry.path}|{stat.st_size}|{stat.st_mtime_ns}")

    def _load_adapter(self, model: LoadedModel, name: str, adapter: str) -> str:
        entry = self.library.get_lora(name)
        try:
            assert entry.path is not None
            with LOAD_LOCK:  # peft builds the adapter layers under init_empty_weights
                model.base.load_lora_weights(_lora_source(model, entry.path), adapter_name=adapter)
            attached = model.base.get_list_adapters()
            if not any(adapter in names for names in attached.values()):
                # diffusers skips keys it does not recognise: a LoRA for another
                # family "loads" and changes nothing
                raise ValueError("none of its tensors matches a layer of the model")
        except Exception as exc:
            if is_out_of_memory(exc):
                raise
            log.warning("LoRA %s does not load on %s: %s", name, model.name, exc)
            try:
                model.base.delete_adapters(adapter)
            except Exception:
                log.debug("Nothing to clean up for adapter %s", adapter)
            raise EngineError(
                EngineErrorCode.LORA_UNUSABLE,
                f"The LoRA '{name}' does not fit the model '{model.name}' "
                f"({model.info.label}); the server log has the details. Choose a LoRA made "
                "for this model family.",
            ) from exc
        return adapter


#: ComfyUI's and BFL's Flux LoRA key layout with peft's lora_A / lora_B names, which
#: diffusers reads only in kohya's spelling (lora_down / lora_up)
_BFL_PEFT_KEY = re.compile(r"^diffusion_model\.(double|single)_blocks\..*\.lora_[AB]\.weight$")


def _lora_source(model: LoadedModel, path: Path) -> str | dict[str, torch.Tensor]:
    """What `load_lora_weights` is given: the file's path, or for a Flux LoRA saved in
    ComfyUI's layout with peft's names (`diffusion_model.double_blocks.0.img_attn.proj
    .lora_A.weight`) its tensors renamed to the kohya spelling diffusers converts."""
    if model.info.architecture is not Architecture.FLUX or path.suffix != ".safetensors":
        return str(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        if not any(_BFL_PEFT_KEY.match(key) for key in keys):
            return str(path)
        tensors = {key: handle.get_tensor(key) for key in keys}
    return {
        key.replace(".lora_A.weight", ".lora_down.weight").replace(
            ".lora_B.weight", ".lora_up.weight"
        ): value
        for key, value in tensors.items()
    }


def _adapter_name(lora_name: str, file_signature: str) -> str:
    """A peft adapter name for a LoRA file: readable, unique even for names that differ
    only in characters an adapter name cannot hold ("ink-style" and "ink_style"), and
    new when the file is replaced, so a changed file is loaded again."""
    readable = re.sub(r"\W", "_", lora_name)
    digest = hashlib.sha1(f"{lora_name}|{file_signature}".encode()).hexdigest()[:10]
    return f"kd_{readable}_{digest}"


@dataclass
class _Previews:
    """Where a job's previews go: the engine's preview thread, and how they are made."""

    worker: PreviewWorker
    deliver: PreviewCallback
    mapping: LatentMap  # the family's latent -> RGB map
    decode: Decode | None
    #: the pass's picture size in pixels: Flux's packed latents are unpacked with it
    size: tuple[int, int] | None = None

    def offer(self, step: int, total: int, copy: torch.Tensor) -> None:
        """Make the preview of `copy` (a `snapshot` of the step's latents) off this thread."""
        size = self.size

        def make() -> None:
            latents = copy
            if latents.ndim == 3 and size is not None:  # Flux: [1, tokens, 64]
                latents = unpack_flux(latents, *size)
            image = render(latents, self.mapping, self.decode)
            self.deliver(Preview(step=step, total=total, image=image))

        self.worker.offer(make)


class _StepReporter:
    """The per-step callback: progress, cancellation, and previews handed to the
    preview thread."""

    def __init__(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None,
        should_cancel: CancelCheck | None,
        previews: _Previews | None,
        job: _JobProgress | None = None,
    ) -> None:
        self.preview_every = request.preview_every
        self.on_progress = on_progress
        self.should_cancel = should_cancel
        self.previews = previews
        self.job = job  # a pass of a multi-pass job: steps count on in the job's stream
        self.pass_total = 0  # the steps this pipeline call runs, once it has started

    def __call__(self, pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict:
        if self.should_cancel is not None and self.should_cancel():
            raise _StopRequested()
        step, total = index + 1, pipe.num_timesteps
        self.pass_total = total
        if self.job is not None:
            step, total = self.job.at(step, total)
        copy = None
        if self.previews is not None and (step % self.preview_every == 0 or step == total):
            copy = snapshot(tensors["latents"])  # the only preview work on this thread
        if self.on_progress is not None:
            self.on_progress(Progress(step=step, total=total))
        if self.previews is not None and copy is not None:
            self.previews.offer(step, total, copy)  # after its progress, as promised
        return tensors

    def picture_size(self, prepared: Prepared) -> None:
        """The size the pass denoises at (Flux previews unpack their latents with it)."""
        if self.previews is None:
            return
        width, height = prepared.kwargs.get("width"), prepared.kwargs.get("height")
        image = prepared.kwargs.get("image")
        if (width is None or height is None) and isinstance(image, Image.Image):
            width, height = image.size
        if isinstance(width, int) and isinstance(height, int):
            self.previews.size = (width, height)

    def drop_waiting_preview(self) -> None:
        """A cancelled job's preview that has not started is not made."""
        if self.previews is not None:
            self.previews.worker.drain(discard=True)

    def close(self) -> None:
        """Wait until every preview of the job has been made and delivered."""
        if self.previews is not None:
            self.previews.worker.drain()


class _JobProgress:
    """One progress stream across the passes of a multi-pass job (a hi-res txt2img, an
    upscale): steps count on from pass to pass, so the step only grows. The total is
    the task's plan, raised when a pass runs more steps than planned (a second-order
    sampler), and settled to the steps done when the job ends."""

    def __init__(self, on_progress: ProgressCallback | None) -> None:
        self.on_progress = on_progress
        self.done = 0
        self.total = 0

    def plan(self, units: int) -> None:
        self.total += max(0, units)

    def at(self, step: int, pass_total: int) -> tuple[int, int]:
        """A pass's step -> the job's (step, total)."""
        self.total = max(self.total, self.done + pass_total)
        return self.done + step, self.total

    def end_pass(self, pass_total: int) -> None:
        self.done += pass_total

    def tick(self) -> None:
        """One unit of work that is not a denoising step (an upscaler tile)."""
        self.done += 1
        self.total = max(self.total, self.done)
        self._report()

    def settle(self) -> None:
        if self.total != self.done:
            self.total = self.done
            self._report()

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(Progress(step=self.done, total=self.total))


class _Passes:
    """What the engine lends a task that runs several passes (`TaskSpec.run_passes`):
    denoising passes of single-pass tasks and upscaler runs, on the job's model, with
    one progress stream and cancellation between steps and between tiles."""

    def __init__(
        self,
        engine: Engine,
        model: LoadedModel,
        on_progress: ProgressCallback | None,
        on_preview: PreviewCallback | None,
        should_cancel: CancelCheck | None,
    ) -> None:
        self.engine = engine
        self.model = model
        self.on_preview = on_preview
        self.on_progress = on_progress
        self.should_cancel = should_cancel
        self.job = _JobProgress(on_progress)

    @property
    def working_size(self) -> int:
        return self.model.working_size

    def plan(self, units: int) -> None:
        self.job.plan(units)

    def check_cancel(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled()

    def upscaler(self, name: str | None) -> LoadedUpscaler | None:
        return self.engine.upscaler(name)

    def denoise(
        self, request: GenerationRequest, spec: TaskSpec | None = None, previews: bool = False
    ) -> tuple[list[Image.Image], list[int]]:
        """One pipeline call of `spec` (default: the request's task); its finished
        images and seeds; previews of its steps when `previews` (numbered by the job's
        steps)."""
        self.check_cancel()
        spec = spec or spec_for(request.task)
        on_preview = self.on_preview if previews else None
        reporter = self.engine._step_reporter(
            request, self.model, self.on_progress, on_preview, self.should_cancel, self.job
        )
        images, seeds = self.engine._denoise(spec, request, self.model, reporter)
        self.job.end_pass(reporter.pass_total)
        return images, seeds

    def enlarge(
        self, image: Image.Image, upscaler: LoadedUpscaler | None, width: int, height: int
    ) -> Image.Image:
        """`image` at `width` x `height` (model tiles count as progress units)."""
        self.check_cancel()

        def tile_done() -> None:
            self.job.tick()
            self.check_cancel()

        return enlarge(image, upscaler, width, height, tile_done)

    def finish(self) -> None:
        self.job.settle()
