"""The primitive differentiable ops: one Function each, forward and backward side by side.

Each ``backward`` returns one gradient per input. It may return a gradient of the output's
broadcast shape: the engine (tensor._unbroadcast) sums it back to the input's shape.
"""

import itertools

from minigrad.backend import add_at, get_array_module
from minigrad.tensor import Function, Tensor, register

# --- arithmetic ---------------------------------------------------------------------------------


@register("add")
class Add(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, dout):  # d(a+b)/da = d(a+b)/db = 1
        return dout, dout


@register("sub")
class Sub(Function):
    def forward(self, a, b):
        return a - b

    def backward(self, dout):
        return dout, -dout


@register("mul")
class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, dout):  # d(ab)/da = b, d(ab)/db = a
        da = dout * self.b if self.needs_input_grad[0] else None
        db = dout * self.a if self.needs_input_grad[1] else None
        return da, db


@register("div")
class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, dout):  # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
        da = dout / self.b if self.needs_input_grad[0] else None
        db = -dout * self.a / (self.b * self.b) if self.needs_input_grad[1] else None
        return da, db


@register("neg")
class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, dout):
        return -dout


@register("pow", method=False)
class Pow(Function):
    """x ** p for a constant number p."""

    def forward(self, x, *, p):
        if isinstance(p, Tensor) or hasattr(p, "shape"):
            raise TypeError("pow: the exponent must be a Python number (use exp(log(x) * y) for a tensor)")
        self.x, self.p = x, p
        return x**p

    def backward(self, dout):  # d(x^p)/dx = p x^(p-1)
        return dout * (self.p * self.x ** (self.p - 1))


@register("matmul")
class MatMul(Function):
    """a @ b: 2-D, or batched over the leading axes with broadcasting; a 1-D side is a vector."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, dout):
        a, b = self.a, self.b
        # A 1-D operand is a (1, n) row or an (n, 1) column; dout then lacks that axis.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        d2 = dout
        if a.ndim == 1:
            d2 = d2[..., None, :]
        if b.ndim == 1:
            d2 = d2[..., None]
        da = db = None
        if self.needs_input_grad[0]:
            da = d2 @ b2.swapaxes(-1, -2)  # (..., n, k)
            da = da[..., 0, :] if a.ndim == 1 else da
        if self.needs_input_grad[1]:
            db = a2.swapaxes(-1, -2) @ d2  # (..., k, m)
            db = db[..., 0] if b.ndim == 1 else db
        return da, db


# --- elementwise functions ----------------------------------------------------------------------


@register("exp")
class Exp(Function):
    def forward(self, x):
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, dout):  # d(e^x)/dx = e^x
        return dout * self.y


@register("log")
class Log(Function):
    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, dout):  # d(ln x)/dx = 1/x
        return dout / self.x


@register("tanh")
class Tanh(Function):
    def forward(self, x):
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, dout):  # d(tanh x)/dx = 1 - tanh^2 x
        return dout * (1.0 - self.y * self.y)


@register("sqrt")
class Sqrt(Function):
    def forward(self, x):
        self.y = get_array_module(x).sqrt(x)
        return self.y

    def backward(self, dout):  # d(sqrt x)/dx = 1 / (2 sqrt x)
        return dout / (2.0 * self.y)


@register("relu")
class ReLU(Function):
    def forward(self, x):
        self.positive = x > 0
        return x * self.positive

    def backward(self, dout):  # 1 where x > 0, else 0
        return dout * self.positive


# --- reductions ---------------------------------------------------------------------------------


def _expand_reduced(dout, shape, axis, keepdims):
    """Give a reduced gradient back its size-1 axes so it broadcasts against the input's shape."""
    if axis is None or keepdims:
        return dout
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = sorted(a % len(shape) for a in axes)
    xp = get_array_module(dout)
    return xp.expand_dims(dout, tuple(axes))


