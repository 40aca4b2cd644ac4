"""minigrad.nn: Module and the layers of a GPT, with PyTorch's and nanoGPT's names.

A Module finds its parameters and submodules by looking at its attributes: a Parameter (or any Tensor
that requires grad) is a parameter, a Module or a list of Modules is a submodule. Names are dotted attribute paths
(``transformer.h.0.attn.c_attn.weight``), so state dicts map one to one onto nanoGPT's.
Layers draw their initial weights from ``rng`` (a NumPy Generator), or from minigrad's default
generator (``mg.manual_seed``) when none is given.
"""

import numpy as np

from minigrad import functional as F
from minigrad.backend import to_device
from minigrad.creation import default_generator
from minigrad.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a module's weight: it requires grad unless frozen (requires_grad_(False)), and a
    frozen one is still a parameter, so it stays in parameters() and in the state dict."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad=requires_grad)


def _normal(rng, shape, std):
    """A float32 parameter drawn from N(0, std^2)."""
    return Parameter((rng or default_generator()).normal(0.0, std, size=shape).astype(np.float32))


def _uniform(rng, shape, bound):
    """A float32 parameter drawn from U(-bound, bound)."""
    return Parameter((rng or default_generator()).uniform(-bound, bound, size=shape).astype(np.float32))


def _constant(shape, value):
    return Parameter(np.full(shape, value, dtype=np.float32))


class Module:
    """Base class: parameters(), named_parameters(), state_dict(), load_state_dict(), train(), eval(), to()."""

    training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self):
        """What the module's line in repr(model) says beside its class name (its sizes)."""
        return ""

    def __repr__(self):
        """The tree of modules, as PyTorch prints it: one line per module, children indented."""
        lines = [f"({name}): " + repr(child).replace("\n", "\n  ") for name, child in self.named_children()]
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        return f"{type(self).__name__}(\n  " + "\n  ".join([self.extra_repr()] * bool(self.extra_repr()) + lines) + "\n)"

    def named_children(self):
        """(name, module) for each direct submodule; a list of modules is named by its indices."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(m, Module) for m in value):
                for i, m in enumerate(value):
                    yield f"{name}.{i}", m

    def _named_tensors(self, prefix=""):
        """Every (name, parameter) reachable, tied parameters once per name that holds them."""
        for name, value in vars(self).items():
            if isinstance(value, Parameter) or (isinstance(value, Tensor) and value.requires_grad):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child._named_tensors(prefix + name + ".")

    def named_parameters(self):
        """(name, parameter) pairs; a tied parameter appears once, under its first name."""
        seen = set()
        for name, p in self._named_tensors():
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def children(self):
        return [m for _, m in self.named_children()]

    def named_modules(self, prefix=""):
        """(name, module) for this module ("" or prefix) and every module below it, parents first."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def zero_grad(self, set_to_none=True):
        """Forget every parameter's gradient: .grad = None (the default), or zeros."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def state_dict(self):
        """name -> ndarray (a copy) for every name a parameter has, tied ones included (as nanoGPT's)."""
        return {name: np.array(p.numpy()) for name, p in self._named_tensors()}

    def load_state_dict(self, state):
        """Copy arrays into the parameters; the names and shapes must match exactly."""
        own = dict(self._named_tensors())
        missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
        if missing or unexpected:
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, p in own.items():
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(f"load_state_dict: {name} has shape {value.shape}, the model expects {p.shape}")
            p.data[...] = to_device(value.astype(p.dtype), p.device)

    def train(self, mode=True):
        """Set training mode here and in every submodule (this GPT has no dropout: it changes nothing yet)."""
        self.training = mode
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, device=None, dtype=None):
        """Move every parameter to 'cpu' or 'cuda' and/or cast it to dtype (np.float64 for a gradcheck),
        in place: each parameter stays the same Tensor, so tied weights stay tied."""
        for p in self.parameters():
            if device is not None:
                p.data = to_device(p.data, device)
            if dtype is not None:
                p.data = p.data.astype(dtype)
            p.grad = None
        return self


