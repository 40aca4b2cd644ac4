"""The primitive differentiable ops: one Function each, forward and backward side by side; then the
ops composed of them (no backward of their own: the engine derives it), and the Tensor methods.

Each ``backward`` returns one gradient per input. It may return a gradient of the output's
broadcast shape: the engine (tensor._unbroadcast) sums it back to the input's shape.
Axis arguments take NumPy's names (``axis``, ``keepdims``) and PyTorch's (``dim``, ``keepdim``).
"""

import itertools
from collections import namedtuple

import numpy as np

from minigrad.backend import add_at, get_array_module
from minigrad.tensor import Function, Tensor, register


def _mixed(a, b):
    """Two operands as PyTorch mixes them: an integer or bool operand takes the other's float dtype (NumPy
    would make float32 and int64 float64); two floats promote as in NumPy (float32, float64 -> float64)."""
    if a.dtype.kind in "biu" and b.dtype.kind == "f":
        return a.astype(b.dtype), b
    if b.dtype.kind in "biu" and a.dtype.kind == "f":
        return a, b.astype(a.dtype)
    return a, b


# --- arithmetic ---------------------------------------------------------------------------------


@register("add")
class Add(Function):
    def forward(self, a, b):
        a, b = _mixed(a, b)
        return a + b

    def backward(self, dout):  # d(a+b)/da = d(a+b)/db = 1
        return dout, dout


@register("sub")
class Sub(Function):
    def forward(self, a, b):
        a, b = _mixed(a, b)
        return a - b

    def backward(self, dout):
        return dout, -dout


@register("mul")
class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = _mixed(a, b)
        return self.a * self.b

    def backward(self, dout):  # d(ab)/da = b, d(ab)/db = a
        da = dout * self.b if self.needs_input_grad[0] else None
        db = dout * self.a if self.needs_input_grad[1] else None
        return da, db


@register("div")
class Div(Function):
    """a / b; two integer operands divide into float32 (PyTorch's default float dtype)."""

    def forward(self, a, b):
        if a.dtype.kind in "biu" and b.dtype.kind in "biu":
            a, b = a.astype(np.float32), b.astype(np.float32)
        self.a, self.b = _mixed(a, b)
        return self.a / self.b

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
    """a ** b elementwise; a and b tensors or numbers."""

    def forward(self, a, b):
        self.a, self.b = _mixed(a, b)
        self.out = self.a**self.b
        return self.out

    def backward(self, dout):
        xp = get_array_module(dout)
        a, b = self.a, self.b
        da = db = None
        with np.errstate(divide="ignore", invalid="ignore"):  # the branches xp.where leaves out may be inf
            if self.needs_input_grad[0]:  # d(a^b)/da = b a^(b-1); NOTE: 0 where b = 0, not 0 * inf at a = 0
                da = xp.where(b == 0, 0, dout * b * a ** (b - 1))
            if self.needs_input_grad[1]:  # d(a^b)/db = a^b ln a; NOTE: 0 where a = 0 and b >= 0, not 0 * -inf
                db = xp.where((a == 0) & (b >= 0), 0, dout * self.out * xp.log(a))
        return da, db


@register("maximum", method=False)
class Maximum(Function):
    """The larger of a and b elementwise; where they are equal each gets half the gradient (as PyTorch)."""

    def forward(self, a, b):
        self.a, self.b = _mixed(a, b)
        return get_array_module(self.a).maximum(self.a, self.b)

    def backward(self, dout):
        share_a = (self.a > self.b) + 0.5 * (self.a == self.b)  # 1, 1/2 or 0
        return dout * share_a, dout * (1.0 - share_a)


