"""Self-Normalizing Flow convolution (Keller, Peters, Jaini, Hoogeboom, Forré & Welling,
"Self Normalizing Flows", ICML 2021), as a k×k convolution layer of ``inv_flow``.

The layer is an unconstrained k×k convolution ``z = W ⋆ x`` ('same' zero padding, odd k, no
bias — ActNorm supplies it) together with a learned approximate inverse ``R``::

    x̂ = R(z) = conv_transpose2d(z, R, padding=(k-1)/2)

Write ``M(W)`` for the dense (D×D, D = C·H·W) matrix of ``x ↦ W ⋆ x``. Because a transposed
convolution is the adjoint of a convolution with the same kernel, the dense matrix of ``R(·)``
is ``M(R)ᵀ``; ``R`` approximates ``W``'s inverse when ``M(R)ᵀ M(W) ≈ I``.

**Self-normalized gradient** (``self_normalized_grad=True``, training mode). The exact gradient of
``log|det M(W)|`` with respect to the dense matrix is ``M(W)⁻ᵀ``; SNF replaces it by the dense
matrix of ``R`` transposed, ``(M(R)ᵀ)ᵀ = M(R)``. Mapped back to the kernel through the chain
rule (``M`` is linear, its adjoint ``M*`` sums the dense entries that share a tap)::

    ∂/∂W[o, i, a, b] = M*(M(R))[o, i, a, b] = N(a, b) · R[o, i, a, b]

where ``N(a, b) = (H − |a − p|)⁺ · (W − |b − p|)⁺`` counts the output pixels at which tap
(a, b) reads a pixel inside the image (zero padding; p = (k−1)/2). The layer implements this
with the surrogate ``S(W) = Σ sg(N ⊙ R) ⊙ W`` and returns ``S − sg(S)`` as the training-time
log-determinant of every sample: its **value is 0** (so a training loss / ``train_bpd`` of an SNF
model does not include the convolutions' log-determinants), its gradient is exactly the
self-normalized one, and no determinant is computed while training.

**Exact gradient** (``self_normalized_grad=False``, training mode): the log-determinant is the dense
``slogdet(M(W))`` with ordinary autograd (small images only).

**Evaluation** (``eval()`` mode): the exact log-determinant through the dense matrix, so the
log-likelihood (bits/dim) of an SNF model is exact. Images with ``C·H·W > max_dense_dims``
raise ``ValueError`` — the dense path needs O(D²) memory and O(D³) time.

**Reconstruction loss** (trains ``R``; it reaches the optimiser through
``inv_flow.models.FlowModel.extra_loss``). Every training-mode forward with gradients enabled
stores, with ``x`` the layer's input and ``z`` its output, both detached::

    e = mean_batch ‖R(z) − x‖²                       (gradient to R only)
      + mean_batch ‖W ⋆ sg(R(z)) − z‖²   if sym_recon_grad   (gradient to W only)

and :meth:`pop_recon_loss` returns ``λ · e`` (λ = ``recon_weight``, initialised to
``recon_loss_weight``). **Adaptive weight** (``recon_loss_lr > 0``): after each
:meth:`pop_recon_loss`, ``λ ← λ + recon_loss_lr · e / (C·H·W)`` — dual ascent on the constraint
"reconstruction error = 0" (λ only grows, and stops growing once R inverts W); λ is a buffer,
so it is saved in checkpoints.

**Sampling** (``reverse``): ``R(z)`` — one transposed convolution, approximate — or, with
``sample_true_inv=True``, the exact inverse by a dense solve (small images only).
"""

from __future__ import annotations

import math
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .base import FlowLayer

#: Default limit on C·H·W for the dense exact path (a 4096×4096 matrix: 64 MiB in float32).
DEFAULT_MAX_DENSE_DIMS = 4096


def tap_counts(kernel_size: int, height: int, width: int, dtype=None, device=None) -> torch.Tensor:
    """``N(a, b)``: how many output pixels of a 'same'-padded k×k convolution read an in-image
    pixel through tap (a, b). Shape (k, k)."""
    pad = (kernel_size - 1) // 2
    offsets = torch.arange(kernel_size, dtype=dtype, device=device) - pad
    rows = (height - offsets.abs()).clamp(min=0)
    cols = (width - offsets.abs()).clamp(min=0)
    return rows[:, None] * cols[None, :]


