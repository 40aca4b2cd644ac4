"""minigrad: a small reverse-mode automatic-differentiation engine on NumPy, with fused C++ kernels.

    import minigrad as mg
    x = mg.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()      # x.grad == 2 x
"""

import numpy as _np

from minigrad import data, functional, nn, ops, optim
from minigrad.creation import (arange, eye, full, full_like, manual_seed, ones, ones_like, rand, rand_like, randn,
                               randn_like, zeros, zeros_like)
from minigrad.dispatch import backend_info, get_backend, set_backend, set_num_threads
from minigrad.gradcheck import GradcheckError, gradcheck
from minigrad.gpt import GPT, GPTConfig
from minigrad.ops import (argmax, argmin, cat, clamp, logsumexp, masked_fill, maximum, minimum, split, stack,
                          transpose, tril, triu, where)
from minigrad.optim import clip_grad_norm_
from minigrad.profiler import profile
from minigrad.tensor import REGISTRY, Function, Tensor, is_grad_enabled, no_grad, register
from minigrad.viz import draw_graph

__version__ = "0.1.0"
float32, float64, int64, int32, bool_ = _np.float32, _np.float64, _np.int64, _np.int32, _np.bool_  # dtype=mg.float32

__all__ = [
    "Tensor", "Function", "register", "REGISTRY", "no_grad", "is_grad_enabled",
    "gradcheck", "GradcheckError", "functional", "ops", "nn", "optim", "data",
    "GPT", "GPTConfig", "clip_grad_norm_",
    "cat", "split", "stack", "where", "masked_fill", "transpose", "maximum", "minimum", "clamp", "tril", "triu",
    "argmax", "argmin", "logsumexp",
    "zeros", "ones", "full", "eye", "arange", "randn", "rand", "manual_seed",
    "zeros_like", "ones_like", "full_like", "randn_like", "rand_like",
    "float32", "float64", "int64", "int32", "bool_",
    "backend_info", "get_backend", "set_backend", "set_num_threads",
    "draw_graph", "profile",
]
