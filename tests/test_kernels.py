"""The C++ kernels (minigrad._C) against their NumPy reference (minigrad.kernels), the bindings'
argument checks, and the two CPU backends against each other through minigrad.functional."""

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F
from minigrad import dispatch
from minigrad import kernels as ref

C_ = dispatch._C
pytestmark = pytest.mark.skipif(C_ is None, reason=f"the C++ kernels are unavailable: {dispatch._C_REASON}")

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-12, np.float32: 1e-5}  # used as both rtol and atol: |ours - ref| <= tol (1 + |ref|)


def close(ours, reference, dtype):
    """Each output of the kernel against the reference's: same shape, same dtype, within tolerance."""
    ours = ours if isinstance(ours, tuple) else (ours,)
    reference = reference if isinstance(reference, tuple) else (reference,)
    assert len(ours) == len(reference)
    for i, (a, b) in enumerate(zip(ours, reference)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape, f"output {i}: shape {a.shape} vs {b.shape}"
        assert a.dtype == dtype, f"output {i}: dtype {a.dtype}, expected {np.dtype(dtype)}"
        np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype], err_msg=f"output {i}")


def randn(rng, shape, dtype, scale=1.0):
    return np.asarray(scale * rng.standard_normal(shape), dtype=dtype)  # an array even when 0-d


# --- every kernel against the reference ---------------------------------------------------------

# (..., C): one row, one channel, odd sizes, and one big enough to run on several threads.
LN_SHAPES = [(1, 1), (1, 64), (3, 5), (2, 3, 7), (17,), (64, 129, 64)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", LN_SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_layernorm(shape, dtype, with_bias):
    rng = np.random.default_rng(0)
    C = shape[-1]
    x = randn(rng, shape, dtype, scale=3.0) + dtype(2.0)  # a mean far from 0: the variance must not cancel
    weight, dout = randn(rng, C, dtype), randn(rng, shape, dtype)
    bias = randn(rng, C, dtype) if with_bias else None
    out, mean, rstd = C_.layernorm_forward(x, weight, bias, 1e-5)
    close((out, mean, rstd), ref.layernorm_forward(x, weight, bias, 1e-5), dtype)
    dx, dweight, dbias = C_.layernorm_backward(dout, x, weight, mean, rstd)
    close(dx, ref.layernorm_backward(dout, x, weight, mean, rstd)[0], dtype)
    # NOTE: dweight and dbias sum over every row. The kernel adds in double; the reference in float32
    # errs by ~1e-4 at 8256 rows, so they are held to the reference run in float64 on the same inputs.
    as64 = (a.astype(np.float64) for a in (dout, x, weight, mean, rstd))
    close((dweight, dbias), tuple(g.astype(dtype) for g in ref.layernorm_backward(*as64)[1:]), dtype)


GELU_EXTREMES = [-1e4, -40.0, -10.0, -3.0, -1e-8, -0.0, 0.0, 1e-8, 3.0, 10.0, 40.0, 1e4]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (1,), (7, 13), (3, 1000), (64, 128, 256)])
def test_gelu(shape, dtype):
    rng = np.random.default_rng(1)
    x, dout = randn(rng, shape, dtype, scale=4.0), randn(rng, shape, dtype)
    close(C_.gelu_forward(x), ref.gelu_forward(x), dtype)
    close(C_.gelu_backward(dout, x), ref.gelu_backward(dout, x), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (3, 1000), (64, 128, 256), (5, 0)])
