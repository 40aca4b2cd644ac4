"""minigrad: a small reverse-mode automatic-differentiation engine on NumPy, with fused C++ kernels.

    import minigrad as mg
    x = mg.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()      # x.grad == 2 x
"""

from minigrad import data, functional, nn, ops, optim
from minigrad.dispatch import backend_info, get_backend, set_backend, set_num_threads
from minigrad.gradcheck import GradcheckError, gradcheck
from minigrad.gpt import GPT, GPTConfig
from minigrad.ops import cat, masked_fill, split, transpose, where
from minigrad.optim import clip_grad_norm_
from minigrad.profiler import profile
from minigrad.tensor import REGISTRY, Function, Tensor, is_grad_enabled, no_grad, register
from minigrad.viz import draw_graph

__version__ = "0.1.0"

__all__ = [
    "Tensor", "Function", "register", "REGISTRY", "no_grad", "is_grad_enabled",
    "gradcheck", "GradcheckError", "functional", "ops", "nn", "optim", "data",
    "GPT", "GPTConfig", "clip_grad_norm_",
    "cat", "split", "where", "masked_fill", "transpose",
    "backend_info", "get_backend", "set_backend", "set_num_threads",
    "draw_graph", "profile",
]
