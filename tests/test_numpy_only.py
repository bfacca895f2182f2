"""Without torch, `import inv_conv` still gives the ops on numpy arrays."""

import subprocess
import sys
import textwrap


def test_numpy_only_install():
    script = textwrap.dedent(
        """
        import sys

        class NoTorch:  # make `import torch` fail as on a machine without it
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("no torch here")

        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        import inv_conv

        assert "torch" not in sys.modules
        assert not hasattr(inv_conv, "InvConv2d") and "InvConv2d" not in inv_conv.__all__
        rng = np.random.default_rng(0)
        y = rng.standard_normal((2, 3, 5, 4))
        w = rng.standard_normal((3, 3, 3, 2)) * 0.2
        for order in inv_conv.ORDERS:
            x = inv_conv.inv_conv2d(y, w, order.lower())
            np.testing.assert_allclose(inv_conv.conv2d(x, w, order), y, atol=1e-12)
            u = inv_conv.inv_conv2d_transpose(y, w, order)
            assert abs((u * y).sum() - (y * x).sum()) < 1e-9  # <A⁻ᵀy, y> = <y, A⁻¹y>
            assert inv_conv.conv2d_weight_grad(x, u, (3, 2), order).shape == w.shape
        assert inv_conv.cuda_available() is False
        try:
            inv_conv.conv2d(y, w, "XY")
        except ValueError as err:
            assert "order must be one of" in str(err)
        else:
            raise AssertionError("bad order accepted")
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
