#!/bin/sh
# Run every CPU benchmark (docs/performance.md): `sh bench/run.sh [--quick] [--only NAME]`.
# The GPU benchmark is separate: `.venv/bin/python -m bench.gpu` on a CUDA machine.
set -eu
cd "$(dirname "$0")/.."
exec .venv/bin/python -m bench "$@"
