"""minigrad.functional (imported as F): neural-network functions with PyTorch's names.

Two kinds live here:
- composites of the primitive ops (softmax, log_softmax), whose backward the engine derives from
  the primitives';
- Functions of their own: linear (so each product is one GEMM), and the fused embedding (its
  backward), cross_entropy, layer_norm, gelu, scaled_dot_product_attention and self_attention, one
  graph node each, whose forward and backward call ``dispatch.kernels_for(x)``: the C++ kernels on
  the CPU when they are built, else the reference in ``minigrad.kernels``.
"""

import math

import numpy as np

from minigrad.backend import get_array_module
from minigrad.dispatch import kernels_for
from minigrad.kernels import check_indices
from minigrad.ops import cat, masked_fill, split, transpose, where  # noqa: F401  (re-exported)
from minigrad.tensor import Function, Tensor, register


def _sum_over_rows(a):
    """a (..., C) summed over every axis but the last: a bias's gradient. One matrix-vector product,
    ones @ rows (a single BLAS pass, about twice as fast as a.sum(axis=0))."""
    rows = a.reshape(-1, a.shape[-1])
    return get_array_module(rows).ones(len(rows), rows.dtype) @ rows


def _contiguous(a):
    """a as a C-contiguous array of its own shape, for the kernels (np.ascontiguousarray makes a 0-d array 1-d)."""
    return get_array_module(a).ascontiguousarray(a).reshape(a.shape)


@register("linear", method=False)
class Linear(Function):
    """y = x W^T + b as one node: the leading axes of x fold into one, so each product is one GEMM.

    x (..., in), weight (out, in), bias (out,) -> y (..., out);
    dx = dy W, dW = dy^T x, db = sum of dy over the folded rows.
    """

    def forward(self, x, weight, bias):
        self.x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        self.weight = weight
        y = self.x2 @ weight.T  # (N, out)
        if bias is not None:
            y += bias
        return y.reshape(*x.shape[:-1], weight.shape[0])

    def backward(self, dout):
        dout2 = dout.reshape(-1, dout.shape[-1])  # (N, out)
        dx = (dout2 @ self.weight).reshape(*dout.shape[:-1], self.weight.shape[1]) if self.needs_input_grad[0] else None
        dweight = dout2.T @ self.x2 if self.needs_input_grad[1] else None
        dbias = _sum_over_rows(dout2) if self.needs_input_grad[2] else None
        return dx, dweight, dbias


def linear(x, weight, bias=None):
    """y = x W^T + b, weight (out_features, in_features), x (..., in_features)."""
    return Linear.apply(x, weight, bias)


def relu(x):
    """max(x, 0) elementwise."""
    return x.relu()


def mse_loss(input, target, reduction="mean"):  # noqa: A002 (PyTorch's argument name)
    """(input - target)^2, averaged ("mean"), summed ("sum") or left elementwise ("none")."""
    squared = (input - target) ** 2
    return _reduce(squared, reduction, "mse_loss")


def _reduce(losses, reduction, fn):
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise ValueError(f"{fn}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def softmax(x, axis=-1, *, dim=None):
    """exp(x_i - max x) / sum_j exp(x_j - max x); the shift leaves the value unchanged and keeps exp finite."""
    axis = axis if dim is None else dim
    shifted = x - _max_shift(x, axis)  # NOTE: a constant shift, so no gradient flows to it
    e = shifted.exp()
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1, *, dim=None):
    """x_i - logsumexp(x) = (x_i - max x) - log sum_j exp(x_j - max x)."""
    axis = axis if dim is None else dim
    shifted = x - _max_shift(x, axis)  # NOTE: shift first, or exp overflows at large logits
    return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()


def _max_shift(x, axis):
    """The max of x along axis as a constant array (0 for an empty x, which has no max)."""
    return x.data.max(axis=axis, keepdims=True) if x.size else 0.0


@register("embedding", method=False)
class Embedding(Function):
    """out[..., :] = weight[idx[...], :], one row of the table per integer id.
    dweight[v] = the sum of dout over the positions whose id is v (an id used twice gets both)."""

    def forward(self, idx, weight):
        xp = get_array_module(weight)
        idx = xp.asarray(idx)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"embedding: ids must be integers, got dtype {idx.dtype}")
        self.num_embeddings = weight.shape[0]
        check_indices(idx, self.num_embeddings, "embedding", "idx")  # a negative id must not wrap around
        self.idx = xp.ascontiguousarray(idx, dtype=xp.int64).reshape(idx.shape)  # (a 0-d idx stays 0-d)
        return weight[self.idx]

    def backward(self, dout):
        return None, kernels_for(dout).embedding_backward(_contiguous(dout), self.idx, self.num_embeddings)


