#!/usr/bin/env bash
# One command for a GPU loan (docs/gpu-training.md): install the carried wheels, unpack the
# training pack, time a few steps, train configs/lincae-gpu.toml and configs/m2l-gpu.toml side by
# side on the one GPU for the steps that fit the budget, export both, and leave at most 8 files:
#
#   bash benchmarks/gpu_train_run.sh RESULTS_DIR [--scale full|tiny] [--pack DIR] [--work DIR]
#                                    [--budget SECONDS]
#
#   RESULTS_DIR/lincae-gpu.safetensors, m2l-gpu.safetensors    exported EMA weights
#   RESULTS_DIR/lincae-gpu.metrics.jsonl, m2l-gpu.metrics.jsonl training and validation records
#   RESULTS_DIR/lincae-gpu.log, m2l-gpu.log                     the trainers' output
#   RESULTS_DIR/run.log          machine, pack check, measured speed, the plan, timings, hashes
#   RESULTS_DIR/gpu-checks.log   benchmarks/gpu_checks.sh's files (GPU tests, bench_gpu.py), joined
#
# --pack: the pack (default .gpu/pack, from `python -m lincae_training.recipes.pack --output
# .gpu/pack`); wheels for missing packages are taken from .gpu/wheels. --work: scratch space
# (default $TMPDIR/lincae-gpu). --budget: seconds from start to the end of everything (default 540,
# the 9 minutes of a loan's one command). --scale tiny runs every step on the CPU in seconds
# (tiny preset, a few steps): the test suite's dry run.
set -uo pipefail
start=$(date +%s)
root=$(cd "$(dirname "$0")/.." && pwd)
results=${1:?usage: gpu_train_run.sh RESULTS_DIR [--scale full|tiny] [--pack DIR] [--work DIR]}
shift
scale=full pack=$root/.gpu/pack work=${TMPDIR:-/tmp}/lincae-gpu budget=540
while (($#)); do
  case $1 in
    --scale) scale=$2 ;;
    --pack) pack=$2 ;;
    --work) work=$2 ;;
    --budget) budget=$2 ;;
    *) echo "gpu_train_run.sh: unknown option $1" >&2 && exit 2 ;;
  esac
  shift 2
done
case $scale in full | tiny) ;; *) echo "gpu_train_run.sh: --scale is full or tiny" >&2 && exit 2 ;; esac
models=(lincae-gpu m2l-gpu)
py=${PYTHON:-python3}
mkdir -p "$results" "$work"
results=$(cd "$results" && pwd)
log=$results/run.log
: >"$log"
say() { echo "[$(($(date +%s) - start)) s] $*" | tee -a "$log" >&2; }
die() { say "stopped: $*" && exit 1; }
left() { echo $((start + budget - $(date +%s))); }

# Seconds kept back at the end: export and final validation, copying, and the speed issue's checks.
if [[ $scale == full ]]; then
  checks_seconds=60 final_seconds=30 probe_steps=12
  scale_set=(--set train.threads=4)  # the GPU does the work; 16 cores shared by two processes
else
  checks_seconds=0 final_seconds=5 probe_steps=2
  scale_set=(--set model.preset=tiny --set train.batch_size=2 --set data.crop_frames=16
    --set data.valid_clips=2 --set data.valid_seconds=0.2 --set train.precision=fp32
    --set train.threads=1)
fi

