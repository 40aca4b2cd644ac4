"""Train a character-level GPT on tiny-shakespeare with minigrad alone.

    python train_char.py                   # the defaults: 4 layers, 4 heads, n_embd 64, 5,000 iters
    python train_char.py --max-iters 200   # a short run
    python train_char.py --resume          # go on from out/ckpt.npz
    python train_char.py --sample-only     # print samples from out/ckpt.npz
    mpirun -n 2 python train_char.py       # data-parallel over 2 MPI ranks, --batch-size sequences each

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
from collections import namedtuple

# NOTE: after each matrix product OpenBLAS's worker threads spin for 2^28 cycles (~0.1 s) waiting for the
# next one, and on a machine with few cores they take the cores the C++ kernels run on next (on 2 cores
# a step was 1.4x slower). 2^16 cycles (~20 us) bridges the gap between two products of one layer.
# OpenBLAS reads the variable once, when NumPy loads: hence here, before any import of NumPy.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # loss.png is drawn into a file, with no display: chosen before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import minigrad as mg  # noqa: E402
import numpy as np  # noqa: E402
from minigrad import distributed  # noqa: E402
from minigrad.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from minigrad.data import CharTokenizer, download_tiny_shakespeare, get_batch, read_corpus, train_val_split  # noqa: E402
from minigrad.files import write_atomically  # noqa: E402
from minigrad.optim import clip_grad_norm_, lr_at  # noqa: E402
from tqdm import tqdm  # noqa: E402

DEFAULT_DATA = os.path.join("data", "tinyshakespeare.txt")
DEFAULT_OUT_DIR = "out"

# --- config: one table of options; the flags, their checks and the resume lock all come from it ----


class UsageError(Exception):
    """Bad input: main() prints it as one line and exits with code 2."""


def flag(name):
    return "--" + name.replace("_", "-")


# A constraint: bad(value, config) is true for a bad value; message (formatted with the option's flag,
# its value and the config) says why.
Check = namedtuple("Check", "bad message")
POSITIVE = Check(lambda v, c: v <= 0, "{flag} must be positive, got {value}")
NON_NEGATIVE = Check(lambda v, c: v < 0, "{flag} must be >= 0, got {value}")
POSITIVE_OR_NONE = Check(lambda v, c: v is not None and v <= 0, POSITIVE.message)  # None: the option is off
DIVISIBLE_BY_N_HEAD = Check(lambda v, c: v % c["n_head"], "{flag} {value} is not divisible by --n-head {n_head}")
ABOVE_WARMUP_ITERS = Check(lambda v, c: v <= c["warmup_iters"], "--warmup-iters {warmup_iters} must be below {flag} {value}")
# The order they run in, each over the options in table order: each value, then the relations between
# values (which assume sane values: n_head > 0 before n_embd % n_head).
CHECKS = (POSITIVE, NON_NEGATIVE, POSITIVE_OR_NONE, DIVISIBLE_BY_N_HEAD, ABOVE_WARMUP_ITERS)

# locked: the option defines the model or the recipe, so a --resume may not change it.
Option = namedtuple("Option", "name default type help locked checks choices", defaults=(False, (), None))
OPTIONS = [
    Option("data", DEFAULT_DATA, str, "UTF-8 text corpus; the default is downloaded when missing"),
    Option("out_dir", DEFAULT_OUT_DIR, str, "folder for ckpt.npz, metrics.csv and loss.png"),
    Option("max_iters", 5000, int, "optimizer steps in total", checks=(POSITIVE,)),
    Option("eval_interval", 500, int, "evaluate train and val loss every this many iters", checks=(POSITIVE,)),
    Option("eval_iters", 100, int, "batches per split (and per MPI rank) in each evaluation", checks=(POSITIVE,)),
    Option("batch_size", 64, int, "sequences per batch (per MPI rank under mpirun)", locked=True, checks=(POSITIVE,)),
    Option("block_size", 128, int, "context length T", locked=True, checks=(POSITIVE,)),
    Option("n_layer", 4, int, "transformer blocks", locked=True, checks=(POSITIVE,)),
    Option("n_head", 4, int, "attention heads", locked=True, checks=(POSITIVE,)),
    Option("n_embd", 64, int, "embedding width C (divisible by n_head)", locked=True,
           checks=(POSITIVE, DIVISIBLE_BY_N_HEAD)),
    Option("lr", 3e-3, float, "peak learning rate", locked=True, checks=(POSITIVE,)),
    Option("min_lr", 3e-4, float, "learning rate at the end of the cosine decay", locked=True, checks=(NON_NEGATIVE,)),
    Option("warmup_iters", 100, int, "iters of linear warmup", locked=True, checks=(NON_NEGATIVE,)),
    Option("lr_decay_iters", 5000, int, "iter at which the cosine decay reaches min_lr", locked=True,
           checks=(POSITIVE, ABOVE_WARMUP_ITERS)),
    Option("weight_decay", 0.1, float, "AdamW decoupled weight decay (2-D weights only)", locked=True,
           checks=(NON_NEGATIVE,)),
    Option("grad_clip", 1.0, float, "clip the global gradient norm to this (0 turns clipping off)", locked=True,
           checks=(NON_NEGATIVE,)),
    Option("seed", 1337, int, "seed of the init and of the batches", locked=True),
    Option("device", "cpu", str, "cpu, or cuda (needs CuPy)", choices=("cpu", "cuda")),
    Option("num_samples", 1, int, "samples to print at the end or with --sample-only", checks=(POSITIVE,)),
    Option("sample_len", 500, int, "characters per sample"),
    Option("temperature", 1.0, float, "sampling temperature", checks=(POSITIVE,)),
    Option("top_k", None, int, "sample from the k most likely characters only", checks=(POSITIVE_OR_NONE,)),
]


def build_parser():
    parser = argparse.ArgumentParser(description="Train a character-level GPT with minigrad.")
    for option in OPTIONS:
        # default=None: a flag left out is told apart from one given (a resume keeps the checkpoint's value)
        parser.add_argument(flag(option.name), type=option.type, default=None, choices=option.choices,
                            help=f"{option.help} (default: {option.default})")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out-dir")
    parser.add_argument("--sample-only", action="store_true", help="load the checkpoint and print samples, no training")
    parser.add_argument("--draw-graph", metavar="PATH",
                        help="draw the graph of one forward and loss (.dot, or .svg/.png with Graphviz) and exit")
    parser.add_argument("--profile", type=int, metavar="N",
                        help="run N training steps under mg.profile(), print the per-op table and exit (no files written)")
    return parser


def resolve_config(given, saved=None):
    """The run's config: the flags given, then the checkpoint's values (on resume), then the defaults."""
    config = {option.name: option.default for option in OPTIONS}
    if saved is not None:
        for option in OPTIONS:
            value = given.get(option.name)
            if option.locked and value is not None and value != saved[option.name]:
                raise UsageError(f"{flag(option.name)} {value} differs from the checkpoint's {saved[option.name]}; "
                                 "drop the flag to resume, or use a new --out-dir")
        config.update({k: v for k, v in saved.items() if k in config})
    config.update({k: v for k, v in given.items() if v is not None and k in config})
    for check in CHECKS:
        for option in OPTIONS:
            value = config[option.name]
            if check in option.checks and check.bad(value, config):
                raise UsageError(check.message.format(flag=flag(option.name), value=value, **config))
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


def save_run(path, model, optimizer, it, rng_states, config, tokenizer):
    """Everything a bit-exact resume needs, in one atomically written file. rng_states: the batch RNG's
    bit_generator.state of every rank (one entry in a single process)."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for name, buffers in opt["buffers"].items():
        arrays.update({f"optim/{name}/{i}": b for i, b in enumerate(buffers) if b is not None})
    meta = {"iter": it, "config": config, "tokenizer": tokenizer.to_dict(), "rng": rng_states[0],
            "optim": {"hyper": opt["hyper"], "step": opt["step"], "n_params": len(optimizer.parameters())},
            "world_size": len(rng_states)}
    if len(rng_states) > 1:  # MPI: each rank draws its own batches, so each has its own RNG state
        meta["rng_per_rank"] = rng_states
    save_checkpoint(path, arrays, meta)


