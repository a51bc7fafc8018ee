#!/bin/sh
# GPU first light in one run of about 8 minutes (docs/performance.md, "GPU"):
#   1. installs the server's Python needs from carried wheels (bench/gpu_wheels.sh,
#      fetched beforehand on a machine with a registry) beside the machine's own
#      CUDA build of PyTorch, which is what the installer would choose there;
#   2. runs the engine tests and the API contract on cuda (`--kd-device cuda`), fp16,
#      a real CUDA out-of-memory (tests/engine/test_gpu.py) and the inpaint contract;
#   3. runs bench/gpu.py (SD1.5 512x512/20 steps, SDXL 1024x1024/30 steps: plain
#      diffusers, our engine, our server, previews, speed-ups, peak VRAM);
#   4. writes everything under $OUT (device.json, tests.log, tests.xml, gpu.json, gpu.log).
# With the device tool: run(command="sh bench/gpu_run.sh", carry=[".whl"], timeout_s=600).
# `sh bench/gpu_run.sh memory-modes` runs, after step 1, only the memory-mode benchmark
# (bench/gpu.py --memory-modes: SD1.5 512, SDXL 1024, Flux.1 dev 1024, peak VRAM and
# s/image per mode, docs/memory.md) into $OUT/modes-*.json and $OUT/modes.log (~9 min).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 KD_STATE_DIR=
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
fi
# Our packages from the checkout: kd_server from backend/, kd_resources is resources/.
mkdir -p /tmp/kdres && ln -sfn "$PWD/resources" /tmp/kdres/kd_resources
export PYTHONPATH="$PWD/backend:/tmp/kdres:$PWD:/tmp/site"
python3 - > "$OUT/device.json" <<'PY'
import json, torch
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda,
                  "device": torch.cuda.get_device_name(0),
                  "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)}))
PY
if [ "${1:-}" = memory-modes ]; then
    timeout 200 python3 -m bench.gpu --memory-modes --models sd15,sdxl \
        --json "$OUT/modes-sd.json" > "$OUT/modes.log" 2>&1
    echo "memory modes sd15,sdxl: exit $?" >> "$OUT/modes.log"
    timeout 330 python3 -m bench.gpu --memory-modes --models flux-dev \
        --json "$OUT/modes-flux.json" >> "$OUT/modes.log" 2>&1
    echo "memory modes flux-dev: exit $?" >> "$OUT/modes.log"
    tail -n 30 "$OUT/modes.log"
    exit 0
fi
timeout 240 python3 -m pytest tests/engine tests/api/test_contract.py tests/api/test_jobs_http.py \
    -p no:cacheprovider -q --kd-device cuda --junitxml "$OUT/tests.xml" > "$OUT/tests.log" 2>&1
echo "tests: exit $?" >> "$OUT/tests.log"
timeout 300 python3 -m bench.gpu --json "$OUT/gpu.json" > "$OUT/gpu.log" 2>&1
echo "bench: exit $?" >> "$OUT/gpu.log"
tail -n 5 "$OUT/tests.log" "$OUT/gpu.log"
