"""What only a GPU can show: half precision and a real CUDA out-of-memory.

These run with `--kd-device cuda` (bench/gpu_run.sh on a GPU machine); on the CPU
they are skipped, since there is no CUDA memory to exhaust nor fp16 kernels to run.
The rest of tests/engine runs on that device too through the shared engines.
"""

from __future__ import annotations

import numpy as np
import pytest

from kd_server.generation import EngineError, EngineErrorCode, Task
from support.images import painted, rect_mask
from support.jobs import make_request


@pytest.fixture
def cuda_engine(embedded_engine, kd_device):
    if not kd_device.startswith("cuda"):
        pytest.skip("needs --kd-device cuda (bench/gpu_run.sh)")
    return embedded_engine


def test_half_precision_gives_real_pixels(cuda_engine) -> None:
    assert cuda_engine.dtype_name == "float16"
    image = cuda_engine.generate(make_request(prompt="a fox", steps=4, width=256, height=256))[0]
    pixels = np.asarray(image.image, dtype=np.float32)
    assert np.isfinite(pixels).all() and pixels.std() > 1.0  # not black: no NaN in fp16


def test_inpaint_contract_holds_in_half_precision(cuda_engine) -> None:
    size, box = (77, 45), (20, 10, 50, 35)
    request = make_request(
        task=Task.INPAINT,
        prompt="a window",
        image=painted(*size),
        mask=rect_mask(size, box),
        strength=1.0,
        steps=3,
        seed=3,
    )
    result = cuda_engine.generate(request)[0].image
    alpha = np.asarray(result.getchannel("A"))
    assert result.size == size and result.mode == "RGBA"
    assert alpha[0, 0] == 0 and alpha[20, 30] == 255


def test_a_real_cuda_out_of_memory_fails_the_job_and_the_next_one_runs(cuda_engine) -> None:
    import torch

    cuda_engine.generate(make_request(prompt="warm", steps=1, width=64, height=64))
    baseline = torch.cuda.memory_allocated()
    hog: list[torch.Tensor] = []
    chunk = 1 << 30
    while chunk >= 1 << 20:  # take almost all free memory, in ever smaller pieces
        try:
            hog.append(torch.empty(chunk, dtype=torch.uint8, device="cuda"))
        except torch.OutOfMemoryError:
            chunk //= 2
    with pytest.raises(EngineError) as failure:
        cuda_engine.generate(make_request(prompt="too big", steps=2, width=2048, height=2048))
    assert failure.value.code is EngineErrorCode.OUT_OF_MEMORY
    assert "smaller" in failure.value.message
    hog.clear()
    torch.cuda.empty_cache()
    after = cuda_engine.generate(make_request(prompt="after", steps=2, width=256, height=256))
    assert after[0].image.size == (256, 256)
    assert torch.cuda.memory_allocated() <= baseline + (256 << 20)
