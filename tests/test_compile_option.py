"""The ``compile`` training option: torch.compile of the loss after ActNorm's init, identical
training to eager, one warning and an eager fallback when compiling fails, clear config errors."""

from __future__ import annotations

import pytest
import torch

from inv_flow.compiled import compile_mode
from inv_flow.config import ConfigError

from test_experiment import make_config, make_experiment, random_splits


def _with_backend(backend):
    """torch.compile with a given backend whatever mode is asked (inductor compiles C++ on the
    CPU for minutes; aot_eager traces the same graph, forward and backward, in seconds)."""
    real = torch.compile
    modes = []

    def fake(fn, mode=None, **kwargs):
        modes.append(mode)
        return real(fn, backend=backend)

    return fake, modes


def _train(tmp_path, monkeypatch, compile_value, compiler=None):
    if compiler is not None:
        monkeypatch.setattr(torch, "compile", compiler)
    torch.manual_seed(0)
    exp = make_experiment(tmp_path / compile_value, random_splits(), compile=compile_value, epochs=2)
    exp.train()
    return exp, [p.detach().clone() for p in exp.model.parameters()]


def test_compiled_training_matches_eager(tmp_path, monkeypatch):
    _, eager = _train(tmp_path, monkeypatch, "off")
    compiler, modes = _with_backend("aot_eager")
    exp, compiled = _train(tmp_path, monkeypatch, "default", compiler)
    assert modes == ["default"]  # compiled once, after ActNorm's data-dependent init
    assert exp.compile_mode == "default"
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_compiler_failure_warns_once_and_training_goes_on_eagerly(tmp_path, monkeypatch):
    _, eager = _train(tmp_path, monkeypatch, "off")

    def broken(fn, mode=None, **kwargs):
        def call(*args):
            raise RuntimeError("backend exploded\nsecond line")
        return call

    with pytest.warns(RuntimeWarning, match="compile=default failed .*backend exploded") as record:
        exp, params = _train(tmp_path, monkeypatch, "default", broken)
    assert len([w for w in record if "compile=" in str(w.message)]) == 1
    assert exp.compile_mode == "off"
    for a, b in zip(eager, params):
        torch.testing.assert_close(a, b)


def test_auto_is_off_on_the_cpu_and_reduce_overhead_on_cuda():
    assert compile_mode("auto", torch.device("cpu")) == "off"
    assert compile_mode("auto", torch.device("cuda", 0)) == "reduce-overhead"
    assert compile_mode("default", torch.device("cpu")) == "default"


def test_bad_compile_value_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="compile must be one of off, default, reduce-overhead, auto"):
        make_config(tmp_path, compile="fast")