def test_gelu_with_bias(shape, dtype):
    """gelu(x + bias), bias (C,) over every row of x (..., C), against the reference and against the
    kernel without a bias on x + bias added beforehand (the same numbers in, so the same out)."""
    rng = np.random.default_rng(2)
    x, dout, bias = randn(rng, shape, dtype, scale=4.0), randn(rng, shape, dtype), randn(rng, shape[-1:], dtype)
    close(C_.gelu_forward(x, bias), ref.gelu_forward(x, bias), dtype)
    close(C_.gelu_backward(dout, x, bias), ref.gelu_backward(dout, x, bias), dtype)
    np.testing.assert_array_equal(C_.gelu_forward(x, bias), C_.gelu_forward(x + bias))
    np.testing.assert_array_equal(C_.gelu_backward(dout, x, bias), C_.gelu_backward(dout, x + bias))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_far_from_zero(dtype):
    """Very negative x, where 1 + tanh(u) cancels and exp(-2u) overflows; very positive x; and zeros."""
    x = np.array(GELU_EXTREMES, dtype=dtype)
    dout = np.linspace(-1, 1, x.size).astype(dtype)
    with np.errstate(over="ignore"):  # the reference's x^3 overflows in float32 at 1e4: its answer stays right
        close(C_.gelu_forward(x), ref.gelu_forward(x), dtype)
        close(C_.gelu_backward(dout, x), ref.gelu_backward(dout, x), dtype)


# (B, NH, T, hs): T = 1, one head, odd sizes, a 3-D (B, T, hs), the seed model's head shape, and a head wider
# than one SIMD vector (hs 40: several column blocks, padded).
ATTN_SHAPES = [(1, 1, 1, 1), (2, 1, 1, 4), (1, 1, 5, 3), (2, 3, 17, 5), (4, 9, 8), (3, 2, 64, 16), (1, 2, 33, 40)]


# scale 30: scores in the hundreds, where softmax must subtract the max. Float64 only: in float32 an
# ulp of a score of 500 is 3e-5, so the rounding of q k^T alone moves probabilities by more than 1e-5.
ATTN_DTYPE_SCALES = [(np.float64, 1.0), (np.float64, 30.0), (np.float32, 1.0)]


@pytest.mark.parametrize("dtype, scale", ATTN_DTYPE_SCALES)
@pytest.mark.parametrize("shape", ATTN_SHAPES)
@pytest.mark.parametrize("is_causal", [True, False])
def test_attention(shape, dtype, is_causal, scale):
    """The C++ kernel keeps each score row's max and 1/sum of exp where the reference keeps the
    probabilities: out, those row statistics and the three gradients are compared."""
    rng = np.random.default_rng(2)
    q, k, v, dout = (randn(rng, shape, dtype, s) for s in (scale, scale, 1.0, 1.0))
    out, stats = C_.attention_forward(q, k, v, is_causal)
    ref_out, ref_probs = ref.attention_forward(q, k, v, is_causal)
    close((out, stats), (ref_out, reference_row_stats(q, k, is_causal)), dtype)
    close(C_.attention_backward(dout, q, k, v, stats, is_causal), ref.attention_backward(dout, q, k, v, ref_probs),
          dtype)


def reference_row_stats(q, k, is_causal):
    """(max_j S[i, j], 1 / sum_j exp(S[i, j] - max)) of each row of the scaled, masked scores: (..., T, 2)."""
    scores = (q @ np.swapaxes(k, -1, -2)) * (1.0 / np.sqrt(q.shape[-1]))
    T = q.shape[-2]
    if is_causal:
        scores[..., np.triu(np.ones((T, T), dtype=bool), k=1)] = -np.inf
    m = scores.max(axis=-1, keepdims=True)
    inv = 1.0 / np.exp(scores - m).sum(axis=-1, keepdims=True)
    return np.concatenate([m, inv], axis=-1).astype(q.dtype)


