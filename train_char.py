"""Train a character-level GPT on tiny-shakespeare with minigrad alone.

    python train_char.py                   # the defaults: 4 layers, 4 heads, n_embd 64, 5,000 iters
    python train_char.py --max-iters 200   # a short run
    python train_char.py --resume          # go on from out/ckpt.npz
    python train_char.py --sample-only     # print samples from out/ckpt.npz

The order is nanoGPT's: config, data, model, optimizer, schedule, loop, sample. Outputs in --out-dir:
ckpt.npz (model, optimizer, iteration, RNG state, config, tokenizer), metrics.csv and loss.png.
"""

import argparse
import csv
import io
import math
import os
import signal
import sys
import time

import numpy as np

import minigrad as mg
from minigrad.checkpoint import load_checkpoint, save_checkpoint
from minigrad.data import CharTokenizer, download_tiny_shakespeare, get_batch, read_corpus, train_val_split
from minigrad.data import write_atomically
from minigrad.optim import AdamW, clip_grad_norm_, lr_at

DEFAULT_DATA = os.path.join("data", "tinyshakespeare.txt")

# --- config: every flag, its default and what it means ---------------------------------------------

DEFAULTS = {
    "data": DEFAULT_DATA, "out_dir": "out",
    "max_iters": 5000, "eval_interval": 500, "eval_iters": 100,
    "batch_size": 64, "block_size": 128, "n_layer": 4, "n_head": 4, "n_embd": 64,
    "lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 100, "lr_decay_iters": 5000,
    "weight_decay": 0.1, "grad_clip": 1.0, "seed": 1337, "device": "cpu",
    "num_samples": 1, "sample_len": 500, "temperature": 1.0, "top_k": None,
}
HELP = {
    "data": "UTF-8 text corpus; the default is downloaded when missing",
    "out_dir": "folder for ckpt.npz, metrics.csv and loss.png",
    "max_iters": "optimizer steps in total", "eval_interval": "evaluate train and val loss every this many iters",
    "eval_iters": "batches per split in each evaluation", "batch_size": "sequences per batch",
    "block_size": "context length T", "n_layer": "transformer blocks", "n_head": "attention heads",
    "n_embd": "embedding width C (divisible by n_head)", "lr": "peak learning rate",
    "min_lr": "learning rate at the end of the cosine decay", "warmup_iters": "iters of linear warmup",
    "lr_decay_iters": "iter at which the cosine decay reaches min_lr", "weight_decay": "AdamW decoupled weight decay (2-D weights only)",
    "grad_clip": "clip the global gradient norm to this (0 turns clipping off)", "seed": "seed of the init and of the batches",
    "device": "cpu, or cuda (needs CuPy)", "num_samples": "samples to print at the end or with --sample-only",
    "sample_len": "characters per sample", "temperature": "sampling temperature", "top_k": "sample from the k most likely characters only",
}
# Flags that define the model or the recipe: a --resume must not change them.
LOCKED_ON_RESUME = ("batch_size", "block_size", "n_layer", "n_head", "n_embd", "lr", "min_lr", "warmup_iters",
                    "lr_decay_iters", "weight_decay", "grad_clip", "seed")
POSITIVE = ("max_iters", "eval_interval", "eval_iters", "batch_size", "block_size", "n_layer", "n_head", "n_embd",
            "lr", "lr_decay_iters", "num_samples", "temperature")


class UsageError(Exception):
    """Bad input: main() prints it as one line and exits with code 2."""


def build_parser():
    parser = argparse.ArgumentParser(description="Train a character-level GPT with minigrad.")
    types = {"data": str, "out_dir": str, "device": str, "top_k": int}
    for name, default in DEFAULTS.items():
        flag = "--" + name.replace("_", "-")
        kind = types.get(name, type(default))
        extra = {"choices": ["cpu", "cuda"]} if name == "device" else {}
        # default=None: a flag left out is told apart from one given (a resume keeps the checkpoint's value)
        parser.add_argument(flag, type=kind, default=None, help=f"{HELP[name]} (default: {default})", **extra)
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out-dir")
    parser.add_argument("--sample-only", action="store_true", help="load the checkpoint and print samples, no training")
    return parser


