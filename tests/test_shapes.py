"""Every registered op and every function of minigrad.functional on the shapes users hit first: a 0-d
scalar, (1,), an empty (0,), a vector (5,), a matrix (2, 3) and broadcast pairs, where the op is defined.
Each case is gradchecked in float64 (central differences against a random upstream gradient), and run
in float32: the output and every gradient keep the input's float dtype, and every .grad is an array of
its tensor's shape."""

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F
from minigrad import ops
from minigrad.tensor import REGISTRY

SHAPES = [(), (1,), (0,), (5,), (2, 3)]
BROADCAST = [((2, 3), (3,)), ((), (2, 3)), ((2, 1), (1, 3))]


def values(rng, shape, kind):
    """Test values of a shape: normal; 'positive' in [0.5, 1.5); 'away' from 0 (|x| >= 0.3); 'distinct'
    (no two within 0.1, so a max or a clamp is not straddled by the finite differences)."""
    size = int(np.prod(shape))
    if kind == "positive":
        return 0.5 + rng.random(shape)
    if kind == "away":
        x = rng.standard_normal(shape)
        return np.sign(x) * (0.3 + np.abs(x))
    if kind == "distinct":
        return (rng.permutation(size).reshape(shape) - size / 2) * 0.25 + 0.05 * rng.random(shape)
    return rng.standard_normal(shape)


CASES = []  # (op, label, fn, [(shape, kind) per input])


def case(op, label, fn, *inputs):
    CASES.append((op, label, fn, list(inputs)))


UNARY = {  # op: (fn, kind of input)
    "neg": (lambda x: -x, "any"), "exp": (lambda x: x.exp(), "any"), "log": (lambda x: x.log(), "positive"),
    "tanh": (lambda x: x.tanh(), "any"), "sqrt": (lambda x: x.sqrt(), "positive"),
    "relu": (lambda x: x.relu(), "away"), "sigmoid": (lambda x: x.sigmoid(), "any"),
    "abs": (lambda x: x.abs(), "away"), "cast": (lambda x: ops.Cast.apply(x, dtype=x.dtype) * x, "any"),
    "gelu": (F.gelu, "any"), "clamp": (lambda x: x.clamp(-0.4, 0.6), "distinct"),
    "relu (F)": (F.relu, "away"), "expand": (lambda x: x.expand((2,) + x.shape), "any"),
    "reshape": (lambda x: x.reshape(-1).reshape(x.shape) * x, "any"), "permute": (lambda x: x.T, "any"),
    "mse_loss": (lambda x: F.mse_loss(x, np.full(x.shape, 0.5)), "any"),
}
for name, (fn, kind) in UNARY.items():
    for shape in SHAPES:
        case(name, str(shape), fn, (shape, kind))

BINARY = {  # op: (fn, kind of a, kind of b)
    "add": (lambda a, b: a + b, "any", "any"), "sub": (lambda a, b: a - b, "any", "any"),
    "mul": (lambda a, b: a * b, "any", "any"), "div": (lambda a, b: a / b, "any", "away"),
    "pow": (lambda a, b: a**b, "positive", "any"), "maximum": (mg.maximum, "distinct", "distinct"),
    "minimum": (mg.minimum, "distinct", "distinct"),
    "where": (lambda a, b: mg.where(np.sign(a.data + b.data + 0.1) > 0, a, b), "any", "any"),
}
for name, (fn, kind_a, kind_b) in BINARY.items():
    for shape in SHAPES:
        case(name, f"{shape} and {shape}", fn, (shape, kind_a), (shape, kind_b))
    for shape_a, shape_b in BROADCAST:
        case(name, f"{shape_a} and {shape_b}", fn, (shape_a, kind_a), (shape_b, kind_b))
        if name in ("maximum", "minimum"):  # the distinct values of two inputs may still meet: only one order
            continue
        case(name, f"{shape_b} and {shape_a}", fn, (shape_b, kind_a), (shape_a, kind_b))

for a, b in [((5,), (5,)), ((1,), (1,)), ((0,), (0,)), ((2, 3), (3,)), ((3,), (3, 2)), ((2, 3), (3, 4)),
             ((0, 3), (3, 2)), ((2, 0), (0, 3))]:
    case("matmul", f"{a} @ {b}", lambda x, y: x @ y, (a, "any"), (b, "any"))

REDUCTIONS = {  # op: (fn(x, axis, keepdims), kind, defined for an empty input, least elements reduced)
    "sum": (lambda x, a, k: x.sum(a, k), "any", True, 0),
    "mean": (lambda x, a, k: x.mean(dim=a, keepdim=k), "any", False, 1),
    "amax": (lambda x, a, k: x.amax(a, k), "distinct", False, 1),
    "amin": (lambda x, a, k: x.amin(a, k), "distinct", False, 1),
    "var": (lambda x, a, k: x.var(a, k), "any", False, 2),
    "std": (lambda x, a, k: x.std(a, k), "any", False, 2),
    "logsumexp": (lambda x, a, k: x.logsumexp(a, k), "any", False, 1),
}
for name, (fn, kind, empty_ok, least) in REDUCTIONS.items():
    for shape in SHAPES:
        for axis in (None, 0, -1):
            reduced = int(np.prod(shape if axis is None or not shape else shape[axis]))
            if reduced < least or (not empty_ok and int(np.prod(shape)) == 0):
                continue
            for keepdims in (False, True):
                case(name, f"{shape}, axis {axis}, keepdims {keepdims}",
                     lambda x, a=axis, k=keepdims, f=fn: f(x, a, k), (shape, kind))

