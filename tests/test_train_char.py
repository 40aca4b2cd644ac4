"""train_char.py as a user runs it: a smoke run, its outputs, resume, samples, and every bad input."""

import csv
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import train_char  # noqa: E402

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
    from minigrad.checkpoint import load_checkpoint

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
    from minigrad.checkpoint import load_checkpoint

    assert load_checkpoint(os.path.join(out_dir, "ckpt.npz"))[1]["iter"] > 0


def test_help_documents_every_flag_with_its_default():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "train_char.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--data", "--out-dir", "--max-iters", "--eval-interval", "--eval-iters", "--batch-size",
                 "--block-size", "--n-layer", "--n-head", "--n-embd", "--lr", "--min-lr", "--warmup-iters",
                 "--lr-decay-iters", "--weight-decay", "--grad-clip", "--seed", "--device", "--resume",
                 "--sample-only", "--num-samples", "--sample-len", "--temperature", "--top-k"):
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
