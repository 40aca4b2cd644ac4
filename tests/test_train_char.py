"""train_char.py as a user runs it: a smoke run, its outputs, resume, samples, and every bad input; then
what is safe: a diverging run, an out-dir in use or holding a checkpoint, file-system faults, damaged files."""

import contextlib
import csv
import errno
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import train_char  # noqa: E402
from minigrad.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

SMALL = ["--batch-size", "8", "--block-size", "16", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
         "--eval-iters", "2", "--warmup-iters", "5", "--lr-decay-iters", "100", "--sample-len", "40"]


@pytest.fixture
def corpus(make_corpus):
    return make_corpus(6000)


def run(args, capsys):
    code = train_char.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def read_rows(out_dir):
    with open(os.path.join(out_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def test_smoke_run_learns_and_writes_every_output(corpus, tmp_path, capsys):
    out_dir = str(tmp_path / "out")
    code, out, err = run(["--data", corpus, "--out-dir", out_dir, "--max-iters", "300", "--eval-interval", "100",
                          "--block-size", "32", "--n-layer", "2", "--n-embd", "32", "--batch-size", "16",
                          "--lr-decay-iters", "300", "--warmup-iters", "20", "--eval-iters", "5",
                          "--sample-len", "40"], capsys)
    assert code == 0, err
    rows = read_rows(out_dir)
    assert [int(r["iter"]) for r in rows] == [0, 100, 200, 300]
    vocab = len(set(open(corpus).read()))
    assert abs(float(rows[0]["val_loss"]) - math.log(vocab)) < 0.1  # starts at ln V
    assert float(rows[-1]["val_loss"]) < 0.5 * math.log(vocab)  # and falls well below it
    assert "final: train loss" in out and "val perplexity" in out and "--- sample 1 ---" in out
    for name in ("ckpt.npz", "metrics.csv", "loss.png"):
        assert os.path.getsize(os.path.join(out_dir, name)) > 0
    assert open(os.path.join(out_dir, "loss.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_resume_gives_the_same_losses_bit_for_bit(corpus, tmp_path, capsys):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    common = ["--data", corpus, "--eval-interval", "10", *SMALL]
    assert run([*common, "--out-dir", straight, "--max-iters", "30"], capsys)[0] == 0
    assert run([*common, "--out-dir", split, "--max-iters", "10"], capsys)[0] == 0
    code, out, err = run([*common, "--out-dir", split, "--max-iters", "30", "--resume"], capsys)
    assert code == 0, err
    a, b = read_rows(straight), read_rows(split)
    assert [r["iter"] for r in b] == ["0", "10", "20", "30"]
    for ra, rb in zip(a, b):
        assert (ra["train_loss"], ra["val_loss"]) == (rb["train_loss"], rb["val_loss"])


def test_sample_only_prints_samples_from_the_checkpoint(corpus, tmp_path, capsys):
    out_dir = str(tmp_path / "out")
    assert run(["--data", corpus, "--out-dir", out_dir, "--max-iters", "5", *SMALL], capsys)[0] == 0
    code, out, err = run(["--out-dir", out_dir, "--sample-only", "--num-samples", "2", "--sample-len", "30"], capsys)
    assert code == 0, err
    assert "--- sample 2 ---" in out and "iter" not in out


@pytest.mark.parametrize("extra, message", [
    (["--n-embd", "10", "--n-head", "4"], "--n-embd 10 is not divisible by --n-head 4"),
    (["--batch-size", "0"], "--batch-size must be positive"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--max-iters", "-5"], "--max-iters must be positive"),
    (["--resume"], "no checkpoint at"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--sample-len", "-5"], "--sample-len must be >= 0, got -5"),
])
def test_bad_flags_exit_2_with_one_line(corpus, tmp_path, capsys, extra, message):
    code, out, err = run(["--data", corpus, "--out-dir", str(tmp_path / "o"), *SMALL, *extra], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"abc", "has 3 characters; it needs at least block_size + 2 = 18"),
    ("Ca\xf1a".encode("latin-1") * 50, "is not UTF-8"),
])
def test_bad_corpus_exits_2(tmp_path, capsys, content, message):
    path = tmp_path / "c.txt"
    if content is not None:
        path.write_bytes(content)
    code, out, err = run(["--data", str(path), "--out-dir", str(tmp_path / "o"), *SMALL], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_resume_errors_keep_the_checkpoint(corpus, tmp_path, capsys):
    out_dir = str(tmp_path / "out")
    assert run(["--data", corpus, "--out-dir", out_dir, "--max-iters", "5", *SMALL], capsys)[0] == 0
    ckpt = os.path.join(out_dir, "ckpt.npz")
    saved = open(ckpt, "rb").read()
    code, _, err = run(["--data", corpus, "--out-dir", out_dir, "--resume", "--max-iters", "9", *SMALL,
                        "--n-layer", "2"], capsys)
    assert code == 2 and "--n-layer 2 differs from the checkpoint's 1" in err
    assert open(ckpt, "rb").read() == saved
    open(ckpt, "wb").write(saved[: len(saved) // 2])  # a truncated file
    code, _, err = run(["--out-dir", out_dir, "--resume"], capsys)
    assert code == 2 and "is corrupt or incomplete" in err and len(err.strip().splitlines()) == 1


def test_nan_loss_stops_with_the_iteration_and_keeps_the_last_checkpoint(corpus, tmp_path, capsys):
    out_dir = str(tmp_path / "out")
    code, out, err = run(["--data", corpus, "--out-dir", out_dir, "--max-iters", "200", *SMALL,
                          "--lr", "1e30", "--warmup-iters", "0", "--eval-interval", "1000"], capsys)
    assert code == 1 and "at iter" in err and ("nan" in err or "inf" in err)
    arrays, meta = load_checkpoint(os.path.join(out_dir, "ckpt.npz"))
    assert meta["iter"] == 0 and all(np.isfinite(a).all() for k, a in arrays.items() if k.startswith("model/"))


def test_missing_default_corpus_without_network_says_what_to_do(tmp_path, monkeypatch, capsys):
    import urllib.request

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.chdir(tmp_path)
    code, out, err = run([*SMALL, "--max-iters", "1"], capsys)
    assert code == 2 and "put tinyshakespeare.txt at data/tinyshakespeare.txt or pass --data" in err
    assert not os.path.exists(tmp_path / "data" / "tinyshakespeare.txt")


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(corpus, tmp_path):
    """The real command line: SIGINT after the first evaluation, then a resume finishes the run."""
    out_dir = str(tmp_path / "out")
    cmd = [sys.executable, os.path.join(ROOT, "train_char.py"), "--data", corpus, "--out-dir", out_dir, *SMALL,
           "--max-iters", "100000", "--eval-interval", "100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(out_dir, "ckpt.npz")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "interrupted at iter" in out
    assert load_checkpoint(os.path.join(out_dir, "ckpt.npz"))[1]["iter"] > 0


def test_help_documents_every_flag_with_its_default():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "train_char.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--data", "--out-dir", "--max-iters", "--eval-interval", "--eval-iters", "--batch-size",
                 "--block-size", "--n-layer", "--n-head", "--n-embd", "--lr", "--min-lr", "--warmup-iters",
                 "--lr-decay-iters", "--weight-decay", "--grad-clip", "--seed", "--device", "--resume",
                 "--sample-only", "--num-samples", "--sample-len", "--temperature", "--top-k", "--overwrite",
                 "--mpi-timeout"):
        assert flag in out
    assert "(default: 5000)" in out and "(default: 0.003)" in out


def test_profile_prints_the_per_op_table_and_writes_nothing(corpus, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, err = run(["--data", corpus, "--out-dir", str(out_dir), *SMALL, "--profile", "2"], capsys)
    assert code == 0, err
    assert "2 steps in" in out and "SelfAttention" in out and "Linear" in out
    assert not out_dir.exists()


def test_draw_graph_writes_the_model_graph(corpus, tmp_path, capsys):
    path = tmp_path / "graph.dot"
    code, out, err = run(["--data", corpus, "--out-dir", str(tmp_path / "o"), *SMALL, "--draw-graph", str(path)],
                         capsys)
    assert code == 0, err
    dot = path.read_text()
    assert dot.startswith("digraph") and "transformer.h.0.attn.c_attn.weight" in dot and "cross_entropy" in dot


def test_the_option_table_gives_every_flag_and_the_resume_lock():
    """OPTIONS is the one table: each option is a flag with its help and default, and a --resume may change
    exactly the options that are not locked."""
    parser = train_char.build_parser()
    saved = {option.name: option.default for option in train_char.OPTIONS}
    for option in train_char.OPTIONS:
        action = next(a for a in parser._actions if a.dest == option.name)
        assert action.default is None and action.help == f"{option.help} (default: {option.default})"
        if option.type is str:
            other = "cuda" if option.choices else "elsewhere"
        else:
            other = 2 * (option.default or 1)  # top_k: None -> 2
        if option.locked:
            with pytest.raises(train_char.UsageError, match="differs from the checkpoint's"):
                train_char.resolve_config({option.name: other}, dict(saved))
        else:
            assert train_char.resolve_config({option.name: other}, dict(saved))[option.name] == other


@pytest.mark.parametrize("given, message", [
    ({"min_lr": -1.0, "temperature": 0.0}, "--temperature must be positive, got 0.0"),  # every > 0 before >= 0
    ({"lr": -1.0, "n_embd": 10}, "--lr must be positive, got -1.0"),  # the values before the relations
    ({"n_head": 0}, "--n-head must be positive, got 0"),  # not a division by zero in n_embd's check
    ({"warmup_iters": 100, "lr_decay_iters": 100}, "--warmup-iters 100 must be below --lr-decay-iters 100"),
    ({"top_k": 0}, "--top-k must be positive, got 0"),
])
def test_the_first_bad_value_is_the_one_named(given, message):
    with pytest.raises(train_char.UsageError) as e:
        train_char.resolve_config(given)
    assert str(e.value) == message


# --- what is safe: the fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(module_corpus, tmp_path_factory):
    """The out-dir of a 4-iter run, saved at iters 0, 2 and 4; made once per module (tests change copies)."""
    out_dir = str(tmp_path_factory.mktemp("finished") / "out")
    code = train_char.main(["--data", module_corpus, "--out-dir", out_dir, "--max-iters", "4", "--eval-interval", "2",
                            *SMALL])
    assert code == 0
    return out_dir


@pytest.fixture
def earlier_run(finished_run, tmp_path):
    """A copy of finished_run's out-dir, in this test's folder."""
    out_dir = str(tmp_path / "out")
    shutil.copytree(finished_run, out_dir)
    return out_dir


def resume(out_dir, corpus, capsys, *extra):
    return run(["--data", corpus, "--out-dir", out_dir, "--resume", "--max-iters", "6", *extra], capsys)


def contents(out_dir):
    """{name: bytes} of the files in out_dir (a folder's name maps to None)."""
    return {name: None if os.path.isdir(path) else open(path, "rb").read()
            for name in sorted(os.listdir(out_dir)) for path in [os.path.join(out_dir, name)]}


def one_line(err, message):
    return message in err and len(err.strip().splitlines()) == 1


def dead_pid():
    """The pid of a process that has ended (assumed not to be taken again within the test)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- a diverging run never writes an inf or a nan ------------------------------------------------------


@pytest.mark.parametrize("lr", ["1e39", "1e6"])
def test_a_diverging_run_writes_nothing_non_finite_and_names_the_last_finite_checkpoint(corpus, tmp_path, capsys, lr):
    """lr 1e39: the weights become inf after one step; 1e6: the losses of an evaluation become nan."""
    out_dir = str(tmp_path / "out")
    code, out, err = run(["--data", corpus, "--out-dir", out_dir, "--max-iters", "40", *SMALL, "--lr", lr,
                          "--warmup-iters", "0", "--eval-interval", "1"], capsys)
    ckpt = os.path.join(out_dir, "ckpt.npz")
    arrays, meta = load_checkpoint(ckpt)
    assert code == 1 and one_line(err, f"stopped without writing anything: the last checkpoint, {ckpt} at iter "
                                       f"{meta['iter']}, is finite")
    assert all(np.isfinite(a).all() for a in arrays.values())
    rows = read_rows(out_dir)
    assert int(rows[-1]["iter"]) == meta["iter"]  # the row of the failed iter was not written either
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("train_loss", "val_loss"))


def test_a_ctrl_c_after_a_diverging_step_saves_nothing(corpus, tmp_path, capsys, monkeypatch):
    out_dir = str(tmp_path / "out")
    step = train_char.train_step

    def step_then_ctrl_c(*args):
        result = step(*args)
        signal.raise_signal(signal.SIGINT)  # the run finishes this step, then stops and saves
        return result

    monkeypatch.setattr(train_char, "train_step", step_then_ctrl_c)
    code, out, err = run(["--data", corpus, "--out-dir", out_dir, "--max-iters", "100", *SMALL, "--lr", "1e39",
                          "--warmup-iters", "0", "--eval-interval", "1000"], capsys)
    assert code == 1 and one_line(err, "became inf or nan") and "at iter 1;" in err and "interrupted" not in out
    arrays, meta = load_checkpoint(os.path.join(out_dir, "ckpt.npz"))
    assert meta["iter"] == 0 and all(np.isfinite(a).all() for a in arrays.values())


def test_a_run_that_diverges_before_its_first_save_says_it_saved_nothing(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_char, "estimate_loss", lambda *args, **kwargs: {"train": math.nan, "val": math.nan})
    out_dir = str(tmp_path / "out")
    code, out, err = run(["--data", corpus, "--out-dir", out_dir, *SMALL, "--max-iters", "2"], capsys)
    assert code == 1 and one_line(err, "the evaluation's losses became train nan, val nan at iter 0; stopped without "
                                       "writing anything: this run saved no checkpoint")
    assert os.listdir(out_dir) == []


@pytest.mark.parametrize("option", [o for o in train_char.OPTIONS if o.type is float], ids=lambda o: o.name)
def test_every_float_option_must_be_finite(corpus, tmp_path, capsys, option):
    assert option.checks[0] is train_char.FINITE  # checked first: nan passes "<= 0" (nan <= 0 is False)
    for value in ("inf", "-inf", "nan"):
        code, out, err = run(["--data", corpus, "--out-dir", str(tmp_path / "o"), *SMALL, "--max-iters", "2",
                              f"{train_char.flag(option.name)}={value}"], capsys)  # "=": -inf is no flag
        assert code == 2 and err == f"train_char.py: error: {train_char.flag(option.name)} must be a finite number, " \
                                    f"got {float(value)}\n"


# --- one run per out-dir, and nothing replaced unasked -------------------------------------------------


def test_a_fresh_run_refuses_an_out_dir_with_a_checkpoint_unless_told_to_overwrite(earlier_run, module_corpus, capsys):
    before = contents(earlier_run)
    fresh = ["--data", module_corpus, "--out-dir", earlier_run, *SMALL, "--max-iters", "2"]
    code, out, err = run(fresh, capsys)
    assert code == 2 and one_line(err, f"{earlier_run} holds a checkpoint of an earlier run: pass --resume to "
                                       "continue it, --overwrite to replace it, or another --out-dir")
    assert contents(earlier_run) == before
    code, out, err = run([*fresh, "--resume", "--overwrite"], capsys)
    assert code == 2 and one_line(err, "--overwrite starts a fresh run, --resume continues one: pass one of them")
    code, out, err = run([*fresh, "--overwrite"], capsys)
    assert code == 0, err
    assert load_checkpoint(os.path.join(earlier_run, "ckpt.npz"))[1]["iter"] == 2
    assert [r["iter"] for r in read_rows(earlier_run)] == ["0", "2"]


def test_a_second_run_in_an_out_dir_in_use_is_refused_naming_the_first(earlier_run, module_corpus, capsys,
                                                                       hold_lock):
    before = contents(earlier_run)
    pid = hold_lock(earlier_run)
    code, out, err = resume(earlier_run, module_corpus, capsys)
    lock = os.path.join(earlier_run, "lock")
    assert code == 2 and one_line(err, f"{earlier_run} is in use by another run (pid {pid}, see {lock}): "
                                       "wait for it to end, or pass another --out-dir")
    assert contents(earlier_run) == {**before, "lock": f"{pid}\n".encode()}  # the holder's, untouched


def test_the_lock_of_a_killed_run_is_taken_over_with_a_note(earlier_run, module_corpus, capsys):
    lock = os.path.join(earlier_run, "lock")
    pid = dead_pid()
    open(lock, "w").write(f"{pid}\n")
    code, out, err = resume(earlier_run, module_corpus, capsys)
    assert code == 0, err
    assert f"note: taking over {lock}, left by pid {pid}, a run that ended without releasing it" in out
    assert not os.path.exists(lock)  # released at the end of the run


def test_temp_files_of_a_killed_save_are_removed_at_the_next_start(earlier_run, module_corpus, capsys):
    stale = os.path.join(earlier_run, f".ckpt.npz.{dead_pid()}.0123abcd.tmp")
    in_progress = os.path.join(earlier_run, f".ckpt.npz.{os.getppid()}.0123abcd.tmp")  # a live process's
    for path in (stale, in_progress):
        open(path, "wb").write(b"PK")
    code, out, err = resume(earlier_run, module_corpus, capsys)
    assert code == 0, err
    assert f"note: removed {stale}, left by a save that was killed" in out
    assert not os.path.exists(stale) and os.path.exists(in_progress)


def test_a_run_killed_at_any_moment_resumes(earlier_run, module_corpus):
    """SIGKILL while saving at every iter: the checkpoint loads, and the next run takes over the lock, removes
    the temp files left behind, and resumes."""
    cmd = [sys.executable, os.path.join(ROOT, "train_char.py"), "--data", module_corpus, "--out-dir", earlier_run,
           "--resume", "--max-iters", "100000", "--eval-interval", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = os.path.join(earlier_run, "ckpt.npz")
    deadline = time.time() + 60
    while load_checkpoint(ckpt)[1]["iter"] < 8 and time.time() < deadline:
        time.sleep(0.05)
    delay = np.random.default_rng().uniform(0, 0.2)
    time.sleep(delay)
    proc.kill()
    proc.wait()
    it = load_checkpoint(ckpt)[1]["iter"]
    done = subprocess.run([*cmd[:-4], "--max-iters", str(it + 2)], capture_output=True, text=True)
    assert done.returncode == 0, f"killed {delay:.3f} s after iter 8's save: {done.stderr}"
    assert "note: taking over" in done.stdout and not [n for n in os.listdir(earlier_run) if n.endswith(".tmp")]
    assert load_checkpoint(ckpt)[1]["iter"] == it + 2


# --- file-system faults: one line, exit 2, the earlier files intact ------------------------------------


def fail_every_rename(monkeypatch):
    def failing_replace(src, dst):
        raise OSError(errno.EIO, "Input/output error", src, None, dst)

    monkeypatch.setattr(os, "replace", failing_replace)


def test_an_io_error_at_the_rename_of_a_fresh_run_leaves_no_file(corpus, tmp_path, capsys, monkeypatch):
    out_dir = str(tmp_path / "out")
    fail_every_rename(monkeypatch)
    code, out, err = run(["--data", corpus, "--out-dir", out_dir, *SMALL, "--max-iters", "2"], capsys)
    assert code == 2 and one_line(err, f"{out_dir}/metrics.csv: Input/output error (every file is replaced whole or "
                                       "not at all: the earlier ones are intact)")
    assert os.listdir(out_dir) == []


def test_an_io_error_at_the_rename_of_a_resume_keeps_the_earlier_files(earlier_run, module_corpus, capsys,
                                                                       monkeypatch):
    before = contents(earlier_run)
    fail_every_rename(monkeypatch)
    code, out, err = resume(earlier_run, module_corpus, capsys)
    assert code == 2 and one_line(err, "metrics.csv: Input/output error")
    assert contents(earlier_run) == before


def test_an_io_error_at_the_rename_of_the_ctrl_c_save_keeps_the_earlier_files(earlier_run, module_corpus, capsys,
                                                                              monkeypatch):
    before = contents(earlier_run)
    step = train_char.train_step

    def step_then_ctrl_c(*args):
        signal.raise_signal(signal.SIGINT)
        return step(*args)

    monkeypatch.setattr(train_char, "train_step", step_then_ctrl_c)
    fail_every_rename(monkeypatch)
    code, out, err = resume(earlier_run, module_corpus, capsys, "--eval-interval", "1000")
    assert code == 2 and one_line(err, "ckpt.npz: Input/output error") and "interrupted" not in out
    assert contents(earlier_run) == before


def test_an_out_dir_that_is_a_file_is_one_line(corpus, tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    code, out, err = run(["--data", corpus, "--out-dir", str(path), *SMALL, "--max-iters", "2"], capsys)
    assert code == 2 and one_line(err, f"--out-dir {path} is a file, not a folder")
    assert path.read_text() == "mine"


@pytest.mark.parametrize("kind", ["folder", "FIFO"])
def test_a_corpus_that_is_not_a_file_is_one_line(tmp_path, capsys, kind):
    path = tmp_path / "corpus"
    path.mkdir() if kind == "folder" else os.mkfifo(path)
    code, out, err = run(["--data", str(path), "--out-dir", str(tmp_path / "o"), *SMALL], capsys)
    assert code == 2 and one_line(err, f"corpus {path} is a {kind}, not a regular file; pass --data PATH")


@pytest.fixture
def tmpfs(tmp_path):
    """tmpfs(size) mounts a tmpfs of size bytes and returns its path; unmounted after the test. Needs root."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = []

    def mount(size):
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("a full disk is made with a small tmpfs, and mounting one needs root and mount(8)")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(mount_point)
        return str(mount_point)

    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], check=True)


def test_a_full_disk_in_the_middle_of_a_run_is_one_line(finished_run, module_corpus, tmpfs, capsys):
    """A disk with room for the run's files and 3 pages more: the next evaluation's writes run out of space."""
    page = 4096
    pages = sum(-(-os.path.getsize(os.path.join(finished_run, n)) // page) for n in os.listdir(finished_run))
    out_dir = os.path.join(tmpfs((pages + 3) * page), "out")
    shutil.copytree(finished_run, out_dir)
    before = contents(out_dir)
    code, out, err = resume(out_dir, module_corpus, capsys)
    assert code == 2 and one_line(err, ": No space left on device (every file is replaced whole or not at all")
    assert err.split(": ")[2].startswith(out_dir + "/") and ".tmp" not in err  # the file, not its temporary name
    after = contents(out_dir)
    assert after["ckpt.npz"] == before["ckpt.npz"] and sorted(after) == sorted(before)  # no temp file left
    assert [r["iter"] for r in read_rows(out_dir)][:3] == ["0", "2", "4"]  # old or new, but whole


@contextlib.contextmanager
def as_another_user():
    """The block runs with the effective user nobody when the tests run as root, which ignores permissions."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def test_a_read_only_out_dir_is_one_line(finished_run, module_corpus, capsys):
    folder = tempfile.mkdtemp()  # not under tmp_path, whose parent only root may enter
    try:
        os.chmod(folder, 0o755)
        out_dir = os.path.join(folder, "out")
        shutil.copytree(finished_run, out_dir)
        corpus = shutil.copy(module_corpus, folder)
        before = contents(out_dir)
        os.chmod(out_dir, 0o555)
        with as_another_user():
            resumed = resume(out_dir, corpus, capsys)
            fresh = run(["--data", corpus, "--out-dir", out_dir, *SMALL, "--max-iters", "2", "--overwrite"], capsys)
        for code, out, err in (resumed, fresh):
            assert code == 2 and one_line(err, f"{out_dir}/lock: Permission denied (every file is replaced whole")
        assert contents(out_dir) == before
    finally:
        os.chmod(os.path.join(folder, "out"), 0o755)
        shutil.rmtree(folder)


def test_an_immutable_out_dir_is_one_line(earlier_run, module_corpus, capsys):
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("making a folder immutable needs root and chattr(1)")
    proc = subprocess.run(["chattr", "+i", earlier_run], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot make a folder immutable here: {proc.stderr.strip()}")
    try:
        before = contents(earlier_run)
        code, out, err = resume(earlier_run, module_corpus, capsys)
        assert code == 2 and one_line(err, f"{earlier_run}/lock: Operation not permitted")
        assert contents(earlier_run) == before
    finally:
        subprocess.run(["chattr", "-i", earlier_run], check=True)


# --- damaged files: one line, exit 2 -------------------------------------------------------------------


def rewrite_metrics(out_dir, change):
    path = os.path.join(out_dir, "metrics.csv")
    lines = open(path, newline="").read().splitlines(keepends=True)
    open(path, "wb").write(change(lines))


@pytest.mark.parametrize("damage, message", [
    (lambda lines: "".join(lines + ["garbage\r\n"]).encode(), "line 5 should have 6 fields, it has 1"),
    (lambda lines: "".join([*lines[:2], "2,abc," + lines[2].split(",", 2)[2], *lines[3:]]).encode(),
     "line 3 is not all numbers: '2,abc,"),
    (lambda lines: "".join([lines[0], lines[1], "\r\n", *lines[2:]]).encode(), "line 3 should have 6 fields, it has 0"),
    (lambda lines: "".join([*lines, "4,1.0,2.0\r\n"]).encode(), "line 5 should have 6 fields, it has 3"),
    (lambda lines: b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "'utf-8' codec can't decode byte 0x89"),
    (lambda lines: "it,train\r\n".encode(), "its first line is not the header iter,train_loss,val_loss"),
], ids=["garbage line", "non-numeric loss", "blank line", "short row", "binary", "another header"])
def test_a_damaged_metrics_csv_is_one_line(earlier_run, module_corpus, capsys, damage, message):
    rewrite_metrics(earlier_run, damage)
    before = contents(earlier_run)
    code, out, err = resume(earlier_run, module_corpus, capsys)
    assert code == 2 and one_line(err, f"cannot resume with {earlier_run}/metrics.csv: {message}")
    assert contents(earlier_run) == before


def test_a_folder_named_metrics_csv_is_one_line(earlier_run, module_corpus, capsys):
    path = os.path.join(earlier_run, "metrics.csv")
    os.unlink(path)
    os.mkdir(path)
    code, out, err = resume(earlier_run, module_corpus, capsys)
    assert code == 2 and one_line(err, f"{path} is a folder, not a regular file; repair or delete it")


def change_meta(change):
    def rewrite(path):
        arrays, meta = load_checkpoint(path)
        save_checkpoint(path, arrays, change(meta))
    return rewrite


def replace_file(make):
    def rewrite(path):
        os.unlink(path)
        make(path)
    return rewrite


DAMAGED_CHECKPOINTS = {
    "no optim": (change_meta(lambda m: {k: v for k, v in m.items() if k != "optim"}), "its metadata has no 'optim'"),
    "no config": (change_meta(lambda m: {k: v for k, v in m.items() if k != "config"}), "its metadata has no 'config'"),
    "no tokenizer": (change_meta(lambda m: {k: v for k, v in m.items() if k != "tokenizer"}),
                     "its metadata has no 'tokenizer'"),
    "a list": (change_meta(lambda m: [m]), "its metadata is list [{"),
    "iter a string": (change_meta(lambda m: {**m, "iter": "4"}), "its metadata.iter is str '4', not int"),
    "n_layer a string": (change_meta(lambda m: {**m, "config": {**m["config"], "n_layer": "1"}}),
                         "its metadata.config.n_layer is str '1', not int"),
    "n_params a string": (change_meta(lambda m: {**m, "optim": {**m["optim"], "n_params": "x"}}),
                          "its metadata.optim.n_params is str 'x', not int"),
    "a .npy file": (replace_file(lambda path: np.save(open(path, "wb"), np.zeros(3))), "not a .npz archive"),
    "a folder": (replace_file(os.mkdir), "ckpt.npz is a folder, not a regular file"),
    "a FIFO": (replace_file(os.mkfifo), "ckpt.npz is a FIFO, not a regular file"),
    "a device": (replace_file(lambda path: os.symlink("/dev/zero", path)), "ckpt.npz is a device, not a regular file"),
}


@contextlib.contextmanager
def time_limit(seconds):
    """A TimeoutError when the block runs longer than seconds (a read of a FIFO would wait forever)."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("mode", ["--resume", "--sample-only"])
@pytest.mark.parametrize("case", DAMAGED_CHECKPOINTS)
def test_a_damaged_checkpoint_is_one_line(earlier_run, module_corpus, capsys, case, mode):
    damage, message = DAMAGED_CHECKPOINTS[case]
    damage(os.path.join(earlier_run, "ckpt.npz"))
    with time_limit(30):
        code, out, err = run(["--data", module_corpus, "--out-dir", earlier_run, mode, "--max-iters", "6"], capsys)
    assert code == 2 and one_line(err, message) and "delete it or pass another --out-dir" in err


def test_a_checkpoint_holding_a_nan_is_refused(earlier_run, module_corpus, capsys):
    path = os.path.join(earlier_run, "ckpt.npz")
    arrays, meta = load_checkpoint(path)
    arrays["model/lm_head.weight" if "model/lm_head.weight" in arrays else next(iter(arrays))][0] = np.nan
    save_checkpoint(path, arrays, meta)
    code, out, err = resume(earlier_run, module_corpus, capsys)
    assert code == 2 and one_line(err, "holds inf or nan") and "from a run that diverged" in err


# --- the files' modes ---------------------------------------------------------------------------------


def test_outputs_get_the_umask_mode_and_keep_a_chmod_and_a_symlink(earlier_run, module_corpus, capsys):
    """Under umask 022 a new file is 0644 (not tempfile's private 0600); a chmod and a symlinked checkpoint
    survive the next save."""
    mode = lambda name: stat.S_IMODE(os.stat(os.path.join(earlier_run, name)).st_mode)  # noqa: E731
    os.unlink(os.path.join(earlier_run, "loss.png"))  # written anew below
    os.chmod(os.path.join(earlier_run, "metrics.csv"), 0o600)
    real = os.path.join(os.path.dirname(earlier_run), "kept", "ckpt.npz")
    os.makedirs(os.path.dirname(real))
    os.replace(os.path.join(earlier_run, "ckpt.npz"), real)
    os.symlink(real, os.path.join(earlier_run, "ckpt.npz"))
    umask = os.umask(0o022)
    try:
        code, out, err = resume(earlier_run, module_corpus, capsys)
    finally:
        os.umask(umask)
    assert code == 0, err
    assert mode("loss.png") == 0o644 and mode("metrics.csv") == 0o600
    assert os.path.islink(os.path.join(earlier_run, "ckpt.npz")) and load_checkpoint(real)[1]["iter"] == 6