@register("matmul")
class MatMul(Function):
    """a @ b: 2-D, or batched over the leading axes with broadcasting; a 1-D side is a vector."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, dout):
        a, b = self.a, self.b
        # A 1-D operand is a (1, n) row or an (n, 1) column; dout then lacks that axis (b's is the last,
        # so it goes back first: for vector @ vector dout is 0-d).
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        d2 = dout
        if b.ndim == 1:
            d2 = d2[..., None]
        if a.ndim == 1:
            d2 = d2[..., None, :]
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


@register("sigmoid")
class Sigmoid(Function):
    def forward(self, x):
        xp = get_array_module(x)
        # NOTE: 1 / (1 + e^-x) overflows e^-x for x below -88 (float32); exp(-log(1 + e^-x)) does not
        self.y = xp.exp(-xp.logaddexp(0, -x))
        return self.y

    def backward(self, dout):  # d(sigmoid x)/dx = sigmoid(x) (1 - sigmoid(x))
        return dout * self.y * (1.0 - self.y)


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

    def backward(self, dout):  # 1 where x > 0, else 0 (also at 0, as PyTorch)
        return dout * self.positive


@register("abs")
class Abs(Function):
    def forward(self, x):
        self.sign = get_array_module(x).sign(x)
        return x * self.sign

    def backward(self, dout):  # d|x|/dx = sign(x), 0 at 0 (as PyTorch)
        return dout * self.sign


@register("cast", method=False)
class Cast(Function):
    """x as another dtype; the gradient goes back in x's own dtype. An integer result has no gradient."""

    def forward(self, x, *, dtype):
        return x.astype(dtype)

    def backward(self, dout):
        return dout  # the engine casts it to the input's dtype


# --- reductions ---------------------------------------------------------------------------------


def _axes(axis, ndim):
    """axis (None, an int or a tuple of ints, negative ones counting from the end) as a sorted tuple of
    non-negative axes, or None for all of them. A 0-d tensor takes 0 and -1 as all of it, as in PyTorch."""
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for a in axes:
        if not -max(ndim, 1) <= a < max(ndim, 1):
            raise IndexError(f"axis {a} is out of range for a tensor of {ndim} dimension(s)")
    return None if ndim == 0 else tuple(sorted(int(a) % ndim for a in axes))


def _keep_reduced_axes(dout, axes, keepdims):
    """A reduced gradient with its size-1 axes back, so it broadcasts against the input's shape."""
    if axes is None or keepdims:
        return dout
    return get_array_module(dout).expand_dims(dout, axes)


@register("sum", method=False)
class Sum(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.shape, self.axes, self.keepdims = x.shape, _axes(axis, x.ndim), keepdims
        return x.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, dout):  # every summed element gets dout
        dout = _keep_reduced_axes(dout, self.axes, self.keepdims)
        return get_array_module(dout).broadcast_to(dout, self.shape)


