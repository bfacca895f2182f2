#!/usr/bin/env bash
# DDP smoke check on a GPU machine (one GPU is enough): NCCL under torchrun.
#
#   bash tools/device/ddp_gpu_smoke.sh       # from the repository root
#
# Needs torch with CUDA + NCCL and the inv_conv wheel (built with CUDA).  inv_flow is taken
# from this checkout when it is not installed.  No network, no dataset download (the digits
# ship inside inv_flow), ~1 minute.
#
# 1. inv_conv ops inside a torchrun rank: device cuda:LOCAL_RANK, on a non-default stream, vs the
#    CPU (forward, inverse and the backward of the inverse).
# 2. `torchrun --nproc_per_node=NPROC -m inv_flow train --preset digits` with NCCL: a few steps,
#    ActNorm init / evaluation / RNG gathering through NCCL collectives, rank-0 checkpoint.
# 3. `--resume` of that checkpoint under torchrun for one more epoch.
# At the end it prints a block to paste into the README.
# SMOKE_DEVICE=cpu runs steps 2-3 with gloo on the CPU (to check this script without a GPU).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
NPROC="${NPROC:-1}"
SMOKE_DEVICE="${SMOKE_DEVICE:-cuda}"
if [ "$SMOKE_DEVICE" = cpu ]; then BACKEND=gloo; else BACKEND=nccl; fi
export NCCL_NVLS_ENABLE=0          # NVLink multicast stays off on the shared GPU hosts
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ddp_smoke.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

if ! "$PYTHON" -c "import inv_flow" 2>/dev/null; then
    # Link inv_flow alone, so that the installed inv_conv (with CUDA) is the one imported.
    mkdir -p "$WORK/py"
    ln -s "$REPO/python/inv_flow" "$WORK/py/inv_flow"
    export PYTHONPATH="$WORK/py${PYTHONPATH:+:$PYTHONPATH}"
fi

torchrun_cmd() {  # torchrun, or the same launcher through the interpreter
    local port
    port="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    if command -v torchrun >/dev/null 2>&1; then
        torchrun --nproc_per_node="$NPROC" --nnodes=1 --master_addr=127.0.0.1 --master_port="$port" "$@"
    else
        "$PYTHON" -m torch.distributed.run --nproc_per_node="$NPROC" --nnodes=1 \
            --master_addr=127.0.0.1 --master_port="$port" "$@"
    fi
}

echo "== environment"
"$PYTHON" - "$SMOKE_DEVICE" <<'EOF' | tee "$WORK/env.txt"
import sys
import torch, inv_conv, inv_flow
from inv_flow.data import raw_digits
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, NCCL "
      f"{'.'.join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else 'n/a'}, "
      f"{torch.cuda.device_count()} GPU(s): "
      f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
print(f"inv_conv {inv_conv.__version__} ({inv_conv.__file__}), cuda_available={inv_conv.cuda_available()}; "
      f"inv_flow from {inv_flow.__file__}; embedded digits {raw_digits().shape}")
if sys.argv[1] != "cpu" and not (torch.cuda.is_available() and inv_conv.cuda_available()):
    raise SystemExit("no usable GPU / inv_conv without CUDA: this check needs both")
EOF

if [ "$SMOKE_DEVICE" = cpu ]; then
    echo "(SMOKE_DEVICE=cpu: skipping the CUDA op check)" > "$WORK/ops.log"
else
echo "== 1. inv_conv ops in each rank (own device, non-default stream)"
cat > "$WORK/rank_ops.py" <<'EOF'
import os
import torch
import torch.distributed as dist
import inv_conv

