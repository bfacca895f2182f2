"""Release hygiene: one version source, typed packages, the install lists, licence and
citation files, and the embedded data shipped as package data."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("inv_conv", "inv_flow", "inv_conv_with_bp")


def _toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _names(requirements) -> set[str]:
    return {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_every_package_has_the_cargo_version_and_py_typed():
    import importlib

    version = _toml(ROOT / "Cargo.toml")["package"]["version"]
    assert "version" in _toml(ROOT / "pyproject.toml")["project"]["dynamic"]
    for name in PACKAGES:
        module = importlib.import_module(name)
        assert module.__version__ == version, name
        assert (Path(module.__file__).parent / "py.typed").is_file(), name
    citation = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    assert re.search(rf"^version: {re.escape(version)}$", citation, re.M)


def test_makefile_installs_what_the_extras_say():
    extras = _toml(ROOT / "pyproject.toml")["project"]["optional-dependencies"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    lists = {name: set(re.search(rf"^{name} := (.*)$", makefile, re.M).group(1).split())
             for name in ("FLOW_DEPS", "TEST_DEPS")}
    flow = _names(extras["flow"])
    assert lists["FLOW_DEPS"] == flow | {"numpy"}  # numpy: the base dependency
    assert lists["FLOW_DEPS"] | lists["TEST_DEPS"] == _names(extras["test"]) | {"numpy"}
    # `make install` (users) gets no test or build tools; the test targets do.
    assert not lists["FLOW_DEPS"] & {"pytest", "hypothesis", "maturin", "scikit-learn"}
    assert re.search(r"^test-python: install-test$", makefile, re.M)
    assert _names(extras["data"]) == {"torchvision"} and _names(extras["tb"]) == {"tensorboard"}


def test_licence_and_citation():
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    assert _toml(ROOT / "pyproject.toml")["project"]["license"] == {"text": "MIT"}
    yaml = pytest.importorskip("yaml")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    paper = citation["preferred-citation"]
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    assert [a["family-names"] for a in paper["authors"]] == ["Nagar", "Varma"]
    assert paper["year"] == 2025 and "2410.14634" in paper["url"]
    assert "AISTATS" in paper["conference"]["name"]


def test_embedded_digits_are_package_data_with_their_source():
    data = resources.files("inv_flow") / "_data"
    assert (data / "digits.u8.xz").is_file()
    assert 20_000 < len((data / "digits.u8.xz").read_bytes()) < 60_000
    notes = (data / "README.md").read_text(encoding="utf-8")
    assert "CC BY 4.0" in notes and "archive.ics.uci.edu" in notes


def test_inv_flow_names_and_submodules_load_on_first_use(tmp_path):
    import subprocess
    import sys

    code = ("import sys, inv_flow\n"
            "assert 'torch' not in sys.modules, 'import inv_flow imported torch'\n"
            "assert inv_flow.options.DEFAULTS['lr'] == 1e-3\n"
            "from inv_flow import FlowSequential, build_model\n"
            "assert inv_flow.layers.ActNorm and callable(build_model) and FlowSequential\n"
            "assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=120)
