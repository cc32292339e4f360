#!/usr/bin/env bash
# Width/depth/crop sweep of the lincae-small recipe: reconstruction quality per CPU-hour.
#
#   bash benchmarks/sweep.sh DATA_DIR OUT_DIR [MINUTES]
#
# DATA_DIR holds music/ and stems/ (training/recipes). Every variant trains configs/lincae-small.toml
# from scratch on one thread, two variants at a time. Phase 1 times 12 steps of each variant; phase 2
# gives each the number of steps that fills MINUTES (default 20) of one core at that speed, with the
# same seed, data, warm-up and validation clips, and validates once at the end. The summary
# (OUT_DIR/summary.tsv, also printed) lists each variant's parameters, steps, CPU seconds and its
# final validation record (reconstruction MSS, homogeneity and additivity ratios).
set -euo pipefail
data=${1:?DATA_DIR}; out=${2:?OUT_DIR}; minutes=${3:-20}
here=$(cd "$(dirname "$0")/.." && pwd)
config=$here/configs/lincae-small.toml
mkdir -p "$out"

declare -A variant=(
  [small]=""
  [wide]="--set model.overrides.base_channels=24 --set model.overrides.bottleneck_base_channels=192 --set model.overrides.cond_channels=96"
  [deep]="--set model.overrides.layers=[2,2,2,2,2]"
  [crop64]="--set data.crop_frames=64"
)
order=(small crop64 wide deep)
common=(--data "$data/music" --data "$data/stems" --set train.threads=1 --set train.checkpoint_every=100000)

run_pairs() {  # run_pairs PHASE EXTRA-ARGS-FUNCTION
  local phase=$1 make_args=$2 i name
  for ((i = 0; i < ${#order[@]}; i += 2)); do
    for name in "${order[@]:i:2}"; do
      # shellcheck disable=SC2086
      /usr/bin/time -f "%U %S" -o "$out/$phase-$name.cpu" \
        lincae train "$config" "${common[@]}" ${variant[$name]} $($make_args "$name") \
        --run-dir "$out/$phase-$name" >"$out/$phase-$name.log" 2>&1 &
    done
    wait
  done
}

timing_args() { echo "--set train.total_steps=12 --set train.warmup_steps=2 --set train.log_every=4 --set train.validate_every=100000"; }
rm -rf "$out"/time-*
run_pairs time timing_args

declare -A steps
for name in "${order[@]}"; do
  per_step=$(awk '/^step /{s=$(NF-1)} END{print s}' "$out/time-$name.log")
  steps[$name]=$(awk -v m="$minutes" -v s="$per_step" 'BEGIN{printf "%d", m*60/s}')
  echo "$name: $per_step s/step -> ${steps[$name]} steps"
done

sweep_args() {
  local n=${steps[$1]}
  echo "--set train.total_steps=$n --set train.validate_every=$n --set train.warmup_steps=50 --set data.valid_clips=16"
}
run_pairs sweep sweep_args

python - "$out" "${order[@]}" <<'PY'
import json, math, sys
from safetensors import safe_open
from pathlib import Path
out, names = Path(sys.argv[1]), sys.argv[2:]
rows = ["variant\tparams_M\tsteps\tcpu_s\trecon_mss\trecon_snr_db\thomogeneity_0.5\tadditivity"]
for name in names:
    run = out / f"sweep-{name}"
    valid = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"valid"' in l][-1]
    cpu = sum(float(v) for v in (out / f"sweep-{name}.cpu").read_text().split()[-2:])
    with safe_open(run / "model.safetensors", "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()) / 1e6
    rows.append(f"{name}\t{params:.2f}\t{valid['step']}\t{cpu:.0f}\t{valid['recon_mss']:.3f}\t"
                f"{valid['recon_snr_db']:.2f}\t{valid['homogeneity_ratio_0.5']:.3f}\t{valid['additivity_ratio']:.3f}")
(out / "summary.tsv").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
