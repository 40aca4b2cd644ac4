"""Three fused ops written out as the chains of primitive ops they replace (docs/fused_kernels.md):
held equal to the fused ones by tests/test_docs_formulas.py, raced against them by
bench/fused_vs_composite.py."""

import math

import numpy as np

import minigrad as mg
import minigrad.functional as F


def composite_attention(q, k, v):
    """softmax(q k^T / sqrt(hs) + causal mask) v from primitives: the chain the fused node replaces."""
    T, hs = q.shape[-2], q.shape[-1]
    scores = (q @ mg.transpose(k)) * (1.0 / math.sqrt(hs))  # (B, NH, T, T)
    scores = mg.masked_fill(scores, np.triu(np.ones((T, T), bool), 1), -np.inf)
    return F.softmax(scores) @ v  # (B, NH, T, hs)


def composite_layer_norm(x, w, b, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)
    return xc / (var + eps).sqrt() * w + b


def composite_cross_entropy(logits, targets):
    N = targets.size
    logp = F.log_softmax(logits.reshape(N, logits.shape[-1]))
    return -logp[np.arange(N), targets.reshape(-1)].mean()
