#!/usr/bin/env bash
# The GPU checks of the speed issue in about two minutes, for a short GPU loan:
#
#   bash benchmarks/gpu_checks.sh RESULTS_DIR [--budget SECONDS]
#
#   RESULTS_DIR/gpu-checks.log   machine, each step's command, exit status and seconds
#   RESULTS_DIR/gpu-tests.log    python -m pytest -m gpu tests/test_gpu.py (skipped without CUDA)
#   RESULTS_DIR/bench-gpu.log    python benchmarks/bench_gpu.py (x realtime, memory, SNR)
#   RESULTS_DIR/bench-gpu.json   the same figures as JSON records
#
# --budget: seconds for everything (default 120): the tests get at most a third, the benchmark
# what is left, less 10 s. PYTHON picks the interpreter (default python3); this tree's code is
# used whatever is installed. Exits 1 if the tests or the benchmark failed, else 0 (also on a
# machine without CUDA, where both say so).
set -uo pipefail
start=$(date +%s)
root=$(cd "$(dirname "$0")/.." && pwd)
results=${1:?usage: gpu_checks.sh RESULTS_DIR [--budget SECONDS]}
shift
budget=120
while (($#)); do
  case $1 in
    --budget) budget=${2:?--budget needs seconds} ;;
    *) echo "gpu_checks.sh: unknown option $1" >&2 && exit 2 ;;
  esac
  shift 2
done
py=${PYTHON:-python3}
mkdir -p "$results"
results=$(cd "$results" && pwd)
log=$results/gpu-checks.log
: >"$log"
say() { echo "[$(($(date +%s) - start)) s] $*" | tee -a "$log" >&2; }
left() { echo $((start + budget - $(date +%s))); }
export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export LINCAE_CACHE=${LINCAE_CACHE:-$(mktemp -d)}  # nothing written to the user's cache

"$py" -c 'import platform, torch
cuda = torch.cuda.is_available()
gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"GPUs: {gpus or None}")' >>"$log" 2>&1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used \
  --format=csv,noheader >>"$log" 2>&1

failed=0
step() {  # step NAME OUTPUT SECONDS COMMAND...: run it under a time limit, output to OUTPUT
  local name=$1 output=$2 limit=$3 begun=$(date +%s) status
  shift 3
  if ((limit < 5)); then
    say "$name: skipped, ${limit} s left" && echo "skipped: ${limit} s left" >"$output"
    return
  fi
  say "$name: $* (at most $limit s)"
  (cd "$root" && timeout "$limit" "$@") >"$output" 2>&1
  status=$?
  say "$name: exit $status after $(($(date +%s) - begun)) s ($(tail -n 1 "$output"))"
  ((status == 0)) || failed=1
}

if "$py" -c 'import pytest' 2>/dev/null; then
  step "gpu tests" "$results/gpu-tests.log" $(($(left) / 3)) \
    "$py" -m pytest -q -rs -m gpu -p no:cacheprovider tests/test_gpu.py
else
  say "gpu tests: skipped, pytest is not installed for $py"
  echo "skipped: no pytest" >"$results/gpu-tests.log"
fi
step "bench_gpu.py" "$results/bench-gpu.log" $(($(left) - 5)) \
  "$py" benchmarks/bench_gpu.py --budget $(($(left) - 25)) --json "$results/bench-gpu.json"
say "done: $(ls "$results" | tr '\n' ' ')"
exit $failed
