"""Parity with the original ``inv_conv_with_bp`` CUDA extension, case by case.

Opt-in: runs only where the module named by ``$INV_CONV_ORIGINAL`` imports (default
``inv_conv_with_bp_original``: the original built under another name, so that it does not shadow
our drop-in) and a GPU is there; everywhere else (CI) the whole file is skipped.

Every case calls the original and our drop-in ``inv_conv_with_bp`` with identical arguments:
the original's positional signatures, in-place outputs and zeroed scratch buffers, as the
original's layer passes them (the original accumulates into them). Ours must always equal the
dense float64 oracle (``inv_conv.reference``). The original is judged against the same oracle:
where it agrees, ours must equal it to round-off; where it is wrong or raises, its error is
recorded. Orders other than TL go through the research layer's calling pattern: flip the input
(and gradient) and the weight, call the TL function, flip the result back.

``INV_CONV_PARITY_TABLE=path.md`` writes the verdicts as a markdown table (docs/MIGRATION.md),
and every case with its numbers to ``path.json``.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

import inv_conv_with_bp as ours
from inv_conv import reference

from conftest import ORDERS

ORIGINAL_NAME = os.environ.get("INV_CONV_ORIGINAL", "inv_conv_with_bp_original")
original = pytest.importorskip(ORIGINAL_NAME, reason=f"the original extension ({ORIGINAL_NAME}) is not built here")

pytestmark = pytest.mark.cuda

DEVICE = "cuda"
K = 3
# Channels the original accepts (C % 4 == 0) and the square image side used for each: the dense
# oracle is a (C·S²)² matrix.
SIDE = {4: 12, 8: 12, 12: 12, 48: 8}
FLIP = {"TL": (), "TR": (3,), "BL": (2,), "BR": (2, 3)}
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
DTYPE_NAME = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16"}
# Relative error (in norm) that counts as round-off; float16/bfloat16 results are rounded to 11/8 bits.
TOL = {torch.float32: 1e-4, torch.float64: 1e-10, torch.float16: 3e-3, torch.bfloat16: 2e-2}
FUNCTIONS = ("inverse", "forward", "dy", "dw", "forward∘inverse")
WEIGHTS = ("full", "first group")

RECORDS: list[dict] = []


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def problem(channels: int, dtype: torch.dtype, weights: str = "full"):
    side = SIDE[channels]
    # B > C: the original's dw indexes the batch with the weight's output channel, so it reads
    # only B ≥ C safely; B ≠ C keeps that mix-up visible.
    batch = channels + 2
    y = torch.randn(batch, channels, side, side, device=DEVICE).to(dtype)
    # Scaled so that the inverse stays well conditioned at these sizes.
    w = torch.randn(channels, channels, K, K, device=DEVICE) / (2.0 * (channels * K * K) ** 0.5)
    if weights == "first group":
        # Only the first C/4 channels are coupled, and the anchor's upper triangle is zero: the
        # part of the weight the original reads the way the contract does.
        group = channels // 4
        keep = torch.zeros_like(w)
        keep[:group, :group] = 1.0
        keep[:, :, K - 1, K - 1] *= torch.tril(torch.ones(channels, channels, device=DEVICE))
        w = w * keep
    w = w.to(dtype)
    g = torch.randn(batch, channels, side, side, device=DEVICE).to(dtype)
    return y, w, g


def call(module, function: str, order: str, y, w, g) -> torch.Tensor:
    """``function`` of ``module`` for ``order``, by the research layer's flip pattern."""
    dims = FLIP[order]

    def flip(t):
        return torch.flip(t, dims).contiguous() if dims else t.contiguous()

    yf, wf, gf = flip(y), flip(w), flip(g)
    if function in ("inverse", "forward"):
        out = torch.zeros_like(yf)
        getattr(module, function)(yf, wf, out)
    elif function == "forward∘inverse":
        x = torch.zeros_like(yf)
        module.inverse(yf, wf, x)
        out = torch.zeros_like(yf)
        module.forward(x, wf, out)
    elif function == "dy":
        out = torch.zeros_like(gf)
        module.dy(gf, wf, torch.zeros_like(gf), out)
    else:
        b, c, h, width = yf.shape
        scratch = torch.zeros(b, c, K, K, h, width, dtype=yf.dtype, device=yf.device)
        out = torch.zeros_like(wf)
        module.dw(yf, wf, gf, scratch, out)
    return flip(out)


