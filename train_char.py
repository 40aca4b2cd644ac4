"""Train a character-level GPT on tiny-shakespeare with minigrad alone.

    python train_char.py                   # the defaults: 4 layers, 4 heads, n_embd 64, 5,000 iters
    python train_char.py --max-iters 200   # a short run
    python train_char.py --resume          # go on from out/ckpt.npz
    python train_char.py --sample-only     # print samples from out/ckpt.npz
    mpirun -n 2 python train_char.py       # data-parallel over 2 MPI ranks, --batch-size sequences each

It reads in nanoGPT's order: config (one table of options), data, model and checkpoint, optimizer step and
evaluation, the loop (its first line is the schedule), sample; then the side modes and start(), which calls
the pieces in that order. Outputs in --out-dir: ckpt.npz (model, optimizer, iteration, RNG state, config,
tokenizer), metrics.csv and loss.png, each replaced whole or not at all; while a run trains, a lock file
keeps other runs out. What MPI changes (which rank reads, prints and writes, Ctrl-C, stopping every rank on
an error or a stall) is behind minigrad.distributed's World.
"""

import argparse
import contextlib
import csv
import fcntl
import io
import math
import os
import sys
import time
from collections import namedtuple
from dataclasses import dataclass

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
from minigrad.files import open_regular_file, remove_stale_temp_files, temp_target, write_atomically  # noqa: E402
from minigrad.optim import clip_grad_norm_, lr_at  # noqa: E402
from tqdm import tqdm  # noqa: E402

PROGRAM = "train_char.py"
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
# NOTE: every comparison with nan is False, so nan would pass the checks below (nan <= 0 is False): FINITE first
FINITE = Check(lambda v, c: not math.isfinite(v), "{flag} must be a finite number, got {value}")
POSITIVE = Check(lambda v, c: v <= 0, "{flag} must be positive, got {value}")
NON_NEGATIVE = Check(lambda v, c: v < 0, "{flag} must be >= 0, got {value}")
POSITIVE_OR_NONE = Check(lambda v, c: v is not None and v <= 0, POSITIVE.message)  # None: the option is off
DIVISIBLE_BY_N_HEAD = Check(lambda v, c: v % c["n_head"], "{flag} {value} is not divisible by --n-head {n_head}")
ABOVE_WARMUP_ITERS = Check(lambda v, c: v <= c["warmup_iters"], "--warmup-iters {warmup_iters} must be below {flag} {value}")
# The order they run in, each over the options in table order: each value, then the relations between
# values (which assume sane values: n_head > 0 before n_embd % n_head).
CHECKS = (FINITE, POSITIVE, NON_NEGATIVE, POSITIVE_OR_NONE, DIVISIBLE_BY_N_HEAD, ABOVE_WARMUP_ITERS)

# locked: the option defines the model or the recipe, so a --resume may not change it. Every float option
# checks FINITE first (a test holds the table to that).
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
    Option("lr", 3e-3, float, "peak learning rate", locked=True, checks=(FINITE, POSITIVE)),
    Option("min_lr", 3e-4, float, "learning rate at the end of the cosine decay", locked=True,
           checks=(FINITE, NON_NEGATIVE)),
    Option("warmup_iters", 100, int, "iters of linear warmup", locked=True, checks=(NON_NEGATIVE,)),
    Option("lr_decay_iters", 5000, int, "iter at which the cosine decay reaches min_lr", locked=True,
           checks=(POSITIVE, ABOVE_WARMUP_ITERS)),
    Option("weight_decay", 0.1, float, "AdamW decoupled weight decay (2-D weights only)", locked=True,
           checks=(FINITE, NON_NEGATIVE)),
    Option("grad_clip", 1.0, float, "clip the global gradient norm to this (0 turns clipping off)", locked=True,
           checks=(FINITE, NON_NEGATIVE)),
    Option("seed", 1337, int, "seed of the init and of the batches", locked=True, checks=(NON_NEGATIVE,)),
    Option("device", "cpu", str, "cpu, or cuda (needs CuPy)", choices=("cpu", "cuda")),
    Option("num_samples", 1, int, "samples to print at the end or with --sample-only", checks=(POSITIVE,)),
    Option("sample_len", 500, int, "characters per sample", checks=(NON_NEGATIVE,)),
    Option("temperature", 1.0, float, "sampling temperature", checks=(FINITE, POSITIVE)),
    Option("top_k", None, int, "sample from the k most likely characters only", checks=(POSITIVE_OR_NONE,)),
    Option("mpi_timeout", distributed.DEFAULT_TIMEOUT, float,
           "seconds an MPI rank waits for the others in a collective before the job is stopped",
           checks=(FINITE, POSITIVE)),
]