INDICES = {(): [()], (1,): [0, np.array([0, 0])], (0,): [slice(None), np.array([], dtype=np.int64)],
           (5,): [slice(1, 4), np.array([0, 4, 4]), ((0, 0, 2),), np.array([True, False, True, True, False])],
           (2, 3): [(slice(None), 1), [1, 1], (np.array([0, 1, 1]), np.array([2, 2, 0])), (0, Ellipsis, None)]}
for shape, indices in INDICES.items():
    for index in indices:
        case("getitem", f"{shape}[{index!r}]", lambda x, i=index: x[i] * 1.0, (shape, "any"))

for shape in SHAPES[1:]:  # ops that need at least one axis
    case("concatenate", f"cat {shape} twice", lambda x: mg.cat([x, x * 2.0]), (shape, "any"))
    case("stack", str(shape), lambda x: mg.stack([x, x.exp()], dim=-1), (shape, "any"))
    case("unsqueeze/squeeze/flatten", str(shape), lambda x: x.unsqueeze(0).squeeze(0).flatten() * 1.0, (shape, "any"))
    case("softmax", str(shape), F.softmax, (shape, "any"))
    case("log_softmax", str(shape), F.log_softmax, (shape, "any"))
    case("split", str(shape), lambda x: mg.split(x, 1)[0] * 1.0 if len(x) else x * 1.0, (shape, "any"))
for shape in [(2, 3), (0, 3), (3, 3)]:
    case("tril/triu", str(shape), lambda x: x.tril() + x.triu(1) * 2.0, (shape, "any"))

for x, w in [((5,), (4, 5)), ((2, 3), (4, 3)), ((0, 3), (2, 3)), ((1,), (1, 1))]:
    case("linear", f"x {x}, weight {w}", F.linear, (x, "any"), (w, "any"), (w[:1], "any"))
for shape in [(5,), (1,), (2, 3), (0, 3)]:
    case("layer_norm", str(shape), F.layer_norm, (shape, "any"), (shape[-1:], "any"), (shape[-1:], "any"))
for ids in [np.array(2), np.array([0, 2, 2, 1, 0]), np.array([[1, 1, 0], [2, 0, 0]]), np.zeros(0, np.int64)]:
    case("embedding", f"ids {ids.shape}", lambda w, i=ids: F.embedding(i, w), ((3, 4), "any"))
for logits, targets in [((5,), np.array(3)), ((2, 3), np.array([2, 0])), ((1, 1), np.array([0]))]:
    case("cross_entropy", f"logits {logits}", lambda z, t=targets: F.cross_entropy(z, t), (logits, "any"))
for shape in [(1, 1), (2, 3), (0, 2, 3), (1, 1, 1, 2)]:
    for causal in (True, False):
        case("scaled_dot_product_attention", f"{shape}, is_causal={causal}",
             lambda q, k, v, c=causal: F.scaled_dot_product_attention(q, k, v, is_causal=c), *[(shape, "any")] * 3)
for q, kv, mask in [((2, 3), (4, 3), None), ((1, 2, 3), (1, 5, 3), np.array([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], bool)),
                    ((3, 2), (3, 2), np.tril(np.ones((3, 3))) * 0.5)]:
    case("scaled_dot_product_attention", f"q {q}, k/v {kv}, mask {None if mask is None else mask.dtype}",
         lambda q_, k_, v_, m=mask: F.scaled_dot_product_attention(q_, k_, v_, attn_mask=m), (q, "any"), (kv, "any"),
         (kv, "any"))
for logits, targets in [((4, 3), np.array([2, -100, 0, 1])), ((2, 2, 3), np.array([[0, 2], [1, 1]]))]:
    for options in ({"reduction": "sum"}, {"reduction": "none"}, {"label_smoothing": 0.1}, {}):
        case("cross_entropy", f"logits {logits}, {options}, ignore -100",
             lambda z, t=targets, o=options: F.cross_entropy(z, t, **o), (logits, "any"))
for shape, n_head in [((1, 1, 3), 1), ((2, 3, 6), 2), ((0, 3, 6), 1)]:
    case("self_attention", f"{shape}, {n_head} head(s)", lambda qkv, h=n_head: F.self_attention(qkv, h),
         (shape, "any"))


def build(inputs, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [mg.Tensor(values(rng, shape, kind).astype(dtype), requires_grad=True) for shape, kind in inputs]


IDS = [f"{op}: {label}" for op, label, _, _ in CASES]


@pytest.mark.parametrize("op, label, fn, inputs", CASES, ids=IDS)
def test_gradcheck_in_float64(op, label, fn, inputs):
    leaves = build(inputs, np.float64)
    assert mg.gradcheck(fn, leaves)
    for x in leaves:  # gradcheck ran backward once: each gradient an array of its leaf's shape
        assert x.grad is None or (isinstance(x.grad, np.ndarray) and x.grad.shape == x.shape), (x.shape, x.grad)


@pytest.mark.parametrize("op, label, fn, inputs", CASES, ids=IDS)
def test_float32_in_float32_out(op, label, fn, inputs):
    leaves = build(inputs, np.float32)
    out = fn(*leaves)
    assert out.dtype == np.float32, f"output is {out.dtype}"
    out.backward(np.random.default_rng(1).standard_normal(out.shape).astype(np.float32))
    for x in leaves:
        assert isinstance(x.grad, np.ndarray), f"grad of a {x.shape} input is a {type(x.grad).__name__}"
        assert (x.grad.dtype, x.grad.shape) == (np.float32, x.shape), (x.grad.dtype, x.grad.shape)


def test_every_registered_op_is_in_the_table():
    missing = sorted(set(REGISTRY) - {op for op, *_ in CASES})
    assert not missing, f"registered ops without shape cases in tests/test_shapes.py: {missing}"