@register("mean", method=False)
class Mean(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.shape, self.axes, self.keepdims = x.shape, _axes(axis, x.ndim), keepdims
        self.count = x.size if self.axes is None else int(np.prod([x.shape[a] for a in self.axes]))
        return x.mean(axis=self.axes, keepdims=keepdims)  # the mean of no elements is NaN, as in PyTorch

    def backward(self, dout):  # every averaged element gets dout / count
        dout = _keep_reduced_axes(dout, self.axes, self.keepdims)
        # NOTE: count is 0 only when the input has no elements; its gradient is then empty anyway
        return get_array_module(dout).broadcast_to(dout / max(self.count, 1), self.shape)


class _Extremum(Function):
    """The largest (or smallest) element over axis; tied elements share the gradient equally (the
    subgradient of amax that PyTorch's amax and max() give)."""

    largest = True

    def forward(self, x, axis=None, keepdims=False):
        self.axes, self.keepdims = _axes(axis, x.ndim), keepdims
        out = x.max(axis=self.axes, keepdims=True) if self.largest else x.min(axis=self.axes, keepdims=True)
        self.picked = x == out  # where the gradient goes
        if keepdims:
            return out
        return out.reshape(()) if self.axes is None else out.squeeze(self.axes)

    def backward(self, dout):
        dout = _keep_reduced_axes(dout, self.axes, self.keepdims)
        ties = self.picked.sum(axis=self.axes, keepdims=True).astype(dout.dtype)
        return dout * self.picked / ties


@register("amax")
class Amax(_Extremum):
    largest = True


@register("amin")
class Amin(_Extremum):
    largest = False


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


@register("expand")
class Expand(Function):
    """x broadcast to a larger shape (PyTorch's expand: -1 keeps a size); no copy is made."""

    def forward(self, x, *sizes):
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = tuple(sizes[0])
        lead = len(sizes) - x.ndim
        if lead < 0:
            raise ValueError(f"expand: {len(sizes)} sizes for a tensor of {x.ndim} dimensions")
        shape = tuple(x.shape[i - lead] if n == -1 and i >= lead else n for i, n in enumerate(sizes))
        return get_array_module(x).broadcast_to(x, shape)

    def backward(self, dout):
        return dout  # the engine sums it back over the expanded axes, as for any broadcast


def _raw_index(index):
    """The index with every Tensor in it, at any depth of tuples and lists, replaced by its array."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, (tuple, list)):
        return type(index)(_raw_index(i) for i in index)
    return index


@register("getitem", method=False)
class GetItem(Function):
    """x[index] for integers, slices, None, Ellipsis, boolean masks and integer arrays (or Tensors),
    with NumPy's rules (see Tensor.__getitem__). Backward: dout added into zeros of x's shape at index;
    an element picked twice gets both gradients."""

    def forward(self, x, *, index):
        self.index, self.shape = _raw_index(index), x.shape
        return x[self.index]

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


# --- ops composed of the primitives above -------------------------------------------------------


def _pick(numpy_name, torch_name, default):
    """The value of an argument that has a NumPy name (axis, keepdims) and a PyTorch one (dim, keepdim)."""
    if numpy_name is not None and torch_name is not None:
        raise TypeError("pass axis or dim (keepdims or keepdim), not both")
    return default if numpy_name is None and torch_name is None else (torch_name if numpy_name is None else numpy_name)


def reduce_sum(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """x.sum(axis): the sum over axis (all of x when None)."""
    return Sum.apply(x, _pick(axis, dim, None), _pick(keepdims, keepdim, False))


def reduce_mean(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """x.mean(axis): the mean over axis (all of x when None)."""
    return Mean.apply(x, _pick(axis, dim, None), _pick(keepdims, keepdim, False))


def amax(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """The largest element over axis; ties share the gradient."""
    return Amax.apply(x, _pick(axis, dim, None), _pick(keepdims, keepdim, False))


def amin(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """The smallest element over axis; ties share the gradient."""
    return Amin.apply(x, _pick(axis, dim, None), _pick(keepdims, keepdim, False))


def _arg_extremum(x, largest, axis, keepdims):
    """The int64 index of the largest (or smallest) element over one axis, or in the flattened x."""
    xp = get_array_module(x.data)
    find = xp.argmax if largest else xp.argmin
    axes = _axes(axis, x.ndim)
    if axes is None:  # all of x (and the one axis of a 0-d tensor)
        index = xp.asarray(find(x.data.reshape(-1))).reshape((1,) * x.ndim if keepdims else ())
    elif len(axes) == 1:
        index = find(x.data, axis=axes[0], keepdims=keepdims)
    else:
        raise ValueError(f"argmax/argmin take one axis, got {axis}")
    return Tensor(index)


def argmax(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """The index (int64) of the largest element over axis, or in the flattened x when axis is None."""
    return _arg_extremum(x, True, _pick(axis, dim, None), _pick(keepdims, keepdim, False))


def argmin(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """The index (int64) of the smallest element over axis, or in the flattened x when axis is None."""
    return _arg_extremum(x, False, _pick(axis, dim, None), _pick(keepdims, keepdim, False))


ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])  # what PyTorch's max(dim) returns


def reduce_max(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """x.max() as PyTorch's: x.max() is the largest element; x.max(dim) is (values, indices) along dim.
    NOTE: where elements tie, values' gradient is shared among them (amax's), where PyTorch sends it
    to the returned index alone."""
    axis, keepdims = _pick(axis, dim, None), _pick(keepdims, keepdim, False)
    if axis is None:
        return amax(x)
    return ValuesIndices(amax(x, axis, keepdims), argmax(x, axis, keepdims))


def reduce_min(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """x.min() as PyTorch's: x.min() is the smallest element; x.min(dim) is (values, indices) along dim."""
    axis, keepdims = _pick(axis, dim, None), _pick(keepdims, keepdim, False)
    if axis is None:
        return amin(x)
    return ValuesIndices(amin(x, axis, keepdims), argmin(x, axis, keepdims))


