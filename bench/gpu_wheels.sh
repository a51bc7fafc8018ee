#!/bin/sh
# Fetch, on this machine, the wheels bench/gpu_run.sh installs on a GPU machine that
# cannot reach a registry (it has Python 3.12, PyTorch with CUDA, numpy, transformers,
# accelerate, peft, safetensors, requests, psutil; not the rest of the server's needs).
# The versions are the ones the test environment uses. Run from the repository root:
#   sh bench/gpu_wheels.sh      then call the device tool with carry [".whl"]
set -eu
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
for wheel in diffusers==0.42.1 fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 \
    websockets==17.4 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
    typing-inspection==0.4.5 h11==0.16.0 jsonschema==4.26.0 referencing==0.37.0 \
    jsonschema-specifications==2025.9.1 rpds-py==2026.9.1; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$wheel"
done
ls -l .whl
