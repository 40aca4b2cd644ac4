"""Every script in examples/ runs to the end, with small settings, and prints what it promises."""

import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def run_example(name, *args, cwd):
    # NOTE: run from cwd (a temporary folder) so the source tree does not shadow the installed package
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd,
                            capture_output=True, text=True, timeout=120)
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


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_has_a_test(name):
    tested = {"mlp_2d.py", "custom_op.py"}
    assert name in tested, f"examples/{name} has no test in tests/test_examples.py"