# -- packages and code ---------------------------------------------------------------------------
if ! "$py" -c "import soundfile, soxr, pyloudnorm" 2>/dev/null; then
  wheels=("$root"/.gpu/wheels/*.whl)
  [[ -e ${wheels[0]} ]] || die "soundfile, soxr or pyloudnorm missing and no wheels in .gpu/wheels"
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$work/site" "${wheels[@]}" >>"$log" 2>&1 || die "installing the wheels failed"
  export PYTHONPATH=$work/site${PYTHONPATH:+:$PYTHONPATH}
  say "installed ${#wheels[@]} wheels"
fi
# This tree's code, whatever is installed: lincae_cli from the root, lincae_training and
# lincae_weights (training/, weights/) through links, as pyproject.toml's package-dir maps them.
mkdir -p "$work/src" && ln -sfn "$root/training" "$work/src/lincae_training" &&
  ln -sfn "$root/weights" "$work/src/lincae_weights"
export PYTHONPATH=$root:$work/src${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 LINCAE_CACHE=$work/cache
lincae=("$py" -m lincae_cli.cli.app)
"$py" - >>"$log" 2>&1 <<'EOF' || die "python or torch unusable (see run.log)"
import platform, torch
cuda = torch.cuda.is_available()
print(f"python {platform.python_version()}, torch {torch.__version__}, cuda {cuda}"
      + (f": {torch.cuda.get_device_name()}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB" if cuda else ""))
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
  --format=csv,noheader >>"$log" 2>&1
[[ $scale == full ]] && ! "$py" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null &&
  die "no CUDA GPU for --scale full"

# -- data ----------------------------------------------------------------------------------------
"$py" -m lincae_training.recipes.pack unpack "$pack" "$work/data" 2>&1 | tee -a "$log" >&2
[[ ${PIPESTATUS[0]} == 0 ]] || die "unpacking $pack failed"
say "pack $(grep -o '"pack_sha256": "[0-9a-f]*"' "$work/data/unpacked.json")"
data=(--data "$work/data/music" --data "$work/data/stems")

train() {  # train SECONDS MODEL RUN_DIR ARGS...: one training process, output in RUN_DIR.log
  local seconds=$1 model=$2 run=$3
  shift 3
  timeout --signal=TERM --kill-after=20 "$seconds" "${lincae[@]}" train \
    "$root/configs/$model.toml" "${data[@]}" --run-dir "$run" "${scale_set[@]}" "$@" >"$run.log" 2>&1
}

# -- a few steps of both at once: the speed the plan is made from --------------------------------
rm -rf "$work/probe" && mkdir -p "$work/probe"
probe_start=$(date +%s)
pids=()
for model in "${models[@]}"; do
  train "$(left)" "$model" "$work/probe/$model" --steps "$probe_steps" --set train.log_every=1 \
    --set train.checkpoint_every=100000 --set train.validate_every=100000 &
  pids+=($!)
done
for pid in "${pids[@]}"; do
  wait "$pid" || die "the timing steps failed: $(tail -q -n 3 "$work"/probe/*.log)"
done
probe_seconds=$(($(date +%s) - probe_start))

# The plan: steps that end, with both models on the GPU until the baseline is done, when the
# budget less the reserved seconds runs out; a checkpoint about every minute.
plan=$("$py" - "$work/probe" "$probe_steps" "$probe_seconds" "$(left)" \
  "$((checks_seconds + final_seconds))" "$scale" "${models[@]}" <<'EOF'
import json, statistics, sys
probe, steps, probe_seconds, left, reserve, scale, *models = sys.argv[1:]
steps, probe_seconds, left, reserve = int(steps), int(probe_seconds), int(left), int(reserve)
per_step = {}
for model in models:
    records = [json.loads(line) for line in open(f"{probe}/{model}/metrics.jsonl")]
    times = [r["seconds_per_step"] for r in records if r.get("kind") == "train"]
    per_step[model] = statistics.median(times[len(times) // 2:])
slowest = max(per_step.values())
startup = max(0.0, probe_seconds - steps * slowest)  # imports, CUDA, data, first steps
train_seconds = left - reserve - startup
total = max(1, int(train_seconds / slowest))
if scale == "tiny":
    total = 4
checkpoint = max(1, round(60 / slowest)) if scale == "full" else 2
validate = max(1, total // 4) if scale == "full" else total
speeds = ", ".join(f"{m} {s:.3f} s/step" for m, s in per_step.items())
print(f"PLAN='{speeds} side by side; startup {startup:.0f} s; {train_seconds:.0f} s to train: "
      f"{total} steps, a checkpoint every {checkpoint}'")
print(f"total={total} checkpoint={checkpoint} warmup={max(1, total // 20)} "
      f"validate={validate} log_every={max(1, total // 100)}")
EOF
) || die "no plan from the timing steps (see $work/probe)"
eval "$plan"
say "plan: $PLAN"

# -- training: both at once; at the deadline each gets SIGTERM (checkpoint, then exit) --------------
limit=$(($(left) - checks_seconds - final_seconds))
((limit > 0)) || die "no time left to train"
rm -rf "$work/runs" && mkdir -p "$work/runs"
pids=()
for model in "${models[@]}"; do
  train "$limit" "$model" "$work/runs/$model" --set train.total_steps="$total" \
    --set train.checkpoint_every="$checkpoint" --set train.warmup_steps="$warmup" \
    --set train.validate_every="$validate" --set train.log_every="$log_every" &
  pids+=($!)
done
for i in "${!models[@]}"; do
  wait "${pids[$i]}"
  status=$?  # 124: stopped by the deadline
  ended=$(grep -E "^(stopped|interrupted) at step" "$work/runs/${models[$i]}.log" | tail -n 1)
  say "${models[$i]}: exit $status (${ended:-no end line})"
done

# -- export (a run cut off at the deadline has only its checkpoint) and results -------------------
for model in "${models[@]}"; do
  run=$work/runs/$model
  if [[ ! -f $run/model.safetensors && -f $run/checkpoint.pt ]]; then
    "${lincae[@]}" train "$root/configs/$model.toml" --run-dir "$run" --export-only >>"$run.log" 2>&1 ||
      say "$model: export of the checkpoint failed"
  fi
  cp "$run.log" "$results/$model.log"
  [[ -f $run/metrics.jsonl ]] && cp "$run/metrics.jsonl" "$results/$model.metrics.jsonl"
  if [[ -f $run/model.safetensors ]]; then
    cp "$run/model.safetensors" "$results/$model.safetensors"
    say "$model: $(du -h "$run/model.safetensors" | cut -f1) sha256 $(sha256sum "$run/model.safetensors" | cut -c1-64)"
  else
    say "$model: no weights (see $model.log)"
  fi
done

# -- the speed/GPU-readiness issue's checks, a minute at most (full scale) ------------------------
# benchmarks/gpu_checks.sh runs `pytest -m gpu tests/test_gpu.py` and benchmarks/bench_gpu.py;
# its files are joined into one here, to stay within 8 result files.
checks=$results/gpu-checks.log
seconds=$(($(left) - 5 < 60 ? $(left) - 5 : 60))
if [[ $scale != full ]]; then
  echo "skipped at --scale $scale (on a CPU the GPU checks only say there is no GPU)" >"$checks"
elif [[ ! -f $root/benchmarks/gpu_checks.sh ]]; then
  echo "no benchmarks/gpu_checks.sh in this tree" >"$checks"
elif ((seconds < 15)); then
  echo "skipped: ${seconds} s left" >"$checks"
else
  rm -rf "$work/checks"
  bash "$root/benchmarks/gpu_checks.sh" "$work/checks" --budget "$seconds" >/dev/null 2>&1
  say "gpu_checks.sh: exit $? in $seconds s at most"
  for file in "$work"/checks/*; do
    [[ -f $file ]] && printf '==> %s <==\n%s\n' "${file##*/}" "$(cat "$file")"
  done >"$checks"
fi
say "done: $(ls "$results" | tr '\n' ' ')"
