"""One error for every output file inv_flow fails to write (checkpoints, metrics, figures),
naming the file; torch-free, so the logging and plotting modules can use it too."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
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


def write_atomically(data: bytes | memoryview, destination: str | os.PathLike) -> None:
    """Write ``data`` to ``destination`` through a temporary file in the same folder, synced and
    renamed over it: a crash or a full disk leaves the previous file or the new one, never a torn
    one, and no stray temporary file. Failures raise :class:`WriteError`, naming the file."""
    destination = Path(destination)
    with writing(destination):
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(
            prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent
        )
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp_name, default_file_mode())  # mkstemp makes 0600; use the usual umask
            os.replace(temp_name, destination)
        except BaseException:
            # BaseException too: a KeyboardInterrupt mid-write must not leave a stray temp file.
            try:
                os.unlink(temp_name)
            except FileNotFoundError:
                pass
            raise
    _fsync_directory(destination.parent)


def write_png_figure(figure, destination: str | os.PathLike) -> None:
    """A matplotlib figure as a PNG (100 dpi) at ``destination``, through
    :func:`write_atomically`; closing the figure is the caller's."""
    image = io.BytesIO()
    figure.savefig(image, dpi=100, format="png")
    write_atomically(image.getbuffer(), destination)


def default_file_mode() -> int:
    """Permissions a plain ``open(path, "w")`` would give under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
