"""mg.draw_graph: the computation graph that produced a tensor, as Graphviz DOT (or SVG/PNG).

    loss = F.cross_entropy(model(x), y)
    mg.draw_graph(loss, "out/graph.dot", params=dict(model.named_parameters()))

One box per op (its name, output shape and dtype) with arrows from its inputs; parameters are
named by their module path when ``params`` is given. The graph is the tape the engine recorded
(``tensor._ctx`` is the Function that made it, ``fn.inputs`` its input Tensors), so only ops on a
path to something that requires grad appear, and backward frees it: draw before backward, or after
``backward(retain_graph=True)`` to see the gradients' norms (``show_grad_norms=True``).
"""

import os
import shutil
import subprocess

import numpy as np

from minigrad.backend import to_device
from minigrad.files import atomic_path, write_atomically
from minigrad.tensor import Tensor, _topological_order

FORMATS = ("dot", "svg", "png")


def draw_graph(tensor, path, params=None, show_grad_norms=False):
    """Write the graph that produced ``tensor`` to path (.dot, or .svg/.png through Graphviz's ``dot``).

    params: a dict (or pairs) name -> Tensor, e.g. ``dict(model.named_parameters())``, naming leaves.
    show_grad_norms: add ||grad||_2 to every tensor that holds a .grad (leaves after backward, and
    the non-leaves you called ``retain_grad()`` on). Returns the DOT source.
    """
    fmt = os.path.splitext(str(path))[1].lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"draw_graph: cannot write {str(path)!r}; give a path ending in .dot, .svg or .png")
    dot_program = shutil.which("dot")
    if fmt != "dot" and dot_program is None:
        raise RuntimeError(
            f"draw_graph: writing .{fmt} needs Graphviz's `dot` program, which is not installed; "
            "install graphviz (e.g. apt install graphviz) or give a .dot path"
        )
    source = to_dot(tensor, params, show_grad_norms)
    if fmt == "dot":
        write_atomically(path, source.encode("utf-8"))
    else:
        with atomic_path(path) as tmp:
            _run_dot(dot_program, fmt, source, tmp)
    return source


def to_dot(tensor, params=None, show_grad_norms=False):
    """The DOT source of the graph that produced tensor (see draw_graph)."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"draw_graph: expected a Tensor, got {type(tensor).__name__}")
    if not tensor.requires_grad:
        raise ValueError(
            "draw_graph: this tensor does not require grad, so no graph was recorded; "
            "build it from tensors with requires_grad=True, outside no_grad()"
        )
    names = {id(t): name for name, t in dict(params or {}).items()}
    order = _topological_order(tensor)  # every tensor that requires grad, inputs first
    for t in order:
        if t._ctx is not None and t._ctx.inputs is None:
            raise ValueError(
                "draw_graph: the graph was freed by backward(); draw before backward, "
                "or call backward(retain_graph=True)"
            )
    ids = {}  # id(tensor) -> DOT node name

    def node_id(t):
        return ids.setdefault(id(t), f"t{len(ids)}")

    lines = ["digraph minigrad {", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
    for t in order:
        fn = t._ctx
        if fn is None:  # a leaf that requires grad: a parameter or an input being differentiated
            title = names.get(id(t)) or t.name or "leaf"
            lines.append(f'  {node_id(t)} [shape=ellipse, style=filled, fillcolor="#cde4ff", '
                         f'label="{_label(title, t, show_grad_norms)}"];')
            continue
        title = fn.name or type(fn).__name__
        if t is tensor:
            title += " (output)"
        lines.append(f'  {node_id(t)} [shape=box, style="rounded,filled", fillcolor="#f2f2f2", '
                     f'label="{_label(title, t, show_grad_norms)}"];')
        for inp in fn.inputs:
            if inp is None:
                continue
            if id(inp) not in ids and not inp.requires_grad:  # a constant: drawn once, when first met
                title = names.get(id(inp)) or inp.name or "constant"
                if inp.size == 1:
                    title += f" {to_device(inp.data, 'cpu').item():.4g}"
                lines.append(f'  {node_id(inp)} [shape=plaintext, fontcolor="#666666", '
                             f'label="{_label(title, inp, False)}"];')
            lines.append(f"  {node_id(inp)} -> {node_id(t)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _label(title, t, show_grad_norms):
    """'title\\n(2, 3) float32', plus the gradient's norm when asked and present (DOT-escaped)."""
    parts = [title, f"{tuple(t.shape)} {t.dtype}"]
    if show_grad_norms and t.grad is not None:
        parts.append(f"|grad| = {float(np.linalg.norm(to_device(t.grad, 'cpu'))):.3e}")
    escaped = [p.replace("\\", "\\\\").replace('"', '\\"') for p in parts]
    return "\\n".join(escaped)  # DOT's own line break inside a label


def _run_dot(dot_program, fmt, source, out_path):
    result = subprocess.run([dot_program, f"-T{fmt}", "-o", out_path], input=source,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"draw_graph: `dot -T{fmt}` failed: {result.stderr.strip()}")

