"""The full training step of minigrad against the same model and recipe in PyTorch, side by side.

    python bench/bench_train.py                    # default and nanoGPT models, all cores
    python bench/bench_train.py --threads 2 --json out/bench_train.json
    python bench/bench_train.py --scaling          # time per step against block size and n_embd

A step is what train_char.py does: get_batch, forward, cross-entropy, zero_grad, backward, global-norm
clipping, AdamW. Each library runs in its own subprocess (so that peak memory is its own and thread
settings apply from the start); both stay alive, and after their warm-up steps they take turns, --steps
steps at a time, for --rounds rounds (the first to go alternates), while the other waits idle. The table
shows tokens/s (median of all timed steps, with min and max), peak resident memory, and the share of
this machine's float32 matmul rate (a large NumPy matmul timed in this run) that each step reaches.

The ratio minigrad / PyTorch is the median over rounds of each round's ratio (median step time of
PyTorch's turn over minigrad's): the two turns of a round are seconds apart, so a shared machine that
slows down for a while slows both sides of the rounds it touches, where one ratio of overall medians
moves with whichever library it happened to hit. Its spread over the rounds is printed beside it.
PyTorch is optional: without it only minigrad's numbers are printed.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
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


def worker_minigrad(cfg):
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")  # as train_char.py, before NumPy loads
    import minigrad as mg
    import numpy as np
    from minigrad.data import get_batch
    from minigrad.optim import clip_grad_norm_

    L, H, C, T, B = cfg
    mg.dispatch.retain_freed_memory()  # as train_char.py does
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

    return step, {"version": mg.__version__, "kernels": mg.get_backend()}


def worker_torch(cfg, threads):
    import numpy as np
    import torch

    import minigrad as mg
    from minigrad.data import get_batch

    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))  # the PyTorch twin of the parity test
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

    return step, {"version": torch.__version__}


def time_steps(step, steps):
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


REPLY = "@bench "  # starts each line a worker means for the parent; anything else a library prints is skipped


def serve(step, meta, warmup):
    """The worker's side of the turns: warm up, say so, then on stdin "run N" time N steps and reply
    their times (JSON); "done" replies the versions and the peak RSS and ends the worker."""
    for _ in range(warmup):
        step()
    print(REPLY + json.dumps("ready"), flush=True)
    for line in sys.stdin:
        if line.startswith("run "):
            print(REPLY + json.dumps(time_steps(step, int(line.split()[1]))), flush=True)
        elif line.strip() == "done":
            print(REPLY + json.dumps({"meta": meta, "peak_rss_mib": peak_rss_mib()}), flush=True)
            return


class Worker:
    """One library's worker subprocess, driven turn by turn from the parent."""

    def __init__(self, library, cfg, warmup, threads):
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "MINIGRAD_NUM_THREADS"):
            env[var] = str(threads)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", library, "--worker-config", json.dumps(cfg),
               "--warmup", str(warmup), "--threads", str(threads)]
        self.library = library
        self.stderr = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty worker cannot block on it
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True)
        if self._reply() != "ready":  # built and warmed up
            raise RuntimeError(f"{self.library} worker did not say it was ready")

    def _reply(self):
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY):])
        self.proc.wait()
        self.stderr.seek(0)
        raise RuntimeError(f"{self.library} worker failed:\n{self.stderr.read().strip()}")

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self):
        """Ends the worker; returns its versions and peak RSS."""
        out = self.ask("done")
        self.proc.wait()
        return out


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


def bench_config(name, cfg, libraries, args, peak, rounds=None):
    L, H, C, T, B = cfg
    tokens, flops = B * T, step_flops(L, C, T, B)
    steps = args.steps if name == "default" else max(2, args.steps // 5)
    workers, times, round_ms = [], {lib: [] for lib in libraries}, {lib: [] for lib in libraries}
    try:
        for lib in libraries:
            workers.append(Worker(lib, cfg, args.warmup, args.threads))
        for r in range(rounds or args.rounds):
            for w in workers if r % 2 == 0 else workers[::-1]:
                time.sleep(0.05)  # let the other library's threads stop spinning and sleep first
                turn = w.ask(f"run {steps}")
                times[w.library] += turn
                round_ms[w.library].append(1e3 * median(turn))
        meta = {w.library: w.close() for w in workers}
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
    rows = {lib: {**summarise(times[lib], tokens, flops, peak), **meta[lib]["meta"],
                  "peak_rss_mib": meta[lib]["peak_rss_mib"], "steps": len(times[lib]), "round_ms": round_ms[lib]}
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
        ours, theirs = entry["results"]["minigrad"], entry["results"]["torch"]
        per_round = sorted(t / m for m, t in zip(ours["round_ms"], theirs["round_ms"]))  # tokens/s ratios
        ratio, mem = median(per_round), ours["peak_rss_mib"] / theirs["peak_rss_mib"]
        entry["ratio"], entry["round_ratios"], entry["memory_ratio"] = ratio, per_round, mem
        print(f"minigrad / PyTorch: {ratio:.2f}x tokens/s (median of {len(per_round)} rounds, "
              f"{per_round[0]:.2f}-{per_round[-1]:.2f}), {mem:.2f}x peak memory")


def scaling(libraries, args, peak):
    """Time per step as block size and n_embd grow, against the FLOP count (both relative to the smallest)."""
    L, H, C, T, B = CONFIGS["default"]
    grid = [("block_size", (L, H, C, t, B)) for t in (64, 128, 256, 512)]
    grid += [("n_embd", (L, H, c, T, B)) for c in (64, 128, 256, 384)]
    results = []
    for axis, cfg in grid:
        entry = bench_config("scaling", cfg, libraries, args, peak, rounds=args.scaling_rounds)
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
    parser.add_argument("--steps", type=int, default=5, help="timed steps per turn on the default model (nanoGPT: a fifth, at least 2)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=12, help="rounds of turns, one turn per library in each")
    parser.add_argument("--configs", default="default,nanogpt", help="comma-separated: default, nanogpt")
    parser.add_argument("--scaling", action="store_true", help="also time steps against block size and n_embd")
    parser.add_argument("--scaling-rounds", type=int, default=3, help="rounds for each row of the scaling table")
    parser.add_argument("--no-torch", action="store_true", help="minigrad alone")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.threads, args.steps, args.rounds, args.scaling_rounds) < 1 or args.warmup < 0:
        parser.error("--threads, --steps, --rounds and --scaling-rounds must be positive, --warmup non-negative")

    if args.worker:
        cfg = tuple(json.loads(args.worker_config))
        step, meta = worker_minigrad(cfg) if args.worker == "minigrad" else worker_torch(cfg, args.threads)
        serve(step, meta, args.warmup)
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
        from minigrad.files import write_atomically

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
