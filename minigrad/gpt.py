"""The GPT of nanoGPT, on minigrad: token and position embeddings, n_layer blocks, a tied LM head."""

import math
from dataclasses import dataclass

import numpy as np

from minigrad import functional as F
from minigrad.backend import to_device
from minigrad.nn import Block, Embedding, LayerNorm, Module
from minigrad.optim import AdamW
from minigrad.tensor import Tensor, no_grad


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64
    bias: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


class Transformer(Module):
    """The body, named as nanoGPT's ``transformer`` ModuleDict: wte, wpe, h (the blocks), ln_f."""

    def __init__(self, config, rng):
        C = config.n_embd
        # NOTE: nanoGPT scales the init of the residual projections by 1/sqrt(2 n_layer): each block
        # adds two of them to the residual stream, whose variance would otherwise grow with depth.
        proj_std = 0.02 / math.sqrt(2 * config.n_layer)
        self.wte = Embedding(config.vocab_size, C, rng=rng, std=0.02)
        self.wpe = Embedding(config.block_size, C, rng=rng, std=0.02)
        self.h = [Block(C, config.n_head, config.bias, rng=rng, proj_std=proj_std) for _ in range(config.n_layer)]
        self.ln_f = LayerNorm(C, config.bias)


class LMHead(Module):
    """logits = x W^T with W the token embedding itself (weight tying: both uses add to one gradient)."""

    def __init__(self, weight):
        self.weight = weight

    def forward(self, x):
        return F.linear(x, self.weight)


class GPT(Module):
    """forward(idx (B, T) ints, targets (B, T) or None) -> (logits (B, T, V), mean cross-entropy or None)."""

    def __init__(self, config, seed=0):
        self.config = config
        rng = np.random.default_rng(seed)
        self.transformer = Transformer(config, rng)
        self.lm_head = LMHead(self.transformer.wte.weight)

    def num_parameters(self):
        """Every trainable number, the tied embedding counted once."""
        return sum(p.size for p in self.parameters())

    def configure_optimizer(self, lr, weight_decay, betas=(0.9, 0.99)):
        """AdamW with weight decay on the 2-D weights only (not on biases and LayerNorm gains), as nanoGPT."""
        params = self.parameters()
        return AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                      {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=lr, betas=betas)

    def forward(self, idx, targets=None):
        # the ids go where the weights are (a NumPy batch to the GPU), so a caller need not move them
        idx = to_device(idx.data if isinstance(idx, Tensor) else idx, self.transformer.wte.weight.device)
        if idx.ndim != 2 or idx.dtype.kind not in "iu":
            raise ValueError(f"GPT: idx must be integers of shape (B, T), got {idx.dtype} {idx.shape}")
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"GPT: sequence length {T} exceeds block_size {self.config.block_size}")
        tr = self.transformer
        x = tr.wte(idx) + tr.wpe.weight[:T]  # (B, T, C) + (T, C)
        for block in tr.h:
            x = block(x)
        logits = self.lm_head(tr.ln_f(x))  # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits, targets)
        return logits, loss

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, rng=None):
        """Append max_new_tokens sampled ids to idx (B, T): softmax(logits of the last position / temperature),
        restricted to the top_k most likely ids when top_k is given."""
        if temperature <= 0:
            raise ValueError(f"generate: temperature must be positive, got {temperature}")
        rng = np.random.default_rng() if rng is None else rng
        idx = np.array(idx.data if isinstance(idx, Tensor) else idx, dtype=np.int64)
        with no_grad():
            for _ in range(max_new_tokens):
                context = idx[:, -self.config.block_size :]
                logits, _ = self(context)
                logits = logits.numpy()[:, -1, :].astype(np.float64) / temperature  # (B, V)
                if top_k is not None:
                    kth = np.sort(logits, axis=-1)[:, -min(top_k, logits.shape[-1]), None]
                    logits = np.where(logits < kth, -np.inf, logits)
                probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
                probs /= probs.sum(axis=-1, keepdims=True)
                nxt = np.array([rng.choice(len(p), p=p) for p in probs])[:, None]  # (B, 1)
                idx = np.concatenate([idx, nxt], axis=1)
        return idx
