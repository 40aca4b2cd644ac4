"""The plain NumPy/CuPy reference of every fused kernel: the readable definition of each.

The contract (llm.c's): ``<layer>_forward(...) -> (out, *saved)`` and
``<layer>_backward(dout, *saved...) -> gradients``, on raw arrays. The C++ module ``_C`` and the
CUDA module ``_C_cuda`` implement the same names with the same signatures, save the same things and
refuse the same bad indices with the same ValueError; ``dispatch.kernels_for(x)`` picks one, and
``tests/test_kernels.py`` holds each implementation to this one.

Dimensions: B batch, T time, C channels, V vocabulary, NH heads, hs head size, N = B*T rows.
"""

import math

from minigrad.backend import add_at, get_array_module

GELU_SCALE = math.sqrt(2.0 / math.pi)


# --- LayerNorm ----------------------------------------------------------------------------------


def layernorm_forward(x, weight, bias, eps):
    """y = (x - mean) * rstd * weight + bias over the last axis, rstd = 1/sqrt(var + eps).

    x (..., C), weight (C,), bias (C,) or None -> out (..., C), mean (...), rstd (...)
    """
    xp = get_array_module(x)
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)  # biased variance, as PyTorch
    rstd = 1.0 / xp.sqrt(var + eps)  # (..., 1)
    out = xc * rstd * weight
    if bias is not None:
        out += bias
    return out, mean[..., 0], rstd[..., 0]


def layernorm_backward(dout, x, weight, mean, rstd):
    """With xhat = (x - mean)*rstd and g = dout*weight:
    dx = rstd * (g - mean(g) - xhat*mean(g*xhat)), dweight = sum(dout*xhat), dbias = sum(dout).

    dout, x (..., C), weight (C,), mean, rstd (...) -> dx (..., C), dweight (C,), dbias (C,)
    """
    C = x.shape[-1]
    rstd = rstd[..., None]
    xhat = (x - mean[..., None]) * rstd
    dweight = (dout * xhat).reshape(-1, C).sum(axis=0)
    dbias = dout.reshape(-1, C).sum(axis=0)
    g = dout * weight
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, dweight, dbias


# --- GELU (tanh approximation, GPT-2's) ---------------------------------------------------------


def gelu_forward(x):
    """y = 0.5 x (1 + tanh(s (x + 0.044715 x^3))), s = sqrt(2/pi).  x (...) -> out (...)"""
    xp = get_array_module(x)
    return 0.5 * x * (1.0 + xp.tanh(GELU_SCALE * (x + 0.044715 * x * x * x)))


def gelu_backward(dout, x):
    """dx = dout dy/dx, dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) s (1 + 3*0.044715 x^2), t = tanh(s (x + 0.044715 x^3))."""
    xp = get_array_module(x)
    t = xp.tanh(GELU_SCALE * (x + 0.044715 * x * x * x))
    local = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_SCALE * (1.0 + 3.0 * 0.044715 * x * x)
    return dout * local


# --- causal self-attention ----------------------------------------------------------------------


def _scores(q, k, is_causal):
    """S = q k^T / sqrt(hs), -inf where a query would see a later key when causal.  -> (B, NH, T, T)"""
    xp = get_array_module(q)
    T, hs = q.shape[-2], q.shape[-1]
    scores = (q @ k.swapaxes(-1, -2)) * (1.0 / math.sqrt(hs))
    if is_causal:
        future = xp.triu(xp.ones((T, T), dtype=bool), k=1)  # (T, T), True above the diagonal
        scores[..., future] = -xp.inf
    return scores


def attention_forward(q, k, v, is_causal):
    """y = P v with P = softmax(S), S = q k^T / sqrt(hs) (+ the causal mask); and lse, each score row's
    log-sum-exp, lse_i = log sum_j exp(S_ij) over the keys row i sees: all the backward keeps of P.

    q, k, v (B, NH, T, hs) -> out (B, NH, T, hs), lse (B, NH, T)
    """
    xp = get_array_module(q)
    scores = _scores(q, k, is_causal)  # (B, NH, T, T)
    # NOTE: subtract the row max before exp, or exp overflows for large scores.
    row_max = scores.max(axis=-1, keepdims=True)  # (B, NH, T, 1)
    scores -= row_max
    probs = xp.exp(scores)
    row_sum = probs.sum(axis=-1, keepdims=True)
    probs /= row_sum
    return probs @ v, (row_max + xp.log(row_sum))[..., 0]


def attention_backward(dout, q, k, v, lse, is_causal):
    """With P = exp(S - lse) rebuilt from q, k and the forward's lse (no (T, T) array is kept between
    forward and backward: flash attention's trade): dv = P^T dout, dP = dout v^T,
    dS = P * (dP - delta), delta = rowsum(dP * P) / rowsum(P), dq = dS k / sqrt(hs), dk = dS^T q / sqrt(hs).

    dout, q, k, v (B, NH, T, hs), lse (B, NH, T) -> dq, dk, dv (B, NH, T, hs)
    """
    xp = get_array_module(q)
    scale = 1.0 / math.sqrt(q.shape[-1])
    # S - lse <= 0 (lse is at least the row max): this exp cannot overflow; the mask's -inf gives 0
    probs = xp.exp(_scores(q, k, is_causal) - lse[..., None])  # (B, NH, T, T)
    dv = probs.swapaxes(-1, -2) @ dout
    dprobs = dout @ v.swapaxes(-1, -2)  # (B, NH, T, T)
    # NOTE: rowsum(P) = 1 only up to the rounding of lse, |lse| * 1e-16 (1e-13 for scores in the thousands),
    # and dP - delta cancels: dividing by rowsum(P) keeps that error relative instead of amplified.
    delta = (dprobs * probs).sum(axis=-1, keepdims=True) / probs.sum(axis=-1, keepdims=True)  # (B, NH, T, 1)
    dscores = probs * (dprobs - delta)
    dq = (dscores @ k) * scale
    dk = (dscores.swapaxes(-1, -2) @ q) * scale
    return dq, dk, dv