def build_parser():
    parser = argparse.ArgumentParser(description="Train a character-level GPT with minigrad.")
    for option in OPTIONS:
        # default=None: a flag left out is told apart from one given (a resume keeps the checkpoint's value)
        parser.add_argument(flag(option.name), type=option.type, default=None, choices=option.choices,
                            help=f"{option.help} (default: {option.default})")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out-dir")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a fresh run even where --out-dir holds a checkpoint, replacing it")
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


# --- data -----------------------------------------------------------------------------------------


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


def load_data(config, tokenizer, world):
    """(tokenizer, {"train": ids, "val": ids}): the corpus, encoded by the checkpoint's tokenizer or by
    one built from it (tokenizer None), split 90/10. Rank 0 reads (and, if missing, downloads) it first."""
    text = world.main_first(load_text, config["data"])
    need = config["block_size"] + 2
    if len(text) < need:
        raise UsageError(f"corpus {config['data']} has {len(text)} characters; it needs at least "
                         f"block_size + 2 = {need}")
    if tokenizer is None:
        tokenizer = CharTokenizer(text)
    try:
        ids = tokenizer.encode(text)
    except ValueError as e:
        raise UsageError(f"{e}: this corpus does not match the checkpoint's") from None
    train_ids, val_ids = train_val_split(ids)
    if len(val_ids) < need:
        raise UsageError(f"corpus {config['data']} is too short: its 10% validation split has {len(val_ids)} "
                         f"characters, fewer than block_size + 2 = {need}")
    return tokenizer, {"train": train_ids, "val": val_ids}


def to_device(a, device):
    return a if device == "cpu" else mg.Tensor(a).to(device)


# --- model and checkpoint -------------------------------------------------------------------------


def build_model(config, vocab_size, world):
    """The GPT of the config, on its device; rank 0 says what it is and which kernels run it."""
    model_config = mg.GPTConfig(vocab_size, config["block_size"], config["n_layer"], config["n_head"],
                                config["n_embd"])
    model = mg.GPT(model_config, seed=config["seed"]).to(config["device"])
    kernels = mg.get_backend() if config["device"] == "cpu" else mg.backend_info()["cuda_kernels"]
    world.print(f"minigrad {mg.__version__}, device: {config['device']}, kernels: {kernels}, "
                f"model: {model.num_parameters():,} parameters ({model_config.n_layer} layers, "
                f"{model_config.n_head} heads, n_embd {model_config.n_embd}, vocab {model_config.vocab_size})")
    return model


# What save_run writes into a checkpoint's metadata, checked whenever one is loaded, so that a damaged file is
# one line and not a KeyError or a TypeError in the middle of a run (see minigrad.checkpoint.check_schema).
# A key ending in "?" may be missing: world_size and rng_per_rank in checkpoints from before MPI, and an option
# that is not locked in one from before that option existed.
CHECKPOINT_META = {
    "iter": int,
    "config": {option.name + ("" if option.locked else "?"): option.type if option.default is not None
               else (option.type, None) for option in OPTIONS},
    "tokenizer": {"chars": str},
    "rng": dict,
    "optim": {"hyper": [{"lr": float, "betas": [float], "eps": float, "weight_decay": float}], "step": int,
              "n_params": int},
    "world_size?": int,
    "rng_per_rank?": [dict],
}


def load_saved_run(path):
    """(arrays, meta) of the checkpoint at path, its metadata checked against CHECKPOINT_META."""
    if not os.path.exists(path):
        raise UsageError(f"no checkpoint at {path}: train first, or pass --out-dir of an earlier run")
    try:
        arrays, meta = load_checkpoint(path, CHECKPOINT_META)
    except ValueError as e:
        raise UsageError(f"{e}; delete it or pass another --out-dir") from None
    bad = non_finite_arrays(arrays)
    if bad:  # written before save_run refused such arrays
        raise UsageError(f"checkpoint {path} holds inf or nan (in {', '.join(bad[:3])}): it is from a run that "
                         "diverged; start a new one in another --out-dir")
    return arrays, meta


def non_finite_arrays(arrays):
    """The names of the arrays that hold an inf or a nan."""
    return [name for name, a in arrays.items() if a.dtype.kind == "f" and not np.isfinite(a).all()]


