"""Writing files atomically: a reader sees the old file or the new one, never half of one.

    write_atomically("out/metrics.csv", data)          # bytes
    with atomic_path("out/graph.svg") as tmp:          # anything that writes a file at a path
        subprocess.run(["dot", "-Tsvg", "-o", tmp], ...)

The new content goes to a temporary file beside the target (same folder, so the rename cannot cross
file systems), is flushed to disk (fsync), and replaces the target with os.replace, after which the
folder is flushed too, so that the rename itself survives a power cut. The file gets the mode the
user's umask gives a new file, or the mode of the file it replaces. A target that is a symbolic link
is written through: the file it points to is replaced and the link stays.
"""

import contextlib
import os
import secrets

TEMP_SUFFIX = ".tmp"


def temp_name(path):
    """A fresh temporary name beside path: .<name>.<pid>.<random>.tmp (hidden, and recognisable)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path for the caller to write; on success it replaces path, on error it is removed."""
    path = os.path.realpath(path)  # a symlink is written through: its target is replaced, the link stays
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # whoever wrote it, its bytes reach the disk before the rename
            os.fsync(f.fileno())
        if os.path.exists(path):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)  # replacing a file keeps its mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def write_atomically(path, data):
    """Write bytes to path atomically (see the module's docstring)."""
    with atomic_path(path) as tmp:
        # NOTE: not tempfile.mkstemp, whose file is private (0600): open() gives the mode the umask gives
        with open(tmp, "xb") as f:
            f.write(data)


def _fsync_folder(folder):
    """Flush a folder's entries (the rename) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