class Linear(Module):
    """y = x W^T + b, weight (out_features, in_features). With std given: weight ~ N(0, std^2) and bias
    zeros (GPT-2's init); without: weight and bias ~ U(-1/sqrt(in_features), 1/sqrt(in_features)),
    PyTorch's default."""

    def __init__(self, in_features, out_features, bias=True, *, rng=None, std=None):
        if std is None:
            bound = 1.0 / np.sqrt(in_features)
            self.weight = _uniform(rng, (out_features, in_features), bound)
            self.bias = _uniform(rng, (out_features,), bound) if bias else None
        else:
            self.weight = _normal(rng, (out_features, in_features), std)
            self.bias = _constant((out_features,), 0.0) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        out_features, in_features = self.weight.shape
        return f"in_features={in_features}, out_features={out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A (num_embeddings, embedding_dim) table ~ N(0, std^2) (std 1 as PyTorch's; GPT-2 uses 0.02);
    forward(idx) picks one row per integer id."""

    def __init__(self, num_embeddings, embedding_dim, *, rng=None, std=1.0):
        self.weight = _normal(rng, (num_embeddings, embedding_dim), std)

    def forward(self, idx):
        return F.embedding(idx, self.weight)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}"


class LayerNorm(Module):
    """LayerNorm over the last axis, weight ones and bias zeros (bias=False leaves it out)."""

    def __init__(self, n_features, bias=True, eps=1e-5):
        self.weight = _constant((n_features,), 1.0)
        self.bias = _constant((n_features,), 0.0) if bias else None
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"({self.weight.shape[0]},), eps={self.eps}, bias={self.bias is not None}"


class Sequential(Module):
    """Modules applied one after the other: Sequential(a, b, c)(x) = c(b(a(x))); children named 0, 1, ..."""

    def __init__(self, *modules):
        self.layers = list(modules)

    def named_children(self):
        for i, m in enumerate(self.layers):
            yield str(i), m

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class ReLU(Module):
    def forward(self, x):
        return x.relu()


class Tanh(Module):
    def forward(self, x):
        return x.tanh()


class Sigmoid(Module):
    def forward(self, x):
        return x.sigmoid()


class GELU(Module):
    """GPT-2's tanh-approximated GELU (F.gelu)."""

    def forward(self, x):
        return F.gelu(x)


class CausalSelfAttention(Module):
    """Multi-head causal self-attention: one fused q,k,v projection, n_head heads, an output projection."""

    def __init__(self, n_embd, n_head, bias=True, *, rng, proj_std=0.02):
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_head = n_head
        self.c_attn = Linear(n_embd, 3 * n_embd, bias, rng=rng, std=0.02)
        self.c_proj = Linear(n_embd, n_embd, bias, rng=rng, std=proj_std)

    def forward(self, x):
        qkv = self.c_attn(x)  # (B, T, 3C): q, k, v side by side, n_head heads of C / n_head in each
        # softmax(q k^T / sqrt(hs) + causal mask) v per head, heads side by side again: (B, T, C). One fused
        # node; nanoGPT writes it as a split into (B, NH, T, hs) heads, scaled_dot_product_attention, a merge.
        y = F.self_attention(qkv, self.n_head, is_causal=True)
        return self.c_proj(y)

    def extra_repr(self):
        return f"n_head={self.n_head}"


class MLP(Module):
    """c_proj(gelu(c_fc(x))), hidden width 4C."""

    def __init__(self, n_embd, bias=True, *, rng, proj_std=0.02):
        self.c_fc = Linear(n_embd, 4 * n_embd, bias, rng=rng, std=0.02)
        self.c_proj = Linear(4 * n_embd, n_embd, bias, rng=rng, std=proj_std)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(Module):
    """A pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, n_embd, n_head, bias=True, *, rng, proj_std=0.02):
        self.ln_1 = LayerNorm(n_embd, bias)
        self.attn = CausalSelfAttention(n_embd, n_head, bias, rng=rng, proj_std=proj_std)
        self.ln_2 = LayerNorm(n_embd, bias)
        self.mlp = MLP(n_embd, bias, rng=rng, proj_std=proj_std)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

