"""Gradient-check cases for every registered op, every function of minigrad.functional and every layer.

Each case is ``(label, fn, make_inputs)``: ``make_inputs(rng)`` returns float64 Tensors (and other
arguments) and ``mg.gradcheck(fn, make_inputs(rng))`` must pass. The test suite runs them all and
fails when a registered op has no case; ``python -m minigrad.gradcheck`` runs them for a report.
"""

import numpy as np

import minigrad.functional as F
from minigrad import nn
from minigrad.gpt import GPT, GPTConfig
from minigrad.ops import cat, masked_fill, split, where
from minigrad.ops import maximum as mg_maximum
from minigrad.ops import minimum as mg_minimum
from minigrad.tensor import Tensor


def param(rng, *shape, low=None):
    """A float64 leaf that requires grad: N(0, 1), or uniform in [low, low + 1] when low is given."""
    data = rng.standard_normal(shape) if low is None else low + rng.random(shape)
    return Tensor(data, requires_grad=True)


def away_from_zero(rng, *shape):
    """Values whose magnitude is at least 0.2, so relu's kink (or a division) is not straddled."""
    x = rng.standard_normal(shape)
    return Tensor(np.sign(x) * (0.2 + np.abs(x)), requires_grad=True)


def distinct(rng, *shape):
    """A random permutation of well-separated values, so max has no ties within eps."""
    return Tensor(rng.permutation(np.prod(shape)).reshape(shape) * 0.1 + 0.01 * rng.random(shape), requires_grad=True)


def _tied(rng, sign=1.0):
    """Rows with two equal maxima (minima for sign -1): there the central difference of amax is 1/2 for
    each, the shared gradient."""
    row = sign * np.array([1.0, 3.0, 3.0, -1.0])
    return Tensor(np.stack([row, rng.permutation(row)]), requires_grad=True)


def _causal_attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _reused(x):  # a tensor used several times: the gradients of every use add up
    return x * x + x.exp() * x - x