def self_attention_forward(qkv, n_head, is_causal):
    """attention_forward on the heads of one fused projection, as c_attn makes it: qkv (B, T, 3C) holds
    q, k and v side by side, each n_head heads of hs = C / n_head side by side.

    qkv (B, T, 3C) -> out (B, T, C) with the heads side by side again, lse (B, NH, T)
    """
    q, k, v = _split_heads(qkv, 3, n_head)
    out, lse = attention_forward(q, k, v, is_causal)
    return _merge_heads(out), lse


def self_attention_backward(dout, qkv, lse, n_head, is_causal):
    """attention_backward on those heads.  dout (B, T, C), lse (B, NH, T) -> dqkv (B, T, 3C): dq, dk and dv
    side by side."""
    xp = get_array_module(qkv)
    q, k, v = _split_heads(qkv, 3, n_head)
    (dout_heads,) = _split_heads(dout, 1, n_head)
    grads = attention_backward(dout_heads, q, k, v, lse, is_causal)
    return xp.concatenate([_merge_heads(g) for g in grads], axis=-1)


def _split_heads(x, parts, n_head):
    """x (B, T, parts * C) -> parts views (B, NH, T, hs), C = NH * hs."""
    B, T, width = x.shape
    hs = width // (parts * n_head)
    return tuple(x.reshape(B, T, parts, n_head, hs).transpose(2, 0, 3, 1, 4))


def _merge_heads(x):
    """(B, NH, T, hs) -> (B, T, NH * hs), the heads side by side."""
    B, NH, T, hs = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, NH * hs)


# --- indices: cross-entropy's targets, the embedding's ids --------------------------------------


def check_indices(ids, n, fn, name):
    """A one-line ValueError naming the first entry of ids (in C order) outside [0, n).
    NOTE: checked explicitly: NumPy's fancy indexing would silently wrap a negative index."""
    outside = ((ids < 0) | (ids >= n)).reshape(-1)
    if outside.any():
        i = int(outside.argmax())
        raise ValueError(f"{fn}: {name}[{i}] = {int(ids.reshape(-1)[i])} is outside [0, {n})")


# --- softmax + cross-entropy --------------------------------------------------------------------


def crossentropy_forward(logits, targets):
    """loss = mean_i( logsumexp(logits_i) - logits_i[targets_i] ), and probs = softmax(logits).

    logits (N, V), targets (N,) integers in [0, V) -> loss () , probs (N, V)
    """
    xp = get_array_module(logits)
    N, V = logits.shape
    check_indices(targets, V, "crossentropy_forward", "targets")
    # NOTE: the log-sum-exp trick: shift each row by its max so exp never overflows.
    shifted = logits - logits.max(axis=-1, keepdims=True)
    sumexp = xp.exp(shifted).sum(axis=-1, keepdims=True)  # (N, 1)
    logprobs = shifted - xp.log(sumexp)
    loss = -logprobs[xp.arange(N), targets].mean()
    return loss, xp.exp(logprobs)


def crossentropy_backward(dloss, probs, targets):
    """dlogits = dloss * (probs - onehot(targets)) / N.  -> dlogits (N, V)"""
    xp = get_array_module(probs)
    N, V = probs.shape
    check_indices(targets, V, "crossentropy_backward", "targets")
    dlogits = probs.copy()
    dlogits[xp.arange(N), targets] -= 1.0
    dlogits *= dloss / N
    return dlogits


# --- embedding ----------------------------------------------------------------------------------


def embedding_backward(dout, ids, num_embeddings):
    """dweight[v] = sum of dout[p] over the positions p whose id is v (an id used twice gets both).

    dout (..., C), ids (...) integers in [0, num_embeddings) -> dweight (num_embeddings, C)
    """
    xp = get_array_module(dout)
    check_indices(ids, num_embeddings, "embedding_backward", "ids")
    dweight = xp.zeros((num_embeddings, dout.shape[-1]), dout.dtype)
    add_at(dweight, ids, dout)
    return dweight


# --- the optimizer ------------------------------------------------------------------------------


def adamw_update(params, grads, ms, vs, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW step, in place on every array of the lists params, ms, vs (t = step >= 1):

    p <- p (1 - lr wd);  m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
    p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    for p, g, m, v in zip(params, grads, ms, vs):
        xp = get_array_module(p)
        p *= 1.0 - lr * weight_decay
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * (g * g)
        denom = xp.sqrt(v) / math.sqrt(bias_correction2) + eps
        p -= (lr / bias_correction1) * (m / denom)


def global_norm(grads):
    """sqrt(sum over every array of sum(g^2)), as a Python float."""
    total = 0.0
    for g in grads:
        total += float((g * g).sum())
    return math.sqrt(total)