def restore_run(arrays, meta, model, optimizer, rng, rank=0):
    n = meta["optim"]["n_params"]
    buffers = {name: [arrays.get(f"optim/{name}/{i}") for i in range(n)] for name in optimizer.buffer_names}
    try:
        model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
        optimizer.load_state_dict({"hyper": meta["optim"]["hyper"], "step": meta["optim"]["step"], "buffers": buffers})
        rng.bit_generator.state = meta["rng_per_rank"][rank] if "rng_per_rank" in meta else meta["rng"]
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


def estimate_loss(model, splits, config, seed, device, world):
    """Mean loss over eval_iters batches of each split; the batches come from their own RNG, so
    evaluating never moves the training batches. Under MPI each rank evaluates eval_iters batches of
    its own (seeded by (seed, rank)) and the means are averaged: N times the batches in the same time."""
    rng = world.rng(seed)
    losses = {}
    model.eval()
    with mg.no_grad():
        for name, data in splits.items():
            total = 0.0
            for _ in range(config["eval_iters"]):
                x, y = get_batch(data, config["batch_size"], config["block_size"], rng)
                _, loss = model(to_device(x, device), to_device(y, device))
                total += loss.item()
            losses[name] = world.allreduce_mean(total / config["eval_iters"])
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


# --- optimizer and one step ----------------------------------------------------------------------


