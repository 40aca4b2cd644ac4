"""The training run of train_char.py, step for step in PyTorch: same initial weights (copied from
minigrad's GPT), same batches (minigrad.data.get_batch with the same seeds), same AdamW groups,
schedule, clipping and evaluation batches. Writes metrics.csv like train_char.py, so the two curves
can be laid side by side (bench/compare_curves.py).

    python bench/torch_twin.py --out-dir out/torch_twin [--max-iters 5000] [--threads 1]
"""

import argparse
import csv
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))  # tests/torch_gpt.py
import minigrad as mg  # noqa: E402
from minigrad.data import CharTokenizer, get_batch, read_corpus, train_val_split  # noqa: E402
from minigrad.optim import lr_at  # noqa: E402
from torch_gpt import TorchGPT  # noqa: E402

D = dict(batch_size=64, block_size=128, n_layer=4, n_head=4, n_embd=64, lr=3e-3, min_lr=3e-4, warmup_iters=100,
         lr_decay_iters=5000, weight_decay=0.1, grad_clip=1.0, seed=1337, max_iters=5000, eval_interval=500,
         eval_iters=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/tinyshakespeare.txt")
    parser.add_argument("--out-dir", default="out/torch_twin")
    parser.add_argument("--threads", type=int, default=1)
    for k in ("max_iters", "eval_interval", "eval_iters"):
        parser.add_argument("--" + k.replace("_", "-"), type=int, default=D[k])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    c = {**D, **{k: getattr(args, k) for k in ("max_iters", "eval_interval", "eval_iters")}}

    text = read_corpus(args.data)
    tok = CharTokenizer(text)
    train_ids, val_ids = train_val_split(tok.encode(text))
    config = mg.GPTConfig(tok.vocab_size, c["block_size"], c["n_layer"], c["n_head"], c["n_embd"])
    model = TorchGPT.from_minigrad(mg.GPT(config, seed=c["seed"]))
    params = list(model.parameters())
    opt = model.configure_optimizer(c["lr"], c["weight_decay"])  # eps 1e-8: torch's default, as minigrad's
    rng = np.random.default_rng(c["seed"])

    def evaluate(it):
        eval_rng, out = np.random.default_rng(c["seed"] + it), {}
        model.eval()
        with torch.no_grad():
            for name, data in (("train", train_ids), ("val", val_ids)):
                losses = []
                for _ in range(c["eval_iters"]):
                    x, y = get_batch(data, c["batch_size"], c["block_size"], eval_rng)
                    losses.append(model(torch.from_numpy(x), torch.from_numpy(y))[1].item())
                out[name] = float(np.mean(losses))
        model.train()
        return out

    os.makedirs(args.out_dir, exist_ok=True)
    rows, t0 = [], time.perf_counter()
    for it in range(c["max_iters"] + 1):
        lr = lr_at(it, c["lr"], c["min_lr"], c["warmup_iters"], c["lr_decay_iters"])
        if it % c["eval_interval"] == 0 or it == c["max_iters"]:
            losses = evaluate(it)
            rows.append([it, losses["train"], losses["val"], lr])
            print(f"iter {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        if it == c["max_iters"]:
            break
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_ids, c["batch_size"], c["block_size"], rng)
        _, loss = model(torch.from_numpy(x), torch.from_numpy(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, c["grad_clip"])
        opt.step()
    with open(os.path.join(args.out_dir, "metrics.csv"), "w", newline="") as f:
        csv.writer(f).writerows([["iter", "train_loss", "val_loss", "lr"], *rows])


if __name__ == "__main__":
    main()