CASES = {
    "add": [
        ("same shape", lambda a, b: a + b, lambda r: [param(r, 3, 4), param(r, 3, 4)]),
        ("(C,) + (B, T, C)", lambda a, b: a + b, lambda r: [param(r, 2, 3, 4), param(r, 4)]),
        ("(B, 1, T) + (B, T, T)", lambda a, b: a + b, lambda r: [param(r, 2, 1, 3), param(r, 2, 3, 3)]),
        ("scalar + tensor", lambda a: 2.5 + a, lambda r: [param(r, 3)]),
    ],
    "sub": [
        ("broadcast", lambda a, b: a - b, lambda r: [param(r, 2, 3), param(r, 3)]),
        ("scalar - tensor", lambda a: 1.0 - a, lambda r: [param(r, 4)]),
    ],
    "mul": [
        ("broadcast", lambda a, b: a * b, lambda r: [param(r, 2, 3, 4), param(r, 1, 3, 1)]),
        ("tensor used several times", _reused, lambda r: [param(r, 5)]),
    ],
    "div": [
        ("broadcast", lambda a, b: a / b, lambda r: [param(r, 3, 4), param(r, 4, low=0.5)]),
        ("scalar / tensor", lambda a: 2.0 / a, lambda r: [param(r, 3, low=0.5)]),
    ],
    "neg": [("elementwise", lambda a: -a, lambda r: [param(r, 3, 2)])],
    "pow": [
        ("square", lambda a: a**2, lambda r: [param(r, 3, 2)]),
        ("fractional power", lambda a: a**1.5, lambda r: [param(r, 4, low=0.5)]),
        ("negative power", lambda a: a**-1, lambda r: [param(r, 4, low=0.5)]),
        ("tensor ** tensor, broadcast", lambda a, b: a**b, lambda r: [param(r, 2, 3, low=0.5), param(r, 3)]),
        ("number ** tensor", lambda b: 2.0**b, lambda r: [param(r, 4)]),
    ],
    "matmul": [
        ("2-D", lambda a, b: a @ b, lambda r: [param(r, 3, 4), param(r, 4, 5)]),
        ("batched", lambda a, b: a @ b, lambda r: [param(r, 2, 3, 3, 4), param(r, 2, 3, 4, 2)]),
        ("batched with broadcasting", lambda a, b: a @ b, lambda r: [param(r, 2, 3, 4), param(r, 4, 5)]),
        ("broadcast batch axes", lambda a, b: a @ b, lambda r: [param(r, 2, 1, 3, 4), param(r, 1, 3, 4, 2)]),
        ("matrix @ vector", lambda a, b: a @ b, lambda r: [param(r, 3, 4), param(r, 4)]),
        ("vector @ batched", lambda a, b: a @ b, lambda r: [param(r, 4), param(r, 2, 4, 3)]),
    ],
    "exp": [("elementwise", lambda a: a.exp(), lambda r: [param(r, 3, 4)])],
    "log": [("elementwise", lambda a: a.log(), lambda r: [param(r, 3, 4, low=0.5)])],
    "tanh": [("elementwise", lambda a: a.tanh(), lambda r: [param(r, 3, 4)])],
    "sqrt": [("elementwise", lambda a: a.sqrt(), lambda r: [param(r, 3, 4, low=0.5)])],
    "relu": [("away from the kink", lambda a: a.relu(), lambda r: [away_from_zero(r, 4, 5)])],
    "sigmoid": [("elementwise, large |x|", lambda a: (a * 20).sigmoid(), lambda r: [param(r, 3, 4)])],
    "abs": [("away from the kink", lambda a: a.abs(), lambda r: [away_from_zero(r, 4, 5)])],
    "maximum": [
        ("broadcast", lambda a, b: mg_maximum(a, b), lambda r: [distinct(r, 2, 3), distinct(r, 3)]),
        ("minimum with a number", lambda a: mg_minimum(a, 0.3), lambda r: [away_from_zero(r, 5)]),
    ],
    "cast": [("to its own dtype, used twice", lambda a: a.double() * a, lambda r: [param(r, 3)])],
    "sum": [
        ("all", lambda a: a.sum(), lambda r: [param(r, 3, 4)]),
        ("axis", lambda a: a.sum(axis=1), lambda r: [param(r, 2, 3, 4)]),
        ("axes, keepdims", lambda a: a.sum(axis=(0, 2), keepdims=True), lambda r: [param(r, 2, 3, 4)]),
        ("negative axis", lambda a: a.sum(-1), lambda r: [param(r, 2, 3)]),
    ],
    "mean": [
        ("all", lambda a: a.mean(), lambda r: [param(r, 3, 4)]),
        ("axis, keepdims", lambda a: a.mean(axis=-1, keepdims=True), lambda r: [param(r, 2, 3, 4)]),
    ],
    "amax": [
        ("all", lambda a: a.max(), lambda r: [distinct(r, 3, 4)]),
        ("axis", lambda a: a.amax(axis=1), lambda r: [distinct(r, 2, 3, 4)]),
        ("axis, keepdims", lambda a: a.amax(axis=-1, keepdims=True), lambda r: [distinct(r, 2, 5)]),
        ("max(dim).values", lambda a: a.max(dim=0).values, lambda r: [distinct(r, 3, 2)]),
        ("ties share the gradient", lambda a: a.amax(axis=1) * 1.0, lambda r: [_tied(r)]),
    ],
    "amin": [
        ("all", lambda a: a.min(), lambda r: [distinct(r, 3, 4)]),
        ("axis, keepdims", lambda a: a.amin(axis=0, keepdims=True), lambda r: [distinct(r, 3, 2)]),
        ("ties share the gradient", lambda a: a.amin(axis=1) * 1.0, lambda r: [_tied(r, -1.0)]),
    ],
    "expand": [
        ("size-1 axis and a new leading one", lambda a: a.expand(2, 3, 4), lambda r: [param(r, 3, 1)]),
        ("-1 keeps a size", lambda a: a.expand(-1, 5), lambda r: [param(r, 2, 1)]),
    ],
    "reshape": [
        ("tuple", lambda a: a.reshape((4, 3)), lambda r: [param(r, 2, 6)]),
        ("with -1", lambda a: a.reshape(2, -1, 2), lambda r: [param(r, 12)]),
    ],
    "permute": [
        ("3-D", lambda a: a.permute(2, 0, 1), lambda r: [param(r, 2, 3, 4)]),
        ("transpose two axes", lambda a: a.transpose(1, 2), lambda r: [param(r, 2, 3, 4)]),
        (".T", lambda a: a.T, lambda r: [param(r, 3, 4)]),
    ],
    "getitem": [
        ("slices", lambda a: a[1:, ::2], lambda r: [param(r, 3, 5)]),
        ("integer", lambda a: a[1], lambda r: [param(r, 3, 5)]),
        ("gather with repeated indices", lambda a: a[np.array([0, 2, 2, 1, 2])], lambda r: [param(r, 3, 4)]),
        ("2-D index array (embedding)", lambda a: a[np.array([[0, 1, 1], [3, 3, 3]])], lambda r: [param(r, 4, 2)]),
        ("row and column arrays", lambda a: a[np.arange(3), np.array([1, 1, 0])], lambda r: [param(r, 3, 2)]),
    ],
    "concatenate": [
        ("axis 0", lambda a, b: cat([a, b], axis=0), lambda r: [param(r, 2, 3), param(r, 1, 3)]),
        ("last axis, same tensor twice", lambda a, b: cat([a, b, a], axis=-1), lambda r: [param(r, 2, 3), param(r, 2, 2)]),
    ],
    "where": [
        ("broadcast condition", lambda a, b: where(np.array([True, False, True]), a, b),
         lambda r: [param(r, 2, 3), param(r, 2, 3)]),
        ("masked_fill", lambda a: masked_fill(a, np.triu(np.ones((3, 3), bool), 1), -7.0),
         lambda r: [param(r, 2, 3, 3)]),
    ],
    "linear": [
        ("(B, T, in) with bias", F.linear, lambda r: [param(r, 2, 3, 4), param(r, 5, 4), param(r, 5)]),
        ("(N, in), no bias", F.linear, lambda r: [param(r, 3, 4), param(r, 2, 4)]),
        ("input used twice", lambda x, w: F.linear(F.linear(x, w), w), lambda r: [param(r, 2, 3), param(r, 3, 3)]),
    ],
    "cross_entropy": [
        ("(N, V)", lambda x: F.cross_entropy(x, np.array([0, 3, 3, 1])), lambda r: [param(r, 4, 5)]),
        ("(B, T, V)", lambda x: F.cross_entropy(x, np.array([[0, 1, 2], [2, 2, 0]])), lambda r: [param(r, 2, 3, 4)]),
        ("large logits", lambda x: F.cross_entropy(x * 1e4, np.array([1, 0, 2])), lambda r: [param(r, 3, 4)]),
    ],
    "layer_norm": [
        ("(B, T, C)", F.layer_norm, lambda r: [param(r, 2, 3, 5), param(r, 5), param(r, 5)]),
        ("no bias", lambda x, w: F.layer_norm(x, w), lambda r: [param(r, 4, 6), param(r, 6)]),
    ],
    "gelu": [
        ("elementwise", F.gelu, lambda r: [param(r, 3, 7)]),
        ("0-d", F.gelu, lambda r: [param(r)]),
    ],
    "scaled_dot_product_attention": [
        ("causal", _causal_attention, lambda r: [param(r, 2, 2, 5, 3) for _ in range(3)]),
        ("not causal", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=False),
         lambda r: [param(r, 1, 3, 4, 2) for _ in range(3)]),
        ("T = 1, one head", _causal_attention, lambda r: [param(r, 2, 1, 1, 4) for _ in range(3)]),
        ("same tensor as q, k and v", lambda x: _causal_attention(x, x, x), lambda r: [param(r, 1, 2, 4, 3)]),
    ],
    "embedding": [
        ("repeated ids", lambda w: F.embedding(np.array([[1, 1, 0], [2, 1, 1]]), w), lambda r: [param(r, 3, 4)]),
        ("one id, 0-d", lambda w: F.embedding(np.array(2), w), lambda r: [param(r, 3, 2)]),
        ("unused rows, int32 ids", lambda w: F.embedding(np.array([4, 0, 4], np.int32), w), lambda r: [param(r, 6, 3)]),
        ("table used twice", lambda w: F.embedding(np.array([1, 2]), w) * F.embedding(np.array([2, 2]), w),
         lambda r: [param(r, 3, 2)]),
    ],
    "self_attention": [
        ("causal, 2 heads", lambda qkv: F.self_attention(qkv, 2), lambda r: [param(r, 2, 5, 12)]),
        ("not causal, 3 heads", lambda qkv: F.self_attention(qkv, 3, is_causal=False), lambda r: [param(r, 1, 4, 9)]),
        ("T = 1, one head", lambda qkv: F.self_attention(qkv, 1), lambda r: [param(r, 2, 1, 6)]),
    ],
}

