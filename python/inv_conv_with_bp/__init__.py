"""Drop-in module under the original extension's import name.

``import inv_conv_with_bp`` keeps existing training scripts running unchanged: ``inverse``,
``forward``, ``dy`` and ``dw`` have the original signatures (TL order, in-place ``output``,
one-element list returned) and compute the correct values (see :mod:`inv_conv.compat`).
"""

from inv_conv import __version__
from inv_conv.compat import dw, dy, forward, inverse

__all__ = ["__version__", "dw", "dy", "forward", "inverse"]