def save_run(run, it):
    """Everything a bit-exact resume needs, in one atomically written ckpt.npz; never an inf or a nan (a
    NonFiniteLoss instead). Called on every rank: each checks its copy (the same on every rank), sends rank 0
    its batch RNG's state, and rank 0 writes."""
    arrays = {f"model/{k}": v for k, v in run.model.state_dict().items()}
    opt = run.optimizer.state_dict()
    for name, buffers in opt["buffers"].items():
        arrays.update({f"optim/{name}/{i}": b for i, b in enumerate(buffers) if b is not None})
    bad = non_finite_arrays(arrays)
    if bad:
        raise non_finite_error(run, f"{len(bad)} arrays of the model and optimizer became inf or nan ({bad[0]}, ...)",
                               it)
    rng_states = run.world.gather(run.rng.bit_generator.state)  # [rank 0's, rank 1's, ...] on rank 0
    if run.world.is_main:
        meta = {"iter": it, "config": run.config, "tokenizer": run.tokenizer.to_dict(), "rng": rng_states[0],
                "optim": {"hyper": opt["hyper"], "step": opt["step"], "n_params": len(run.optimizer.parameters())},
                "world_size": len(rng_states)}
        if len(rng_states) > 1:  # MPI: each rank draws its own batches, so each has its own RNG state
            meta["rng_per_rank"] = rng_states
        save_checkpoint(run.path("ckpt.npz"), arrays, meta)
    run.saved_iter = it


def restore_run(arrays, meta, model, optimizer, rng, rank=0):
    """Load a checkpoint into the model, the optimizer and this rank's batch RNG; returns its iteration."""
    n = meta["optim"]["n_params"]
    buffers = {name: [arrays.get(f"optim/{name}/{i}") for i in range(n)] for name in optimizer.buffer_names}
    try:
        model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
        optimizer.load_state_dict({"hyper": meta["optim"]["hyper"], "step": meta["optim"]["step"], "buffers": buffers})
        rng.bit_generator.state = meta["rng_per_rank"][rank] if "rng_per_rank" in meta else meta["rng"]
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"checkpoint does not fit this model ({e}); use a new --out-dir") from None
    return meta["iter"]


# --- the out-dir: one run at a time, and nothing replaced unasked ---------------------------------

LOCK_NAME = "lock"


@contextlib.contextmanager
def claim_out_dir(run, resumed, overwrite):
    """Rank 0's hold on --out-dir while a run trains: the folder made, its lock taken, the temporary files of
    killed saves removed; a fresh run refuses a folder that holds a checkpoint unless told to --overwrite it.
    On the other MPI ranks, nothing."""
    if not run.world.is_main:
        yield
        return
    if os.path.exists(run.out_dir) and not os.path.isdir(run.out_dir):
        raise UsageError(f"--out-dir {run.out_dir} is a file, not a folder: pass a folder (it is made if missing)")
    os.makedirs(run.out_dir, exist_ok=True)
    with lock_out_dir(run.out_dir) as left_by:
        if left_by:
            print(f"note: taking over {run.path(LOCK_NAME)}, left by pid {left_by}, a run that ended without "
                  "releasing it")
        for path in remove_stale_temp_files(run.out_dir):
            print(f"note: removed {path}, left by a save that was killed")
        if not resumed and not overwrite and os.path.lexists(run.path("ckpt.npz")):
            raise UsageError(f"{run.out_dir} holds a checkpoint of an earlier run: pass --resume to continue it, "
                             "--overwrite to replace it, or another --out-dir")
        yield


@contextlib.contextmanager
def lock_out_dir(out_dir):
    """Hold out_dir/lock for the block: an exclusive flock on it, with this process's pid written inside so
    that a second run can say whose it is. The kernel drops a flock when its process dies, so the lock of a
    killed run is free to take; its pid, still in the file, is yielded for a note (None after a clean end)."""
    path = os.path.join(out_dir, LOCK_NAME)
    fd = flock_file(path)
    try:
        left_by = os.read(fd, 32).decode(errors="replace").strip() or None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield left_by
    finally:
        # NOTE: removed while still locked, so that a run which opened it meanwhile finds it gone (flock_file);
        # where the folder turned read-only, it stays, and the next run takes it over with a note
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def flock_file(path):
    """A descriptor of path (made if missing) under an exclusive flock; a UsageError naming the pid inside
    when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UsageError(f"{os.path.dirname(path)} is in use by another run (pid {holder}, see {path}): wait "
                             "for it to end, or pass another --out-dir") from None
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        os.close(fd)  # its holder removed it between our open and our flock: lock the file there now


# --- optimizer step, evaluation, metrics.csv and loss.png -----------------------------------------


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


METRICS_HEADER = ["iter", "train_loss", "val_loss", "lr", "grad_norm", "tokens_per_s"]


def write_metrics(path, rows):
    """metrics.csv, rewritten whole (atomically) at every evaluation."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(METRICS_HEADER)
    writer.writerows(rows)
    write_atomically(path, text.getvalue().encode())


