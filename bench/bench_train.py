"""The full training step of minigrad against the same model and recipe in PyTorch, side by side.

    python bench/bench_train.py                    # default and nanoGPT models, all cores
    python bench/bench_train.py --threads 2 --json out/bench_train.json
    python bench/bench_train.py --scaling          # time per step against block size and n_embd

A step is what train_char.py does: get_batch, forward, cross-entropy, zero_grad, backward, global-norm
clipping, AdamW. Each library runs in its own subprocess (so that peak memory is its own and thread
settings apply from the start), alternately for --rounds rounds, after warm-up steps; the table shows
tokens/s (median of the timed steps, with min and max), the ratio minigrad / PyTorch, peak resident
memory, and the share of this machine's float32 matmul rate (a large NumPy matmul timed in this run)
that each step reaches. PyTorch is optional: without it only minigrad's numbers are printed.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = {  # name: (n_layer, n_head, n_embd, block_size, batch_size)
    "default": (4, 4, 64, 128, 64),  # train_char.py's model
    "nanogpt": (6, 6, 384, 256, 64),  # nanoGPT's config/train_shakespeare_char.py
}
VOCAB = 65


def step_flops(n_layer, n_embd, block_size, batch_size, vocab=VOCAB):
    """Matmul FLOPs of one training step, counted from the shapes: every Linear (and the tied head)
    costs 2*in*out per token forward and twice that backward; attention's q k^T and P v cost
    2*T*C per token each forward (all T keys counted, as nanoGPT's MFU estimate does), twice that backward."""
    C, T = n_embd, block_size
    linear_macs = n_layer * (C * 3 * C + C * C + C * 4 * C + 4 * C * C) + C * vocab  # per token
    attention_macs = n_layer * 2 * T * C  # per token: scores and the weighted sum of values
    return 3 * 2 * (linear_macs + attention_macs) * batch_size * T


# --- workers: one library, one config, in a fresh process ---------------------------------------------


def peak_rss_mib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker_minigrad(cfg, steps, warmup):
    import minigrad as mg  # before NumPy, as train_char.py: it sets OpenBLAS's thread spin time
    import numpy as np
    from minigrad.data import get_batch
    from minigrad.optim import clip_grad_norm_

    L, H, C, T, B = cfg
    mg.backend.retain_freed_memory()  # as train_char.py does
    rng = np.random.default_rng(0)
    data = rng.integers(0, VOCAB, 100_000)
    model = mg.GPT(mg.GPTConfig(VOCAB, T, L, H, C), seed=0)
    params = model.parameters()
    opt = model.configure_optimizer(lr=1e-3, weight_decay=0.1)

    def step():
        x, y = get_batch(data, B, T, rng)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm_(params, 1.0)
        opt.step()

    return time_steps(step, steps, warmup), {"version": mg.__version__, "kernels": mg.get_backend()}


def worker_torch(cfg, steps, warmup, threads):
    import numpy as np
    import torch

    import minigrad as mg
    from minigrad.data import get_batch

    sys.path.insert(0, HERE)
    from torch_gpt import TorchGPT

    torch.set_num_threads(threads)
    L, H, C, T, B = cfg
    rng = np.random.default_rng(0)
    data = rng.integers(0, VOCAB, 100_000)
    model = TorchGPT.from_minigrad(mg.GPT(mg.GPTConfig(VOCAB, T, L, H, C), seed=0))
    params = list(model.parameters())
    opt = model.configure_optimizer(lr=1e-3, weight_decay=0.1)

    def step():
        x, y = get_batch(data, B, T, rng)
        _, loss = model(torch.from_numpy(x), torch.from_numpy(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return time_steps(step, steps, warmup), {"version": torch.__version__}


def time_steps(step, steps, warmup):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def run_worker(library, cfg, steps, warmup, threads):
    """One worker subprocess; returns its step times, versions and peak RSS."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "MINIGRAD_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", library, "--worker-config", json.dumps(cfg),
           "--steps", str(steps), "--warmup", str(warmup), "--threads", str(threads)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{library} worker failed:\n{result.stderr.strip()}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the parent: alternate the libraries, then summarise ------------------------------------------------


def matmul_gflops(threads, n=2048, repeats=5):
    """This machine's float32 matmul rate through NumPy's BLAS, in a subprocess with the same threads."""
    code = (
        "import numpy as np, time\n"
        f"a = np.random.rand({n}, {n}).astype(np.float32); b = a.copy(); a @ b\n"
        f"ts = []\nfor _ in range({repeats}):\n    t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)\n"
        f"print(2 * {n}**3 / sorted(ts)[len(ts) // 2] / 1e9)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    return float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True).stdout)


def median(xs):
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])


def summarise(times, tokens, flops, peak_gflops):
    per_step = median(times)
    return {"tokens_per_s": tokens / per_step, "tokens_per_s_min": tokens / max(times),
            "tokens_per_s_max": tokens / min(times), "ms_per_step": 1e3 * per_step,
            "matmul_share": flops / per_step / 1e9 / peak_gflops}


def bench_config(name, cfg, libraries, args, peak):
    L, H, C, T, B = cfg
    tokens, flops = B * T, step_flops(L, C, T, B)
    steps = args.steps if name == "default" else max(2, args.steps // 5)
    times, meta = {lib: [] for lib in libraries}, {}
    for _ in range(args.rounds):
        for lib in libraries:
            out = run_worker(lib, cfg, steps, args.warmup, args.threads)
            times[lib] += out["times"]
            meta[lib] = {**out["meta"], "peak_rss_mib": max(out["peak_rss_mib"], meta.get(lib, {}).get("peak_rss_mib", 0))}
    rows = {lib: {**summarise(times[lib], tokens, flops, peak), **meta[lib], "steps": len(times[lib])}
            for lib in libraries}
    return {"config": dict(zip(("n_layer", "n_head", "n_embd", "block_size", "batch_size"), cfg)),
            "gflop_per_step": flops / 1e9, "results": rows}


def print_table(name, entry):
    c = entry["config"]
    print(f"\n{name}: {c['n_layer']} layers, {c['n_head']} heads, n_embd {c['n_embd']}, block {c['block_size']}, "
          f"batch {c['batch_size']} ({entry['gflop_per_step']:.1f} GFLOP/step)")
    print("| library | tokens/s (median) | min | max | ms/step | peak RSS (MiB) | matmul share |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for lib, r in entry["results"].items():
        print(f"| {lib} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s_min']:,.0f} | {r['tokens_per_s_max']:,.0f} | "
              f"{r['ms_per_step']:.1f} | {r['peak_rss_mib']:.0f} | {100 * r['matmul_share']:.1f}% |")
    if "torch" in entry["results"]:
        ratio = entry["results"]["minigrad"]["tokens_per_s"] / entry["results"]["torch"]["tokens_per_s"]
        mem = entry["results"]["minigrad"]["peak_rss_mib"] / entry["results"]["torch"]["peak_rss_mib"]
        entry["ratio"], entry["memory_ratio"] = ratio, mem
        print(f"minigrad / PyTorch: {ratio:.2f}x tokens/s, {mem:.2f}x peak memory")


def scaling(libraries, args, peak):
    """Time per step as block size and n_embd grow, against the FLOP count (both relative to the smallest)."""
    L, H, C, T, B = CONFIGS["default"]
    grid = [("block_size", (L, H, C, t, B)) for t in (64, 128, 256, 512)]
    grid += [("n_embd", (L, H, c, T, B)) for c in (64, 128, 256, 384)]
    results = []
    for axis, cfg in grid:
        entry = bench_config("scaling", cfg, libraries, argparse.Namespace(**{**vars(args), "rounds": 1}), peak)
        results.append({"axis": axis, **entry})
    print("\n| varied | block | n_embd | GFLOP/step | FLOP growth | " +
          " | ".join(f"{lib} ms/step | {lib} time growth" for lib in libraries) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|---:|" * len(libraries))
    for axis in ("block_size", "n_embd"):
        rows = [r for r in results if r["axis"] == axis]
        base = rows[0]
        for r in rows:
            cells = []
            for lib in libraries:
                ms, ms0 = r["results"][lib]["ms_per_step"], base["results"][lib]["ms_per_step"]
                cells.append(f"{ms:.0f} | {ms / ms0:.2f}x")
            print(f"| {axis} | {r['config']['block_size']} | {r['config']['n_embd']} | {r['gflop_per_step']:.2f} | "
                  f"{r['gflop_per_step'] / base['gflop_per_step']:.2f}x | " + " | ".join(cells) + " |")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every library (default: all cores)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round on the default model (nanoGPT: a fifth)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the libraries")
    parser.add_argument("--configs", default="default,nanogpt", help="comma-separated: default, nanogpt")
    parser.add_argument("--scaling", action="store_true", help="also time steps against block size and n_embd")
    parser.add_argument("--no-torch", action="store_true", help="minigrad alone")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads < 1 or args.steps < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--threads, --steps and --rounds must be positive, --warmup non-negative")

    if args.worker:
        cfg = tuple(json.loads(args.worker_config))
        if args.worker == "minigrad":
            times, meta = worker_minigrad(cfg, args.steps, args.warmup)
        else:
            times, meta = worker_torch(cfg, args.steps, args.warmup, args.threads)
        print(json.dumps({"times": times, "meta": meta, "peak_rss_mib": peak_rss_mib()}))
        return

    libraries = ["minigrad"]
    try:
        import torch  # noqa: F401

        if not args.no_torch:
            libraries.append("torch")
    except ImportError:
        print("PyTorch is not installed: minigrad's numbers alone")
    names = [n.strip() for n in args.configs.split(",")]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {sorted(CONFIGS)}")
    peak = matmul_gflops(args.threads)
    print(f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {cpu_model()}, "
          f"{args.threads} threads; NumPy float32 matmul rate {peak:.0f} GFLOP/s")
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model(), "threads": args.threads,
              "matmul_gflops": peak, "configs": {}}
    for name in names:
        entry = bench_config(name, CONFIGS[name], libraries, args, peak)
        print_table(name, entry)
        report["configs"][name] = entry
    if args.scaling:
        report["scaling"] = scaling(libraries, args, peak)
    if args.json:
        sys.path.insert(0, os.path.dirname(HERE))
        from minigrad.data import write_atomically

        write_atomically(args.json, json.dumps(report, indent=1).encode())
        print(f"\nwrote {args.json}")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
