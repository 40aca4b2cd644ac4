"""python -m minigrad.gradcheck: every case of minigrad/opcheck.py, a table, exit status 1 on a failure."""

import subprocess
import sys

import numpy as np
import pytest

import minigrad as mg
from minigrad import opcheck
from minigrad.gradcheck import gradient_comparison, tolerance_excess
from minigrad.gradcheck.__main__ import main


class DoubledTanh(mg.Function):
    """tanh with a backward twice too large."""

    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, dout):
        return 2 * dout * (1 - self.y**2)


def test_command_line_checks_every_case_and_prints_the_table(tmp_path):
    # NOTE: run from tmp_path so the source folder does not shadow the installed package (and its _C)
    result = subprocess.run([sys.executable, "-m", "minigrad.gradcheck"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["op", "cases", "max", "abs", "err", "max", "rel", "err", "of", "tol", "status"]
    rows = {line.split()[0]: line.split() for line in lines[2:] if line.split() and line.split()[-1] in ("ok", "FAIL")}
    expected = {name: len(cases) for table in (opcheck.CASES, opcheck.COMPOSITES, opcheck.LAYERS)
                for name, cases in table.items()}
    assert {"matmul", "softmax", "nn.LayerNorm", "nn.CausalSelfAttention", "GPT"} <= set(expected)
    assert {name: int(row[1]) for name, row in rows.items()} == expected
    rel = [float(row[3]) for row in rows.values()]
    assert rel == sorted(rel, reverse=True)  # worst first
    assert f"{sum(expected.values())} cases, {len(expected)} ops" in result.stdout and "all pass" in result.stdout


def test_a_wrong_backward_fails_and_comes_first(monkeypatch, capsys):
    monkeypatch.setitem(opcheck.COMPOSITES, "doubled_tanh",
                        [("elementwise", DoubledTanh.apply, lambda r: [opcheck.param(r, 3, 4)])])
    assert main(["--op", "doubled_tanh", "--op", "tanh"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[2].split()[0] == "doubled_tanh" and out[2].split()[-1] == "FAIL"
    assert out[3].split()[0] == "tanh" and out[3].split()[-1] == "ok"
    assert "1 FAILED" in out[5] and out[6].startswith("FAIL doubled_tanh [elementwise]: input 0")


def test_a_nan_backward_fails(monkeypatch, capsys):
    class NanBackward(DoubledTanh):
        def backward(self, dout):
            return dout * np.nan

    monkeypatch.setitem(opcheck.COMPOSITES, "nan_tanh", [("nan", NanBackward.apply, lambda r: [opcheck.param(r, 3)])])
    assert main(["--op", "nan_tanh"]) == 1
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row[0] == "nan_tanh" and row[2:5] == ["inf", "inf", "inf"] and row[-1] == "FAIL"


def test_a_case_that_raises_is_a_failure(monkeypatch, capsys):
    def broken(x):
        raise ValueError("shapes do not match")

    monkeypatch.setitem(opcheck.COMPOSITES, "broken", [("raises", broken, lambda r: [opcheck.param(r, 2)])])
    assert main(["--op", "broken"]) == 1
    assert "FAIL broken [raises]: ValueError: shapes do not match" in capsys.readouterr().out


def test_unknown_op_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--op", "no_such_op"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "the ops are: " in err and "add, " in err and "nn.LayerNorm" in err


def test_comparison_gives_both_derivatives_and_nan_fails(rng):
    x = mg.Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    [(i, positions, numeric, analytic)] = gradient_comparison(DoubledTanh.apply, [x])
    assert i == 0 and positions.tolist() == list(range(6))
    np.testing.assert_allclose(analytic, 2 * numeric, rtol=1e-6)
    excess = tolerance_excess(np.array([1.0, 1.0, np.nan]), np.array([1.0, 1.1, 1.0]), atol=1e-5, rtol=1e-3)
    assert excess[0] < 0 < excess[1] and excess[2] == np.inf