def read_metrics(path, up_to_iter):
    """metrics.csv's rows up to iter up_to_iter (a resume drops those after its checkpoint); a UsageError that
    says what is wrong when the file is not one that write_metrics wrote."""
    if not os.path.lexists(path):
        return []
    try:
        with open_regular_file(path) as f:  # a folder or a FIFO named metrics.csv is refused, not waited on
            lines = list(csv.reader(io.StringIO(f.read().decode("utf-8"), newline="")))
        if not lines or lines[0] != METRICS_HEADER:
            raise ValueError(f"its first line is not the header {','.join(METRICS_HEADER)}")
        rows = [metrics_row(number, line) for number, line in enumerate(lines[1:], start=2)]
    except (ValueError, csv.Error) as e:  # UnicodeDecodeError (not text) is a ValueError too
        raise UsageError(f"cannot resume with {path}: {e}; repair or delete it (its rows are only the log)") from None
    return [row for row in rows if row[0] <= up_to_iter]


def metrics_row(number, line):
    """[iter, train_loss, val_loss, lr, grad_norm, tokens_per_s] from the fields of line `number` of metrics.csv."""
    if len(line) != len(METRICS_HEADER):
        raise ValueError(f"line {number} should have {len(METRICS_HEADER)} fields, it has {len(line)}")
    try:
        return [int(line[0])] + [float(field) for field in line[1:]]
    except ValueError:
        raise ValueError(f"line {number} is not all numbers: {','.join(line)[:60]!r}") from None


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


def evaluate(run, it, lr, grad_norm, tokens_per_s, bar):
    """The losses at iter it; rank 0 logs them (bar, metrics.csv, loss.png) and saves a checkpoint. An inf or
    a nan stops the run before anything is written (NonFiniteLoss)."""
    config, world = run.config, run.world
    losses = estimate_loss(run.model, run.splits, config, seed=config["seed"] + it, device=config["device"], world=world)
    if not (math.isfinite(losses["train"]) and math.isfinite(losses["val"])):  # the same on every rank
        raise non_finite_error(run, f"the evaluation's losses became train {losses['train']}, val {losses['val']}", it)
    if world.is_main:  # MPI: rank 0 alone writes files
        run.rows.append([it, losses["train"], losses["val"], lr, grad_norm, tokens_per_s])
        bar.write(f"iter {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        write_metrics(run.path("metrics.csv"), run.rows)
        plot_losses(run.path("loss.png"), run.rows)
    save_run(run, it)
    return losses


# --- the loop -------------------------------------------------------------------------------------


@dataclass
class Run:
    """What the loop works on and a checkpoint holds. splits: {"train": ids, "val": ids} (None with
    --sample-only); rng: the training batches' (a stream per MPI rank); rows: metrics.csv's (rank 0's);
    saved_iter: the iter of the last checkpoint this run saved or resumed from (None: none yet)."""
    config: dict
    tokenizer: CharTokenizer
    splits: dict | None
    model: mg.GPT
    optimizer: mg.optim.AdamW
    rng: np.random.Generator
    world: distributed.World
    out_dir: str
    rows: list
    saved_iter: int | None

    def path(self, name):
        return os.path.join(self.out_dir, name)


class NonFiniteLoss(Exception):
    """The loss, the gradient norm or the weights became inf or nan: main() prints it and exits with code 1."""


def non_finite_error(run, what, it):
    """The NonFiniteLoss to raise for `what` at iter it, naming the last checkpoint (save_run keeps them finite)."""
    last = (f"the last checkpoint, {run.path('ckpt.npz')} at iter {run.saved_iter}, is finite"
            if run.saved_iter is not None else "this run saved no checkpoint")
    return NonFiniteLoss(f"{what} at iter {it}; stopped without writing anything: {last}")


def train(run, start_iter, resumed, stop):
    """Steps from start_iter to max_iters, or until stop.requested; an evaluation at iter 0 (not again at a
    resume's first iter), every eval_interval iters and at the end. Returns (iter, last evaluation's losses)."""
    config, world, max_iters = run.config, run.world, run.config["max_iters"]
    tokens_per_step = config["batch_size"] * config["block_size"] * world.world_size  # all ranks' tokens
    grad_norm, tokens_per_s, losses, it = float("nan"), float("nan"), {}, start_iter
    t_window, tokens_window = time.perf_counter(), 0
    with tqdm(total=max_iters, initial=start_iter, unit="it", **world.progress_bar_options()) as bar:
        while True:
            lr = lr_at(it, config["lr"], config["min_lr"], config["warmup_iters"], config["lr_decay_iters"])
            if (it % config["eval_interval"] == 0 or it == max_iters) and not (resumed and it == start_iter):
                losses = evaluate(run, it, lr, grad_norm, tokens_per_s, bar)
            if it >= max_iters or stop.requested:
                return it, losses

            # one step: batch, forward, loss, zero_grad, backward, (MPI: mean over ranks), clip, AdamW
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            x, y = get_batch(run.splits["train"], config["batch_size"], config["block_size"], run.rng)
            loss, grad_norm = train_step(run.model, run.optimizer, x, y, config["grad_clip"], config["device"], world)
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):  # the same on every rank: all stop here
                raise non_finite_error(run, f"the loss became {loss} (grad norm {grad_norm})", it)
            run.optimizer.step()
            it += 1

            tokens_window += tokens_per_step  # tokens/s over at least a second, and up to each evaluation
            elapsed = time.perf_counter() - t_window
            if elapsed > 1.0 or it % config["eval_interval"] == 0:
                tokens_per_s, t_window, tokens_window = tokens_window / elapsed, time.perf_counter(), 0
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
            bar.update(1)


