"""Writing files atomically: a reader sees the old file or the new one, never half of one.

    write_atomically("out/metrics.csv", data)          # bytes
    with atomic_path("out/graph.svg") as tmp:          # anything that writes a file at a path
        subprocess.run(["dot", "-Tsvg", "-o", tmp], ...)
    remove_stale_temp_files("out")                     # what saves killed mid-way left behind
    with open_regular_file("out/ckpt.npz") as f: ...   # reading: a FIFO or a device is refused, not waited on

The new content goes to a temporary file beside the target (same folder, so the rename cannot cross
file systems), is flushed to disk (fsync), and replaces the target with os.replace, after which the
folder is flushed too, so that the rename itself survives a power cut. The file gets the mode the
user's umask gives a new file, or the mode of the file it replaces. A target that is a symbolic link
is written through: the file it points to is replaced and the link stays.
"""

import contextlib
import os
import re
import secrets
import stat

TEMP_SUFFIX = ".tmp"
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]+" + re.escape(TEMP_SUFFIX))


def temp_name(path):
    """A fresh temporary name beside path: .<name>.<pid>.<random>.tmp (hidden, and recognisable)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def temp_target(path):
    """The file that a temporary name of temp_name's stands for (folder/.name.pid.hex.tmp -> folder/name);
    any other path unchanged. An error met while writing names the temporary: this names what the user asked for."""
    folder, name = os.path.split(path)
    match = TEMP_NAME.fullmatch(name)
    return os.path.join(folder, match["name"]) if match else path


def remove_stale_temp_files(folder):
    """Delete the temporary files in folder that a save killed mid-way left behind: those named by temp_name
    whose process (the pid in the name) is no longer running. Returns their paths."""
    removed = []
    for name in sorted(os.listdir(folder)):
        match = TEMP_NAME.fullmatch(name)
        if match and not pid_is_running(int(match["pid"])):
            os.unlink(os.path.join(folder, name))
            removed.append(os.path.join(folder, name))
    return removed


def pid_is_running(pid):
    """Whether a process with this pid exists (signal 0 checks, sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to another user
        return True
    return True


def open_regular_file(path):
    """open(path, "rb"), for a regular file only: anything else is a ValueError saying what it is, checked
    before opening, since reading a FIFO waits for a writer forever and reading a device may never end."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket")
        raise ValueError(f"{path} is {kind}, not a regular file")
    return open(path, "rb")


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
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = path  # a failed write or fsync (a full disk) names no file: the one being written
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