def oracle(function: str, order: str, y, w, g) -> torch.Tensor:
    """The contract's value in float64, from the dense reference (autograd for dy and dw)."""
    y64, w64, g64 = (t.detach().double().clone() for t in (y, w, g))
    if function == "inverse":
        return reference.inv_conv2d(y64, w64, order)
    if function == "forward":
        return reference.conv2d(y64, w64, order)
    if function == "forward∘inverse":
        return y64
    y64.requires_grad_(True)
    w64.requires_grad_(True)
    x = reference.inv_conv2d(y64, w64, order)
    dy, dw = torch.autograd.grad(x, (y64, w64), g64)
    return dy if function == "dy" else dw


def run_original(function, order, y, w, g):
    try:
        out = call(original, function, order, y, w, g)
        torch.cuda.synchronize()
        return out, None
    except RuntimeError as err:
        return None, str(err).strip().splitlines()[0][:160]


CASES = [(f, c, o, d, "full") for f in FUNCTIONS for c in sorted(SIDE) for o in ORDERS for d in DTYPES]
CASES += [(f, c, "TL", d, "first group") for f in FUNCTIONS for c in sorted(SIDE) for d in DTYPES[:2]]


@pytest.mark.parametrize(
    "function, channels, order, dtype, weights",
    [pytest.param(*case, id=f"{case[0]}-C{case[1]}-{case[2]}-{DTYPE_NAME[case[3]]}-{case[4]}") for case in CASES],
)
def test_parity(function, channels, order, dtype, weights):
    y, w, g = problem(channels, dtype, weights)
    want = oracle(function, order, y, w, g)
    got = call(ours, function, order, y, w, g)
    theirs, refusal = run_original(function, order, y, w, g)
    record = {
        "function": function,
        "C": channels,
        "side": SIDE[channels],
        "batch": y.shape[0],
        "order": order,
        "dtype": DTYPE_NAME[dtype],
        "weights": weights,
        "ours_vs_oracle": rel(got, want),
    }
    if refusal is not None:
        record.update(verdict="refuses", message=refusal)
    else:
        err = rel(theirs, want)
        record.update(original_vs_oracle=err, ours_vs_original=rel(got, theirs))
        record["verdict"] = "agrees" if err <= TOL[dtype] else "wrong"
    RECORDS.append(record)
    assert record["ours_vs_oracle"] <= TOL[dtype], f"ours vs the float64 oracle: {record['ours_vs_oracle']:.3g}"
    if record["verdict"] == "agrees":
        assert record["ours_vs_original"] <= 2 * TOL[dtype], "the original is right here, so ours must equal it"


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("channels", (4, 12))
def test_research_layer_round_trip(channels, order):
    """The research layer ``inv_flow_with_pad`` as it calls the extension: its weight is stored
    flipped for TR/BL/BR and flipped back in place on each forward, which flips the input, calls
    ``inverse`` and flips back; its ``reverse`` calls ``forward`` with no flips at all. Through our
    drop-in this composition is computed exactly (equal to the oracle of the same composition);
    its distance from the identity is the layer's own error, recorded for both modules."""
    y, w, _ = problem(channels, torch.float32)
    dims = FLIP[order]
    stored = torch.flip(w, dims) if dims else w.clone()  # as reset_parameters leaves it
    current = torch.flip(stored, dims) if dims else stored  # the in-place flip of the first forward

    def layer_round_trip(module):
        z = call(module, "inverse", "TL", torch.flip(y, dims) if dims else y, current, y)
        z = torch.flip(z, dims) if dims else z
        back = torch.zeros_like(z)
        module.forward(z.contiguous(), current, back)
        return back

    got = layer_round_trip(ours)
    # flip∘inverse_TL(·, v)∘flip = inverse_order(·, flip v), then reverse = forward_TL(·, current).
    z64 = reference.inv_conv2d(y.double(), torch.flip(current, dims).double() if dims else current.double(), order)
    want = reference.conv2d(z64, current.double(), "TL")
    assert rel(got, want) <= TOL[torch.float32]
    if order == "TL":
        assert rel(got, y) <= TOL[torch.float32]
    record = {
        "function": "layer reverse∘forward",
        "C": channels,
        "side": SIDE[channels],
        "batch": y.shape[0],
        "order": order,
        "dtype": "f32",
        "weights": "full",
        "ours_vs_identity": rel(got, y),
    }
    try:
        theirs = layer_round_trip(original)
        torch.cuda.synchronize()
        record.update(verdict="recorded", original_vs_identity=rel(theirs, y))
    except RuntimeError as err:
        record.update(verdict="refuses", message=str(err).strip().splitlines()[0][:160])
    RECORDS.append(record)


