"""A small MLP learns the two-moons dataset, micrograd-style: every weight and every update by hand.

    python examples/mlp_2d.py [--steps 300] [--seed 0]

No nn.Module and no optimizer object here, to show what they do for you: the model is four
tensors, the training step is `p -= lr * p.grad`.
"""

import argparse

import numpy as np

import minigrad as mg
import minigrad.functional as F


def two_moons(n, noise, rng):
    """n points on two interleaved half circles, labels 0 (upper moon) and 1 (lower moon)."""
    t = rng.uniform(0, np.pi, n)
    label = rng.integers(0, 2, n)
    x = np.where(label == 0, np.cos(t), 1 - np.cos(t))
    y = np.where(label == 0, np.sin(t), 0.5 - np.sin(t))
    points = np.stack([x, y], axis=1) + noise * rng.standard_normal((n, 2))
    return points, label


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    X, y = two_moons(200, noise=0.1, rng=rng)  # (N, 2), (N,)
    X = (X - X.mean(axis=0)) / X.std(axis=0)  # centred and scaled: tanh units start in their useful range

    # the model: 2 -> hidden -> 2 logits, weights (out, in) as in F.linear
    H = args.hidden
    w1 = mg.Tensor(rng.standard_normal((H, 2)) / np.sqrt(2), requires_grad=True)
    b1 = mg.Tensor(np.zeros(H), requires_grad=True)
    w2 = mg.Tensor(rng.standard_normal((2, H)) / np.sqrt(H), requires_grad=True)
    b2 = mg.Tensor(np.zeros(2), requires_grad=True)
    params = [w1, b1, w2, b2]

    def model(x):
        return F.linear(F.linear(x, w1, b1).tanh(), w2, b2)  # (N, 2) logits

    for step in range(args.steps):
        logits = model(X)
        loss = F.cross_entropy(logits, y)
        for p in params:
            p.grad = None  # .grad accumulates: clear it before each backward
        loss.backward()
        for p in params:
            p.data -= args.lr * p.grad  # gradient descent, on the whole dataset at once
        if step % 50 == 0 or step == args.steps - 1:
            accuracy = (logits.data.argmax(axis=1) == y).mean()
            print(f"step {step:4d}  loss {loss.item():.4f}  accuracy {accuracy:.3f}")

    with mg.no_grad():
        accuracy = (model(X).data.argmax(axis=1) == y).mean()
    print(f"final accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
