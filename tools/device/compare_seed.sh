#!/usr/bin/env bash
# One seed of issue 14's side-by-side comparison on a GPU (one device call each, so that the
# three seeds fit the 10-minute call limit), with the wheel built beforehand:
#
#   bash tools/device/compare_seed.sh SEED [DATASET ...]     # DATASET: digits, photo_crops
#
# Writes $OUT/compare_<dataset>_seed<SEED>/ (default OUT=./device_logs). Afterwards, on any
# machine, pool the seeds into one report:
#
#   python -m inv_flow.compare --merge A/compare_digits_seed1 B/compare_digits_seed2 ...
set -uo pipefail
SEED="${1:?usage: compare_seed.sh SEED [digits] [photo_crops]}"
shift
DATASETS=("${@:-digits photo_crops}")
OUT="${OUT:-./device_logs}"
MODELS=inverse_flow,inverse_flow_1x1,finc_flow,glow
declare -A EPOCHS=([digits]=20 [photo_crops]=10)
export PYTHONUNBUFFERED=1
for dataset in ${DATASETS[*]}; do
    python3 -m inv_flow.compare --preset "$dataset" --epochs "${EPOCHS[$dataset]}" \
        --seed "$SEED" --models "$MODELS" --device cuda --set compile=off \
        --out-dir "$OUT/compare_${dataset}_seed$SEED" 2>&1 | tee "$OUT/compare_${dataset}_seed$SEED.log"
done
