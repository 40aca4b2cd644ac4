"""Draw the graph of one transformer block (LayerNorm, causal self-attention, MLP, residuals).

    python examples/draw_attention_block.py [--out out]

Writes out/attention_block.dot, and out/attention_block.svg when Graphviz's `dot` is installed
(apt install graphviz). Parameters are named by their module path (attn.c_attn.weight, ...) and,
after backward, carry the norm of their gradient.
"""

import argparse
import os
import shutil

import numpy as np

import minigrad as mg


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="out", help="folder for the .dot (and .svg) files")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    B, T, C, NH = 2, 8, 16, 2
    block = mg.nn.Block(C, NH, rng=rng)
    x = mg.Tensor(rng.standard_normal((B, T, C)).astype(np.float32), requires_grad=True, name="x (B, T, C)")
    y = block(x)  # (B, T, C)
    loss = (y * y).mean()

    loss.backward(retain_graph=True)  # keep the graph, so it can still be drawn after backward
    params = dict(block.named_parameters())
    dot_path = os.path.join(args.out, "attention_block.dot")
    source = mg.draw_graph(loss, dot_path, params=params, show_grad_norms=True)
    print(f"wrote {dot_path}: {source.count(' -> ')} edges, {len(params)} parameters")
    if shutil.which("dot"):
        svg_path = os.path.join(args.out, "attention_block.svg")
        mg.draw_graph(loss, svg_path, params=params, show_grad_norms=True)
        print(f"wrote {svg_path}")
    else:
        print("Graphviz's `dot` is not installed: render with `dot -Tsvg attention_block.dot -o attention_block.svg`")

    with mg.profile() as prof:  # the same block once more, op by op
        (block(x) ** 2).mean().backward()
    prof.table()


if __name__ == "__main__":
    main()
