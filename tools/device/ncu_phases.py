"""Where a kernel's warps wait, phase by phase: reads the SASS source page of an Nsight Compute
report (`ncu -i REPORT --page source --csv --print-source sass`) on stdin and sums the warp-stall
samples of the instructions between block barriers (BAR.SYNC), so that each phase of a kernel
whose phases end in __syncthreads() gets its share.

    ncu -i r.ncu-rep --page source --csv --print-source sass | python tools/device/ncu_phases.py
"""

from __future__ import annotations

import csv
import sys


def main():
    rows = list(csv.reader(sys.stdin))
    head_i = next(i for i, r in enumerate(rows) if any("Source" in c for c in r))
    head = rows[head_i]
    src = next(i for i, c in enumerate(head) if c.strip() == "Source")
    samp = next((i for i, c in enumerate(head) if "Warp Stall Sampling (All" in c), None)
    if samp is None:
        print("columns:", head)
        return
    body = [r for r in rows[head_i + 1:] if len(r) > max(src, samp)]

    def count(r):
        try:
            return float(r[samp] or 0)
        except ValueError:
            return 0.0

    total = sum(count(r) for r in body) or 1.0
    print(f"{len(body)} instructions, {total:.0f} stall samples")
    seg, seg_n, first = 0.0, 0, None
    for r in body:
        first = first or r[src].strip()
        seg += count(r)
        seg_n += 1
        if "BAR.SYNC" in r[src] or r is body[-1]:
            print(f"{100 * seg / total:5.1f}%  {seg_n:5d} instr  from: {first[:60]}  to: {r[src].strip()[:40]}")
            seg, seg_n, first = 0.0, 0, None
    print("top instructions:")
    for r in sorted(body, key=count, reverse=True)[:20]:
        print(f"{100 * count(r) / total:5.1f}%  {r[src].strip()[:90]}")


if __name__ == "__main__":
    main()
