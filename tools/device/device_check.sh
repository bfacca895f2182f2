#!/usr/bin/env bash
# The whole GPU check in one call on a machine with an NVIDIA GPU, from the repository root,
# with the wheel built beforehand (`maturin build --release -o dist`):
#
#   bash tools/device/device_check.sh
#
# Installs the wheel, then runs the CUDA tests, compute-sanitizer (memcheck) on the tiled
# kernels' tests, the GPU benchmark, the core demo, the DDP/NCCL smoke run, a short GPU
# training run on the embedded digits and the model comparison on 32×32 digits. Each step's
# full log goes to $LOGS (default ./device_logs); a summary is printed last. When $LOGS is set
# (the device tool's result folder, which takes few files), the logs are gathered there too.
set -uo pipefail
LOGS="${LOGS:-./device_logs}"
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
summary=()

step() {  # step NAME COMMAND...: run, keep the log, remember the exit status and last line
    local name="$1"
    shift
    echo "=== $name: $*"
    "$@" >"$LOGS/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$LOGS/$name.log"
    summary+=("$name: exit $rc | $(grep -v '^\s*$' "$LOGS/$name.log" | tail -n 1 | cut -c1-150)")
    if [ -n "${OUT:-}" ]; then  # gather as we go, so a run cut short still returns its logs
        { echo "##### $name (exit $rc)"; cat "$LOGS/$name.log"; } >>"$OUT/all_logs.txt"
    fi
}

python3 -m pip install --no-deps --no-index --force-reinstall dist/*.whl >"$LOGS/install.log" 2>&1 \
    || { tail "$LOGS/install.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$LOGS/gpu.txt"

step cuda_tests python3 -m pytest tests/test_cuda.py tests/test_kernels_compile.py -q
step gpu_bench python3 benches/gpu_bench.py --reps 50
step race_probe python3 tools/device/race_probe.py --runs 20
step ddp_smoke bash tools/device/ddp_gpu_smoke.sh
step train_gpu python3 -m inv_flow train --preset digits --set device=cuda --set epochs=20 \
    --set progress=false --set output_dir="$LOGS/train" --set checkpoint_path="$LOGS/train/best.tar"
step compare_gpu python3 -m inv_flow compare --preset digits --models inverse_flow,finc_flow,glow,snf \
    --epochs 3 --device cuda --set image_shape=1,32,32 --set pad_to=32,32 --out-dir "$LOGS/compare" --quiet
step demo python3 examples/demo.py
# The sanitizers are slow: bounded, and last.
step racecheck timeout 100 compute-sanitizer --tool racecheck --error-exitcode 9 \
    python3 -m pytest tests/test_cuda.py -q -x -k "256x256 and TL"
step memcheck timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 \
    python3 -m pytest tests/test_cuda.py -q -x -k "tile or fused or deterministic"

echo "=== summary"
printf '%s\n' "${summary[@]}" | tee "$LOGS/summary.txt"
if [ -n "${OUT:-}" ]; then
    cp "$LOGS/summary.txt" "$LOGS/gpu_bench.log" "$OUT/" 2>/dev/null
    cp "$LOGS"/compare/compare.md "$LOGS"/compare/compare.csv "$LOGS"/compare/compare_bpd.png "$OUT/" 2>/dev/null
    ls "$LOGS"/train/samples/*.png 2>/dev/null | tail -n 1 | xargs -r -I{} cp {} "$OUT/train_samples_last.png"
fi
