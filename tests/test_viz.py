"""mg.draw_graph: the DOT it writes, naming, gradient norms, atomic writes and the missing-`dot` error."""

import os
import re
import shutil
import stat
import sys

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F


def small_graph(rng):
    w = mg.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = mg.Tensor(rng.standard_normal(3), requires_grad=True)
    x = rng.standard_normal((2, 4))
    loss = F.cross_entropy(F.linear(x, w, b).tanh() * 2.0, np.array([0, 2]))
    return loss, w, b


def nodes_and_edges(source):
    """{node: label} and [(src, dst)] parsed back from the DOT text."""
    nodes = dict(re.findall(r'^\s*(t\d+) \[.*label="(.*)"\];$', source, re.M))
    edges = re.findall(r"^\s*(t\d+) -> (t\d+);$", source, re.M)
    return nodes, edges


def test_one_node_per_op_with_shape_dtype_and_edges_to_inputs(rng, tmp_path):
    loss, w, b = small_graph(rng)
    path = tmp_path / "g.dot"
    source = mg.draw_graph(loss, path, params={"fc.weight": w, "fc.bias": b})
    assert path.read_text() == source and source.startswith("digraph")
    nodes, edges = nodes_and_edges(source)
    by_title = {label.split("\\n")[0]: node for node, label in nodes.items()}
    assert nodes[by_title["linear"]] == "linear\\n(2, 3) float64"
    assert nodes[by_title["fc.weight"]] == "fc.weight\\n(3, 4) float64"
    assert nodes[by_title["cross_entropy (output)"]] == "cross_entropy (output)\\n() float64"
    assert {title.split(" ")[0] for title in by_title} >= {"tanh", "mul", "constant"}
    # the chain: weight and bias -> linear -> tanh -> mul -> cross_entropy
    for src, dst in [("fc.weight", "linear"), ("fc.bias", "linear"), ("linear", "tanh"),
                     ("tanh", "mul"), ("mul", "cross_entropy (output)")]:
        assert (by_title[src], by_title[dst]) in edges
    ops = [label for label in nodes.values() if "\\n(" in label and not label.startswith(("fc.", "constant"))]
    assert len(ops) == 4  # linear, tanh, mul, cross_entropy: one node per op


def test_a_tensor_used_twice_is_one_node_with_two_edges(rng, tmp_path):
    x = mg.Tensor(rng.standard_normal(3), requires_grad=True, name="x")
    y = x * x
    nodes, edges = nodes_and_edges(mg.draw_graph(y, tmp_path / "g.dot"))
    x_node = next(n for n, label in nodes.items() if label.startswith("x\\n"))
    assert edges.count((x_node, next(n for n, label in nodes.items() if label.startswith("mul")))) == 2


def test_gradient_norms_after_backward(rng, tmp_path):
    loss, w, b = small_graph(rng)
    loss.backward(retain_graph=True)
    source = mg.draw_graph(loss, tmp_path / "g.dot", params={"fc.weight": w, "fc.bias": b}, show_grad_norms=True)
    nodes, _ = nodes_and_edges(source)
    weight_label = next(label for label in nodes.values() if label.startswith("fc.weight"))
    norm = float(weight_label.split("|grad| = ")[1])
    assert norm == pytest.approx(np.linalg.norm(w.grad), rel=1e-3)
    assert "|grad|" not in mg.draw_graph(loss, tmp_path / "g.dot", params={"fc.weight": w})


def test_a_freed_graph_or_no_graph_is_a_clear_error(rng, tmp_path):
    loss, _, _ = small_graph(rng)
    loss.backward()
    with pytest.raises(ValueError, match="retain_graph=True"):
        mg.draw_graph(loss, tmp_path / "g.dot")
    with pytest.raises(ValueError, match="does not require grad"):
        mg.draw_graph(mg.Tensor([1.0]) * 2, tmp_path / "g.dot")
    with pytest.raises(ValueError, match=r"\.dot, \.svg or \.png"):
        mg.draw_graph(small_graph(rng)[0], tmp_path / "g.pdf")


def test_missing_dot_program_says_what_to_do(rng, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    loss, _, _ = small_graph(rng)
    with pytest.raises(RuntimeError, match=r"install graphviz .* or give a \.dot path"):
        mg.draw_graph(loss, tmp_path / "g.svg")
    assert not (tmp_path / "g.svg").exists()
    mg.draw_graph(loss, tmp_path / "g.dot")  # .dot needs no Graphviz
    assert (tmp_path / "g.dot").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in `dot` is a shell script")
def test_svg_goes_through_dot_and_lands_atomically(rng, tmp_path, monkeypatch):
    """A stand-in `dot` that copies its input: checks the call and the temp-then-replace write."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"
    fake.write_text('#!/bin/sh\n# dot -Tsvg -o OUT < source\necho "$1" > "$3"\ncat >> "$3"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    loss, _, _ = small_graph(rng)
    out_dir = tmp_path / "out"
    source = mg.draw_graph(loss, out_dir / "g.svg")
    assert (out_dir / "g.svg").read_text() == "-Tsvg\n" + source
    assert os.listdir(out_dir) == ["g.svg"]  # no temporary file left behind


def test_written_files_get_the_usual_permissions_and_failures_leave_nothing(rng, tmp_path, monkeypatch):
    loss, _, _ = small_graph(rng)
    mg.draw_graph(loss, tmp_path / "g.dot")
    (tmp_path / "reference").write_text("x")
    assert stat.S_IMODE((tmp_path / "g.dot").stat().st_mode) == stat.S_IMODE((tmp_path / "reference").stat().st_mode)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    failing = bin_dir / "dot"
    failing.write_text('#!/bin/sh\necho "syntax error in line 1" >&2\ntouch "$3"\nexit 1\n')
    failing.chmod(failing.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out_dir = tmp_path / "out"
    with pytest.raises(RuntimeError, match="dot -Tpng` failed: syntax error in line 1"):
        mg.draw_graph(loss, out_dir / "g.png")
    assert os.listdir(out_dir) == []  # the half-written temporary file is gone


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's `dot` is not installed")
def test_real_svg_with_graphviz(rng, tmp_path):
    loss, w, b = small_graph(rng)
    mg.draw_graph(loss, tmp_path / "g.svg", params={"fc.weight": w})
    svg = (tmp_path / "g.svg").read_text()
    assert "<svg" in svg and "fc.weight" in svg and "cross_entropy" in svg