def train_step(model, optimizer, x, y, grad_clip, device, world):
    """Forward, loss, zero_grad, backward, the mean gradient over MPI ranks, clipping (grad_clip 0: none).
    Returns (loss, grad_norm) averaged over the ranks, hence the same on every rank; the caller checks
    them and then calls optimizer.step()."""
    _, loss = model(to_device(x, device), to_device(y, device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = optimizer.parameters()
    world.allreduce_grads(params)  # MPI: before clipping, so every rank clips the same global norm
    grad_norm = clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
    return world.allreduce_mean(loss.item()), grad_norm


def profile_steps(model, optimizer, train_ids, config, rng, device, world, steps):
    """--profile N: N training steps at the peak lr under mg.profile(), then its per-op table."""
    if steps <= 0:
        raise UsageError(f"--profile must be positive, got {steps}")
    prof = mg.profile()
    t0 = time.perf_counter()
    for _ in range(steps):
        with prof:
            x, y = get_batch(train_ids, config["batch_size"], config["block_size"], rng)
            train_step(model, optimizer, x, y, config["grad_clip"], device, world)
            optimizer.step()
    print(f"{steps} steps in {time.perf_counter() - t0:.2f} s (kernels: {mg.get_backend()})")
    prof.table()
    return 0


# --- the run --------------------------------------------------------------------------------------


def run(args, world):
    given = {option.name: getattr(args, option.name) for option in OPTIONS}
    out_dir = args.out_dir or DEFAULT_OUT_DIR
    ckpt_path = os.path.join(out_dir, "ckpt.npz")
    saved = None
    if args.resume or args.sample_only:
        if not os.path.exists(ckpt_path):
            raise UsageError(f"no checkpoint at {ckpt_path}: train first, or pass --out-dir of an earlier run")
        try:
            saved = load_checkpoint(ckpt_path)
        except ValueError as e:
            raise UsageError(f"{e}; delete it or pass another --out-dir") from None
    single_process_flag = ("--sample-only" if args.sample_only else "--draw-graph" if args.draw_graph
                           else "--profile" if args.profile is not None else None)
    if single_process_flag and world.world_size > 1:
        raise UsageError(f"{single_process_flag} runs in one process: run it without mpirun")
    saved_world = saved[1].get("world_size", 1) if saved else 1
    if args.resume and saved_world != world.world_size:  # each rank's batches go on from its own RNG state
        raise UsageError(f"{ckpt_path} was written by a run on {saved_world} rank(s), this one has "
                         f"{world.world_size}: resume with as many ranks, or use a new --out-dir")
    config = resolve_config(given, saved[1]["config"] if saved else None)
    device = config["device"]
    mg.dispatch.retain_freed_memory()  # each step reuses the last step's activation buffers: no page faults
    if device == "cuda" and mg.backend_info().get("cuda_available") is not True:
        raise UsageError("--device cuda needs CuPy and an NVIDIA GPU; install the [cuda] extra or use --device cpu")

    # data
    tokenizer = CharTokenizer.from_dict(saved[1]["tokenizer"]) if saved else None
    if not args.sample_only:
        # MPI: rank 0 reads (and, when missing, downloads) the corpus before the others read it
        text = load_text(config["data"]) if world.is_main else None
        world.barrier()
        text = text if world.is_main else load_text(config["data"])
        if len(text) < config["block_size"] + 2:
            raise UsageError(f"corpus {config['data']} has {len(text)} characters; it needs at least "
                             f"block_size + 2 = {config['block_size'] + 2}")
        if tokenizer is None:
            tokenizer = CharTokenizer(text)
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
    if world.is_main:
        kernels = mg.get_backend() if device == "cpu" else mg.backend_info()["cuda_kernels"]
        print(f"minigrad {mg.__version__}, device: {device}, kernels: {kernels}, "
              f"model: {model.num_parameters():,} parameters ({model_config.n_layer} layers, "
              f"{model_config.n_head} heads, n_embd {model_config.n_embd}, vocab {model_config.vocab_size})", flush=True)
        if world.world_size > 1:
            print(f"data-parallel over {world.world_size} MPI ranks: batch {config['batch_size']} per rank, "
                  f"{config['batch_size'] * world.world_size} sequences per step", flush=True)

    optimizer = model.configure_optimizer(config["lr"], config["weight_decay"])
    rng = world.rng(config["seed"])  # the training batches; under MPI a stream per rank
    start_iter = 0
    if saved:
        start_iter = restore_run(*saved, model, optimizer, rng, world.rank)
    world.broadcast_params(model)  # MPI: every rank starts from rank 0's weights
    if args.sample_only:
        print_samples(model, tokenizer, config, config["seed"])
        return 0

    if args.draw_graph:
        x, y = get_batch(train_ids, config["batch_size"], config["block_size"], rng)
        _, loss = model(to_device(x, device), to_device(y, device))
        mg.draw_graph(loss, args.draw_graph, params=model.named_parameters())
        print(f"wrote the graph of one forward and loss to {args.draw_graph}")
        return 0
    if args.profile is not None:
        return profile_steps(model, optimizer, train_ids, config, rng, device, world, args.profile)

    def schedule(it):
        return lr_at(it, config["lr"], config["min_lr"], config["warmup_iters"], config["lr_decay_iters"])

    if world.is_main:  # MPI: rank 0 alone writes files
        os.makedirs(out_dir, exist_ok=True)
    metrics_path, plot_path = os.path.join(out_dir, "metrics.csv"), os.path.join(out_dir, "loss.png")
    rows = read_metrics(metrics_path, start_iter) if saved and world.is_main else []
    splits = {"train": train_ids, "val": val_ids}
    max_iters = config["max_iters"]
    tokens_per_step = config["batch_size"] * config["block_size"] * world.world_size  # all ranks' tokens

    # Ctrl-C: finish the current step, save a checkpoint, exit cleanly (a second Ctrl-C stops at once).
    # MPI: mpirun stops every rank on Ctrl-C; the checkpoint of the last evaluation stays.
    stop = {"requested": False}

    def request_stop(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True

    previous_handler = signal.signal(signal.SIGINT, request_stop) if world.world_size == 1 else None
    # MPI: only rank 0 shows the bar. Open MPI forwards a rank's stderr through a pipe (tqdm would hide the
    # bar) and its stdout through a pseudo-terminal of size 0 x 0 (tqdm would draw nothing): give it a size
    screen = {"file": sys.stdout, "ncols": 100, "nrows": 24} if world.world_size > 1 else {"dynamic_ncols": True}
    bar = tqdm(total=max_iters, initial=start_iter, unit="it", disable=None if world.is_main else True, **screen)
    t_run, t_window, tokens_window = time.perf_counter(), time.perf_counter(), 0
    grad_norm, tokens_per_s, last = float("nan"), float("nan"), {}
    it = start_iter
    try:
        while True:
            evaluate = it % config["eval_interval"] == 0 or it == max_iters
            if evaluate and not (saved and it == start_iter):
                last = estimate_loss(model, splits, config, seed=config["seed"] + it, device=device, world=world)
                rng_states = world.gather(rng.bit_generator.state)  # MPI: every rank's, on rank 0
                if world.is_main:
                    rows.append([it, last["train"], last["val"], schedule(it), grad_norm, tokens_per_s])
                    bar.write(f"iter {it}: train loss {last['train']:.4f}, val loss {last['val']:.4f}")
                    write_metrics(metrics_path, rows)
                    plot_losses(plot_path, rows)
                    save_run(ckpt_path, model, optimizer, it, rng_states, config, tokenizer)
            if it >= max_iters or stop["requested"]:
                break

            # one step: batch, forward, loss, zero_grad, backward, (MPI: mean over ranks), clip, AdamW
            lr = schedule(it)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = get_batch(train_ids, config["batch_size"], config["block_size"], rng)
            loss_value, grad_norm = train_step(model, optimizer, x, y, config["grad_clip"], device, world)
            # the same two numbers on every rank, so under MPI all ranks stop here together
            if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
                bar.close()
                if world.is_main:
                    print(f"train_char.py: error: the loss became {loss_value} (grad norm {grad_norm}) at iter {it}; "
                          f"stopped without saving, the last good checkpoint is {ckpt_path}",
                          file=sys.stderr, flush=True)
                world.barrier()  # MPI: rank 0 has printed before any rank exits
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
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        bar.close()

    if stop["requested"]:
        save_run(ckpt_path, model, optimizer, it, [rng.bit_generator.state], config, tokenizer)
        print(f"interrupted at iter {it}: saved {ckpt_path}; continue with --resume")
        return 0
    if not world.is_main:
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
        world = distributed.init()  # one process, or this rank of an mpirun job
    except RuntimeError as e:
        print(f"train_char.py: error: {e}", file=sys.stderr)
        return 2
    with world.abort_on_error("train_char.py"):  # MPI: an exception on one rank stops every rank
        try:
            return run(args, world)
        except UsageError as e:
            where = f" (rank {world.rank} of {world.world_size})" if world.world_size > 1 else ""
            print(f"train_char.py: error{where}: {e}", file=sys.stderr, flush=True)
            if world.world_size > 1:
                world.abort(2)  # NOTE: exiting alone could leave ranks without this error waiting in a collective
            return 2


if __name__ == "__main__":
    sys.exit(main())
