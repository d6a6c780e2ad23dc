#!/usr/bin/env bash
# The GPU check (issue 31): the CUDA tests (`pytest -m cuda`: tests/test_cuda.py and the device-parametrised cases
# elsewhere), then benchmarks/gpu_throughput.py and the step-time benchmark (benchmarks/step_speed.py) on the GPU.
# Everything lands in one folder, summed up by scripts/gpu_results.py in results.md and results.json. Sized for
# 8 minutes on one GPU (each step has a timeout; 7 minutes in all).
#
#   scripts/gpu_check.sh [OUT]                # OUT defaults to $GPU_CHECK_OUT, else runs/gpu_check
#   PYTHON=python3 scripts/gpu_check.sh OUT   # another interpreter, no install
#   scripts/gpu_check.sh OUT tests/test_cuda.py -k mlp     # arguments after OUT choose the tests (pytest's own)
#
# The project is installed first with `make dev` unless PYTHON names the interpreter. Without CUDA the CUDA cases
# skip, the benchmarks are left out and the report says so. Exit status 0 when every step that ran passed, else 1.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${GPU_CHECK_OUT:-runs/gpu_check}}"
shift $(($# > 0 ? 1 : 0))
mkdir -p "$out"
if [ -z "${PYTHON:-}" ]; then
  make dev || exit 1
  PYTHON=.venv/bin/python
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step() {   # step NAME TIMEOUT_S COMMAND...: output in OUT/NAME.log, exit status in OUT/NAME.rc
  local name=$1 limit=$2
  shift 2
  echo "gpu_check: $name" >&2
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  echo $? >"$out/$name.rc"
}

step tests 240 "$PYTHON" -m pytest -m cuda -q -n 0 -p no:cacheprovider -o junit_family=xunit1 \
  --junitxml "$out/junit.xml" "$@"
if "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  step throughput_w1 60 "$PYTHON" benchmarks/gpu_throughput.py --width 1
  step throughput_w4_compile 90 "$PYTHON" benchmarks/gpu_throughput.py --width 4 --compile
  step step_speed_compile 90 "$PYTHON" benchmarks/step_speed.py --device cuda --compile --rounds 5
fi
"$PYTHON" scripts/gpu_results.py "$out"
