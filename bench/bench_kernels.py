"""Times every fused kernel of minigrad._C against its NumPy reference (minigrad.kernels), side by
side in one process, on the seed model's shapes, and prints a table of milliseconds and speedups.

    python bench/bench_kernels.py [--dtype float32|float64] [--threads N] [--repeat 7]

Shapes: B=64, NH=4, T=128, hs=16, C=64 = NH*hs, N=B*T rows, V=65; GELU on the MLP's (B, T, 4C); the
embedding's backward on the token embedding's (B, T, C) gradient;
AdamW and the global norm over the parameters of the 4-layer, ~212k-parameter seed GPT.
Each time is the median over --repeat runs, each run calling the kernel enough times to last >= 20 ms.
"""

import argparse
import time

import numpy as np

from minigrad import dispatch
from minigrad import kernels as ref

B, NH, T, hs, V, n_layer = 64, 4, 128, 16, 65, 4
C, N = NH * hs, B * T


def seed_gpt_param_shapes():
    """wte, wpe, per block ln_1, c_attn, attn c_proj, ln_2, c_fc, mlp c_proj, then ln_f (lm_head tied to wte)."""
    block = [(C,), (C,), (3 * C, C), (3 * C,), (C, C), (C,), (C,), (C,), (4 * C, C), (4 * C,), (C, 4 * C), (C,)]
    return [(V, C), (T, C)] + block * n_layer + [(C,), (C,)]


def median_ms(fn, repeat):
    """Median milliseconds per call of fn()."""
    fn()  # warm up: first-touch page faults, lazy imports
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < 0.02:
        fn()
        calls += 1
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return 1e3 * float(np.median(times))


def cases(dtype, rng):
    """(name, reference call, C++ call) on fresh inputs."""
    randn = lambda *shape: rng.standard_normal(shape).astype(dtype)
    x, w, b, dx = randn(B, T, C), randn(C), randn(C), randn(B, T, C)
    _, mean, rstd = ref.layernorm_forward(x, w, b, 1e-5)
    h, dh = randn(B, T, 4 * C), randn(B, T, 4 * C)
    q, k, v, dy = randn(B, NH, T, hs), randn(B, NH, T, hs), randn(B, NH, T, hs), randn(B, NH, T, hs)
    lse = {m: m.attention_forward(q, k, v, True)[1] for m in (ref, dispatch._C)}
    logits, targets = randn(N, V), rng.integers(0, V, N)
    dtok, ids = randn(B, T, C), rng.integers(0, V, (B, T))
    _, cprobs = ref.crossentropy_forward(logits, targets)
    shapes = seed_gpt_param_shapes()
    params, grads = [randn(*s) for s in shapes], [randn(*s) for s in shapes]
    ms, vs = [np.zeros(s, dtype) for s in shapes], [np.zeros(s, dtype) for s in shapes]

    def both(name, call):
        return name, (lambda: call(ref)), (lambda: call(dispatch._C))

    return [
        both(f"layernorm_forward   ({B},{T},{C})", lambda m: m.layernorm_forward(x, w, b, 1e-5)),
        both(f"layernorm_backward  ({B},{T},{C})", lambda m: m.layernorm_backward(dx, x, w, mean, rstd)),
        both(f"gelu_forward        ({B},{T},{4 * C})", lambda m: m.gelu_forward(h)),
        both(f"gelu_backward       ({B},{T},{4 * C})", lambda m: m.gelu_backward(dh, h)),
        both(f"attention_forward   ({B},{NH},{T},{hs}) causal", lambda m: m.attention_forward(q, k, v, True)),
        both(f"attention_backward  ({B},{NH},{T},{hs}) causal",
             lambda m: m.attention_backward(dy, q, k, v, lse[m], True)),
        both(f"crossentropy_forward  ({N},{V})", lambda m: m.crossentropy_forward(logits, targets)),
        both(f"crossentropy_backward ({N},{V})", lambda m: m.crossentropy_backward(1.0, cprobs, targets)),
        both(f"embedding_backward  ({B},{T},{C}) into {V} rows", lambda m: m.embedding_backward(dtok, ids, V)),
        both(f"adamw_update  {sum(int(np.prod(s)) for s in shapes)} params",
             lambda m: m.adamw_update(params, grads, ms, vs, 1e-3, 0.9, 0.95, 1e-8, 0.1, 1)),
        both(f"global_norm   {len(shapes)} arrays", lambda m: m.global_norm(grads)),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=None, help="threads for the C++ kernels (default: all)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    if dispatch._C is None:
        raise SystemExit(f"the C++ kernels are unavailable: {dispatch._C_REASON}")
    if args.threads is not None:
        dispatch.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype)
    print(f"{dtype}, C++ kernels on {dispatch._C.get_num_threads()} thread(s), median of {args.repeat} runs")
    print(f"{'kernel':48s} {'numpy ms':>9s} {'C++ ms':>9s} {'speedup':>8s}")
    total_ref = total_cpp = 0.0
    for name, run_ref, run_cpp in cases(dtype, np.random.default_rng(0)):
        t_ref, t_cpp = median_ms(run_ref, args.repeat), median_ms(run_cpp, args.repeat)
        total_ref, total_cpp = total_ref + t_ref, total_cpp + t_cpp
        print(f"{name:48s} {t_ref:9.3f} {t_cpp:9.3f} {t_ref / t_cpp:7.1f}x")
    print(f"{'total':48s} {total_ref:9.3f} {total_cpp:9.3f} {total_ref / total_cpp:7.1f}x")


if __name__ == "__main__":
    main()
