#!/usr/bin/env bash
# Width/depth/crop sweep of the lincae-small recipe: reconstruction quality per CPU-hour.
#
#   bash benchmarks/sweep.sh DATA_DIR OUT_DIR [MINUTES] [VARIANT ...]
#
# DATA_DIR holds music/ and stems/ (training/recipes). Every variant trains configs/lincae-small.toml
# from scratch on one thread; all variants run at the same time. Phase 1 times 12 steps of each
# variant, two at a time (kept when OUT_DIR already has them); phase 2 gives each variant the
# number of steps that fills MINUTES (default 50) of one core at that speed, with the same seed,
# data, warm-up and validation clips, and validates once at half (rounded up) and once at the
# full budget. The summary (OUT_DIR/summary.tsv, also printed) lists each variant's parameters,
# steps, measured CPU seconds and its validation records (reconstruction MSS and SNR, homogeneity and additivity
# ratios). Variants: small (the shipped preset), wide, deep, crop64; default small wide deep.
set -euo pipefail
data=${1:?DATA_DIR}; out=${2:?OUT_DIR}; minutes=${3:-50}
if (($# > 3)); then order=("${@:4}"); else order=(small wide deep); fi
here=$(cd "$(dirname "$0")/.." && pwd)
config=$here/configs/lincae-small.toml
mkdir -p "$out"

declare -A variant=(
  [small]=""
  [wide]="--set model.overrides.base_channels=24 --set model.overrides.bottleneck_base_channels=192 --set model.overrides.cond_channels=96"
  [deep]="--set model.overrides.layers=[2,2,2,2,2]"
  [crop64]="--set data.crop_frames=64"
)
common=(--data "$data/music" --data "$data/stems" --set train.threads=1 --set train.checkpoint_every=100000)

train() {  # train PHASE NAME EXTRA-ARGS...
  local phase=$1 name=$2
  shift 2
  # shellcheck disable=SC2086
  /usr/bin/time -f "%U %S" -o "$out/$phase-$name.cpu" \
    lincae train "$config" "${common[@]}" ${variant[$name]} "$@" \
    --run-dir "$out/$phase-$name" >"$out/$phase-$name.log" 2>&1
}

timing=(--set train.total_steps=12 --set train.warmup_steps=2 --set train.log_every=4)
for ((i = 0; i < ${#order[@]}; i += 2)); do
  for name in "${order[@]:i:2}"; do
    [[ -s $out/time-$name.log ]] || { rm -rf "$out/time-$name"; train time "$name" "${timing[@]}" & }
  done
  wait
done

declare -A steps
for name in "${order[@]}"; do
  per_step=$(awk '/^step /{s=$(NF-1)} END{print s}' "$out/time-$name.log")
  steps[$name]=$(awk -v m="$minutes" -v s="$per_step" 'BEGIN{printf "%d", m*60/s}')
  echo "$name: $per_step s/step -> ${steps[$name]} steps"
done

for name in "${order[@]}"; do
  n=${steps[$name]}
  rm -rf "$out/sweep-$name"
  train sweep "$name" --set train.total_steps="$n" --set train.validate_every=$(((n + 1) / 2)) \
    --set train.warmup_steps=100 --set data.valid_clips=16 &
done
wait

python - "$out" "${order[@]}" <<'PY'
import json, math, sys
from pathlib import Path
from safetensors import safe_open
out, names = Path(sys.argv[1]), sys.argv[2:]
rows = ["variant\tparams_M\tstep\tsteps\tcpu_s\trecon_mss\trecon_snr_db\thomogeneity_0.5\tadditivity"]
for name in names:
    run = out / f"sweep-{name}"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["kind"] == "valid"]
    total = max(r["step"] for r in records)
    cpu = sum(float(v) for v in (out / f"sweep-{name}.cpu").read_text().split()[-2:])
    with safe_open(run / "model.safetensors", "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()) / 1e6
    for v in {r["step"]: r for r in valid}.values():
        rows.append(
            f"{name}\t{params:.2f}\t{v['step']}\t{total}\t{cpu:.0f}\t{v['recon_mss']:.3f}\t"
            f"{v['recon_snr_db']:.2f}\t{v['homogeneity_ratio_0.5']:.3f}\t{v['additivity_ratio']:.3f}"
        )
(out / "summary.tsv").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