def var(x, axis=None, keepdims=None, *, correction=1, dim=None, keepdim=None):
    """sum((x - mean)^2) / (n - correction) over axis: the unbiased variance by default, as PyTorch
    (NumPy's var divides by n: correction=0)."""
    axis, keepdims = _pick(axis, dim, None), _pick(keepdims, keepdim, False)
    axes = _axes(axis, x.ndim)
    n = x.size if axes is None else int(np.prod([x.shape[a] for a in axes]))
    deviation = x - reduce_mean(x, axes, keepdims=True)
    return reduce_sum(deviation * deviation, axes, keepdims) / (n - correction)  # n <= correction: NaN, as PyTorch


def std(x, axis=None, keepdims=None, *, correction=1, dim=None, keepdim=None):
    """sqrt(var(x)): the unbiased standard deviation by default, as PyTorch."""
    return var(x, axis, keepdims, correction=correction, dim=dim, keepdim=keepdim).sqrt()


def logsumexp(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """log sum exp(x) over axis = m + log sum exp(x - m), m the maximum (a constant: no gradient flows to it)."""
    axis, keepdims = _pick(axis, dim, None), _pick(keepdims, keepdim, False)
    axes = _axes(axis, x.ndim)
    xp = get_array_module(x.data)
    m = x.data.max(axis=axes, keepdims=True) if x.size else xp.zeros((1,) * x.ndim, x.dtype)
    m = xp.where(xp.isfinite(m), m, 0)  # NOTE: a row of -inf stays -inf (not -inf - -inf = NaN)
    total = reduce_sum((x - m).exp(), axes, keepdims)
    return total.log() + m.reshape(total.shape)


def maximum(a, b):
    """The larger of a and b elementwise (tensors or numbers); ties share the gradient."""
    return Maximum.apply(a, b)


def minimum(a, b):
    """The smaller of a and b elementwise: -maximum(-a, -b)."""
    return -Maximum.apply(-a, -b)


def clamp(x, min=None, max=None):  # noqa: A002 (PyTorch's argument names)
    """x limited to [min, max]; the gradient is 1 inside (boundaries included) and 0 where x was clamped."""
    if min is not None:
        x = Where.apply(min, x, x.data < min)
    if max is not None:
        x = Where.apply(max, x, x.data > max)
    return x


def transpose(x, dim0=-2, dim1=-1):
    """Swap two axes (PyTorch's transpose)."""
    dims = list(range(x.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return Permute.apply(x, tuple(dims))


def unsqueeze(x, dim):
    """x with a new axis of size 1 at dim (in [-ndim - 1, ndim])."""
    if not -x.ndim - 1 <= dim <= x.ndim:
        raise IndexError(f"unsqueeze: dim {dim} is out of range for a tensor of {x.ndim} dimension(s)")
    dim = dim % (x.ndim + 1)
    return x.reshape(x.shape[:dim] + (1,) + x.shape[dim:])


def squeeze(x, dim=None):
    """x without its axes of size 1 (only dim's, when given; an axis of another size is left alone)."""
    axes = range(x.ndim) if dim is None else _axes(dim, x.ndim) or ()
    return x.reshape(tuple(n for i, n in enumerate(x.shape) if not (i in axes and n == 1)))


def flatten(x, start_dim=0, end_dim=-1):
    """x with the axes start_dim .. end_dim (inclusive) merged into one."""
    if x.ndim == 0:
        return x.reshape(1)
    start, end = start_dim % x.ndim, end_dim % x.ndim
    return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1:])


def cat(tensors, axis=None, *, dim=None):
    """Join tensors along an existing axis (0 by default)."""
    return Concatenate.apply(*tensors, axis=_pick(axis, dim, 0))


def stack(tensors, axis=None, *, dim=None):
    """Join tensors of one shape along a new axis (0 by default)."""
    axis = _pick(axis, dim, 0)
    return cat([unsqueeze(t, axis) for t in tensors], axis)


def split(x, split_size_or_sections, axis=None, *, dim=None):
    """Cut x along axis (0 by default) into pieces of split_size (the last may be shorter) or of the
    listed sizes. Composed of slices, so each piece's backward is getitem's."""
    axis = _pick(axis, dim, 0)
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


def _triangle(x, diagonal, lower):
    if x.ndim < 2:
        raise ValueError(f"tril/triu need a tensor of at least 2 dimensions, got shape {x.shape}")
    xp = get_array_module(x.data)
    n, m = x.shape[-2:]
    keep = xp.tri(n, m, diagonal, dtype=bool) if lower else ~xp.tri(n, m, diagonal - 1, dtype=bool)
    return Where.apply(x, 0.0, keep)


def tril(x, diagonal=0):
    """x with the elements above the diagonal-th diagonal set to 0 (over the last two axes)."""
    return _triangle(x, diagonal, lower=True)


def triu(x, diagonal=0):
    """x with the elements below the diagonal-th diagonal set to 0 (over the last two axes)."""
    return _triangle(x, diagonal, lower=False)


# --- the Tensor operators and methods -----------------------------------------------------------


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


def _cast(dtype):
    return lambda self: Cast.apply(self, dtype=dtype)


def _getitem(self, index):
    """self[index] with NumPy's indexing rules, which differ from PyTorch's in two places: an integer
    array and another index separated by a slice put the indexed axes first (x[0, :, [1, 2]] has shape
    (2, n) in both libraries only by luck of the rule: NumPy moves the broadcast axes to the front when
    they are not adjacent); and a nested list is one integer array (x[[[0, 1]]] picks rows 0 and 1 of x,
    with shape (1, 2, ...), where PyTorch reads it as a tuple). The gradient is right either way: an
    element picked twice gets both gradients."""
    return GetItem.apply(self, index=index)


for _name, _op in (("add", Add), ("sub", Sub), ("mul", Mul), ("truediv", Div), ("matmul", MatMul), ("pow", Pow)):
    setattr(Tensor, f"__{_name}__", _binary(_op))
    setattr(Tensor, f"__r{_name}__", _binary(_op, reflected=True))
for _name, _ufunc in (("lt", "less"), ("le", "less_equal"), ("gt", "greater"), ("ge", "greater_equal"),
                      ("eq", "equal"), ("ne", "not_equal")):
    setattr(Tensor, f"__{_name}__", _compare(_ufunc))
for _name, _dtype in (("float", np.float32), ("double", np.float64), ("long", np.int64), ("int", np.int32),
                      ("bool", np.bool_)):
    setattr(Tensor, _name, _cast(_dtype))
for _fn in (amax, amin, argmax, argmin, var, std, logsumexp, transpose, unsqueeze, squeeze, flatten, split,
            masked_fill, tril, triu, clamp):
    setattr(Tensor, _fn.__name__, _fn)
Tensor.sum, Tensor.mean, Tensor.max, Tensor.min = reduce_sum, reduce_mean, reduce_max, reduce_min
Tensor.__neg__ = lambda self: Neg.apply(self)
Tensor.__getitem__ = _getitem
Tensor.pow = Tensor.__pow__
Tensor.maximum, Tensor.minimum = maximum, minimum
Tensor.view = Tensor.reshape
Tensor.contiguous = lambda self: self  # minigrad's arrays need no contiguous copy: the kernels make their own
Tensor.T = property(lambda self: Permute.apply(self, tuple(reversed(range(self.ndim)))))
