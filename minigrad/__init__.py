"""minigrad: a small reverse-mode automatic-differentiation engine on NumPy, with fused C++ kernels.

    import minigrad as mg
    x = mg.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()      # x.grad == 2 x
"""

import os
import sys

# NOTE: after each matrix product OpenBLAS's worker threads spin for 2^28 cycles (~0.1 s) waiting for
# the next one, and on a machine with few cores they take the cores that our C++ kernels run on next
# (on 2 cores a training step was 1.4x slower). 2^16 cycles (~20 us) bridges the gap between two
# products of one layer. OpenBLAS reads the variable once, when NumPy loads it: hence here, before any
# import of NumPy, and only when neither NumPy is loaded nor the user set a value.
if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")

from minigrad import data, functional, nn, ops, optim
from minigrad.backend import backend_info, get_backend, set_backend, set_num_threads
from minigrad.gradcheck import GradcheckError, gradcheck
from minigrad.nn import GPT, GPTConfig
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
