"""Fused ops against the same math composed of primitives: nodes, and time of forward + backward.

    python bench/fused_vs_composite.py [--B 8 --NH 4 --T 64 --hs 16 --repeat 20]

Both sides run in this process on the same float32 inputs; the ratio composite/fused is the speedup.
The fused side uses whatever backend.kernels_for(x) picks; its module name is printed.
"""

import argparse
import math
import os
import sys
import time

import numpy as np

import minigrad as mg
import minigrad.functional as F
from minigrad.dispatch import kernels_for

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from composites import composite_attention, composite_cross_entropy, composite_layer_norm  # noqa: E402


def run(fn, inputs, repeat):
    """Best time of forward + backward over repeat runs, and the op nodes of one run."""
    best = math.inf
    for _ in range(repeat):
        for t in inputs:
            t.grad = None
        start = time.perf_counter()
        out = fn(*inputs)
        out.backward(np.ones(out.shape, np.float32))
        best = min(best, time.perf_counter() - start)
    with mg.profile() as prof:
        fn(*inputs)
    return best, sum(s.forward_calls for s in prof.stats.values())


def main():
    parser = argparse.ArgumentParser()
    for name, default in (("B", 8), ("NH", 4), ("T", 64), ("hs", 16), ("V", 65), ("repeat", 20)):
        parser.add_argument(f"--{name}", type=int, default=default)
    a = parser.parse_args()
    rng = np.random.default_rng(0)

    def leaf(*shape):
        return mg.Tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)

    C = a.NH * a.hs
    targets = rng.integers(0, a.V, size=(a.B, a.T))
    cases = [
        ("attention", composite_attention, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
         [leaf(a.B, a.NH, a.T, a.hs) for _ in range(3)]),
        ("layer_norm", composite_layer_norm, F.layer_norm, [leaf(a.B, a.T, C), leaf(C), leaf(C)]),
        ("cross_entropy", lambda z: composite_cross_entropy(z, targets), lambda z: F.cross_entropy(z, targets),
         [leaf(a.B, a.T, a.V)]),
    ]
    print(f"B={a.B} NH={a.NH} T={a.T} hs={a.hs} V={a.V} float32, fused kernels: {kernels_for(np.zeros(1)).__name__}")
    print(f"{'op':<14} {'composite nodes':>15} {'fused nodes':>11} {'composite ms':>12} {'fused ms':>9} {'speedup':>8}")
    for name, composite, fused, inputs in cases:
        t_comp, n_comp = run(composite, inputs, a.repeat)
        t_fused, n_fused = run(fused, inputs, a.repeat)
        print(f"{name:<14} {n_comp:>15} {n_fused:>11} {t_comp * 1e3:>12.3f} {t_fused * 1e3:>9.3f} {t_comp / t_fused:>7.2f}x")


if __name__ == "__main__":
    main()
