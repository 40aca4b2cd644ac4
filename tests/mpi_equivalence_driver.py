"""Driver for tests/test_distributed.py: a few AdamW steps of a tiny GPT on fixed global batches.

    python tests/mpi_equivalence_driver.py --out one.npz               # one process, the whole batch 2B
    mpirun -n 2 python tests/mpi_equivalence_driver.py --out two.npz   # 2 ranks, rank r takes rows r*B:(r+1)*B
    python tests/mpi_equivalence_driver.py --out half.npz --rows 0:4   # control: one process, rows 0:4 only
    mpirun -n 2 python tests/mpi_equivalence_driver.py --fail-on-rank 1   # rank 1 raises at step 2

Every run draws the same global batches (one RNG, seeded the same on every rank) and takes its steps
through train_char.train_step, so the comparison covers minigrad.distributed and the loop's order
(backward, mean over ranks, clipping, AdamW). Rank 0 writes the result to --out.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_char  # noqa: E402

import minigrad as mg  # noqa: E402
from minigrad import distributed  # noqa: E402
from minigrad.data import get_batch  # noqa: E402
from minigrad.tensor import Tensor  # noqa: E402

VOCAB, BLOCK = 11, 16


def check_allreduce_grads(world):
    """Three parameters: a has a gradient (rank + 1) everywhere, b on the last rank only, c nowhere."""
    a, b, c = (Tensor(np.zeros((2, 3), np.float32), requires_grad=True) for _ in range(3))
    a.grad = np.full((2, 3), world.rank + 1.0, np.float32)
    if world.rank == world.world_size - 1:
        b.grad = np.full((2, 3), 2.0, np.float32)
    world.allreduce_grads([a, b, c])
    return a.grad, b.grad, c.grad is None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", help="rank 0 writes the losses, grad norms and parameters here (.npz)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--grad-clip", type=float, default=0.3, help="below the norms, so every step clips")
    parser.add_argument("--rows", help="one process only: train on rows START:STOP of each global batch")
    parser.add_argument("--fail-on-rank", type=int, default=-1, help="this rank raises at step 2")
    args = parser.parse_args()
    world = distributed.init()
    with world.abort_on_error("mpi_equivalence_driver.py"):
        run(args, world)


def run(args, world):
    B = args.global_batch // world.world_size  # sequences per rank
    rows = slice(world.rank * B, (world.rank + 1) * B)
    if args.rows:
        rows = slice(*map(int, args.rows.split(":")))
    grads = check_allreduce_grads(world)

    model = mg.GPT(mg.GPTConfig(VOCAB, BLOCK, n_layer=1, n_head=2, n_embd=16), seed=world.rank)
    world.broadcast_params(model)  # the ranks built different weights: from here on, rank 0's
    optimizer = model.configure_optimizer(lr=1e-2, weight_decay=0.1)
    data = np.random.default_rng(0).integers(0, VOCAB, size=2000)
    batches = np.random.default_rng(1)  # the same global batches on every rank
    losses, norms = [], []
    for step in range(args.steps):
        x, y = get_batch(data, args.global_batch, BLOCK, batches)  # (2B, T) each
        loss, norm = train_char.train_step(model, optimizer, x[rows], y[rows], args.grad_clip, "cpu", world)
        if step == 2 and world.rank == args.fail_on_rank:
            raise RuntimeError(f"deliberate failure on rank {world.rank} at step {step}")
        optimizer.step()
        losses.append(loss)
        norms.append(norm)

    flat = np.concatenate([p.numpy().ravel() for p in model.parameters()])
    every_rank = world.gather(flat)  # rank 0: [flat of rank 0, flat of rank 1, ...]
    if world.is_main and args.out:
        spread = max(np.abs(f - flat).max() for f in every_rank)  # 0.0 when the ranks' models are equal
        np.savez(args.out, losses=np.array(losses), norms=np.array(norms), params=flat, spread=spread,
                 world_size=world.world_size, grad_a=grads[0], grad_b=grads[1], grad_c_is_none=grads[2])


if __name__ == "__main__":
    main()
