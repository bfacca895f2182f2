"""Compiles every kernels/*.cu source with NVRTC — no GPU or driver needed — so that a syntax
error in a kernel fails CI. Uses the NVRTC that torch's pip packages bring (or a toolkit's)."""

import pytest

import inv_conv
from inv_conv import _native


def _nvrtc_path():
    try:
        from inv_conv import _cuda
    except ImportError:  # torch missing
        return None
    return _cuda.find_nvrtc()


@pytest.mark.skipif(not hasattr(_native, "compile_kernels_check"), reason="inv_conv built without the `cuda` feature")
@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
def test_every_kernel_compiles(arch):
    path = _nvrtc_path()
    _native.cuda_set_nvrtc_path(path)
    try:
        report = _native.compile_kernels_check(arch)
    except inv_conv.CudaError as e:
        if "could not be loaded" in str(e):
            pytest.skip(f"no NVRTC library found at all: {e}")
        raise
    assert report["cubin_bytes"] > 0
    assert "warning" not in report["log"].lower(), report["log"]


def _declared_entry_points() -> dict:
    """name -> parameter-type letters (p pointer, i int, l long long) of every extern "C" kernel
    declared in kernels/*.cu, macros expanded (read as text; no compiler needed)."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent / "kernels"
    text = "".join(p.read_text() for p in sorted(root.glob("*.cu"))).replace("\\\n", " ")

    def kind(param: str) -> str:
        param = param.strip()
        if "*" in param:
            return "p"
        if param.startswith(("long long", "i64")):
            return "l"
        if param.startswith("double"):
            return "d"
        assert re.match(r"(const )?int\b", param), param
        return "i"

    def entries(body: str):
        for m in re.finditer(r'extern "C" __global__ void', body):
            rest = body[m.end():]
            rest = re.sub(r"^\s*__launch_bounds__\((?:[^()]|\([^()]*\))*\)", "", rest)
            name, params = re.match(r"(?:\s*\w+)*?\s*([\w#]+)\s*\(([^)]*)\)", rest).groups()
            yield name, "".join(kind(p) for p in params.split(","))

    found = dict(entries(re.sub(r"#define.*", "", text)))
    for m in re.finditer(r"#define (\w+)\(([^)]*)\)(.*)", text):
        macro, formal, body = m.group(1), [a.strip() for a in m.group(2).split(",")], m.group(3)
        for call in re.finditer(rf"^{macro}\(([^)]*)\)\s*$", text, re.M):
            expanded = body
            for name, value in zip(formal, (v.strip() for v in call.group(1).split(","))):
                expanded = re.sub(rf"\b{name}\b", value, expanded)
            found.update(entries(expanded.replace("##", "")))
    return found


@pytest.mark.skipif(not hasattr(_native, "cuda_entry_points"), reason="inv_conv built without the `cuda` feature")
def test_launch_table_matches_the_kernel_declarations():
    declared = _declared_entry_points()
    table = dict(_native.cuda_entry_points())
    assert len(declared) >= 30
    assert table == declared