def embedding(idx, weight):
    """weight[idx]: a row of the (num_embeddings, C) table weight per integer id in idx -> (*idx.shape, C)."""
    return Embedding.apply(idx, weight)


@register("cross_entropy", method=False)
class CrossEntropy(Function):
    """mean over positions of -log softmax(logits)[target], fused: one node, dlogits = (softmax - onehot)/N."""

    def forward(self, logits, targets):
        xp = get_array_module(logits)
        targets = xp.asarray(targets.data if isinstance(targets, Tensor) else targets)
        V = logits.shape[-1]
        if targets.shape != logits.shape[:-1]:
            raise ValueError(f"cross_entropy: targets of shape {targets.shape} do not match logits {logits.shape}")
        if targets.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy: targets must be integers, got dtype {targets.dtype}")
        self.kernels = kernels_for(logits)
        self.shape = logits.shape
        self.targets = xp.ascontiguousarray(targets.reshape(-1), dtype=xp.int64)
        loss, self.probs = self.kernels.crossentropy_forward(_contiguous(logits.reshape(-1, V)), self.targets)
        return xp.asarray(loss, dtype=logits.dtype)

    def backward(self, dloss):
        dlogits = self.kernels.crossentropy_backward(float(dloss), self.probs, self.targets)
        return dlogits.reshape(self.shape)


def cross_entropy(logits, targets, reduction="mean", ignore_index=-100, label_smoothing=0.0):
    """Cross-entropy of logits (..., V), the class axis last, against integer targets (...):
    loss_i = -(1 - eps) log p_i[t_i] - eps mean_c log p_i[c], p_i = softmax(logits_i), eps = label_smoothing;
    positions whose target is ignore_index are left out (loss 0, and not counted by the mean).
    reduction: "mean" over the counted positions, "sum", or "none" (the losses, the targets' shape).

    The plain case (mean, no smoothing, nothing ignored), the one training uses, is one fused node;
    the others are composed of log_softmax and a gather, so the engine derives their backward."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must lie in [0, 1], got {label_smoothing}")
    t = targets.data if isinstance(targets, Tensor) else targets
    # NOTE: on a GPU this test reads one number back from the device
    if reduction == "mean" and label_smoothing == 0.0 and not bool((get_array_module(t).asarray(t) == ignore_index).any()):
        return CrossEntropy.apply(logits, targets)
    return _cross_entropy_composite(logits, get_array_module(logits.data).asarray(t), reduction, ignore_index,
                                    label_smoothing)


def _cross_entropy_composite(logits, targets, reduction, ignore_index, label_smoothing):
    xp = get_array_module(logits.data)
    V = logits.shape[-1]
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: targets of shape {targets.shape} do not match logits {logits.shape}")
    t = targets.reshape(-1)
    counted = t != ignore_index  # (N,)
    t = xp.where(counted, t, 0)  # an ignored position picks class 0, then counts for nothing
    check_indices(t, V, "cross_entropy", "targets")
    logp = log_softmax(logits.reshape(-1, V))  # (N, V)
    picked = logp[xp.arange(len(t)), t]  # log p_i[t_i]: (N,)
    losses = -(1.0 - label_smoothing) * picked - label_smoothing * logp.mean(axis=-1)
    losses = where(counted, losses, 0.0)
    if reduction == "mean":
        return losses.sum() / int(counted.sum())  # nothing counted: 0 / 0 = NaN, as PyTorch
    return losses.sum() if reduction == "sum" else losses.reshape(targets.shape)


@register("layer_norm", method=False)
class LayerNorm(Function):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis, with its analytic backward."""

    def forward(self, x, weight, bias, eps=1e-5):
        self.kernels = kernels_for(x)
        self.x, self.weight = _contiguous(x), _contiguous(weight)
        bias = None if bias is None else _contiguous(bias)
        out, self.mean, self.rstd = self.kernels.layernorm_forward(self.x, self.weight, bias, eps)
        return out

    def backward(self, dout):
        dx, dweight, dbias = self.kernels.layernorm_backward(
            _contiguous(dout), self.x, self.weight, self.mean, self.rstd
        )
        return dx, dweight, dbias


def layer_norm(x, weight, bias=None, eps=1e-5):
    """LayerNorm over the last axis: x (..., C), weight and bias (C,)."""
    return LayerNorm.apply(x, weight, bias, eps)