def resolve_config(given, saved=None):
    """The run's config: the flags given, then the checkpoint's values (on resume), then the defaults."""
    config = dict(DEFAULTS)
    if saved is not None:
        for name in LOCKED_ON_RESUME:
            if given.get(name) is not None and given[name] != saved[name]:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} {given[name]} differs from the checkpoint's {saved[name]}; "
                                 "drop the flag to resume, or use a new --out-dir")
        config.update({k: v for k, v in saved.items() if k in DEFAULTS})
    config.update({k: v for k, v in given.items() if v is not None and k in DEFAULTS})
    for name in POSITIVE:
        if config[name] <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {config[name]}")
    for name in ("min_lr", "warmup_iters", "weight_decay", "grad_clip"):
        if config[name] < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {config[name]}")
    if config["top_k"] is not None and config["top_k"] <= 0:
        raise UsageError(f"--top-k must be positive, got {config['top_k']}")
    if config["n_embd"] % config["n_head"]:
        raise UsageError(f"--n-embd {config['n_embd']} is not divisible by --n-head {config['n_head']}")
    if config["warmup_iters"] >= config["lr_decay_iters"]:
        raise UsageError(f"--warmup-iters {config['warmup_iters']} must be below --lr-decay-iters {config['lr_decay_iters']}")
    return config


def load_text(path):
    if not os.path.exists(path) and path == DEFAULT_DATA:
        print(f"{path} is missing: downloading tiny-shakespeare ...", flush=True)
        try:
            download_tiny_shakespeare(path)
        except ValueError as e:
            raise UsageError(str(e)) from None
        print(f"saved {path}", flush=True)
    try:
        return read_corpus(path)
    except ValueError as e:
        raise UsageError(str(e)) from None


# --- checkpoint and metrics -----------------------------------------------------------------------


def save_run(path, model, optimizer, it, rng, config, tokenizer):
    """Everything a bit-exact resume needs, in one atomically written file."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for name, buffers in opt["buffers"].items():
        arrays.update({f"optim/{name}/{i}": b for i, b in enumerate(buffers) if b is not None})
    meta = {"iter": it, "config": config, "tokenizer": tokenizer.to_dict(), "rng": rng.bit_generator.state,
            "optim": {"hyper": opt["hyper"], "step": opt["step"], "n_params": len(optimizer.parameters())}}
    save_checkpoint(path, arrays, meta)


def restore_run(arrays, meta, model, optimizer, rng):
    n = meta["optim"]["n_params"]
    buffers = {name: [arrays.get(f"optim/{name}/{i}") for i in range(n)] for name in optimizer.buffer_names}
    try:
        model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
        optimizer.load_state_dict({"hyper": meta["optim"]["hyper"], "step": meta["optim"]["step"], "buffers": buffers})
        rng.bit_generator.state = meta["rng"]
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"checkpoint does not fit this model ({e}); use a new --out-dir") from None
    return meta["iter"]


def write_metrics(path, rows):
    """metrics.csv, rewritten whole (atomically) at every evaluation."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["iter", "train_loss", "val_loss", "lr", "grad_norm", "tokens_per_s"])
    writer.writerows(rows)
    write_atomically(path, text.getvalue().encode())


def read_metrics(path, up_to_iter):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [[int(r[0])] + [float(x) for x in r[1:]] for r in rows if int(r[0]) <= up_to_iter]


