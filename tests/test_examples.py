"""Every script in examples/ runs to the end, with small settings, and prints what it promises."""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def run_example(name, *args, cwd, env=None):
    # NOTE: run from cwd (a temporary folder) so the source tree does not shadow the installed package
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd,
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr
    return result.stdout


def test_mlp_2d_learns_two_moons(tmp_path):
    out = run_example("mlp_2d.py", "--steps", "200", cwd=tmp_path)
    accuracy = float(re.search(r"final accuracy ([\d.]+)", out).group(1))
    assert accuracy >= 0.95, out


def test_custom_op_passes_gradcheck_and_catches_the_wrong_backward(tmp_path):
    out = run_example("custom_op.py", cwd=tmp_path)
    assert "gradcheck(Softplus): True" in out and "gradcheck(softplus(x) @ w.T): True" in out
    assert re.search(r"wrong backward caught: gradcheck: input 0 at index \(\d+, \d+\)", out)
    assert "dy/dx        [0.         0.11920292 0.5        0.95257413 1.        ]" in out  # sigmoid(x)


def test_sgd_vs_adamw_trains_both_and_writes_the_plot(tmp_path):
    out = run_example("sgd_vs_adamw.py", "--steps", "150", "--out", str(tmp_path / "plots" / "cmp.png"), cwd=tmp_path)
    final = {name: (float(start), float(end)) for name, start, end in
             re.findall(r"^(\w+)\s+loss: start ([\d.]+), .* final ([\d.]+)$", out, re.M)}
    assert set(final) == {"SGD", "AdamW"}
    assert final["SGD"][0] == final["AdamW"][0]  # the same initial weights
    assert all(end < start / 5 for start, end in final.values()), out
    png = (tmp_path / "plots" / "cmp.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert os.listdir(tmp_path / "plots") == ["cmp.png"]  # written atomically: no temporary file left


def test_draw_attention_block_without_graphviz(tmp_path):
    env = {**os.environ, "PATH": ""}  # no `dot` to find; the script is started by its full path
    out = run_example("draw_attention_block.py", "--out", str(tmp_path), cwd=tmp_path, env=env)
    source = (tmp_path / "attention_block.dot").read_text()
    for name in ("attn.c_attn.weight", "mlp.c_proj.bias", "ln_1.weight", "self_attention",
                 "layer_norm", "gelu", "|grad| = "):
        assert name in source
    assert not (tmp_path / "attention_block.svg").exists() and "`dot` is not installed" in out
    assert re.search(r"^SelfAttention\s+1\s", out, re.M)  # the profile table


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's `dot` is not installed")
def test_draw_attention_block_with_graphviz(tmp_path):
    run_example("draw_attention_block.py", "--out", str(tmp_path), cwd=tmp_path)
    assert "<svg" in (tmp_path / "attention_block.svg").read_text()


TESTED = {"mlp_2d.py", "custom_op.py", "sgd_vs_adamw.py", "draw_attention_block.py"}


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_has_a_test(name):
    assert name in TESTED, f"examples/{name} has no test in tests/test_examples.py"