def train_and_sample(run, start_iter, resumed, overwrite):
    """The loop, then the final losses and samples; after a Ctrl-C, a checkpoint instead. All of it holding
    --out-dir (claim_out_dir)."""
    world = run.world
    with claim_out_dir(run, resumed, overwrite):
        if world.is_main:  # MPI: rank 0 alone writes files
            run.rows = read_metrics(run.path("metrics.csv"), start_iter) if resumed else []
        t0 = time.perf_counter()
        with world.stop_on_ctrl_c() as stop:
            it, losses = train(run, start_iter, resumed, stop)
        if stop.requested:
            save_run(run, it)
            print(f"interrupted at iter {it}: saved {run.path('ckpt.npz')}; continue with --resume")
        elif world.is_main:
            if losses:
                print(f"final: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}, "
                      f"val perplexity {math.exp(losses['val']):.2f}, {time.perf_counter() - t0:.1f} s in total")
            print_samples(run.model, run.tokenizer, run.config)


# --- sample ---------------------------------------------------------------------------------------


def print_samples(model, tokenizer, config):
    """num_samples samples of sample_len characters, each generated from a newline."""
    rng = np.random.default_rng(config["seed"])
    start = tokenizer.stoi.get("\n", 0)
    for i in range(config["num_samples"]):
        ids = model.generate(np.array([[start]]), config["sample_len"], config["temperature"], config["top_k"], rng)
        print(f"--- sample {i + 1} ---")
        print(tokenizer.decode(ids[0, 1:]))


# --- the side modes, each in one process ----------------------------------------------------------


def draw_graph(run, path):
    """--draw-graph PATH: the graph of one forward and loss."""
    config = run.config
    x, y = get_batch(run.splits["train"], config["batch_size"], config["block_size"], run.rng)
    _, loss = run.model(to_device(x, config["device"]), to_device(y, config["device"]))
    mg.draw_graph(loss, path, params=run.model.named_parameters())
    print(f"wrote the graph of one forward and loss to {path}")


def profile_steps(run, steps):
    """--profile N: N training steps at the peak lr under mg.profile(), then its per-op table."""
    if steps <= 0:
        raise UsageError(f"--profile must be positive, got {steps}")
    config, prof = run.config, mg.profile()
    t0 = time.perf_counter()
    for _ in range(steps):
        with prof:
            x, y = get_batch(run.splits["train"], config["batch_size"], config["block_size"], run.rng)
            train_step(run.model, run.optimizer, x, y, config["grad_clip"], config["device"], run.world)
            run.optimizer.step()
    print(f"{steps} steps in {time.perf_counter() - t0:.2f} s (kernels: {mg.get_backend()})")
    prof.table()