local_rank = int(os.environ["LOCAL_RANK"])
device = torch.device("cuda", local_rank)
torch.cuda.set_device(device)
os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
dist.init_process_group("nccl", device_id=device)
rank = dist.get_rank()
generator = torch.Generator().manual_seed(rank)
y = torch.randn(4, 12, 16, 16, dtype=torch.float64, generator=generator)
# Scaled so that A⁻¹ stays well conditioned (with entries ~0.3 the inverse grows like 3^(H+W)
# and A(A⁻¹y) = y cannot hold to 1e-9 in any precision).
w = torch.randn(12, 12, 3, 3, dtype=torch.float64, generator=generator) * (0.3 / (12 * 9) ** 0.5)
stream = torch.cuda.Stream(device)
worst = 0.0
with torch.cuda.stream(stream):
    for order in inv_conv.ORDERS:
        yc = y.to(device).requires_grad_()
        wc = w.to(device).requires_grad_()
        x = inv_conv.inv_conv2d(yc, wc, order)
        back = inv_conv.conv2d(x, wc, order)
        (x * x).sum().backward()
        yr, wr = y.clone().requires_grad_(), w.clone().requires_grad_()
        xr = inv_conv.inv_conv2d(yr, wr, order)
        (xr * xr).sum().backward()
        stream.synchronize()
        for got, want in ((x, xr), (back, y), (yc.grad, yr.grad), (wc.grad, wr.grad)):
            err = float((got.detach().cpu() - want).abs().max() / want.abs().max().clamp_min(1e-30))
            worst = max(worst, err)
result = torch.tensor([worst], device=device)
dist.all_reduce(result, op=dist.ReduceOp.MAX)
print(f"rank {rank}/{dist.get_world_size()}: inv_conv forward/inverse/backward on {device}, "
      f"stream {stream.cuda_stream:#x}, max relative |cuda - cpu| = {worst:.1e} "
      f"(all ranks: {result.item():.1e})", flush=True)
assert result.item() < 1e-9, "CUDA results differ from the CPU"
dist.destroy_process_group()
EOF
(cd "$WORK" && torchrun_cmd "$WORK/rank_ops.py") 2>&1 | tee "$WORK/ops.log"
fi

SETTINGS=(--set epochs=1 --set device="$SMOKE_DEVICE" --set dist_backend="$BACKEND" --set val_fraction=0.9
          --set batch_size=60 --set max_eval_ex=500 --set sample_epochs=0 --set progress=false
          --set tensorboard=false --set name=ddp_smoke --set output_dir=runs/ddp_smoke
          --set checkpoint_path=ddp_smoke_best.tar)
echo "== 2. torchrun --nproc_per_node=$NPROC -m inv_flow train ($BACKEND)"
(cd "$WORK" && time torchrun_cmd -m inv_flow train --preset digits "${SETTINGS[@]}") 2>&1 | tee "$WORK/train.log"

echo "== 3. resume under torchrun for one more epoch"
(cd "$WORK" && torchrun_cmd -m inv_flow train --resume runs/ddp_smoke/last_checkpoint.tar --set epochs=2) \
    2>&1 | tee "$WORK/resume.log"
"$PYTHON" - "$WORK/runs/ddp_smoke/last_checkpoint.tar" <<'EOF' | tee "$WORK/ckpt.txt"
import sys, torch
payload = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
print(f"last checkpoint: epoch {payload['epoch']}, step {payload['step']}, "
      f"world_size {payload['world_size']}, per-rank RNG states {len(payload['rng_ranks'])}")
EOF

cat <<EOF

==================== paste into README (Distributed training: GPU check) ====================
\`\`\`
\$ NCCL_NVLS_ENABLE=0 torchrun --nproc_per_node=$NPROC -m inv_flow train --preset digits \\
    ${SETTINGS[*]}
$(grep -E "parameters, |^\[epoch\]|^done:" "$WORK/train.log")
\$ NCCL_NVLS_ENABLE=0 torchrun --nproc_per_node=$NPROC -m inv_flow train --resume runs/ddp_smoke/last_checkpoint.tar --set epochs=2
$(grep -E "^\[epoch\]|^done:" "$WORK/resume.log")
$(cat "$WORK/ckpt.txt")
\`\`\`
$(cat "$WORK/env.txt")
$(grep -E "^rank " "$WORK/ops.log")
=============================================================================================
EOF
if [ -n "${OUT:-}" ]; then cp "$WORK"/*.log "$WORK"/*.txt "$OUT"/ 2>/dev/null || true; fi