def conv_dense_matrix(weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The dense (D, D) matrix of ``x ↦ conv2d(x, weight, padding=(k-1)/2)`` on (C, H, W)
    images, D = C·H·W, in NCHW flattening (differentiable in ``weight``)."""
    channels, kernel = weight.shape[0], weight.shape[-1]
    dims = channels * height * width
    basis = torch.eye(dims, dtype=weight.dtype, device=weight.device).reshape(
        dims, channels, height, width)
    return F.conv2d(basis, weight, padding=(kernel - 1) // 2).reshape(dims, dims).T


class SelfNormConv2d(FlowLayer):
    """A k×k convolution with a learned approximate inverse, trained with the self-normalized
    gradient (see the module docstring for the exact definitions).

    Args:
        num_channels: C.
        kernel_size: odd k (the convolution is 'same'-padded).
        self_normalized_grad: self-normalized gradient in training (True) or the exact dense
            one (``modified_grad``, the name in SNF's code, is accepted with a
            DeprecationWarning).
        sym_recon_grad: add the symmetric reconstruction term ‖W ⋆ sg(R z) − z‖² (trains W).
        sample_true_inv: ``reverse`` uses the exact inverse (dense solve) instead of ``R``.
        recon_loss_weight: initial λ of the reconstruction loss.
        recon_loss_lr: step size of the adaptive λ (0 = fixed λ).
        max_dense_dims: largest C·H·W for the dense exact log-determinant / inverse.
        init_std: std of the random perturbation of the identity kernel W (R starts as the
            identity).
    """

    def __init__(self, num_channels: int, kernel_size: int = 3, self_normalized_grad: bool = True,
                 sym_recon_grad: bool = False, sample_true_inv: bool = False,
                 recon_loss_weight: float = 1.0, recon_loss_lr: float = 0.0,
                 max_dense_dims: int = DEFAULT_MAX_DENSE_DIMS, init_std: float = 0.01, *,
                 modified_grad: Optional[bool] = None):
        super().__init__()
        if modified_grad is not None:
            warnings.warn("SelfNormConv2d(modified_grad=...) is now self_normalized_grad=...",
                          DeprecationWarning, stacklevel=2)
            self_normalized_grad = modified_grad
        kernel_size = int(kernel_size)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"SelfNormConv2d needs an odd kernel_size ('same' padding), "
                             f"got {kernel_size}")
        if recon_loss_weight < 0 or recon_loss_lr < 0:
            raise ValueError("recon_loss_weight and recon_loss_lr must be >= 0")
        self.num_channels = int(num_channels)
        self.kernel_size = kernel_size
        self.padding = (kernel_size - 1) // 2
        self.self_normalized_grad = bool(self_normalized_grad)
        self.sym_recon_grad = bool(sym_recon_grad)
        self.sample_true_inv = bool(sample_true_inv)
        self.recon_loss_lr = float(recon_loss_lr)
        self.max_dense_dims = int(max_dense_dims)
        identity = torch.zeros(num_channels, num_channels, kernel_size, kernel_size)
        identity[:, :, self.padding, self.padding] = torch.eye(num_channels)
        self.weight = nn.Parameter(identity + init_std * torch.randn_like(identity))
        #: R in conv_transpose2d layout (in = W's output channels, out = W's input channels)
        self.inverse_weight = nn.Parameter(identity.clone())
        self.register_buffer("recon_weight", torch.tensor(float(recon_loss_weight)))
        self._last_recon: Optional[torch.Tensor] = None
        self._last_numel = 1

    # ------------------------------------------------------------------------ the two maps
    def conv(self, x: torch.Tensor) -> torch.Tensor:
        """``W ⋆ x``."""
        return F.conv2d(x, self.weight, padding=self.padding)

    def approx_inverse(self, z: torch.Tensor) -> torch.Tensor:
        """``R(z)``, the learned approximate inverse (a transposed convolution)."""
        return F.conv_transpose2d(z, self.inverse_weight, padding=self.padding)

    # -------------------------------------------------------------------- log-determinants
    def _check_dense(self, x: torch.Tensor, what: str) -> None:
        dims = x[0].numel()
        if dims > self.max_dense_dims:
            raise ValueError(
                f"SelfNormConv2d: {what} needs the dense {dims}x{dims} matrix of the "
                f"convolution (C·H·W = {tuple(x.shape[1:])} = {dims} > max_dense_dims = "
                f"{self.max_dense_dims}). SNF's exact log-likelihood is for small images; "
                "raise snf_max_dense_dims if you have the memory and time.")

    def dense_matrix(self, height: int, width: int) -> torch.Tensor:
        """``M(W)``, the dense matrix of the convolution on H×W images."""
        return conv_dense_matrix(self.weight, height, width)

    def exact_logdet(self, height: int, width: int) -> torch.Tensor:
        """``log|det M(W)|`` (a scalar, differentiable)."""
        return torch.linalg.slogdet(self.dense_matrix(height, width))[1]

    def surrogate_logdet(self, height: int, width: int) -> torch.Tensor:
        """``S − sg(S)`` with ``S = Σ sg(N ⊙ R) ⊙ W``: value 0, gradient w.r.t. W
        ``N ⊙ R`` — the self-normalized gradient."""
        counts = tap_counts(self.kernel_size, height, width, self.weight.dtype, self.weight.device)
        surrogate = (self.weight * (counts * self.inverse_weight).detach()).sum()
        return surrogate - surrogate.detach()

    # --------------------------------------------------------------------------- flow API
    def forward(self, x, context=None):
        z = self.conv(x)
        height, width = x.shape[-2:]
        if self.training and self.self_normalized_grad:
            logdet = self.surrogate_logdet(height, width)
        else:
            self._check_dense(x, "the exact log-determinant (evaluation, or "
                                 "self_normalized_grad=False)")
            logdet = self.exact_logdet(height, width)
        if self.training and torch.is_grad_enabled():
            self._store_recon(x.detach(), z.detach())
        return z, logdet.expand(x.shape[0])

    def _store_recon(self, x: torch.Tensor, z: torch.Tensor) -> None:
        x_hat = self.approx_inverse(z)
        error = (x_hat - x).square().flatten(1).sum(1).mean()
        if self.sym_recon_grad:
            z_hat = self.conv(x_hat.detach())
            error = error + (z_hat - z).square().flatten(1).sum(1).mean()
        self._last_recon = error
        self._last_numel = x[0].numel()

    def pop_recon_loss(self) -> Optional[torch.Tensor]:
        """``λ · e`` of the last training forward (then forgotten), or None if there was none.
        With ``recon_loss_lr > 0`` also takes one adaptive step of λ (see module docstring)."""
        error, self._last_recon = self._last_recon, None
        if error is None:
            return None
        loss = self.recon_weight.clone() * error
        if self.recon_loss_lr > 0:
            with torch.no_grad():
                self.recon_weight.add_(self.recon_loss_lr * error.detach() / self._last_numel)
        return loss

    def reverse(self, y, context=None):
        if not self.sample_true_inv:
            return self.approx_inverse(y)
        self._check_dense(y, "sampling with the exact inverse (sample_true_inv=True)")
        batch, _, height, width = y.shape
        matrix = self.dense_matrix(height, width)
        x = torch.linalg.solve(matrix, y.reshape(batch, -1).T).T
        return x.reshape(y.shape)

    def extra_repr(self) -> str:
        return (f"{self.num_channels}, kernel_size={self.kernel_size}, "
                f"self_normalized_grad={self.self_normalized_grad}, "
                f"sym_recon_grad={self.sym_recon_grad}, "
                f"sample_true_inv={self.sample_true_inv}, recon_loss_lr={self.recon_loss_lr}")


def recon_loss_scale(num_dims: int) -> float:
    """Divide the summed reconstruction losses by ``D ln 2`` so they are in the units of the
    bits/dim training loss (the ratio to the NLL in nats is the paper's λ)."""
    return 1.0 / (num_dims * math.log(2.0))