# (B, T, n_head, hs): one head of one, the seed model's layer, odd sizes, a head wider than a vector.
SELF_ATTN_SHAPES = [(1, 1, 1, 1), (2, 64, 4, 16), (3, 17, 3, 5), (1, 33, 2, 40)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, T, NH, hs", SELF_ATTN_SHAPES)
@pytest.mark.parametrize("is_causal", [True, False])
def test_self_attention(B, T, NH, hs, dtype, is_causal):
    """The kernel that reads the heads of qkv (B, T, 3C) where they lie: against the reference (split,
    attend, merge), and bit for bit against the C++ kernel on heads copied out as (B, NH, T, hs)."""
    rng = np.random.default_rng(3)
    C = NH * hs
    qkv, dout = randn(rng, (B, T, 3 * C), dtype), randn(rng, (B, T, C), dtype)
    out, stats = C_.self_attention_forward(qkv, NH, is_causal)
    ref_out, ref_probs = ref.self_attention_forward(qkv, NH, is_causal)
    heads = [np.ascontiguousarray(h) for h in ref._split_heads(qkv, 3, NH)]
    close((out, stats), (ref_out, reference_row_stats(*heads[:2], is_causal)), dtype)
    dqkv = C_.self_attention_backward(dout, qkv, stats, NH, is_causal)
    close(dqkv, ref.self_attention_backward(dout, qkv, ref_probs, NH, is_causal), dtype)
    head_out, head_stats = C_.attention_forward(*heads, is_causal)
    np.testing.assert_array_equal(out, ref._merge_heads(head_out))
    np.testing.assert_array_equal(stats, head_stats)
    dout_heads = np.ascontiguousarray(ref._split_heads(dout, 1, NH)[0])
    head_grads = C_.attention_backward(dout_heads, *heads, head_stats, is_causal)
    np.testing.assert_array_equal(dqkv, np.concatenate([ref._merge_heads(g) for g in head_grads], axis=-1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, T, NH, hs", SELF_ATTN_SHAPES)
def test_self_attention_with_bias(B, T, NH, hs, dtype):
    """The projection's bias (3C,) added as the kernel reads q, k, v: against the reference, and bit for
    bit against the kernel without a bias on qkv + bias (the same numbers, added in the same order)."""
    rng = np.random.default_rng(4)
    C = NH * hs
    qkv, dout, bias = randn(rng, (B, T, 3 * C), dtype), randn(rng, (B, T, C), dtype), randn(rng, (3 * C,), dtype)
    out, stats = C_.self_attention_forward(qkv, NH, True, bias)
    ref_out, ref_probs = ref.self_attention_forward(qkv, NH, True, bias)
    close(out, ref_out, dtype)
    dqkv = C_.self_attention_backward(dout, qkv, stats, NH, True, bias)
    close(dqkv, ref.self_attention_backward(dout, qkv, ref_probs, NH, True, bias), dtype)
    out_added, stats_added = C_.self_attention_forward(qkv + bias, NH, True)
    np.testing.assert_array_equal(out, out_added)
    np.testing.assert_array_equal(stats, stats_added)
    np.testing.assert_array_equal(dqkv, C_.self_attention_backward(dout, qkv + bias, stats, NH, True))


@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_attention_gives_the_future_exactly_zero_weight(dtype):
    """Changing the keys and values after position t leaves every output up to t bit for bit unchanged,
    and the gradients of those keys and values from the outputs up to t are exactly zero."""
    rng = np.random.default_rng(9)
    q, k, v = (randn(rng, (2, 3, 12, 4), dtype) for _ in range(3))
    t = 5
    out, stats = C_.attention_forward(q, k, v, True)
    k2, v2 = k.copy(), v.copy()
    k2[..., t + 1:, :] += 100.0
    v2[..., t + 1:, :] -= 7.0
    out2, stats2 = C_.attention_forward(q, k2, v2, True)
    np.testing.assert_array_equal(out2[..., :t + 1, :], out[..., :t + 1, :])
    np.testing.assert_array_equal(stats2[..., :t + 1, :], stats[..., :t + 1, :])
    dout = np.zeros_like(q)
    dout[..., :t + 1, :] = randn(rng, (2, 3, t + 1, 4), dtype)
    _, dk, dv = C_.attention_backward(dout, q, k, v, stats, True)
    assert not dk[..., t + 1:, :].any() and not dv[..., t + 1:, :].any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_attention_keeps_a_nan_in_the_future_out_of_the_past(dtype):
    """NaN keys and values after position t: the outputs up to t and their q gradients are bit for bit
    those of clean inputs (the kernel masks the future's lanes; 0 * NaN would be NaN)."""
    rng = np.random.default_rng(10)
    q, k, v = (randn(rng, (2, 3, 40, 16), dtype) for _ in range(3))  # 40 keys: whole and part vectors
    t = 20
    dout = np.zeros_like(q)
    dout[..., :t + 1, :] = randn(rng, (2, 3, t + 1, 16), dtype)
    out, stats = C_.attention_forward(q, k, v, True)
    dq = C_.attention_backward(dout, q, k, v, stats, True)[0]
    k2, v2 = k.copy(), v.copy()
    k2[..., t + 1:, :] = np.nan
    v2[..., t + 1:, :] = np.nan
    out2, stats2 = C_.attention_forward(q, k2, v2, True)
    np.testing.assert_array_equal(out2[..., :t + 1, :], out[..., :t + 1, :])
    np.testing.assert_array_equal(stats2[..., :t + 1, :], stats[..., :t + 1, :])
    dq2 = C_.attention_backward(dout, q, k2, v2, stats2, True)[0]
    np.testing.assert_array_equal(dq2[..., :t + 1, :], dq[..., :t + 1, :])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, V", [(1, 1), (1, 65), (37, 65), (5, 1000), (300, 65)])
@pytest.mark.parametrize("scale", [1.0, 1e4])  # 1e4: logits of +-1e4, where exp overflows without the shift
def test_crossentropy(N, V, dtype, scale):
    rng = np.random.default_rng(3)
    logits, targets = randn(rng, (N, V), dtype, scale), rng.integers(0, V, N)
    loss, probs = C_.crossentropy_forward(logits, targets)
    assert loss.shape == ()
    close((loss, probs), ref.crossentropy_forward(logits, targets), dtype)
    close(C_.crossentropy_backward(0.37, probs, targets), ref.crossentropy_backward(0.37, probs, targets), dtype)


# The seed GPT's parameter shapes, shrunk: embeddings, a 2-D weight, vectors, a 0-d array.
PARAM_SHAPES = [(65, 16), (32, 16), (48, 16), (48,), (16,), ()]


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_update_and_global_norm(dtype):
    rng = np.random.default_rng(4)
    params = [randn(rng, s, dtype) for s in PARAM_SHAPES]
    ms = [randn(rng, s, dtype, 0.1) for s in PARAM_SHAPES]
    vs = [np.asarray(np.abs(randn(rng, s, dtype, 0.1))) for s in PARAM_SHAPES]  # 0-d stays an array
    theirs = [[a.copy() for a in arrays] for arrays in (params, ms, vs)]
    for step in (1, 2, 3):
        grads = [randn(rng, s, dtype) for s in PARAM_SHAPES]
        norm = C_.global_norm(grads)
        assert isinstance(norm, float)
        np.testing.assert_allclose(norm, ref.global_norm(grads), rtol=TOL[dtype])
        hyper = dict(lr=3e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, step=step)
        assert C_.adamw_update(params, grads, ms, vs, **hyper) is None  # in place
        ref.adamw_update(theirs[0], grads, theirs[1], theirs[2], **hyper)
    for ours, reference in zip((params, ms, vs), theirs):
        close(tuple(ours), tuple(reference), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_inputs(dtype):
    """Zero rows, zero heads, zero elements: empty outputs of the right shapes, as the reference gives."""
    x, w = np.zeros((0, 4), dtype), np.ones(4, dtype)
    out, mean, rstd = C_.layernorm_forward(x, w, None, 1e-5)
    close((out, mean, rstd), ref.layernorm_forward(x, w, None, 1e-5), dtype)
    close(C_.layernorm_backward(x, x, w, mean, rstd), ref.layernorm_backward(x, x, w, mean, rstd), dtype)
    close(C_.gelu_forward(np.zeros(0, dtype)), ref.gelu_forward(np.zeros(0, dtype)), dtype)
    q = np.zeros((0, 2, 3, 4), dtype)
    out, stats = C_.attention_forward(q, q, q, True)
    ref_out, ref_probs = ref.attention_forward(q, q, q, True)
    close((out, stats), (ref_out, np.zeros((0, 2, 3, 2), dtype)), dtype)
    close(C_.attention_backward(q, q, q, q, stats, True), ref.attention_backward(q, q, q, q, ref_probs), dtype)
    qkv = np.zeros((0, 3, 12), dtype)  # no sequences
    out, stats = C_.self_attention_forward(qkv, 2, True)
    ref_out, ref_probs = ref.self_attention_forward(qkv, 2, True)
    close((out, stats), (ref_out, np.zeros((0, 2, 3, 2), dtype)), dtype)
    dout = np.zeros(out.shape, dtype)
    close(C_.self_attention_backward(dout, qkv, stats, 2, True), ref.self_attention_backward(dout, qkv, ref_probs, 2),
          dtype)
    qkv = np.zeros((2, 0, 12), dtype)  # sequences of length 0 (the reference's max over no keys refuses them)
    out, stats = C_.self_attention_forward(qkv, 2, True)
    assert out.shape == (2, 0, 4) and stats.shape == (2, 2, 0, 2)
    assert C_.self_attention_backward(out, qkv, stats, 2, True).shape == (2, 0, 12)


def test_the_thread_count_does_not_change_the_answer():
    """One thread and three threads: the same results, the per-chunk sums (dweight, loss) to rounding."""
    rng = np.random.default_rng(7)
    N = 2000  # enough rows that every kernel splits its work in three
    q, k, v = (randn(rng, (4, 2, 64, 16), np.float64) for _ in range(3))
    x, w, dout = randn(rng, (N, 64), np.float64), randn(rng, 64, np.float64), randn(rng, (N, 64), np.float64)
    logits, targets = randn(rng, (N, 65), np.float64), rng.integers(0, 65, N)
    h = randn(rng, (N, 256), np.float64)

    def run_all():
        _, mean, rstd = C_.layernorm_forward(x, w, None, 1e-5)
        out, stats = C_.attention_forward(q, k, v, True)
        return (*C_.layernorm_backward(dout, x, w, mean, rstd), out, stats, *C_.attention_backward(q, q, k, v, stats),
                *C_.crossentropy_forward(logits, targets), C_.gelu_forward(h))

    before = C_.get_num_threads()
    try:
        C_.set_num_threads(1)
        one = run_all()
        C_.set_num_threads(3)
        three = run_all()
    finally:
        C_.set_num_threads(before)
    close(three, one, np.float64)


def test_kernels_for_picks_the_backend():
    x = np.ones(3)
    before = mg.backend_info()["requested_backend"]
    try:
        mg.set_backend("cpp")
        assert dispatch.kernels_for(x) is C_
        mg.set_backend("numpy")
        assert dispatch.kernels_for(x) is ref
    finally:
        mg.set_backend(before)


# --- bad arguments: one clear error each, never a crash or a silent copy ------------------------

f64, f32 = np.float64, np.float32
z = np.zeros


def _bad_calls():
    x, w = z((4, 8)), z(8)
    mean = rstd = z(4)
    q = z((2, 2, 5, 3))
    stats = z((2, 2, 5, 2))
    logits, t = z((4, 6)), np.zeros(4, np.int64)
    ps = [z((3, 2))]
    cases = [
        (lambda: C_.layernorm_forward(x.astype(np.int64), w, None, 1e-5), TypeError, "x must be float32 or float64"),
        (lambda: C_.layernorm_forward(x, w.astype(f32), None, 1e-5), TypeError, "weight has dtype float32 but x has float64"),
        (lambda: C_.layernorm_forward(x, z(7), None, 1e-5), ValueError, "weight has shape (7,), expected (8,)"),
        (lambda: C_.layernorm_forward(x, w, z(9), 1e-5), ValueError, "bias has shape (9,), expected (8,)"),
        (lambda: C_.layernorm_forward(x.T, z(4), None, 1e-5), ValueError, "x must be C-contiguous"),
        (lambda: C_.layernorm_forward([[1.0, 2.0]], z(2), None, 1e-5), TypeError, "x must be a NumPy array, got list"),
        (lambda: C_.layernorm_forward(z(()), w, None, 1e-5), ValueError, "x must be (..., C)"),
        (lambda: C_.layernorm_forward(z((3, 0)), z(0), None, 1e-5), ValueError, "empty last axis"),
        (lambda: C_.layernorm_backward(x, x, w, z(5), rstd), ValueError, "mean has shape (5,), expected (4,)"),
        (lambda: C_.layernorm_backward(x[:, ::2], x, w, mean, rstd), ValueError, "dout must be C-contiguous"),
        (lambda: C_.layernorm_backward(x, x, w, mean, rstd.astype(f32)), TypeError, "rstd has dtype float32"),
        (lambda: C_.gelu_forward(z(3, np.int32)), TypeError, "x must be float32 or float64, got int32"),
        (lambda: C_.gelu_forward(z((4, 4))[:, 1]), ValueError, "x must be C-contiguous"),
        (lambda: C_.gelu_forward(np.frombuffer(bytearray(13), np.float32, count=3, offset=1)), ValueError,
         "x is not aligned in memory"),
        (lambda: C_.gelu_backward(z(3), z(4)), ValueError, "dout has shape (3,), expected (4,)"),
        (lambda: C_.gelu_backward(z(3, f32), z(3)), TypeError, "dout has dtype float32 but x has float64"),
        (lambda: C_.gelu_forward(z((4, 3)), z(4)), ValueError, "bias has shape (4,), expected (3,)"),
        (lambda: C_.gelu_forward(z(()), z(1)), ValueError, "x must be (..., C) with a bias, got shape ()"),
        (lambda: C_.gelu_backward(z((4, 3)), z((4, 3)), z(3, f32)), TypeError, "bias has dtype float32 but x has float64"),
        (lambda: C_.attention_forward(q, q, z((2, 2, 5, 4)), True), ValueError, "v has shape (2, 2, 5, 4), expected (2, 2, 5, 3)"),
        (lambda: C_.attention_forward(q, q.astype(f32), q, True), TypeError, "k has dtype float32 but q has float64"),
        (lambda: C_.attention_forward(z(5), z(5), z(5), True), ValueError, "q must be (B, NH, T, hs)"),
        (lambda: C_.attention_forward(z((2, 5, 0)), z((2, 5, 0)), z((2, 5, 0)), True), ValueError, "head size 0"),
        (lambda: C_.attention_forward(q, np.swapaxes(z((2, 2, 3, 5)), -1, -2), q, True), ValueError, "k must be C-contiguous"),
        (lambda: C_.attention_backward(q, q, q, q, z((2, 2, 5)), True), ValueError, "stats has shape (2, 2, 5), expected (2, 2, 5, 2)"),
        (lambda: C_.attention_backward(q.astype(f32), q, q, q, stats, True), TypeError, "dout has dtype float32"),
        (lambda: C_.self_attention_forward(z((2, 5, 8)), 2, True), ValueError, "qkv must be (B, T, 3C)"),
        (lambda: C_.self_attention_forward(z((2, 5, 12)), 2, True, z(4)), ValueError, "bias has shape (4,), expected (12,)"),
        (lambda: C_.self_attention_backward(z((2, 5, 4)), z((2, 5, 12)), z((2, 2, 5, 2)), 2, True, z(12, f32)), TypeError,
         "bias has dtype float32 but qkv has float64"),
        (lambda: C_.self_attention_forward(z((2, 5)), 1, True), ValueError, "qkv must be (B, T, 3C)"),
        (lambda: C_.self_attention_forward(z((2, 5, 12)), 3, True), ValueError, "n_head must be >= 1 and divide C = 4, got 3"),
        (lambda: C_.self_attention_forward(z((2, 5, 12)), 0, True), ValueError, "n_head must be >= 1"),
        (lambda: C_.self_attention_forward(z((2, 5, 12))[:, ::-1], 2, True), ValueError, "qkv must be C-contiguous"),
        (lambda: C_.self_attention_backward(z((2, 5, 3)), z((2, 5, 12)), z((2, 2, 5, 2)), 2, True), ValueError,
         "dout has shape (2, 5, 3), expected (2, 5, 4)"),
        (lambda: C_.self_attention_backward(z((2, 5, 4)), z((2, 5, 12)), z((2, 2, 5)), 2, True), ValueError,
         "stats has shape (2, 2, 5), expected (2, 2, 5, 2)"),
        (lambda: C_.crossentropy_forward(logits, np.array([0, 1, 6, 2])), ValueError, "targets[2] = 6 is outside [0, 6)"),
        (lambda: C_.crossentropy_forward(logits, np.array([0, -1, 1, 2])), ValueError, "targets[1] = -1 is outside [0, 6)"),
        (lambda: C_.crossentropy_forward(logits, t.astype(np.int32)), TypeError, "targets must be int64, got int32"),
        (lambda: C_.crossentropy_forward(logits, t[:3]), ValueError, "targets has shape (3,), expected (4,)"),
        (lambda: C_.crossentropy_forward(z((2, 3, 4)), t), ValueError, "logits must be a non-empty (N, V) array"),
        (lambda: C_.crossentropy_forward(z((0, 4)), t[:0]), ValueError, "logits must be a non-empty (N, V) array"),
        (lambda: C_.crossentropy_forward(logits.astype(np.float16), t), TypeError, "logits must be float32 or float64, got float16"),
        (lambda: C_.crossentropy_backward(1.0, logits, np.array([0, 1, 2, 9])), ValueError, "targets[3] = 9 is outside [0, 6)"),
        (lambda: C_.crossentropy_backward(1.0, logits[:, :3], t), ValueError, "probs must be C-contiguous"),
        (lambda: C_.adamw_update(ps, ps, ps, [], 1e-3, 0.9, 0.95, 1e-8, 0.1, 1), ValueError, "must have one length, got 1, 1, 1, 0"),
        (lambda: C_.adamw_update(ps, [z((2, 3))], ps, ps, 1e-3, 0.9, 0.95, 1e-8, 0.1, 1), ValueError, "grads[0] has shape (2, 3), expected (3, 2)"),
        (lambda: C_.adamw_update(ps, [z((3, 2), f32)], ps, ps, 1e-3, 0.9, 0.95, 1e-8, 0.1, 1), TypeError, "grads[0] has dtype float32"),
        (lambda: C_.adamw_update(ps, ps, [z((2, 3)).T], ps, 1e-3, 0.9, 0.95, 1e-8, 0.1, 1), ValueError, "ms[0] must be C-contiguous"),
        (lambda: C_.adamw_update(ps, ps, ps, ps, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0), ValueError, "step must be >= 1, got 0"),
        (lambda: C_.adamw_update([_read_only(z(3))], [z(3)], [z(3)], [z(3)], 1e-3, 0.9, 0.95, 1e-8, 0.1, 1),
         ValueError, "params[0] is read-only"),
        (lambda: C_.global_norm([z(3), "g"]), TypeError, "grads[1] must be a NumPy array, got str"),
        (lambda: C_.global_norm([z(3, np.int64)]), TypeError, "grads[0] must be float32 or float64"),
        (lambda: C_.set_num_threads(0), ValueError, "n must be >= 1"),
    ]
    return [pytest.param(call, error, message, id=message) for call, error, message in cases]


def _read_only(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("call, error, message", _bad_calls())
def test_bad_arguments_raise_a_clear_error(call, error, message):
    with pytest.raises(error) as info:
        call()
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text


def test_inputs_are_left_untouched_and_outputs_are_fresh():
    """The kernels only read their inputs, and return new arrays (never a view of an input)."""
    rng = np.random.default_rng(5)
    x, w, b = randn(rng, (4, 8), np.float64), randn(rng, 8, np.float64), randn(rng, 8, np.float64)
    q, k, v = (randn(rng, (1, 2, 5, 8), np.float64) for _ in range(3))
    logits, targets = randn(rng, (4, 8), np.float64), rng.integers(0, 8, 4)
    _, mean, rstd = C_.layernorm_forward(x, w, b, 1e-5)
    _, stats = C_.attention_forward(q, k, v, True)
    qkv, x3 = randn(rng, (2, 5, 24), np.float64), randn(rng, (2, 5, 8), np.float64)
    _, qkv_stats = C_.self_attention_forward(qkv, 2, True)
    _, cprobs = C_.crossentropy_forward(logits, targets)
    calls = [
        (C_.gelu_forward, (x,)), (C_.gelu_backward, (q, k)), (C_.layernorm_forward, (x, w, b, 1e-5)),
        (C_.layernorm_backward, (logits, x, w, mean, rstd)), (C_.attention_forward, (q, k, v, True)),
        (C_.attention_backward, (v, q, k, v, stats, True)),
        (C_.self_attention_forward, (qkv, 2, True)), (C_.self_attention_backward, (x3, qkv, qkv_stats, 2, True)),
        (C_.crossentropy_forward, (logits, targets)), (C_.crossentropy_backward, (0.5, cprobs, targets)),
    ]
    for kernel, args in calls:
        inputs = [a for a in args if isinstance(a, np.ndarray)]
        before = [a.copy() for a in inputs]
        outputs = kernel(*args)
        for a, saved in zip(inputs, before):
            np.testing.assert_array_equal(a, saved, err_msg=kernel.__name__)
        for out in outputs if isinstance(outputs, tuple) else (outputs,):
            assert not any(np.shares_memory(out, a) for a in inputs), kernel.__name__


# --- the two backends through minigrad.functional -----------------------------------------------


def _tiny_model(x, w, b, qkv_w, targets):
    """layer_norm -> attention over 2 heads -> gelu -> cross_entropy: every fused functional, in float."""
    B, T, C = x.shape
    h = F.layer_norm(x, w, b)
    q, k, v = F.split(F.linear(h, qkv_w), C, axis=-1)
    heads = lambda t: t.reshape(B, T, 2, C // 2).transpose(1, 2)  # (B, NH, T, hs): a non-contiguous view
    y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(B, T, C)
    return F.cross_entropy(F.gelu(y), targets)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backends_agree_through_functional(dtype):
    rng = np.random.default_rng(6)
    B, T, C = 3, 7, 8
    arrays = [randn(rng, s, dtype) for s in ((B, T, C), (C,), (C,), (3 * C, C))]
    targets = rng.integers(0, C, (B, T))
    results = {}
    before = mg.backend_info()["requested_backend"]
    try:
        for name in ("numpy", "cpp"):
            mg.set_backend(name)
            tensors = [mg.Tensor(a, requires_grad=True, dtype=dtype) for a in arrays]
            loss = _tiny_model(*tensors, targets)
            loss.backward()
            results[name] = (loss.data, *(t.grad for t in tensors))
    finally:
        mg.set_backend(before)
    close(results["cpp"], results["numpy"], dtype)


@pytest.mark.parametrize("kernel_backend", ["numpy", "cpp"], indirect=True)
@pytest.mark.parametrize("shape, n_head, message", [
    ((2, 5, 12), 0, "n_head must be a positive integer, got 0"),
    ((2, 5, 12), 2.0, "n_head must be a positive integer, got 2.0"),
    ((2, 5, 12), 3, r"qkv must be \(B, T, 3C\) with C divisible by n_head=3, got shape \(2, 5, 12\)"),
    ((2, 5, 8), 1, r"got shape \(2, 5, 8\)"),
    ((5, 12), 2, r"got shape \(5, 12\)"),
])
def test_self_attention_refuses_bad_shapes_in_one_line(kernel_backend, shape, n_head, message):
    with pytest.raises(ValueError, match=message) as info:
        F.self_attention(mg.Tensor(np.zeros(shape), requires_grad=True), n_head)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kernel_backend", ["numpy", "cpp"], indirect=True)
def test_gelu_of_a_0d_tensor_stays_0d(kernel_backend):
    x = mg.Tensor(np.array(0.5), requires_grad=True)
    y = F.gelu(x)
    y.backward()
    assert y.shape == () and x.grad.shape == ()
    np.testing.assert_allclose(y.data, ref.gelu_forward(np.array(0.5)), rtol=1e-12)


def test_retain_freed_memory_takes_on_glibc_and_arrays_still_work():
    import platform

    on_glibc = platform.libc_ver()[0] == "glibc"
    assert dispatch.retain_freed_memory() is on_glibc
    # freed blocks come back from the heap now: a large array freed and asked for again is intact
    for _ in range(3):
        a = np.full((1024, 1024), 3.0)  # 8 MiB, above glibc's default mmap threshold
        assert float(a.sum()) == 3.0 * 1024 * 1024
        del a