@register("gelu", method=False)
class GELU(Function):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), GPT-2's tanh approximation; dx = dout gelu'(x)."""

    def forward(self, x):
        self.kernels = kernels_for(x)
        self.x = _contiguous(x)
        return self.kernels.gelu_forward(self.x)

    def backward(self, dout):
        return self.kernels.gelu_backward(_contiguous(dout), self.x)


def gelu(x):
    """tanh-approximated GELU of x, elementwise."""
    return GELU.apply(x)


@register("scaled_dot_product_attention", method=False)
class ScaledDotProductAttention(Function):
    """softmax(q k^T / sqrt(hs) + causal mask) v in one node; q, k, v (B, NH, T, hs)."""

    def forward(self, q, k, v, is_causal=True):
        if not (q.shape == k.shape == v.shape and q.ndim >= 2):
            raise ValueError(f"attention: q, k, v must share one shape (..., T, hs), got {q.shape}, {k.shape}, {v.shape}")
        self.kernels = kernels_for(q)
        self.q, self.k, self.v = (_contiguous(a) for a in (q, k, v))
        self.is_causal = is_causal
        # lse (B, NH, T): each score row's log-sum-exp, from which the backward rebuilds the probabilities
        # (T times less memory kept than the (B, NH, T, T) probabilities themselves)
        out, self.lse = self.kernels.attention_forward(self.q, self.k, self.v, is_causal)
        return out

    def backward(self, dout):
        return self.kernels.attention_backward(_contiguous(dout), self.q, self.k, self.v, self.lse, self.is_causal)


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False, scale=None):
    """softmax(q k^T * scale + mask) v, PyTorch's signature: q (..., L, hs), k and v (..., S, hs);
    scale 1/sqrt(hs) by default; is_causal: query i sees the keys j <= i; attn_mask (L, S) or
    broadcastable: True where a query may see a key (a boolean mask), or numbers added to the scores.

    q, k and v of one shape, with no mask or scale given (the model's case), run as one fused node;
    the rest is composed of matmul, masked_fill and softmax."""
    if not isinstance(is_causal, (bool, np.bool_)):
        raise TypeError(f"scaled_dot_product_attention: is_causal must be True or False, got {is_causal!r}")
    if attn_mask is not None and is_causal:
        raise ValueError("scaled_dot_product_attention: pass attn_mask or is_causal=True, not both")
    if attn_mask is None and scale is None and q.shape == k.shape == v.shape and q.ndim >= 2:
        return ScaledDotProductAttention.apply(q, k, v, bool(is_causal))
    L, S = q.shape[-2], k.shape[-2]
    scores = (q @ transpose(k, -2, -1)) * (1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)  # (..., L, S)
    if is_causal:
        attn_mask = np.tril(np.ones((L, S), bool))  # query i sees keys 0 .. i (the top-left corner, as PyTorch)
    if attn_mask is not None:
        mask = attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask
        if not hasattr(mask, "dtype"):
            raise TypeError(f"scaled_dot_product_attention: attn_mask must be an array or Tensor, got "
                            f"{type(mask).__name__} (pass is_causal= by name)")
        scores = masked_fill(scores, ~mask, -math.inf) if mask.dtype == bool else scores + mask
    return softmax(scores) @ v


@register("self_attention", method=False)
class SelfAttention(Function):
    """Multi-head attention (causal by default) straight from the fused projection, as one node:
    qkv (B, T, 3C) is [q | k | v], each n_head heads of hs = C / n_head side by side; out (B, T, C)
    has the heads side by side again. The same as splitting the heads, scaled_dot_product_attention
    and merging them, without the copies in between: the kernels read and write each head where it lies."""

    def forward(self, qkv, *, n_head, is_causal=True):
        if not isinstance(n_head, int) or n_head < 1:
            raise ValueError(f"self_attention: n_head must be a positive integer, got {n_head!r}")
        if qkv.ndim != 3 or qkv.shape[-1] % 3 or (qkv.shape[-1] // 3) % n_head:
            raise ValueError(f"self_attention: qkv must be (B, T, 3C) with C divisible by n_head={n_head}, "
                             f"got shape {qkv.shape}")
        self.kernels = kernels_for(qkv)
        self.qkv, self.n_head, self.is_causal = _contiguous(qkv), n_head, is_causal
        out, self.lse = self.kernels.self_attention_forward(self.qkv, n_head, is_causal)  # lse (B, NH, T), as above
        return out

    def backward(self, dout):
        return self.kernels.self_attention_backward(_contiguous(dout), self.qkv, self.lse, self.n_head, self.is_causal)


def self_attention(qkv, n_head, is_causal=True):
    """Attention of every head of qkv (B, T, 3C) = [q | k | v] over itself -> (B, T, C), heads side by side."""
    return SelfAttention.apply(qkv, n_head=n_head, is_causal=is_causal)