def _cell(records: list[dict]) -> str:
    verdicts = {r["verdict"] for r in records}
    if verdicts == {"wrong"}:
        return "wrong " + " / ".join(f"{r['original_vs_oracle']:.2g}" for r in records)
    if len(verdicts) == 1:
        return verdicts.pop()
    return " / ".join(
        f"wrong {r['original_vs_oracle']:.2g}" if r["verdict"] == "wrong" else r["verdict"] for r in records
    )


def _table(rows: list[dict], dtypes: tuple[str, ...]) -> list[str]:
    chans = sorted({r["C"] for r in rows})
    lines = ["| function | weights | order | " + " | ".join(f"C = {c}" for c in chans) + " |",
             "|---|---|---|" + "---|" * len(chans)]
    for weights in WEIGHTS:
        for function in FUNCTIONS:
            for order in ORDERS:
                cells = []
                for c in chans:
                    case = [r for d in dtypes for r in rows if r["dtype"] == d and r["C"] == c
                            and (r["function"], r["order"], r["weights"]) == (function, order, weights)]
                    cells.append(_cell(case) if case else "—")
                if any(cell != "—" for cell in cells):
                    lines.append(f"| {function} | {weights} | {order} | " + " | ".join(cells) + " |")
    return lines


def markdown(records: list[dict]) -> str:
    parity = [r for r in records if r["function"] in FUNCTIONS]
    sides = ", ".join(f"{c}×{s}×{s}" for c, s in sorted({(r["C"], r["side"]) for r in parity}))
    lines = [f"Shapes (C×H×W): {sides}; B = C + 2; k = 3. Cells: the original's relative error "
             "against the float64 oracle (float32 / float64), or agrees / refuses.", ""]
    for dtypes in (("f32", "f64"), ("f16", "bf16")):
        rows = [r for r in parity if r["dtype"] in dtypes]
        if rows and {r["verdict"] for r in rows} == {"refuses"}:
            lines.append(f"{' and '.join(dtypes)}: the original refuses every function and shape "
                         f"({len(rows)} cases); ours computes them in float32.")
        elif rows:
            lines.append(f"{' / '.join(dtypes)}:")
            lines.append("")
            lines += _table(rows, dtypes)
        lines.append("")
    for dtype, message in sorted({(r["dtype"], r["message"]) for r in parity if r["verdict"] == "refuses"}):
        lines.append(f"- refusal ({dtype}): `{message}`")
    worst: dict[str, float] = {}
    for r in parity:
        worst[r["dtype"]] = max(worst.get(r["dtype"], 0.0), r["ours_vs_oracle"])
    lines.append(f"- ours vs the oracle, largest relative error over all {len(parity)} cases: "
                 + ", ".join(f"{d} {e:.1e}" for d, e in worst.items()))
    layer = [r for r in records if r["function"] == "layer reverse∘forward"]
    if layer:
        lines += ["", "Research layer, `reverse(forward(x))` as `inv_flow_with_pad` calls the extension "
                  "(relative distance from x, float32):", "",
                  "| C | order | through the original | through ours |", "|---|---|---|---|"]
        for r in sorted(layer, key=lambda r: (r["C"], ORDERS.index(r["order"]))):
            theirs = "refuses" if r["verdict"] == "refuses" else f"{r['original_vs_identity']:.2g}"
            lines.append(f"| {r['C']} | {r['order']} | {theirs} | {r['ours_vs_identity']:.2g} |")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module", autouse=True)
def write_table():
    yield
    path = os.environ.get("INV_CONV_PARITY_TABLE")
    if not path or not RECORDS:
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write(markdown(RECORDS))
    with open(os.path.splitext(path)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(RECORDS, f, indent=1)
