"""One error for every output file inv_flow fails to write (checkpoints, metrics, figures),
naming the file; torch-free, so the logging and plotting modules can use it too."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator


class WriteError(OSError):
    """A file could not be written: a full disk, a read-only or missing folder, a path through a
    regular file.  ``filename`` is the file inv_flow meant to write."""

    def __init__(self, path: str | os.PathLike, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError raised while writing ``path`` into a :class:`WriteError` naming it."""
    try:
        yield
    except WriteError:
        raise
    except OSError as err:
        raise WriteError(path, err) from err