# minigrad.functional's composites and the ops.py helpers built on primitives: checked all the same.
COMPOSITES = {
    "softmax": [
        ("last axis", F.softmax, lambda r: [param(r, 3, 5)]),
        ("axis 0", lambda x: F.softmax(x, axis=0), lambda r: [param(r, 3, 5)]),
        ("large logits", lambda x: F.softmax(x * 1e4), lambda r: [distinct(r, 2, 4)]),
    ],
    "log_softmax": [
        ("last axis", F.log_softmax, lambda r: [param(r, 3, 5)]),
        ("large logits", lambda x: F.log_softmax(x * 1e4), lambda r: [param(r, 2, 4)]),
    ],
    "split": [
        ("sizes, every piece used", lambda x: sum(p.sum() * (i + 1) for i, p in enumerate(split(x, [1, 3], axis=1))),
         lambda r: [param(r, 2, 4)]),
        ("split size", lambda x: split(x, 2, axis=0)[1] * 3, lambda r: [param(r, 5, 2)]),
    ],
}



def _layer_inputs(make_layer, *x_shape):
    """make_inputs for a whole layer: [layer, x (when x_shape is given), *its parameters], in float64.
    Each parameter moves off its small init, so every path's gradient stands above finite-difference noise."""

    def make_inputs(rng):
        layer = make_layer(rng).to(dtype=np.float64)
        for name, p in layer.named_parameters():
            p.data = p.data + rng.normal(0.0, 0.3, p.shape)
            p.name = name  # a failure names the parameter
        return [layer, *([param(rng, *x_shape)] if x_shape else []), *layer.parameters()]

    return make_inputs


