#!/usr/bin/env bash
# Nsight Compute on the kernels of one inverse (and its adjoint) at a layer shape, with source
# lines kept (INV_CONV_LINEINFO=1), on a machine with an NVIDIA GPU and the wheel installed:
#
#   bash tools/device/ncu_sweep.sh [B C H W K] > ncu.txt
#
# Prints, for every kernel of one inverse + one inverse_adjoint call, the speed-of-light,
# occupancy, launch and warp-stall sections, then the source lines with the most stalls.
set -euo pipefail
B=${1:-64} C=${2:-12} H=${3:-32} W=${4:-32} K=${5:-3}
export INV_CONV_LINEINFO=1
script="import torch; from inv_conv import _cuda
y = torch.randn($B, $C, $H, $W, device='cuda'); w = torch.randn($C, $C, $K, $K, device='cuda') * 0.05
for _ in range(3): _cuda.inverse(y, w, 'TL'); _cuda.inverse_adjoint(y, w, 'TL')
torch.cuda.synchronize()
torch.cuda.cudart().cudaProfilerStart(); _cuda.inverse(y, w, 'TL'); _cuda.inverse_adjoint(y, w, 'TL'); torch.cuda.synchronize(); torch.cuda.cudart().cudaProfilerStop()"
ncu --profile-from-start off --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section SchedulerStats --section SourceCounters \
    python3 -c "$script"
