"""The CPU ops are bitwise repeatable: the same inputs give the same bits whatever the number of
threads (``RAYON_NUM_THREADS``) and however many callers run at once.

The thread count of the pool is fixed when a process first uses it, so each count runs in a
fresh interpreter, which prints a digest of every op's output bytes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import inv_conv

# (B, C, H, W, KH, KW): tall images, so that the weight gradient's rows are split over threads.
SHAPES = [(3, 5, 37, 11, 3, 3), (2, 8, 64, 9, 2, 4), (7, 3, 13, 29, 5, 2)]

DIGEST_SCRIPT = r"""
import hashlib, sys
import numpy as np
import inv_conv

def digests(shape, dtype, seed):
    b, c, h, w, kh, kw = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, c, h, w)).astype(dtype)
    g = rng.standard_normal((b, c, h, w)).astype(dtype)
    k = (0.3 * rng.standard_normal((c, c, kh, kw))).astype(dtype)
    out = []
    for order in ("TL", "TR", "BL", "BR"):
        values = [inv_conv.conv2d(x, k, order), inv_conv.inv_conv2d(x, k, order),
                  inv_conv.conv2d_transpose(g, k, order), inv_conv.inv_conv2d_transpose(g, k, order),
                  inv_conv.conv2d_weight_grad(x, g, (kh, kw), order)]
        out.append(";".join(hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()[:16]
                            for v in values))
    return "|".join(out)

shapes = eval(sys.argv[1])
for i, shape in enumerate(shapes):
    for dtype in (np.float32, np.float64):
        print(digests(shape, dtype, 1000 + i))
"""


def _digests_with_threads(threads: int) -> list[str]:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    done = subprocess.run([sys.executable, "-c", DIGEST_SCRIPT, repr(SHAPES)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_every_cpu_op_is_independent_of_the_thread_count():
    reference = _digests_with_threads(1)
    assert len(reference) == 2 * len(SHAPES)
    for threads in (2, 3, 8):
        assert _digests_with_threads(threads) == reference, f"RAYON_NUM_THREADS={threads}"


def test_weight_grad_is_the_same_for_concurrent_callers():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 6, 48, 10)).astype(np.float32)
    g = rng.standard_normal((4, 6, 48, 10)).astype(np.float32)
    want = inv_conv.conv2d_weight_grad(x, g, 3, "BR").tobytes()
    results: list[bytes] = []
    lock = threading.Lock()

    def worker():
        for _ in range(6):
            value = inv_conv.conv2d_weight_grad(x, g, 3, "BR").tobytes()
            with lock:
                results.append(value)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 24
    assert {hashlib.sha256(r).hexdigest() for r in results} == {hashlib.sha256(want).hexdigest()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_grad_still_matches_float64_oracle(dtype):
    """The fixed-order reduction computes the same sum: against a dense float64 einsum."""
    b, c, h, w, kh, kw = SHAPES[1]
    rng = np.random.default_rng(11)
    x = rng.standard_normal((b, c, h, w))
    g = rng.standard_normal((b, c, h, w))
    got = inv_conv.conv2d_weight_grad(x.astype(dtype), g.astype(dtype), (kh, kw), "TL")
    padded = np.pad(x, ((0, 0), (0, 0), (kh - 1, 0), (kw - 1, 0)))
    want = np.zeros((c, c, kh, kw))
    for i in range(kh):
        for j in range(kw):
            want[:, :, i, j] = np.einsum("bohw,bihw->oi", g, padded[:, :, i:i + h, j:j + w])
    for co in range(c):
        want[co, co:, kh - 1, kw - 1] = 0.0  # the masked anchor entries
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