# --- the run, in that order -----------------------------------------------------------------------


def check_launch(args, ckpt_path, saved, world):
    """A side mode runs in one process; a resume on as many ranks as the run it continues (each rank's
    batches go on from its own RNG state)."""
    side_mode = ("--sample-only" if args.sample_only else "--draw-graph" if args.draw_graph
                 else "--profile" if args.profile is not None else None)
    if side_mode:
        world.require_one_process(PROGRAM, side_mode)
    if args.overwrite and args.resume:
        raise UsageError("--overwrite starts a fresh run, --resume continues one: pass one of them")
    saved_world = saved[1].get("world_size", 1) if saved else 1  # checkpoints from before MPI: one process
    if args.resume and saved_world != world.world_size:
        raise UsageError(f"{ckpt_path} was written by a run on {saved_world} rank(s), this one has "
                         f"{world.world_size}: resume with as many ranks, or use a new --out-dir")


def start(args, world):
    """Config, data, model, optimizer; then the side mode asked for, or the loop and a sample."""
    out_dir = args.out_dir or DEFAULT_OUT_DIR  # as given: a resume does not take the checkpoint's
    ckpt_path = os.path.join(out_dir, "ckpt.npz")
    saved = load_saved_run(ckpt_path) if args.resume or args.sample_only else None  # (arrays, meta)
    check_launch(args, ckpt_path, saved, world)
    config = resolve_config({o.name: getattr(args, o.name) for o in OPTIONS}, saved[1]["config"] if saved else None)
    world.timeout = config["mpi_timeout"]  # MPI: every collective from here on
    mg.dispatch.retain_freed_memory()  # each step reuses the last step's activation buffers: no page faults
    if config["device"] == "cuda" and mg.backend_info().get("cuda_available") is not True:
        raise UsageError("--device cuda needs CuPy and an NVIDIA GPU; install the [cuda] extra or use --device cpu")

    tokenizer = CharTokenizer.from_dict(saved[1]["tokenizer"]) if saved else None
    splits = None
    if not args.sample_only:  # the samples need the checkpoint's tokenizer only
        tokenizer, splits = load_data(config, tokenizer, world)
    model = build_model(config, tokenizer.vocab_size, world)
    world.print_batch_split(config["batch_size"])
    optimizer = model.configure_optimizer(config["lr"], config["weight_decay"])
    rng = world.rng(config["seed"])  # the training batches; under MPI a stream per rank
    start_iter = restore_run(*saved, model, optimizer, rng, world.rank) if saved else 0
    world.broadcast_params(model)  # MPI: every rank starts from rank 0's weights
    run = Run(config, tokenizer, splits, model, optimizer, rng, world, out_dir, rows=[],
              saved_iter=start_iter if saved else None)

    if args.sample_only:
        print_samples(model, tokenizer, config)
    elif args.draw_graph:
        draw_graph(run, args.draw_graph)
    elif args.profile is not None:
        profile_steps(run, args.profile)
    else:
        train_and_sample(run, start_iter, resumed=saved is not None, overwrite=args.overwrite)


def file_error(e):
    """One line for an OSError: the file as the user knows it (not its temporary name) and what went wrong."""
    where = f"{temp_target(os.fsdecode(e.filename))}: " if e.filename is not None else ""
    return f"{where}{e.strerror or e} (every file is replaced whole or not at all: the earlier ones are intact)"


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        world = distributed.init()  # one process, or this rank of an mpirun job
    except RuntimeError as e:
        print(f"{PROGRAM}: error: {e}", file=sys.stderr)
        return 2
    with world.abort_on_error(PROGRAM):  # MPI: an exception on one rank stops every rank
        try:
            start(args, world)
            return 0
        except UsageError as e:
            return world.usage_error(PROGRAM, e)
        except OSError as e:  # a full disk, a read-only folder, a permission, a path of the wrong kind, an I/O error
            return world.usage_error(PROGRAM, file_error(e))
        except NonFiniteLoss as e:  # raised on every rank at the same iteration
            world.print(f"{PROGRAM}: error: {e}", file=sys.stderr)
            world.barrier()  # MPI: rank 0 has printed before any rank exits
            return 1


if __name__ == "__main__":
    sys.exit(main())
