#!/usr/bin/env bash
# The GPU check (issue 18): CUDA tests, every seed on CUDA against the CPU, growth and prune events with the
# optimizer on the GPU, short GNAP and SCS runs with AMP (killed and resumed), benchmarks/gpu_throughput.py.
# Sized for 8 minutes on one GPU (--budget-s 480; not timed on a GPU yet); results in OUT/results.json and
# OUT/results.md.
#
#   scripts/gpu_check.sh [OUT] [options of scripts/gpu_check.py, e.g. --only seeds,rewrite --quick]
#
# OUT defaults to $GPU_CHECK_OUT, else $OUT, else runs/gpu_check. The project is installed first with `make dev`
# (.venv, pinned by constraints.txt; a no-op when it is installed already); set PYTHON to use another interpreter
# and skip the install (PYTHON=python3 scripts/gpu_check.sh ...). Without CUDA the CUDA parts are skipped with a
# message and the exit status is 0; it is 1 when a part that ran failed.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${GPU_CHECK_OUT:-${OUT:-runs/gpu_check}}"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  out="$1"
  shift
fi

if [ -z "${PYTHON:-}" ]; then
  make dev
  PYTHON=.venv/bin/python
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" scripts/gpu_check.py --out "$out" "$@"
