"""minigrad.files: atomic writes (temp file beside the target, fsync, rename, fsync of the folder), the mode
a new or replaced file gets, symlinks written through, stale temp files, and reads refusing what is no file."""

import errno
import os
import stat
import subprocess
import sys

import pytest

from minigrad import files


@pytest.fixture
def umask():
    """umask(mask) sets this process's umask for the test; the previous one comes back after it."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_write_goes_to_a_temp_file_beside_it_synced_then_renamed_then_the_folder_synced(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.npz"
    target.write_bytes(b"old")
    events = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync", "folder" if stat.S_ISDIR(st.st_mode) else os.pread(fd, 100, 0)))
        fsync(fd)

    def logged_replace(src, dst):
        events.append(("replace", os.path.dirname(src), os.path.basename(src), dst, target.read_bytes()))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "replace", logged_replace)
    files.write_atomically(str(target), b"new")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert events[0][1] == b"new"  # the temp file's bytes reach the disk before the rename
    _, folder, name, dst, before = events[1]
    assert folder == str(tmp_path) and files.TEMP_NAME.fullmatch(name) and dst == str(target)
    assert before == b"old"  # until the rename, a reader sees the old file
    assert events[2][1] == "folder" and target.read_bytes() == b"new"


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)],
                         ids=["umask 022", "umask 077", "umask 002"])
def test_a_new_file_gets_the_mode_the_umask_gives(tmp_path, umask, mask, expected):
    umask(mask)
    files.write_atomically(str(tmp_path / "metrics.csv"), b"x")
    assert mode(tmp_path / "metrics.csv") == expected


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "ckpt.npz"
    files.write_atomically(str(target), b"1")
    os.chmod(target, 0o640)
    files.write_atomically(str(target), b"2")
    assert mode(target) == 0o640 and target.read_bytes() == b"2"


def test_a_symlinked_target_is_written_through(tmp_path):
    real = tmp_path / "real" / "ckpt.npz"
    real.parent.mkdir()
    real.write_bytes(b"old")
    link = tmp_path / "ckpt.npz"
    link.symlink_to(real)
    files.write_atomically(str(link), b"new")
    assert link.is_symlink() and real.read_bytes() == b"new" and link.read_bytes() == b"new"


def test_a_failed_rename_keeps_the_old_file_removes_the_temp_and_names_the_target(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.npz"
    target.write_bytes(b"old")

    def failing_replace(src, dst):
        raise OSError(errno.EIO, "Input/output error", src, None, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError) as e:
        files.write_atomically(str(target), b"new")
    assert e.value.errno == errno.EIO and files.temp_target(e.value.filename) == str(target)
    assert os.listdir(tmp_path) == ["ckpt.npz"] and target.read_bytes() == b"old"


def test_a_failed_write_names_the_target(tmp_path, monkeypatch):
    """A full disk fails in write() or fsync(), which name no file: the error names the target."""
    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as e:
        files.write_atomically(str(tmp_path / "ckpt.npz"), b"new")
    assert e.value.errno == errno.ENOSPC and e.value.filename == os.path.realpath(tmp_path / "ckpt.npz")
    assert os.listdir(tmp_path) == []


def test_temp_target_names_the_file_a_temp_file_stands_for(tmp_path):
    tmp = files.temp_name(str(tmp_path / "metrics.csv"))
    assert os.path.basename(tmp).startswith(".metrics.csv.") and files.temp_target(tmp) == str(tmp_path / "metrics.csv")
    assert files.temp_target(str(tmp_path / "metrics.csv")) == str(tmp_path / "metrics.csv")


def test_stale_temp_files_are_those_of_processes_no_longer_running(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is free now (the test assumes no new process takes it within these lines)
    stale = tmp_path / f".ckpt.npz.{dead.pid}.0123abcd.tmp"
    live = tmp_path / f".ckpt.npz.{os.getpid()}.0123abcd.tmp"  # a save in progress: this process's
    others = [tmp_path / "ckpt.npz", tmp_path / ".notes.tmp", tmp_path / f"x.{dead.pid}.0123abcd.tmp"]
    for path in [stale, live, *others]:
        path.write_bytes(b"")
    assert files.remove_stale_temp_files(str(tmp_path)) == [str(stale)]
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in [live, *others])


@pytest.mark.parametrize("kind", ["folder", "FIFO", "device"])
def test_reading_refuses_what_is_not_a_regular_file(tmp_path, kind):
    path = tmp_path / "ckpt.npz"
    if kind == "folder":
        path.mkdir()
    elif kind == "FIFO":
        os.mkfifo(path)  # open() for reading would wait for a writer forever
    else:
        path.symlink_to("/dev/zero")  # a read that never ends
    with pytest.raises(ValueError, match=f"ckpt.npz is a {kind}, not a regular file"):
        files.open_regular_file(str(path))
    (tmp_path / "text").write_bytes(b"abc")
    with files.open_regular_file(str(tmp_path / "text")) as f:
        assert f.read() == b"abc"
