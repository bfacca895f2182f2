"""The CPU ops keep working in a forked child (DataLoader workers) after the parent used them."""

import os
import sys
import time

import pytest
import torch

import inv_conv


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_ops_work_in_forked_child():
    y = torch.randn(8, 4, 16, 16)
    w = torch.randn(4, 4, 3, 3) * 0.1
    want = inv_conv.inv_conv2d(y, w)  # starts the parent's thread pool
    pid = os.fork()
    if pid == 0:  # child: a hang here is the failure this test catches
        ok = torch.allclose(inv_conv.inv_conv2d(y, w), want) and torch.allclose(inv_conv.conv2d(want, w), y, atol=1e-5)
        os._exit(0 if ok else 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, "child computed wrong values"
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the op hung in a forked child")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")
def test_ops_start_no_threads_besides_their_own_pool():
    """Every CPU op runs on inv_conv's fork-aware pool; none may start rayon's global pool,
    whose threads a forked child would not have. Checked in a fresh numpy-only interpreter,
    where every thread but the main one must be an ``inv_conv-N`` worker."""
    import subprocess

    # Small problems run on the calling thread (no thread at all); large ones on the pool.
    script = (
        "import os, numpy as np, inv_conv\n"
        "def threads():\n"
        "    main = os.getpid()\n"
        "    return sorted(open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task') if int(t) != main)\n"
        "for shape in ((4, 3, 6, 5), (8, 16, 32, 32)):\n"
        "    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)\n"
        "    k = np.zeros((shape[1], shape[1], 3, 3), np.float32)\n"
        "    for f in (inv_conv.conv2d, inv_conv.inv_conv2d, inv_conv.conv2d_transpose, inv_conv.inv_conv2d_transpose):\n"
        "        f(x, k, 'BR')\n"
        "    inv_conv.conv2d_weight_grad(x, x, 3)\n"
        "    print(' '.join(threads()) or '-')\n"
    )
    env = dict(os.environ, RAYON_NUM_THREADS="3", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")  # numpy's BLAS threads are not the subject
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    small, large = done.stdout.splitlines()
    assert small == "-"
    assert large.split() == ["inv_conv-0", "inv_conv-1", "inv_conv-2"]