@register("sum")
class Sum(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.shape, self.axis, self.keepdims = x.shape, axis, keepdims
        return x.sum(axis=axis, keepdims=keepdims)

    def backward(self, dout):  # every summed element gets dout
        dout = _expand_reduced(dout, self.shape, self.axis, self.keepdims)
        return get_array_module(dout).broadcast_to(dout, self.shape)


@register("mean")
class Mean(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.shape, self.axis, self.keepdims = x.shape, axis, keepdims
        out = x.mean(axis=axis, keepdims=keepdims)
        self.count = x.size // max(out.size, 1)
        return out

    def backward(self, dout):  # every averaged element gets dout / count
        dout = _expand_reduced(dout, self.shape, self.axis, self.keepdims) / self.count
        return get_array_module(dout).broadcast_to(dout, self.shape)


@register("max")
class Max(Function):
    """The maximum over axis; ties share the gradient equally (as the subgradient of amax)."""

    def forward(self, x, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims
        out = x.max(axis=axis, keepdims=True)
        self.is_max = x == out  # where the gradient goes
        if keepdims:
            return out
        return out.reshape(()) if axis is None else out.squeeze(axis)

    def backward(self, dout):
        dout = _expand_reduced(dout, self.is_max.shape, self.axis, self.keepdims)
        ties = self.is_max.sum(axis=self.axis, keepdims=True)
        return dout * self.is_max / ties


# --- shape and indexing -------------------------------------------------------------------------


@register("reshape")
class Reshape(Function):
    def forward(self, x, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        self.shape = x.shape
        return x.reshape(shape)

    def backward(self, dout):
        return dout.reshape(self.shape)


@register("permute")
class Permute(Function):
    """Reorder the axes: out.shape[i] = x.shape[dims[i]]."""

    def forward(self, x, *dims):
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        if sorted(d % x.ndim for d in dims) != list(range(x.ndim)):
            raise ValueError(f"permute: {dims} is not a permutation of the {x.ndim} axes")
        self.dims = dims
        return x.transpose(dims)

    def backward(self, dout):  # apply the inverse permutation
        inverse = [0] * dout.ndim
        for i, d in enumerate(self.dims):
            inverse[d % dout.ndim] = i
        return dout.transpose(inverse)


@register("getitem", method=False)
class GetItem(Function):
    """x[index] for slices, integers, boolean masks and integer arrays.
    Backward: dout added into zeros of x's shape at index; an element picked twice gets both gradients."""

    def forward(self, x, *, index):
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        self.index, self.shape = index, x.shape
        return x[index]

    def backward(self, dout):
        dx = get_array_module(dout).zeros(self.shape, dout.dtype)
        add_at(dx, self.index, dout)  # NOTE: not dx[index] = dout, which keeps one of repeated indices
        return dx


@register("concatenate", method=False)
class Concatenate(Function):
    def forward(self, *xs, axis=0):
        self.axis = axis
        self.sizes = [x.shape[axis] for x in xs]
        return get_array_module(xs[0]).concatenate(xs, axis=axis)

    def backward(self, dout):  # each input gets its own slab of dout
        cuts = list(itertools.accumulate(self.sizes[:-1]))
        return tuple(get_array_module(dout).split(dout, cuts, axis=self.axis))


@register("where", method=False)
class Where(Function):
    """cond ? x : y, elementwise with broadcasting; cond is a boolean array (no gradient)."""

    def forward(self, x, y, cond):
        if isinstance(cond, Tensor):
            cond = cond.data
        xp = get_array_module(x)
        self.cond = xp.asarray(cond, dtype=bool)
        return xp.where(self.cond, x, y)

    def backward(self, dout):
        xp = get_array_module(dout)
        zero = xp.zeros((), dtype=dout.dtype)
        dx = xp.where(self.cond, dout, zero) if self.needs_input_grad[0] else None
        dy = xp.where(self.cond, zero, dout) if self.needs_input_grad[1] else None
        return dx, dy


# --- the Tensor operators -----------------------------------------------------------------------


def _binary(op, reflected=False):
    if reflected:
        return lambda self, other: op.apply(other, self)
    return lambda self, other: op.apply(self, other)


def _compare(ufunc_name):
    def compare(self, other):
        other = other.data if isinstance(other, Tensor) else other
        xp = get_array_module(self.data)
        return Tensor(getattr(xp, ufunc_name)(self.data, other))

    return compare


for _name, _op in (("add", Add), ("sub", Sub), ("mul", Mul), ("truediv", Div), ("matmul", MatMul)):
    setattr(Tensor, f"__{_name}__", _binary(_op))
    setattr(Tensor, f"__r{_name}__", _binary(_op, reflected=True))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(Tensor, f"__{_name}__", _compare({"lt": "less", "le": "less_equal", "gt": "greater",
                                              "ge": "greater_equal", "eq": "equal", "ne": "not_equal"}[_name]))
Tensor.__neg__ = lambda self: Neg.apply(self)
Tensor.__pow__ = Tensor.pow = lambda self, p: Pow.apply(self, p=p)
Tensor.__getitem__ = lambda self, index: GetItem.apply(self, index=index)
Tensor.T = property(lambda self: Permute.apply(self, tuple(reversed(range(self.ndim)))))


def transpose(x, dim0=-2, dim1=-1):
    """Swap two axes (PyTorch's transpose)."""
    dims = list(range(x.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return Permute.apply(x, tuple(dims))


def cat(tensors, axis=0):
    """Join tensors along an existing axis."""
    return Concatenate.apply(*tensors, axis=axis)


def split(x, split_size_or_sections, axis=0):
    """Cut x along axis into pieces of split_size (the last may be shorter) or of the listed sizes.
    Composed of slices, so each piece's backward is getitem's."""
    n = x.shape[axis]
    if isinstance(split_size_or_sections, int):
        sizes = [min(split_size_or_sections, n - start) for start in range(0, n, split_size_or_sections)]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} add up to {sum(sizes)}, but axis {axis} has length {n}")
    pieces, start = [], 0
    prefix = (slice(None),) * (axis % x.ndim)
    for size in sizes:
        pieces.append(x[prefix + (slice(start, start + size),)])
        start += size
    return pieces


def where(cond, x, y):
    """x where cond is True, else y (broadcasting); the gradient flows to the chosen side."""
    return Where.apply(x, y, cond)


def masked_fill(x, mask, value):
    """x with value wherever mask is True."""
    return Where.apply(value, x, mask)


Tensor.transpose = transpose
Tensor.split = split
Tensor.masked_fill = masked_fill
