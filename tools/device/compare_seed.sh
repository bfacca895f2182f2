#!/usr/bin/env bash
# One seed of issue 14's side-by-side comparison on a GPU (one device call each, so that the
# three seeds fit the 10-minute call limit), with the wheel built beforehand:
#
#   bash tools/device/compare_seed.sh SEED [DATASET ...]     # DATASET: digits, photo_crops
#
# Writes $RESULTS/compare_<dataset>_seed<SEED>/ and its log (default RESULTS=./device_logs).
# When $OUT is set (the device tool's result folder, which returns only a few files), the
# results also go there as one archive, compare_seed<SEED>.tgz. Afterwards, on any machine,
# pool the seeds into one report:
#
#   python -m inv_flow.compare --merge A/compare_digits_seed1 B/compare_digits_seed2 ...
set -uo pipefail
SEED="${1:?usage: compare_seed.sh SEED [digits] [photo_crops]}"
shift
DATASETS=("${@:-digits photo_crops}")
RESULTS="${RESULTS:-./device_logs}"
MODELS=inverse_flow,inverse_flow_1x1,finc_flow,glow
declare -A EPOCHS=([digits]=20 [photo_crops]=10)
export PYTHONUNBUFFERED=1
mkdir -p "$RESULTS"
for dataset in ${DATASETS[*]}; do
    python3 -m inv_flow.compare --preset "$dataset" --epochs "${EPOCHS[$dataset]}" \
        --seed "$SEED" --models "$MODELS" --device cuda --set compile=off \
        --out-dir "$RESULTS/compare_${dataset}_seed$SEED" 2>&1 | tee "$RESULTS/compare_${dataset}_seed$SEED.log"
    if [ -n "${OUT:-}" ]; then  # after each dataset, so a call cut short keeps what finished
        tar -C "$RESULTS" -czf "$OUT/compare_seed$SEED.tgz" .
    fi
done
