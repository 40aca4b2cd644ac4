"""Tokens/s of the training step on the GPU against the CPU, side by side in one process.

    python bench/bench_gpu.py                                  # default and nanoGPT models
    python bench/bench_gpu.py --configs nanogpt --json out/bench_gpu.json

Runners (each skipped, with the reason, where it cannot run): minigrad on the CPU (its C++ kernels),
minigrad on the GPU with the CUDA kernels of _C_cuda, minigrad on the GPU with the CuPy run of the
reference kernels (the fallback when _C_cuda is not built), and PyTorch eager on CUDA. A step is
train_char.py's: batch to the device, forward, loss, zero_grad, backward, clipping, AdamW, loss.item().
The runners alternate for --rounds rounds after --warmup steps each; the table gives the median
tokens/s of the timed steps and the ratio to minigrad on the CPU and to PyTorch on CUDA.
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import minigrad as mg  # noqa: E402
from minigrad.data import get_batch  # noqa: E402

CONFIGS = {  # name: (n_layer, n_head, n_embd, block_size, batch_size), as bench/bench_train.py
    "default": (4, 4, 64, 128, 64),
    "nanogpt": (6, 6, 384, 256, 64),
}
VOCAB = 65


def minigrad_runner(cfg, device, backend):
    """A step function for minigrad on device with the kernels of backend ('auto' or 'numpy')."""
    L, H, C, T, B = cfg
    rng, data = np.random.default_rng(0), np.random.default_rng(1).integers(0, VOCAB, 100_000)
    model = mg.GPT(mg.GPTConfig(VOCAB, T, L, H, C), seed=0).to(device)
    params = model.parameters()
    opt = model.configure_optimizer(lr=1e-3, weight_decay=0.1)

    def step():
        mg.set_backend(backend)  # global: set before every step, as the runners alternate
        x, y = get_batch(data, B, T, rng)
        _, loss = model(mg.Tensor(x).to(device), mg.Tensor(y).to(device))
        opt.zero_grad()
        loss.backward()
        mg.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()  # waits for the GPU, as train_char.py does every step

    return step


def torch_runner(cfg):
    import torch

    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))  # the PyTorch twin of the parity test
    from torch_gpt import TorchGPT

    L, H, C, T, B = cfg
    rng, data = np.random.default_rng(0), np.random.default_rng(1).integers(0, VOCAB, 100_000)
    model = TorchGPT.from_minigrad(mg.GPT(mg.GPTConfig(VOCAB, T, L, H, C), seed=0)).cuda()
    params = list(model.parameters())
    opt = model.configure_optimizer(lr=1e-3, weight_decay=0.1)

    def step():
        x, y = get_batch(data, B, T, rng)
        _, loss = model(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    return step


def runners_for(cfg):
    """{name: step function or the reason it cannot run here}."""
    info = mg.backend_info()
    gpu = info["cuda_available"]
    runners = {"minigrad cpu": minigrad_runner(cfg, "cpu", "auto")}
    if not gpu:
        runners["minigrad cuda (_C_cuda)"] = runners["minigrad cuda (cupy ref)"] = info["cuda_reason"]
    else:
        runners["minigrad cuda (_C_cuda)"] = (minigrad_runner(cfg, "cuda", "auto") if info["cuda_kernels"] == "cuda"
                                              else info["cuda_kernels"])
        runners["minigrad cuda (cupy ref)"] = minigrad_runner(cfg, "cuda", "numpy")
    try:
        import torch

        runners["torch cuda"] = torch_runner(cfg) if torch.cuda.is_available() else "PyTorch has no CUDA here"
    except ImportError:
        runners["torch cuda"] = "PyTorch is not installed"
    return runners


def bench_config(name, cfg, args):
    runners = runners_for(cfg)
    times = {k: [] for k, r in runners.items() if callable(r)}
    for k in times:
        for _ in range(args.warmup):
            runners[k]()
    for _ in range(args.rounds):
        for k in times:
            for _ in range(args.steps):
                t0 = time.perf_counter()
                runners[k]()
                times[k].append(time.perf_counter() - t0)
    tokens = cfg[3] * cfg[4]
    rates = {k: tokens / statistics.median(ts) for k, ts in times.items()}
    print(f"\n{name}: n_layer {cfg[0]}, n_head {cfg[1]}, n_embd {cfg[2]}, block {cfg[3]}, batch {cfg[4]}")
    print(f"{'runner':<26}{'tokens/s':>12}{'vs minigrad cpu':>17}{'vs torch cuda':>15}")
    for k, r in runners.items():
        if k not in rates:
            print(f"{k:<26}{'skipped: ' + r}")
            continue
        vs_torch = f"{rates[k] / rates['torch cuda']:.2f}x" if "torch cuda" in rates else "-"
        print(f"{k:<26}{rates[k]:>12,.0f}{rates[k] / rates['minigrad cpu']:>16.2f}x{vs_torch:>15}")
    mg.set_backend("auto")
    return {"config": cfg, "tokens_per_s": rates, "skipped": {k: r for k, r in runners.items() if not callable(r)}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="default,nanogpt", help="comma-separated: default, nanogpt")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per runner per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per runner first")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the runners")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    info = mg.backend_info()
    device = "no GPU"
    if info["cuda_available"]:
        import cupy

        device = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    print(f"{datetime.date.today()}, GPU: {device}, CPU threads: {os.cpu_count()}, "
          f"CUDA kernels: {info['cuda_kernels']}")
    results = {name: bench_config(name, CONFIGS[name], args) for name in args.configs.split(",")}
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"date": str(datetime.date.today()), "gpu": device, "results": results}, f, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
