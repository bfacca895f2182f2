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
