# One-command set-up on a fresh machine: every target installs what it needs first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The same lists as pyproject.toml's extras (tests/test_packaging.py checks they agree):
# FLOW_DEPS = [flow] — what `inv-flow train` needs; TEST_DEPS = [test] minus FLOW_DEPS.
FLOW_DEPS := torch numpy tqdm matplotlib pillow safetensors
TEST_DEPS := pytest hypothesis maturin normflows zuko pyyaml tensorboard scikit-learn

.PHONY: install install-test dev test test-rust test-python lint train demo bench bench-gpu clean

# A regular (non-editable) install with only what `inv-flow train` needs: the tests then run
# against exactly what users get from `pip install .[flow]`, so a file missing from the wheel
# fails them.  Packages already installed are left as they are (no upgrades).
install:
	$(PIP) install --quiet $(FLOW_DEPS)
	$(PIP) install --quiet --force-reinstall --no-deps .

# install + the test and build tools and the packages the tests import.
install-test: install
	$(PIP) install --quiet $(TEST_DEPS)

# For development: an editable install (Python changes apply without a rebuild) with test tools.
dev:
	$(PIP) install --quiet $(FLOW_DEPS) $(TEST_DEPS)
	$(PIP) install --quiet -e .

# The main job: train Inverse-Flow on the embedded 8×8 digits (no download), print bits/dim per
# epoch, write a sample grid and checkpoints into a new folder under runs/.
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

test-python: install-test
	$(PYTHON) -m pytest -q

test: install-test test-rust test-python

bench: install
	cargo bench --bench cpu_ops
	$(PYTHON) benches/cpu_bench.py

bench-gpu: install
	$(PYTHON) benches/gpu_bench.py

clean:
	cargo clean
	rm -rf dist runs .pytest_cache .hypothesis
