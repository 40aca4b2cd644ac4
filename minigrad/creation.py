"""Tensors made from nothing: zeros, ones, full, arange, eye, randn, rand, and their *_like twins.

Floating results are float32 unless ``dtype`` says otherwise (PyTorch's default dtype); ``arange`` of
integers gives int64. Random numbers come from a NumPy ``Generator``: pass ``generator=`` (a Generator,
or an int seed for a fresh one), or leave it out and the default generator draws them, which
``manual_seed(seed)`` reseeds, so a script that starts with ``mg.manual_seed(0)`` repeats itself.
"""

import numpy as np

from minigrad.backend import to_device
from minigrad.tensor import Tensor

_default_generator = np.random.default_rng()


def manual_seed(seed):
    """Reseed the default generator (as torch.manual_seed); returns it."""
    global _default_generator
    _default_generator = np.random.default_rng(seed)
    return _default_generator


def default_generator():
    """The Generator that random functions and layer initialisations use when given none."""
    return _default_generator


def _generator(generator):
    if generator is None:
        return _default_generator
    if isinstance(generator, np.random.Generator):
        return generator
    return np.random.default_rng(generator)  # an int seed


def _shape(size):
    """zeros(2, 3) and zeros((2, 3)) alike."""
    return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)


def _tensor(array, dtype, device, requires_grad):
    return Tensor(to_device(np.asarray(array, dtype=dtype), device), requires_grad=requires_grad)


def zeros(*size, dtype=np.float32, device="cpu", requires_grad=False):
    return _tensor(np.zeros(_shape(size)), dtype, device, requires_grad)


def ones(*size, dtype=np.float32, device="cpu", requires_grad=False):
    return _tensor(np.ones(_shape(size)), dtype, device, requires_grad)


def full(size, fill_value, dtype=np.float32, device="cpu", requires_grad=False):
    return _tensor(np.full(_shape((size,)), fill_value), dtype, device, requires_grad)


def eye(n, m=None, dtype=np.float32, device="cpu", requires_grad=False):
    """The (n, m) matrix with ones on the diagonal (m = n by default)."""
    return _tensor(np.eye(n, m), dtype, device, requires_grad)


def arange(start, end=None, step=1, dtype=None, device="cpu", requires_grad=False):
    """start, start + step, ... below end (arange(n): 0 .. n-1); int64 for integers, else float32."""
    start, end = (0, start) if end is None else (start, end)
    if dtype is None:
        dtype = np.int64 if all(isinstance(v, (int, np.integer)) for v in (start, end, step)) else np.float32
    return _tensor(np.arange(start, end, step), dtype, device, requires_grad)


def randn(*size, generator=None, dtype=np.float32, device="cpu", requires_grad=False):
    """Samples of the standard normal distribution N(0, 1)."""
    return _tensor(_generator(generator).standard_normal(_shape(size)), dtype, device, requires_grad)


def rand(*size, generator=None, dtype=np.float32, device="cpu", requires_grad=False):
    """Samples of the uniform distribution on [0, 1)."""
    return _tensor(_generator(generator).random(_shape(size)), dtype, device, requires_grad)


def _like(make):
    def like(t, *args, dtype=None, requires_grad=False, **kwargs):
        return make(t.shape, *args, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad, **kwargs)

    like.__name__ = f"{make.__name__}_like"
    like.__doc__ = f"{make.__name__}(...) of t's shape, dtype and device."
    return like


zeros_like, ones_like, full_like, randn_like, rand_like = (_like(f) for f in (zeros, ones, full, randn, rand))