def _apply_layer(layer, x, *params):  # the parameters are inputs so that gradcheck checks them; the layer uses them
    return layer(x)


_IDS = np.array([[1, 4, 0, 4], [2, 2, 3, 1]])  # (B, T) token ids

# minigrad.nn's layers and the whole GPT, input and every parameter at once.
LAYERS = {
    "nn.Linear": [("(B, T, in)", _apply_layer, _layer_inputs(lambda r: nn.Linear(4, 3, rng=r), 2, 3, 4))],
    "nn.Embedding": [("repeated ids", lambda layer, w: layer(_IDS), _layer_inputs(lambda r: nn.Embedding(5, 3, rng=r)))],
    "nn.LayerNorm": [("(B, T, C)", _apply_layer, _layer_inputs(lambda r: nn.LayerNorm(5), 2, 3, 5))],
    "nn.CausalSelfAttention": [
        ("2 heads", _apply_layer, _layer_inputs(lambda r: nn.CausalSelfAttention(4, 2, rng=r), 2, 3, 4)),
    ],
    "nn.MLP": [("(B, T, C)", _apply_layer, _layer_inputs(lambda r: nn.MLP(4, rng=r), 2, 3, 4))],
    "nn.Block": [("2 heads", _apply_layer, _layer_inputs(lambda r: nn.Block(4, 2, rng=r), 1, 3, 4))],
    "GPT": [
        ("loss, tied embedding", lambda model, *params: model(_IDS, _IDS[:, ::-1].copy())[1],
         _layer_inputs(lambda r: GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=2, n_embd=4),
                                        seed=int(r.integers(1 << 30))))),
    ],
}


def all_cases():
    """(name, label, fn, make_inputs) for every case."""
    for table in (CASES, COMPOSITES, LAYERS):
        for name, cases in table.items():
            for label, fn, make_inputs in cases:
                yield name, label, fn, make_inputs