def plot_losses(path, rows):
    """loss.png: train and val loss at each evaluation against the iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iters = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(iters, [r[1] for r in rows], "o-", label="train")
    ax.plot(iters, [r[2] for r in rows], "o-", label="val")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy loss (nats)")
    ax.set_title("minigrad char-GPT")
    ax.grid(alpha=0.3)
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    write_atomically(path, buffer.getvalue())


# --- evaluation and sampling ----------------------------------------------------------------------


def estimate_loss(model, splits, config, seed, device):
    """Mean loss over eval_iters batches of each split; the batches come from their own RNG, so
    evaluating never moves the training batches."""
    rng = np.random.default_rng(seed)
    losses = {}
    model.eval()
    with mg.no_grad():
        for name, data in splits.items():
            total = 0.0
            for _ in range(config["eval_iters"]):
                x, y = get_batch(data, config["batch_size"], config["block_size"], rng)
                _, loss = model(to_device(x, device), to_device(y, device))
                total += loss.item()
            losses[name] = total / config["eval_iters"]
    model.train()
    return losses


def to_device(a, device):
    return a if device == "cpu" else mg.Tensor(a).to(device)


def print_samples(model, tokenizer, config, seed):
    rng = np.random.default_rng(seed)
    start = tokenizer.stoi.get("\n", 0)
    for i in range(config["num_samples"]):
        ids = model.generate(np.array([[start]]), config["sample_len"], config["temperature"], config["top_k"], rng)
        print(f"--- sample {i + 1} ---")
        print(tokenizer.decode(ids[0, 1:]))


# --- the run --------------------------------------------------------------------------------------


def run(args):
    given = {k: v for k, v in vars(args).items() if k in DEFAULTS}
    out_dir = args.out_dir or DEFAULTS["out_dir"]
    ckpt_path = os.path.join(out_dir, "ckpt.npz")
    saved = None
    if args.resume or args.sample_only:
        if not os.path.exists(ckpt_path):
            raise UsageError(f"no checkpoint at {ckpt_path}: train first, or pass --out-dir of an earlier run")
        try:
            saved = load_checkpoint(ckpt_path)
        except ValueError as e:
            raise UsageError(f"{e}; delete it or pass another --out-dir") from None
    config = resolve_config(given, saved[1]["config"] if saved else None)
    device = config["device"]
    if device == "cuda" and mg.backend_info().get("cuda_available") is not True:
        raise UsageError("--device cuda needs CuPy and an NVIDIA GPU; install the [cuda] extra or use --device cpu")

    # data
    tokenizer = CharTokenizer.from_dict(saved[1]["tokenizer"]) if saved else None
    if not args.sample_only:
        text = load_text(config["data"])
        if len(text) < config["block_size"] + 2:
            raise UsageError(f"corpus {config['data']} has {len(text)} characters; it needs at least "
                             f"block_size + 2 = {config['block_size'] + 2}")
        if tokenizer is None:
            tokenizer = CharTokenizer.from_text(text)
        try:
            ids = tokenizer.encode(text)
        except ValueError as e:
            raise UsageError(f"{e}: this corpus does not match the checkpoint's") from None
        train_ids, val_ids = train_val_split(ids)
        if len(val_ids) < config["block_size"] + 2:
            raise UsageError(f"corpus {config['data']} is too short: its 10% validation split has {len(val_ids)} "
                             f"characters, fewer than block_size + 2 = {config['block_size'] + 2}")

    # model
    model_config = mg.GPTConfig(tokenizer.vocab_size, config["block_size"], config["n_layer"], config["n_head"],
                                config["n_embd"])
    model = mg.GPT(model_config, seed=config["seed"]).to(device)
    kernels = mg.get_backend() if device == "cpu" else mg.backend_info()["cuda_kernels"]
    print(f"minigrad {mg.__version__}, device: {device}, kernels: {kernels}, model: {model.num_parameters():,} parameters "
          f"({model_config.n_layer} layers, {model_config.n_head} heads, n_embd {model_config.n_embd}, "
          f"vocab {model_config.vocab_size})", flush=True)

    # optimizer: weight decay on the 2-D weights only (not on biases and LayerNorm gains)
    params = model.parameters()
    optimizer = AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": config["weight_decay"]},
                       {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                      lr=config["lr"], betas=(0.9, 0.99))
    rng = np.random.default_rng(config["seed"])
    start_iter = 0
    if saved:
        start_iter = restore_run(*saved, model, optimizer, rng)
    if args.sample_only:
        print_samples(model, tokenizer, config, config["seed"])
        return 0

    def schedule(it):
        return lr_at(it, config["lr"], config["min_lr"], config["warmup_iters"], config["lr_decay_iters"])

    os.makedirs(out_dir, exist_ok=True)
    metrics_path, plot_path = os.path.join(out_dir, "metrics.csv"), os.path.join(out_dir, "loss.png")
    rows = read_metrics(metrics_path, start_iter) if saved else []
    splits = {"train": train_ids, "val": val_ids}
    max_iters, tokens_per_step = config["max_iters"], config["batch_size"] * config["block_size"]

    # Ctrl-C: finish the current step, save a checkpoint, exit cleanly (a second Ctrl-C stops at once)
    stop = {"requested": False}

    def request_stop(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True

    previous_handler = signal.signal(signal.SIGINT, request_stop)
    from tqdm import tqdm

    bar = tqdm(total=max_iters, initial=start_iter, unit="it", dynamic_ncols=True, disable=None)
    t_run, t_window, tokens_window = time.perf_counter(), time.perf_counter(), 0
    grad_norm, tokens_per_s, last = float("nan"), float("nan"), {}
    it = start_iter
    try:
        while True:
            evaluate = it % config["eval_interval"] == 0 or it == max_iters
            if evaluate and not (saved and it == start_iter):
                last = estimate_loss(model, splits, config, seed=config["seed"] + it, device=device)
                rows.append([it, last["train"], last["val"], schedule(it), grad_norm, tokens_per_s])
                bar.write(f"iter {it}: train loss {last['train']:.4f}, val loss {last['val']:.4f}")
                write_metrics(metrics_path, rows)
                plot_losses(plot_path, rows)
                save_run(ckpt_path, model, optimizer, it, rng, config, tokenizer)
            if it >= max_iters or stop["requested"]:
                break

            # one step: batch, forward, loss, zero_grad, backward, clip, AdamW
            lr = schedule(it)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = get_batch(train_ids, config["batch_size"], config["block_size"], rng)
            _, loss = model(to_device(x, device), to_device(y, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = clip_grad_norm_(params, config["grad_clip"]) if config["grad_clip"] > 0 else float("nan")
            loss_value = loss.item()
            if not (math.isfinite(loss_value) and math.isfinite(grad_norm if config["grad_clip"] > 0 else 0.0)):
                bar.close()
                print(f"train_char.py: error: the loss became {loss_value} (grad norm {grad_norm}) at iter {it}; "
                      f"stopped without saving, the last good checkpoint is {ckpt_path}", file=sys.stderr)
                return 1
            optimizer.step()
            it += 1

            tokens_window += tokens_per_step
            elapsed = time.perf_counter() - t_window
            if elapsed > 1.0 or it % config["eval_interval"] == 0:
                tokens_per_s, t_window, tokens_window = tokens_window / elapsed, time.perf_counter(), 0
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
            bar.update(1)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        bar.close()

    if stop["requested"]:
        save_run(ckpt_path, model, optimizer, it, rng, config, tokenizer)
        print(f"interrupted at iter {it}: saved {ckpt_path}; continue with --resume")
        return 0
    total = time.perf_counter() - t_run
    if last:
        print(f"final: train loss {last['train']:.4f}, val loss {last['val']:.4f}, "
              f"val perplexity {math.exp(last['val']):.2f}, {total:.1f} s in total")
    print_samples(model, tokenizer, config, config["seed"])
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UsageError as e:
        print(f"train_char.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
