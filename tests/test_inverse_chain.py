"""``inv_conv2d_chain``: a chain of inverses as one op (an Inverse-Flow unit's density
direction; on CUDA, for the presets' shapes, a solve launch per layer that starts while the
layer before still solves, and the layers' weight-gradients in one launch), against the
per-layer ops bit for bit and against the dense float64 oracle."""

import pytest
import torch

import oracle
from conftest import ORDERS
from inv_conv import InvFlowUnit, _dispatch, ops

# (B, C, H, W): the CUDA one-launch shapes (C = 12 and 24, whole image in one block, odd and
# non-square), then shapes it does not take (C = 5; an image too large for one block).
CHAIN_SHAPES = [(3, 12, 16, 16), (2, 12, 7, 9), (4, 24, 8, 8), (2, 24, 5, 11), (2, 5, 6, 7), (1, 12, 96, 80)]
# Orders of a chain: the unit's, reversed, repeated, and short chains.
CHAIN_ORDERS = [list(ORDERS), ["BR", "BL", "TR", "TL"], ["TR", "TR", "BL"], ["BL"], ["TL", "BR"]]


def _problem(shape, n, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    b, c, h, w = shape
    y = torch.randn(b, c, h, w, dtype=dtype, generator=g)
    # Entries ~0.5/√(9C): the solves stay finite over the largest image (NaN ≠ NaN).
    weights = [torch.randn(c, c, 3, 3, dtype=dtype, generator=g) * (0.5 / (9 * c) ** 0.5) for _ in range(n)]
    return y.to(device), [w.to(device) for w in weights]


def _layer_by_layer(y, weights, orders):
    for w, order in zip(weights, orders):
        y = ops.inv_conv2d(y, w, order)
    return y


def _grads(fn, y, weights, orders, g):
    y = y.detach().requires_grad_()
    weights = [w.detach().requires_grad_() for w in weights]
    out = fn(y, weights, orders)
    return (out.detach(), *torch.autograd.grad(out, [y, *weights], g))


def _skip_large_on_cpu(shape, device):
    if device == "cpu" and shape[2] * shape[3] > 1000:
        pytest.skip("the large-image case is for the CUDA fallback; slow on the CPU")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("orders", CHAIN_ORDERS, ids=lambda o: "-".join(o))
@pytest.mark.parametrize("shape", CHAIN_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_chain_is_bitwise_the_layer_by_layer_ops(shape, orders, dtype, device):
    _skip_large_on_cpu(shape, device)
    y, weights = _problem(shape, len(orders), dtype, device, seed=len(orders) + shape[1])
    g = torch.randn_like(y)
    ref = _grads(_layer_by_layer, y, weights, orders, g)
    assert all(t.isfinite().all() for t in ref)
    got = _grads(ops.inv_conv2d_chain, y, weights, orders, g)
    for name, a, b in zip(["x", "grad y", *[f"grad w{i}" for i in range(len(orders))]], got, ref):
        assert torch.equal(a, b), f"{name}: differs from the per-layer ops (max |d| {(a - b).abs().max().item():.3g})"
    with torch.no_grad():  # the no-grad path too
        assert torch.equal(ops.inv_conv2d_chain(y, weights, orders), ref[0])


@pytest.mark.parametrize("shape", [(2, 12, 6, 5), (1, 3, 4, 7)], ids=lambda s: "x".join(map(str, s)))
def test_chain_matches_the_dense_float64_oracle(shape, device):
    y, weights = _problem(shape, 4, torch.float64, device, seed=7)
    g = torch.randn_like(y)

    def dense(y, weights, orders):
        for w, order in zip(weights, orders):
            y = oracle.inv_conv2d(y, w, order)
        return y

    ref = _grads(dense, y.cpu(), [w.cpu() for w in weights], list(ORDERS), g.cpu())
    got = _grads(ops.inv_conv2d_chain, y, weights, list(ORDERS), g)
    for a, b in zip(got, ref):
        assert oracle.rel(a.cpu(), b) < 1e-12


@pytest.mark.cuda
@pytest.mark.parametrize("pdl", ["1", "0"], ids=["programmatic", "serial"])
@pytest.mark.parametrize("lanes", ["1", "2", "4", "8"])
@pytest.mark.parametrize("shape", [(3, 12, 16, 16), (2, 24, 9, 7)], ids=lambda s: "x".join(map(str, s)))
def test_every_one_launch_variant_chains_bitwise(shape, lanes, pdl, monkeypatch):
    """Each solve_regs variant (INV_CONV_SOLVE_TSPLIT picks it) chains, with its later layers
    launched programmatically or not (INV_CONV_PDL)."""
    monkeypatch.setenv("INV_CONV_SOLVE_TSPLIT", lanes)
    monkeypatch.setenv("INV_CONV_PDL", pdl)
    y, weights = _problem(shape, 4, torch.float32, "cuda", seed=int(lanes))
    g = torch.randn_like(y)
    ref = _grads(_layer_by_layer, y, weights, list(ORDERS), g)
    got = _grads(ops.inv_conv2d_chain, y, weights, list(ORDERS), g)
    for a, b in zip(got, ref):
        assert torch.equal(a, b)


@pytest.mark.cuda
@pytest.mark.parametrize("weights_written_first", [False, True], ids=["plain", "weights-updated-in-graph"])
def test_chain_in_a_cuda_graph_replays_bitwise_with_new_inputs(weights_written_first):
    """Captured (as torch.compile's reduce-overhead mode does), the programmatic launches of a
    chain and its backward replay with fresh inputs to the per-layer ops' values, bit for bit,
    also when a kernel right before the chain rewrites its weights in place."""
    shape, orders = (16, 12, 16, 16), list(ORDERS)
    y, weights = _problem(shape, 4, torch.float32, "cuda", seed=21)
    ys, ws = y.clone().requires_grad_(), [w.clone().requires_grad_() for w in weights]
    gs, delta = torch.randn_like(y), torch.zeros_like(weights[0])

    def step():
        if weights_written_first:
            with torch.no_grad():
                for w in ws:
                    w.add_(delta)
        out = ops.inv_conv2d_chain(ys, ws, orders)
        return (out, *torch.autograd.grad(out, [ys, *ws], gs))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    for seed in range(3):
        y2, w2 = _problem(shape, 4, torch.float32, "cuda", seed=100 + seed)
        g2 = torch.randn_like(y2)
        d2 = torch.randn_like(delta) * 1e-3
        with torch.no_grad():
            ys.copy_(y2)
            gs.copy_(g2)
            delta.copy_(d2 if weights_written_first else torch.zeros_like(d2))
            for w, new in zip(ws, w2):
                w.copy_(new)
        graph.replay()
        torch.cuda.synchronize()
        w_used = [w + d2 for w in w2] if weights_written_first else w2
        ref = _grads(_layer_by_layer, y2, w_used, orders, g2)
        for name, a, b in zip(["x", "grad y", "grad w0", "grad w1", "grad w2", "grad w3"], captured, ref):
            assert torch.equal(a, b), f"replay {seed}: {name} differs from the per-layer ops"


@pytest.mark.cuda
def test_the_unit_trains_with_one_solve_launch_per_layer_and_one_weight_gradient():
    from torch.profiler import ProfilerActivity, profile

    unit = InvFlowUnit(12, init_std=0.1).cuda()
    x = torch.randn(8, 12, 16, 16, device="cuda", requires_grad=True)
    unit(x)[0].sum().backward()  # compiles the kernels outside the profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        z, _ = unit(x)
        z.backward(torch.ones_like(z))
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    ours = [n for n in names if n.startswith(("solve_", "wgrad_", "prepare_", "channel_mix", "sweep_"))]
    # Four solves forward, four adjoint solves backward, the four weight-gradients in one
    # launch and one reduction.
    assert sorted(ours) == sorted(["solve_regs_c12_t4_o4_f32"] * 8 + ["wgrad_partial_f32", "wgrad_reduce_f32"]), names


@pytest.mark.parametrize("needs", ["y", "weights", "both"])
def test_chain_gradients_when_only_some_inputs_need_them(needs, device):
    y, weights = _problem((2, 12, 5, 6), 4, torch.float32, device, seed=3)
    y.requires_grad_(needs in ("y", "both"))
    for w in weights:
        w.requires_grad_(needs in ("weights", "both"))
    wanted = [t for t in (y, *weights) if t.requires_grad]
    g = torch.randn_like(y)
    got = torch.autograd.grad(ops.inv_conv2d_chain(y, weights, list(ORDERS)), wanted, g)
    ref = torch.autograd.grad(_layer_by_layer(y, weights, list(ORDERS)), wanted, g)
    assert all(torch.equal(a, b) for a, b in zip(got, ref))


def test_chain_double_backward(device):
    y, weights = _problem((1, 3, 4, 3), 4, torch.float64, device, seed=5)
    inputs = (y.requires_grad_(), *[w.requires_grad_() for w in weights])
    assert torch.autograd.gradgradcheck(lambda y, *ws: ops.inv_conv2d_chain(y, list(ws), list(ORDERS)), inputs)


def test_chain_under_torch_compile_is_one_op_and_matches_eager(device, monkeypatch):
    torch._dynamo.reset()
    y, weights = _problem((2, 12, 8, 7), 4, torch.float32, device, seed=9)
    g = torch.randn_like(y)
    ref = _grads(ops.inv_conv2d_chain, y, weights, list(ORDERS), g)
    calls = []
    for name in ("run_inverse_chain", "run_inverse_chain_backward"):
        run = getattr(_dispatch, name)
        monkeypatch.setattr(_dispatch, name, lambda *a, __run=run, __name=name: calls.append(__name) or __run(*a))
    got = _grads(torch.compile(ops.inv_conv2d_chain, fullgraph=True), y, weights, list(ORDERS), g)
    assert all(torch.equal(a, b) for a, b in zip(got, ref))
    assert calls == ["run_inverse_chain", "run_inverse_chain_backward"], "the compiled graph did not use the chain ops"


def test_chain_under_torch_func_and_forward_ad_uses_the_layer_ops():
    y, weights = _problem((1, 4, 3, 5), 4, torch.float64, "cpu", seed=11)
    fn = lambda y: ops.inv_conv2d_chain(y, weights, list(ORDERS))  # noqa: E731
    jac = torch.func.jacfwd(fn)(y)
    ref = torch.func.jacrev(lambda y: _layer_by_layer(y, weights, list(ORDERS)))(y)
    assert torch.allclose(jac, ref, rtol=1e-12, atol=1e-12)
    batched = torch.func.vmap(fn)(y.unsqueeze(0).expand(3, -1, -1, -1, -1))
    assert torch.equal(batched[1], fn(y))


def test_chain_of_more_than_four_layers_and_low_precision(device):
    orders = [*ORDERS, "TR", "BL"]
    y, weights = _problem((2, 12, 6, 6), len(orders), torch.float32, device, seed=13)
    assert torch.equal(ops.inv_conv2d_chain(y, weights, orders), _layer_by_layer(y, weights, orders))
    half = ops.inv_conv2d_chain(y.half(), [w.half() for w in weights[:4]], list(ORDERS))
    assert half.dtype == torch.float16
    ref = _layer_by_layer(y.half().float(), [w.half().float() for w in weights[:4]], list(ORDERS))
    assert torch.equal(half, ref.half())


def test_unit_forward_is_the_chain_and_matches_its_layers(device):
    torch.manual_seed(1)
    unit = InvFlowUnit(12, init_std=0.05).to(device)
    x = torch.randn(2, 12, 7, 5, device=device, requires_grad=True)
    z, logdet = unit(x)
    ref = x
    for layer in unit.layers:
        ref, _ = layer(ref)
    assert torch.equal(z, ref) and torch.equal(logdet, torch.zeros(2, device=device))
    g = torch.randn_like(z)
    got = torch.autograd.grad(z, [x, *unit.parameters()], g)
    want = torch.autograd.grad(ref, [x, *unit.parameters()], g)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert oracle.rel(unit.reverse(z), x) < 1e-5


@pytest.mark.parametrize("bad, match", [
    (lambda y, ws: ops.inv_conv2d_chain(y, ws[:2], ["TL"]), "weights and orders"),
    (lambda y, ws: ops.inv_conv2d_chain(y, [], []), "weights and orders"),
    (lambda y, ws: ops.inv_conv2d_chain(y, ws, ["TL", "TR", "XX", "BR"]), "order"),
    (lambda y, ws: ops.inv_conv2d_chain(y, [ws[0], ws[1][:6]], ["TL", "TR"]), "weights"),
    (lambda y, ws: ops.inv_conv2d_chain(y[0], ws, list(ORDERS)), "y"),
    (lambda y, ws: ops.inv_conv2d_chain(y, [ws[0].double(), *ws[1:]], list(ORDERS)), "dtype"),
    (lambda y, ws: ops.inv_conv2d_chain(y, [ws[0].int(), *ws[1:]], list(ORDERS)), "weights\\[0\\]"),
])
def test_chain_bad_input_raises_naming_the_argument(bad, match):
    y, weights = _problem((2, 12, 5, 5), 4, torch.float32, "cpu", seed=0)
    with pytest.raises((ValueError, TypeError), match=match):
        bad(y, weights)



def test_unit_chain_switch_runs_the_layers_one_by_one(monkeypatch):
    calls = []
    run = _dispatch.run_inverse_chain
    monkeypatch.setattr(_dispatch, "run_inverse_chain", lambda *a: calls.append(1) or run(*a))
    unit = InvFlowUnit(4, init_std=0.1)
    x = torch.randn(2, 4, 5, 6)
    z, _ = unit(x)
    assert calls == [1]
    monkeypatch.setenv("INV_CONV_UNIT_CHAIN", "0")
    assert torch.equal(unit(x)[0], z) and calls == [1]
