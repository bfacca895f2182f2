# One-command set-up on a fresh machine: every target installs what it needs first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PY_DEPS := torch numpy pytest hypothesis maturin scikit-learn tqdm matplotlib pillow

.PHONY: install dev test test-rust test-python lint train demo bench bench-gpu clean

# A regular (non-editable) install: the tests then run against exactly what users get from
# `pip install .`, so a package missing from the wheel fails them.
install:
	$(PIP) install --quiet $(PY_DEPS)
	$(PIP) install --quiet --force-reinstall --no-deps .

# For development: an editable install (Python changes apply without a rebuild).
dev:
	$(PIP) install --quiet $(PY_DEPS)
	$(PIP) install --quiet -e .

# The main job: train Inverse-Flow on the embedded 8×8 digits (no download), print bits/dim per
# epoch, write a sample grid and a checkpoint under runs/.
train: install
	$(PYTHON) -m inv_flow train --preset digits

# The core demo: the four ops and an InvConv2d round trip on a real-sized input, with timings.
demo: install
	$(PYTHON) examples/demo.py

test-rust:
	cargo test --release
	cargo test --release --features cuda --lib
	cargo clippy --all-targets --features python,cuda -- -D warnings
	cargo fmt --check

test-python: install
	$(PYTHON) -m pytest -q

test: install test-rust test-python

bench: install
	cargo bench --bench cpu_ops
	$(PYTHON) benches/cpu_bench.py

bench-gpu: install
	$(PYTHON) benches/gpu_bench.py

clean:
	cargo clean
	rm -rf dist runs .pytest_cache .hypothesis
