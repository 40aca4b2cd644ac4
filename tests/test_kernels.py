"""Every fused kernel, in every implementation (tests/kernel_cases.py: _C, _C_cuda on a GPU and on the
CPU emulator, the CuPy run of the reference), against the NumPy reference in minigrad.kernels; what all
of them, the reference too, must do alike (bad indices, empty batches, the causal mask); the bindings'
argument checks; and the two CPU backends against each other through minigrad.functional."""

import inspect
import pickle
import platform
import re

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F
from kernel_cases import DTYPES, KERNEL_NAMES, TOL, FakeDeviceArray, randn
from minigrad import dispatch
from minigrad import kernels as ref

# --- every kernel against the reference ---------------------------------------------------------

# (..., C): one row, one channel, odd sizes, GPT-sized rows, and one big enough to run on several threads.
LN_SHAPES = [(1, 1), (1, 64), (3, 5), (2, 3, 7), (17,), (8, 384), (64, 129, 64)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", LN_SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_layernorm(impl, shape, dtype, with_bias):
    rng = np.random.default_rng(0)
    C = shape[-1]
    x = randn(rng, shape, dtype, scale=3.0) + dtype(2.0)  # a mean far from 0: the variance must not cancel
    weight, dout = randn(rng, C, dtype), randn(rng, shape, dtype)
    bias = randn(rng, C, dtype) if with_bias else None
    out, mean, rstd = impl.kernels.layernorm_forward(*impl.arrays(x, weight, bias), 1e-5)
    impl.close((out, mean, rstd), ref.layernorm_forward(x, weight, bias, 1e-5), dtype)
    dx, dweight, dbias = impl.kernels.layernorm_backward(*impl.arrays(dout, x, weight), mean, rstd)
    mean, rstd = impl.host(mean), impl.host(rstd)
    impl.close(dx, ref.layernorm_backward(dout, x, weight, mean, rstd)[0], dtype)
    # NOTE: dweight and dbias sum over every row. The kernels add in double; the reference in float32
    # errs by ~1e-4 at 8256 rows, so they are held to the reference run in float64 on the same inputs.
    as64 = (a.astype(np.float64) for a in (dout, x, weight, mean, rstd))
    impl.close((dweight, dbias), tuple(g.astype(dtype) for g in ref.layernorm_backward(*as64)[1:]), dtype)


GELU_EXTREMES = [-1e4, -40.0, -10.0, -3.0, -1e-8, -0.0, 0.0, 1e-8, 3.0, 10.0, 40.0, 1e4]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (1,), (7, 13), (3, 1000), (64, 128, 256)])
def test_gelu(impl, shape, dtype):
    rng = np.random.default_rng(1)
    x, dout = randn(rng, shape, dtype, scale=4.0), randn(rng, shape, dtype)
    impl.close(impl.kernels.gelu_forward(*impl.arrays(x)), ref.gelu_forward(x), dtype)
    impl.close(impl.kernels.gelu_backward(*impl.arrays(dout, x)), ref.gelu_backward(dout, x), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_far_from_zero(impl, dtype):
    """Very negative x, where 1 + tanh(u) cancels and exp(-2u) overflows; very positive x; and zeros."""
    x = np.array(GELU_EXTREMES, dtype=dtype)
    dout = np.linspace(-1, 1, x.size).astype(dtype)
    with np.errstate(over="ignore"):  # the reference's x^3 overflows in float32 at 1e4: its answer stays right
        impl.close(impl.kernels.gelu_forward(*impl.arrays(x)), ref.gelu_forward(x), dtype)
        impl.close(impl.kernels.gelu_backward(*impl.arrays(dout, x)), ref.gelu_backward(dout, x), dtype)


# (B, NH, T, hs): T = 1, one head, odd sizes, a 3-D (B, T, hs), the seed model's head shape, a head wider
# than one SIMD vector (hs 40: several column blocks, padded), and a T above the CUDA kernels' 128 threads.
ATTN_SHAPES = [(1, 1, 1, 1), (2, 1, 1, 4), (1, 1, 5, 3), (2, 3, 17, 5), (4, 9, 8), (3, 2, 64, 16), (1, 2, 33, 40),
               (1, 2, 300, 64)]
# scale 30: scores in the hundreds, where softmax must subtract the max. Float64 only: in float32 an
# ulp of a score of 500 is 3e-5, so the rounding of q k^T alone moves probabilities by more than 1e-5.
ATTN_DTYPE_SCALES = [(np.float64, 1.0), (np.float64, 30.0), (np.float32, 1.0)]


@pytest.mark.parametrize("dtype, scale", ATTN_DTYPE_SCALES)
@pytest.mark.parametrize("shape", ATTN_SHAPES)
@pytest.mark.parametrize("is_causal", [True, False])
def test_attention(impl, shape, dtype, is_causal, scale):
    """out and each score row's log-sum-exp; then the gradients, each implementation's backward given
    its own forward's lse."""
    rng = np.random.default_rng(2)
    q, k, v, dout = (randn(rng, shape, dtype, s) for s in (scale, scale, 1.0, 1.0))
    out, lse = impl.kernels.attention_forward(*impl.arrays(q, k, v), is_causal)
    ref_out, ref_lse = ref.attention_forward(q, k, v, is_causal)
    impl.close((out, lse), (ref_out, ref_lse), dtype)
    grads = impl.kernels.attention_backward(*impl.arrays(dout, q, k, v), lse, is_causal)
    impl.close(grads, ref.attention_backward(dout, q, k, v, ref_lse, is_causal), dtype)


@pytest.mark.parametrize("is_causal", [True, False])
def test_lse_is_each_rows_log_sum_exp(every_impl, is_causal):
    """lse_i = log sum_j exp(S_ij) over the keys row i sees, computed here the direct way (no shift:
    the scores are small), in float64."""
    rng = np.random.default_rng(8)
    q, k, v = (randn(rng, (2, 3, 6, 4), np.float64) for _ in range(3))
    scores = q @ np.swapaxes(k, -1, -2) / 2.0  # sqrt(hs) = 2
    seen = np.tril(np.ones((6, 6), bool)) if is_causal else np.ones((6, 6), bool)
    expected = np.log(np.where(seen, np.exp(scores), 0.0).sum(axis=-1))  # (2, 3, 6)
    _, lse = every_impl.kernels.attention_forward(*every_impl.arrays(q, k, v), is_causal)
    np.testing.assert_allclose(every_impl.host(lse), expected, rtol=1e-12, atol=1e-12)


# (B, T, n_head, hs): one head of one, the seed model's layer, odd sizes, a head wider than a vector, a long T.
SELF_ATTN_SHAPES = [(1, 1, 1, 1), (2, 64, 4, 16), (3, 17, 3, 5), (1, 33, 2, 40), (1, 300, 2, 64)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, T, NH, hs", SELF_ATTN_SHAPES)
@pytest.mark.parametrize("is_causal", [True, False])
def test_self_attention(impl, B, T, NH, hs, dtype, is_causal):
    """The kernel that reads the heads of qkv (B, T, 3C) where they lie: against the reference (split,
    attend, merge); and, compiled, bit for bit against the same module on heads copied out as (B, NH, T, hs)."""
    rng = np.random.default_rng(3)
    C = NH * hs
    qkv, dout = randn(rng, (B, T, 3 * C), dtype), randn(rng, (B, T, C), dtype)
    out, lse = impl.kernels.self_attention_forward(*impl.arrays(qkv), NH, is_causal)
    ref_out, ref_lse = ref.self_attention_forward(qkv, NH, is_causal)
    impl.close((out, lse), (ref_out, ref_lse), dtype)
    dqkv = impl.kernels.self_attention_backward(*impl.arrays(dout, qkv), lse, NH, is_causal)
    impl.close(dqkv, ref.self_attention_backward(dout, qkv, ref_lse, NH, is_causal), dtype)
    if not impl.compiled:
        return
    heads = impl.arrays(*(np.ascontiguousarray(h) for h in ref._split_heads(qkv, 3, NH)))
    head_out, head_lse = impl.kernels.attention_forward(*heads, is_causal)
    np.testing.assert_array_equal(impl.host(out), ref._merge_heads(impl.host(head_out)))
    np.testing.assert_array_equal(impl.host(lse), impl.host(head_lse))
    dout_heads = impl.array(np.ascontiguousarray(ref._split_heads(dout, 1, NH)[0]))
    head_grads = impl.kernels.attention_backward(dout_heads, *heads, head_lse, is_causal)
    np.testing.assert_array_equal(impl.host(dqkv),
                                  np.concatenate([ref._merge_heads(impl.host(g)) for g in head_grads], axis=-1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_attention_gives_the_future_exactly_zero_weight(every_impl, dtype):
    """Changing the keys and values after position t leaves every output up to t bit for bit unchanged,
    and the gradients of those keys and values from the outputs up to t are exactly zero."""
    K, A = every_impl.kernels, every_impl.array
    rng = np.random.default_rng(9)
    q, k, v = (randn(rng, (2, 3, 12, 4), dtype) for _ in range(3))
    t = 5
    out, lse = K.attention_forward(A(q), A(k), A(v), True)
    k2, v2 = k.copy(), v.copy()
    k2[..., t + 1:, :] += 100.0
    v2[..., t + 1:, :] -= 7.0
    out2, lse2 = K.attention_forward(A(q), A(k2), A(v2), True)
    host = every_impl.host
    np.testing.assert_array_equal(host(out2)[..., :t + 1, :], host(out)[..., :t + 1, :])
    np.testing.assert_array_equal(host(lse2)[..., :t + 1], host(lse)[..., :t + 1])
    dout = np.zeros_like(q)
    dout[..., :t + 1, :] = randn(rng, (2, 3, t + 1, 4), dtype)
    _, dk, dv = K.attention_backward(A(dout), A(q), A(k), A(v), lse, True)
    assert not host(dk)[..., t + 1:, :].any() and not host(dv)[..., t + 1:, :].any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_attention_keeps_a_nan_in_the_future_out_of_the_past(compiled, dtype):
    """NaN keys and values after position t: the outputs up to t, their lse and q gradients are bit for
    bit those of clean inputs (the kernels mask the future; 0 * NaN would be NaN). The reference's
    products do read the future (NaN * 0 is NaN), so this is the compiled kernels' property."""
    K, A, host = compiled.kernels, compiled.array, compiled.host
    rng = np.random.default_rng(10)
    q, k, v = (randn(rng, (2, 3, 40, 16), dtype) for _ in range(3))  # 40 keys: whole and part vectors
    t = 20
    dout = np.zeros_like(q)
    dout[..., :t + 1, :] = randn(rng, (2, 3, t + 1, 16), dtype)
    out, lse = K.attention_forward(A(q), A(k), A(v), True)
    dq = K.attention_backward(A(dout), A(q), A(k), A(v), lse, True)[0]
    k2, v2 = k.copy(), v.copy()
    k2[..., t + 1:, :] = np.nan
    v2[..., t + 1:, :] = np.nan
    out2, lse2 = K.attention_forward(A(q), A(k2), A(v2), True)
    np.testing.assert_array_equal(host(out2)[..., :t + 1, :], host(out)[..., :t + 1, :])
    np.testing.assert_array_equal(host(lse2)[..., :t + 1], host(lse)[..., :t + 1])
    dq2 = K.attention_backward(A(dout), A(q), A(k2), A(v2), lse2, True)[0]
    np.testing.assert_array_equal(host(dq2)[..., :t + 1, :], host(dq)[..., :t + 1, :])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, V", [(1, 1), (1, 65), (37, 65), (5, 1000), (300, 65), (4096, 65)])
@pytest.mark.parametrize("scale", [1.0, 1e4])  # 1e4: logits of +-1e4, where exp overflows without the shift
def test_crossentropy(impl, N, V, dtype, scale):
    rng = np.random.default_rng(3)
    logits, targets = randn(rng, (N, V), dtype, scale), rng.integers(0, V, N)
    loss, probs = impl.kernels.crossentropy_forward(*impl.arrays(logits, targets))
    assert loss.shape == ()
    impl.close((loss, probs), ref.crossentropy_forward(logits, targets), dtype)
    dlogits = impl.kernels.crossentropy_backward(0.37, probs, *impl.arrays(targets))
    impl.close(dlogits, ref.crossentropy_backward(0.37, impl.host(probs), targets), dtype)


# (ids shape, C, V): a 0-d id, one position, a 1-D batch with unused rows, (B, T) with repeats, a table of
# one row, no channels, and the seed model's (64, 128) ids of 64 channels over 65 rows (several threads).
EMBEDDING_CASES = [((), 3, 4), ((1,), 1, 1), ((7,), 5, 9), ((2, 3), 4, 3), ((5,), 6, 1), ((3,), 0, 2),
                   ((64, 128), 64, 65)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ids_shape, C, V", EMBEDDING_CASES)
def test_embedding_backward(impl, ids_shape, C, V, dtype):
    rng = np.random.default_rng(11)
    dout, ids = randn(rng, (*ids_shape, C), dtype), rng.integers(0, V, ids_shape)
    dweight = impl.kernels.embedding_backward(*impl.arrays(dout, ids), V)
    impl.close(dweight, ref.embedding_backward(dout, ids, V), dtype)


# The seed GPT's parameter shapes, shrunk: embeddings, a 2-D weight, vectors, a 0-d array; and one long
# enough for every block of a CUDA grid to take several elements.
PARAM_SHAPES = [(65, 16), (32, 16), (48, 16), (48,), (16,), (), (300_000,)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_update_and_global_norm(impl, dtype):
    rng = np.random.default_rng(4)
    params = [randn(rng, s, dtype) for s in PARAM_SHAPES]
    ms = [randn(rng, s, dtype, 0.1) for s in PARAM_SHAPES]
    vs = [np.asarray(np.abs(randn(rng, s, dtype, 0.1))) for s in PARAM_SHAPES]  # 0-d stays an array
    ours = [impl.arrays(*arrays) for arrays in (params, ms, vs)]
    for step in (1, 2, 3):
        grads = [randn(rng, s, dtype) for s in PARAM_SHAPES]
        norm = impl.kernels.global_norm(impl.arrays(*grads))
        assert isinstance(norm, float)
        np.testing.assert_allclose(norm, ref.global_norm(grads), rtol=TOL[dtype])
        hyper = dict(lr=3e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, step=step)
        assert impl.kernels.adamw_update(ours[0], impl.arrays(*grads), ours[1], ours[2], **hyper) is None  # in place
        ref.adamw_update(params, grads, ms, vs, **hyper)
    for got, reference in zip(ours, (params, ms, vs)):
        impl.close(got, reference, dtype)


# --- what every implementation does alike, the reference too -----------------------------------


def _shapes(impl, outputs, dtype):
    """The shapes of outputs, after checking that each is an array of the implementation's kind and dtype."""
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    assert all(impl.host(a).dtype == dtype for a in outputs)
    return [impl.host(a).shape for a in outputs]


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batches(every_impl, dtype):
    """Zero rows, zero heads, zero sequences, zero positions: empty outputs of the right shapes and dtype."""
    K, A = every_impl.kernels, every_impl.array
    shapes = lambda outputs: _shapes(every_impl, outputs, dtype)
    x, w = np.zeros((0, 4), dtype), np.ones(4, dtype)
    out, mean, rstd = K.layernorm_forward(A(x), A(w), None, 1e-5)
    assert shapes((out, mean, rstd)) == [(0, 4), (0,), (0,)]
    assert shapes(K.layernorm_backward(A(x), A(x), A(w), mean, rstd)) == [(0, 4), (4,), (4,)]
    assert shapes(K.gelu_forward(A(np.zeros(0, dtype)))) == [(0,)]
    q = np.zeros((0, 2, 3, 4), dtype)
    out, lse = K.attention_forward(A(q), A(q), A(q), True)
    assert shapes((out, lse)) == [(0, 2, 3, 4), (0, 2, 3)]
    assert shapes(K.attention_backward(A(q), A(q), A(q), A(q), lse, True)) == [q.shape] * 3
    qkv = np.zeros((0, 3, 12), dtype)
    out, lse = K.self_attention_forward(A(qkv), 2, True)
    assert shapes((out, lse)) == [(0, 3, 4), (0, 2, 3)]
    assert shapes(K.self_attention_backward(out, A(qkv), lse, 2, True)) == [(0, 3, 12)]
    dweight = K.embedding_backward(A(np.zeros((0, 3), dtype)), A(np.zeros(0, np.int64)), 5)
    assert shapes(dweight) == [(5, 3)]
    np.testing.assert_array_equal(every_impl.host(dweight), 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sequences_of_length_zero(compiled, dtype):
    """(B, 0, 3C): the compiled kernels give empty outputs (the reference's max over no keys refuses them)."""
    K, A = compiled.kernels, compiled.array
    qkv = np.zeros((2, 0, 12), dtype)
    out, lse = K.self_attention_forward(A(qkv), 2, True)
    assert _shapes(compiled, (out, lse), dtype) == [(2, 0, 4), (2, 2, 0)]
    assert _shapes(compiled, K.self_attention_backward(out, A(qkv), lse, 2, True), dtype) == [(2, 0, 12)]


def _bad_index_calls(K, A):
    logits, probs = np.zeros((4, 65)), np.full((4, 65), 1 / 65)
    dout = np.zeros((2, 3, 5))
    return [
        (lambda: K.crossentropy_forward(A(logits), A(np.array([0, 1, 2, 70]))),
         "crossentropy_forward: targets[3] = 70 is outside [0, 65)"),
        (lambda: K.crossentropy_forward(A(logits), A(np.array([0, -1, 2, -3]))),
         "crossentropy_forward: targets[1] = -1 is outside [0, 65)"),
        (lambda: K.crossentropy_backward(1.0, A(probs), A(np.array([65, 0, 0, 0]))),
         "crossentropy_backward: targets[0] = 65 is outside [0, 65)"),
        (lambda: K.crossentropy_backward(1.0, A(probs), A(np.array([0, 0, 0, -1]))),
         "crossentropy_backward: targets[3] = -1 is outside [0, 65)"),
        (lambda: K.embedding_backward(A(dout), A(np.array([[0, 1, 3], [2, -1, 0]])), 4),
         "embedding_backward: ids[4] = -1 is outside [0, 4)"),
        (lambda: K.embedding_backward(A(dout), A(np.array([[0, 1, 3], [4, 0, 9]])), 4),
         "embedding_backward: ids[3] = 4 is outside [0, 4)"),
        (lambda: K.embedding_backward(A(dout[0, 0]), A(np.array(0)), 0), "embedding_backward: ids[0] = 0 is outside [0, 0)"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_index_calls(None, None))))
def test_an_index_out_of_range_is_the_same_error_everywhere(every_impl, case):
    """One line, naming the function, the first bad position (in C order) and its value: never a read out
    of bounds, never a negative id wrapping around to the end of the table."""
    call, message = _bad_index_calls(every_impl.kernels, every_impl.array)[case]
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_inputs_are_left_untouched_and_outputs_are_fresh(every_impl):
    """The kernels only read their inputs, and return new arrays (never a view of an input)."""
    K, A = every_impl.kernels, every_impl.array
    rng = np.random.default_rng(5)
    x, w, b = (A(randn(rng, s, np.float64)) for s in ((4, 8), 8, 8))
    q, k, v = (A(randn(rng, (1, 2, 5, 8), np.float64)) for _ in range(3))
    logits, targets = A(randn(rng, (4, 8), np.float64)), A(rng.integers(0, 8, 4))
    qkv, x3 = A(randn(rng, (2, 5, 24), np.float64)), A(randn(rng, (2, 5, 8), np.float64))
    _, mean, rstd = K.layernorm_forward(x, w, b, 1e-5)
    _, lse = K.attention_forward(q, k, v, True)
    _, qkv_lse = K.self_attention_forward(qkv, 2, True)
    _, probs = K.crossentropy_forward(logits, targets)
    calls = [
        (K.gelu_forward, (x,)), (K.gelu_backward, (q, k)), (K.layernorm_forward, (x, w, b, 1e-5)),
        (K.layernorm_backward, (logits, x, w, mean, rstd)), (K.attention_forward, (q, k, v, True)),
        (K.attention_backward, (v, q, k, v, lse, True)),
        (K.self_attention_forward, (qkv, 2, True)), (K.self_attention_backward, (x3, qkv, qkv_lse, 2, True)),
        (K.crossentropy_forward, (logits, targets)), (K.crossentropy_backward, (0.5, probs, targets)),
        (K.embedding_backward, (x, targets, 8)),
    ]
    for kernel, args in calls:
        inputs = [a for a in args if hasattr(a, "shape")]
        before = [every_impl.host(a).copy() for a in inputs]
        outputs = kernel(*args)
        for a, saved in zip(inputs, before):
            np.testing.assert_array_equal(every_impl.host(a), saved, err_msg=kernel.__name__)
        for out in outputs if isinstance(outputs, tuple) else (outputs,):
            start, end = every_impl.byte_range(out)
            for a in inputs:
                a_start, a_end = every_impl.byte_range(a)
                assert end <= a_start or a_end <= start, f"{kernel.__name__} returned memory of an input"


def test_the_thread_count_of_the_cpp_kernels_does_not_change_the_answer():
    """_C on one thread and on three: the same results (the per-chunk sums of dweight and the loss to
    rounding; the embedding's sums, on one thread whatever the setting, bit for bit)."""
    C_ = dispatch._C
    if C_ is None:
        pytest.skip(f"the C++ kernels are unavailable: {dispatch._C_REASON}")
    rng = np.random.default_rng(7)
    N = 2000  # enough rows that every kernel splits its work in three
    q, k, v = (randn(rng, (4, 2, 64, 16), np.float64) for _ in range(3))
    x, w, dout = randn(rng, (N, 64), np.float64), randn(rng, 64, np.float64), randn(rng, (N, 64), np.float64)
    logits, targets = randn(rng, (N, 65), np.float64), rng.integers(0, 65, N)
    h = randn(rng, (N, 256), np.float64)

    def run_all():
        _, mean, rstd = C_.layernorm_forward(x, w, None, 1e-5)
        out, lse = C_.attention_forward(q, k, v, True)
        return (*C_.layernorm_backward(dout, x, w, mean, rstd), out, lse, *C_.attention_backward(q, q, k, v, lse, True),
                *C_.crossentropy_forward(logits, targets), C_.gelu_forward(h),
                C_.embedding_backward(dout.astype(np.float32), targets, 65))

    before = C_.get_num_threads()
    try:
        C_.set_num_threads(1)
        one = run_all()
        C_.set_num_threads(3)
        three = run_all()
    finally:
        C_.set_num_threads(before)
    for a, b in zip(three[:-1], one[:-1]):
        np.testing.assert_allclose(a, b, rtol=TOL[np.float64], atol=TOL[np.float64])
    np.testing.assert_array_equal(three[-1], one[-1])


def _every_kernel_once(impl, dtype):
    """Each kernel's outputs, as NumPy arrays, on fixed inputs sized so that threads own several items."""
    rng = np.random.default_rng(5)
    K, A, outputs = impl.kernels, impl.arrays, {}
    x, w, b, dout = randn(rng, (40, 384), dtype), randn(rng, 384, dtype), randn(rng, 384, dtype), randn(rng, (40, 384), dtype)
    outputs["layernorm_forward"] = out, mean, rstd = K.layernorm_forward(*A(x, w, b), 1e-5)
    outputs["layernorm_backward"] = K.layernorm_backward(*A(dout, x, w), mean, rstd)
    outputs["gelu_forward"] = (K.gelu_forward(*A(x)),)
    outputs["gelu_backward"] = (K.gelu_backward(*A(dout, x)),)
    qkv, dout = randn(rng, (2, 130, 48), dtype), randn(rng, (2, 130, 16), dtype)
    for causal in (True, False):
        outputs[f"self_attention_forward {causal}"] = out, lse = K.self_attention_forward(*A(qkv), 2, causal)
        outputs[f"self_attention_backward {causal}"] = (K.self_attention_backward(*A(dout, qkv), lse, 2, causal),)
    logits, targets = randn(rng, (50, 1000), dtype, 3.0), rng.integers(0, 1000, 50)
    outputs["crossentropy_forward"] = loss, probs = K.crossentropy_forward(*A(logits, targets))
    outputs["crossentropy_backward"] = (K.crossentropy_backward(0.5, probs, *A(targets)),)
    outputs["embedding_backward"] = (K.embedding_backward(*A(logits, rng.integers(0, 3, 50)), 3),)
    params, grads = A(*(randn(rng, s, dtype) for s in PARAM_SHAPES)), A(*(randn(rng, s, dtype) for s in PARAM_SHAPES))
    ms, vs = A(*(np.zeros(s, dtype) for s in PARAM_SHAPES)), A(*(np.zeros(s, dtype) for s in PARAM_SHAPES))
    outputs["global_norm"] = (impl.array(np.array(K.global_norm(grads))),)
    K.adamw_update(params, grads, ms, vs, 3e-3, 0.9, 0.95, 1e-8, 0.1, 1)
    outputs["adamw_update"] = (*params, *ms, *vs)
    return {name: [impl.host(a) for a in arrays] for name, arrays in outputs.items()}


@pytest.mark.cuda_emulator
@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_kernels_give_the_same_bits_whatever_order_threads_run_in(emulated, monkeypatch, dtype):
    """Every kernel with each block's threads run lowest index first, then highest first: a kernel that reads
    what another thread writes without a barrier between reads it too early in one of the two orders."""
    monkeypatch.setenv("MINIGRAD_CUDA_EMULATOR_ORDER", "forward")
    forward = _every_kernel_once(emulated, dtype)
    monkeypatch.setenv("MINIGRAD_CUDA_EMULATOR_ORDER", "reverse")
    reverse = _every_kernel_once(emulated, dtype)
    assert forward.keys() == reverse.keys()
    for name, arrays in forward.items():
        for i, (a, b) in enumerate(zip(arrays, reverse[name])):
            assert not np.isnan(a).any(), f"{name} output {i} was not written everywhere"
            np.testing.assert_array_equal(b, a, err_msg=f"{name} output {i}")


# --- the bindings: one signature, and one clear error for each bad argument ---------------------


@pytest.fixture(params=["cpp", "cuda_module", pytest.param("cuda_emulated", marks=pytest.mark.cuda_emulator)])
def binding(request):
    """(module, how to hand it a NumPy array, what it says of an object that is not its kind of array) for
    _C, for _C_cuda wherever it is built (its checks come before any device work), and for the emulated
    _C_cuda. _C_cuda is handed FakeDeviceArrays: a kernel never runs on them."""
    if request.param == "cpp":
        if dispatch._C is None:
            pytest.skip(f"the C++ kernels are unavailable: {dispatch._C_REASON}")
        return dispatch._C, lambda a: a, "must be a NumPy array, got"
    if request.param == "cuda_module" and dispatch._C_CUDA is None:
        pytest.skip(dispatch._C_CUDA_REASON)
    module = dispatch._C_CUDA if request.param == "cuda_module" else request.getfixturevalue("emulated_cuda")
    return module, FakeDeviceArray, "must be a CuPy array (an object with __cuda_array_interface__), got"


def test_every_kernel_has_the_reference_signature(binding):
    """The same argument names in the same order as the reference's, with no defaults anywhere."""
    module = binding[0]
    for name in KERNEL_NAMES:
        parameters = inspect.signature(getattr(ref, name)).parameters.values()
        assert all(p.default is inspect.Parameter.empty for p in parameters), f"reference {name} has a default"
        first_line = getattr(module, name).__doc__.splitlines()[0]  # "name(x: object, ...) -> ..."
        arguments = first_line[len(name) + 1:first_line.index(") ->")].split(", ")
        assert [a.split(":")[0] for a in arguments] == [p.name for p in parameters], name
        assert not any("=" in a for a in arguments), f"{name}: {first_line}"


def _read_only(a):
    a.flags.writeable = False
    return a


def _bad_calls(K, A):
    """(call, error, message) for every check the bindings share, each call handing NumPy arrays through A."""
    z, f32 = np.zeros, np.float32
    x, w, rows = z((4, 8)), z(8), z(4)
    q, lse = z((2, 2, 5, 3)), z((2, 2, 5))
    logits, t = z((4, 6)), np.zeros(4, np.int64)
    ps = [z((3, 2))]
    adamw = lambda p, g, m, v, step=1: K.adamw_update([A(a) for a in p], [A(a) for a in g], [A(a) for a in m],
                                                      [A(a) for a in v], 1e-3, 0.9, 0.95, 1e-8, 0.1, step)
    shared = z(6)
    return [
        (lambda: K.layernorm_forward(A(x.astype(np.int64)), A(w), None, 1e-5), TypeError, "layernorm_forward: x must be float32 or float64, got int64"),
        (lambda: K.layernorm_forward(A(x), A(w.astype(f32)), None, 1e-5), TypeError, "weight has dtype float32 but x has float64"),
        (lambda: K.layernorm_forward(A(x), A(z(7)), None, 1e-5), ValueError, "weight has shape (7,), expected (8,)"),
        (lambda: K.layernorm_forward(A(x), A(w), A(z(9)), 1e-5), ValueError, "bias has shape (9,), expected (8,)"),
        (lambda: K.layernorm_forward(A(x.T), A(z(4)), None, 1e-5), ValueError, "x must be C-contiguous"),
        (lambda: K.layernorm_forward(A(z(())), A(w), None, 1e-5), ValueError, "x must be (..., C)"),
        (lambda: K.layernorm_forward(A(z((3, 0))), A(z(0)), None, 1e-5), ValueError, "empty last axis"),
        (lambda: K.layernorm_backward(A(x), A(x), A(w), A(z(5)), A(rows)), ValueError, "mean has shape (5,), expected (4,)"),
        (lambda: K.layernorm_backward(A(x[:, ::2]), A(x), A(w), A(rows), A(rows)), ValueError, "dout must be C-contiguous"),
        (lambda: K.layernorm_backward(A(x), A(x), A(w), A(rows), A(rows.astype(f32))), TypeError, "rstd has dtype float32"),
        (lambda: K.gelu_forward(A(z(3, np.int32))), TypeError, "gelu_forward: x must be float32 or float64, got int32"),
        (lambda: K.gelu_forward(A(z(3, np.float16))), TypeError, "x must be float32 or float64, got float16"),
        (lambda: K.gelu_forward(A(z(3, ">f8"))), TypeError, "got float64 (non-native byte order)"),
        (lambda: K.gelu_forward(A(z((4, 4))[:, 1])), ValueError, "x must be C-contiguous"),
        (lambda: K.gelu_forward(A(np.frombuffer(bytearray(13), f32, count=3, offset=1))), ValueError,
         "gelu_forward: x is not aligned in memory"),
        (lambda: K.gelu_backward(A(z(3)), A(z(4))), ValueError, "gelu_backward: dout has shape (3,), expected (4,)"),
        (lambda: K.gelu_backward(A(z(3, f32)), A(z(3))), TypeError, "dout has dtype float32 but x has float64"),
        (lambda: K.attention_forward(A(q), A(q), A(z((2, 2, 5, 4))), True), ValueError, "v has shape (2, 2, 5, 4), expected (2, 2, 5, 3)"),
        (lambda: K.attention_forward(A(q), A(q.astype(f32)), A(q), True), TypeError, "k has dtype float32 but q has float64"),
        (lambda: K.attention_forward(A(z(5)), A(z(5)), A(z(5)), True), ValueError, "q must be (B, NH, T, hs)"),
        (lambda: K.attention_forward(A(z((2, 5, 0))), A(z((2, 5, 0))), A(z((2, 5, 0))), True), ValueError, "head size 0"),
        (lambda: K.attention_forward(A(q), A(np.swapaxes(z((2, 2, 3, 5)), -1, -2)), A(q), True), ValueError, "k must be C-contiguous"),
        (lambda: K.attention_backward(A(q), A(q), A(q), A(q), A(z((2, 2, 5, 2))), True), ValueError,
         "attention_backward: lse has shape (2, 2, 5, 2), expected (2, 2, 5)"),
        (lambda: K.attention_backward(A(q.astype(f32)), A(q), A(q), A(q), A(lse), True), TypeError, "dout has dtype float32"),
        (lambda: K.attention_backward(A(q), A(q), A(q), A(q), A(lse.astype(f32)), True), TypeError, "lse has dtype float32"),
        (lambda: K.self_attention_forward(A(z((2, 5, 8))), 2, True), ValueError, "qkv must be (B, T, 3C)"),
        (lambda: K.self_attention_forward(A(z((2, 5))), 1, True), ValueError, "qkv must be (B, T, 3C)"),
        (lambda: K.self_attention_forward(A(z((2, 5, 12))), 3, True), ValueError, "n_head must be >= 1 and divide C = 4, got 3"),
        (lambda: K.self_attention_forward(A(z((2, 5, 12))), 0, True), ValueError, "n_head must be >= 1"),
        (lambda: K.self_attention_forward(A(z((2, 5, 12))[:, ::-1]), 2, True), ValueError, "qkv must be C-contiguous"),
        (lambda: K.self_attention_forward(A(z((2, 5, 12), np.int64)), 2, True), TypeError, "qkv must be float32 or float64"),
        (lambda: K.self_attention_backward(A(z((2, 5, 3))), A(z((2, 5, 12))), A(z((2, 2, 5))), 2, True), ValueError,
         "dout has shape (2, 5, 3), expected (2, 5, 4)"),
        (lambda: K.self_attention_backward(A(z((2, 5, 4))), A(z((2, 5, 12))), A(z((2, 2, 5, 2))), 2, True), ValueError,
         "lse has shape (2, 2, 5, 2), expected (2, 2, 5)"),
        (lambda: K.crossentropy_forward(A(logits), A(t.astype(np.int32))), TypeError, "targets must be int64, got int32"),
        (lambda: K.crossentropy_forward(A(logits), A(t.astype(np.float64))), TypeError, "targets must be int64, got float64"),
        (lambda: K.crossentropy_forward(A(logits), A(t[:3])), ValueError, "targets has shape (3,), expected (4,)"),
        (lambda: K.crossentropy_forward(A(z((2, 3, 4))), A(t)), ValueError, "logits must be a non-empty (N, V) array"),
        (lambda: K.crossentropy_forward(A(z((0, 4))), A(t[:0])), ValueError, "logits must be a non-empty (N, V) array"),
        (lambda: K.crossentropy_forward(A(logits.astype(np.float16)), A(t)), TypeError, "logits must be float32 or float64, got float16"),
        (lambda: K.crossentropy_backward(1.0, A(logits[:, :3]), A(t)), ValueError, "probs must be C-contiguous"),
        (lambda: K.crossentropy_backward(1.0, A(z((0, 4))), A(t[:0])), ValueError, "probs must be a non-empty (N, V) array"),
        (lambda: K.embedding_backward(A(z((2, 3, 4))), A(np.zeros((2, 3), np.int32)), 5), TypeError,
         "embedding_backward: ids must be int64, got int32"),
        (lambda: K.embedding_backward(A(z((2, 3, 4))), A(np.zeros(6, np.int64)), 5), ValueError,
         "ids has shape (6,), expected (2, 3)"),
        (lambda: K.embedding_backward(A(z(())), A(np.zeros((), np.int64)), 5), ValueError, "dout must be (..., C)"),
        (lambda: K.embedding_backward(A(z((2, 4), np.int64)), A(np.zeros(2, np.int64)), 5), TypeError,
         "dout must be float32 or float64, got int64"),
        (lambda: K.embedding_backward(A(z((2, 4))), A(np.zeros(2, np.int64)), -1), ValueError, "num_embeddings must be >= 0, got -1"),
        (lambda: adamw(ps, ps, ps, []), ValueError, "must have one length, got 1, 1, 1, 0"),
        (lambda: adamw(ps, [z((2, 3))], [z((3, 2))], [z((3, 2))]), ValueError, "grads[0] has shape (2, 3), expected (3, 2)"),
        (lambda: adamw(ps, [z((3, 2), f32)], [z((3, 2))], [z((3, 2))]), TypeError, "grads[0] has dtype float32"),
        (lambda: adamw(ps, [z((3, 2))], [z((2, 3)).T], [z((3, 2))]), ValueError, "ms[0] must be C-contiguous"),
        (lambda: adamw(ps, ps, ps, ps, step=0), ValueError, "step must be >= 1, got 0"),
        (lambda: adamw([_read_only(z(3))], [z(3)], [z(3)], [z(3)]), ValueError, "params[0] is read-only"),
        (lambda: adamw([z(3)], [z(3)], [z(3)], [_read_only(z(3))]), ValueError, "vs[0] is read-only"),
        (lambda: adamw([shared], [z(6)], [shared], [z(6)]), ValueError, "params[0] shares memory with ms[0]; pass separate arrays"),
        (lambda: adamw([shared], [shared], [z(6)], [z(6)]), ValueError, "params[0] shares memory with grads[0]"),
        (lambda: adamw([z(3), shared[:3]], [z(3)] * 2, [z(3), z(3)], [z(3), shared[2:5]]), ValueError,
         "params[1] shares memory with vs[1]"),
        (lambda: K.global_norm([A(z(3, np.int64))]), TypeError, "global_norm: grads[0] must be float32 or float64"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls(None, None))),
                         ids=[message for _, _, message in _bad_calls(None, None)])
def test_bad_arguments_raise_a_clear_error(binding, case):
    module, A, _ = binding
    call, error, message = _bad_calls(module, A)[case]
    with pytest.raises(error) as info:
        call()
    text = str(info.value)
    assert message in text and "\n" not in text, text


def test_an_object_that_is_not_an_array_is_a_type_error(binding):
    """A list, a string, and the other module's kind of array."""
    module, A, not_an_array = binding
    other_kind = np.zeros(3) if A is FakeDeviceArray else FakeDeviceArray(np.zeros(3))
    for call, what in [(lambda: module.gelu_forward([1.0, 2.0]), "x " + not_an_array + " list"),
                       (lambda: module.global_norm([A(np.zeros(3)), "g"]), "grads[1] " + not_an_array + " str"),
                       (lambda: module.gelu_forward(other_kind), f"x {not_an_array} {type(other_kind).__name__}")]:
        with pytest.raises(TypeError, match=re.escape(what)):
            call()


def test_numpy_dtypes_are_compared_by_value_not_by_identity():
    """_C: a float32 array that went through pickle (its dtype a new object), and np.longlong targets (int64
    on LP64, a dtype object of its own), are float32 and int64 to the checks. (_C_cuda reads the dtype
    as a string, __cuda_array_interface__'s typestr: by value already.)"""
    if dispatch._C is None:
        pytest.skip(f"the C++ kernels are unavailable: {dispatch._C_REASON}")
    if np.dtype(np.longlong).itemsize != 8:
        pytest.skip(f"np.longlong is {np.dtype(np.longlong).itemsize} bytes here")
    logits = pickle.loads(pickle.dumps(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)))
    targets = np.array([2, 0], np.longlong)
    assert logits.dtype is not np.dtype(np.float32) and targets.dtype is not np.dtype(np.int64)  # else: no test
    np.testing.assert_allclose(dispatch._C.gelu_forward(logits), ref.gelu_forward(logits), rtol=1e-6, atol=1e-6)
    loss, _ = dispatch._C.crossentropy_forward(logits, targets)
    np.testing.assert_allclose(loss, ref.crossentropy_forward(logits, targets)[0], rtol=1e-6)


def test_adamw_update_may_read_one_gradient_twice(compiled):
    """Only the arrays it writes must not share memory: one gradient array for two parameters is fine."""
    p1, p2, grad = (compiled.array(np.full(3, v)) for v in (1.0, 2.0, 0.5))
    ms, vs = compiled.arrays(np.zeros(3), np.zeros(3)), compiled.arrays(np.zeros(3), np.zeros(3))
    compiled.kernels.adamw_update([p1, p2], [grad, grad], ms, vs, 0.1, 0.9, 0.95, 1e-8, 0.0, 1)
    np.testing.assert_allclose(compiled.host(p1), 1.0 - 0.1, rtol=1e-6)  # the first step moves by lr
    np.testing.assert_allclose(compiled.host(p2), 2.0 - 0.1, rtol=1e-6)


def test_checks_see_the_layout_of_real_device_arrays(compiled):
    """The strides of real arrays: a transposed view, a strided slice, a cast."""
    K, x = compiled.kernels, compiled.array(np.zeros((4, 8)))
    cases = [(lambda: K.gelu_forward(x.T), ValueError, "x must be C-contiguous"),
             (lambda: K.gelu_forward(x[:, ::2]), ValueError, "x must be C-contiguous"),
             (lambda: K.gelu_forward(x.astype(np.int32)), TypeError, "x must be float32 or float64, got int32"),
             (lambda: K.gelu_backward(x.astype(np.float32), x), TypeError, "dout has dtype float32 but x has float64"),
             (lambda: K.layernorm_forward(x, compiled.array(np.zeros(7)), None, 1e-5), ValueError,
              "weight has shape (7,), expected (8,)")]
    for call, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            call()
    np.testing.assert_array_equal(compiled.host(K.gelu_forward(x[1:3])), np.zeros((2, 8)))  # a contiguous slice


def test_the_cpp_thread_count_must_be_positive():
    if dispatch._C is None:
        pytest.skip(f"the C++ kernels are unavailable: {dispatch._C_REASON}")
    with pytest.raises(ValueError, match=r"^set_num_threads: n must be >= 1, got 0$"):
        dispatch._C.set_num_threads(0)


def test_kernels_for_picks_the_backend():
    if dispatch._C is None:
        pytest.skip(f"the C++ kernels are unavailable: {dispatch._C_REASON}")
    x = np.ones(3)
    before = mg.backend_info()["requested_backend"]
    try:
        mg.set_backend("cpp")
        assert dispatch.kernels_for(x) is dispatch._C
        mg.set_backend("numpy")
        assert dispatch.kernels_for(x) is ref
    finally:
        mg.set_backend(before)


def test_retain_freed_memory_takes_on_glibc_and_arrays_still_work():
    if dispatch._C is None:
        pytest.skip(f"the C++ kernels are unavailable: {dispatch._C_REASON}")
    on_glibc = platform.libc_ver()[0] == "glibc"
    assert dispatch.retain_freed_memory() is on_glibc
    # freed blocks come back from the heap now: a large array freed and asked for again is intact
    for _ in range(3):
        a = np.full((1024, 1024), 3.0)  # 8 MiB, above glibc's default mmap threshold
        assert float(a.sum()) == 3.0 * 1024 * 1024
        del a


# --- the two CPU backends through minigrad.functional -------------------------------------------


def _tiny_model(x, w, b, qkv_w, wte, targets):
    """embedding -> layer_norm -> attention over 2 heads -> gelu -> cross_entropy: every fused functional."""
    B, T, C = x.shape
    h = F.layer_norm(x + F.embedding(targets, wte), w, b)
    q, k, v = F.split(F.linear(h, qkv_w), C, axis=-1)
    heads = lambda t: t.reshape(B, T, 2, C // 2).transpose(1, 2)  # (B, NH, T, hs): a non-contiguous view
    y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True).transpose(1, 2).reshape(B, T, C)
    qkv = F.linear(y, qkv_w)
    return F.cross_entropy(F.gelu(y + F.self_attention(qkv, 2)), targets)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backends_agree_through_functional(dtype):
    if dispatch._C is None:
        pytest.skip(f"the C++ kernels are unavailable: {dispatch._C_REASON}")
    rng = np.random.default_rng(6)
    B, T, C = 3, 7, 8
    # qkv_w at 0.3: used twice, N(0, 1) weights make scores so large that the loss is chaotic (float32's
    # rounding alone moves the gradients by percents), and no tolerance could tell a bug from it
    arrays = [randn(rng, s, dtype, scale) for s, scale in (((B, T, C), 1.0), ((C,), 1.0), ((C,), 1.0),
                                                           ((3 * C, C), 0.3), ((C, C), 1.0))]
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
    for ours, theirs in zip(results["cpp"], results["numpy"]):
        np.testing.assert_allclose(ours, theirs, rtol=TOL[dtype], atol=TOL[dtype])
        assert ours.dtype == dtype


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


@pytest.mark.parametrize("kernel_backend", ["numpy", "cpp"], indirect=True)
@pytest.mark.parametrize("ids, message", [
    (np.array([[0, 1], [2, -1]]), r"embedding: idx\[3\] = -1 is outside \[0, 3\)"),
    (np.array([3, 0]), r"embedding: idx\[0\] = 3 is outside \[0, 3\)"),
    (np.array(-3), r"embedding: idx\[0\] = -3 is outside \[0, 3\)"),
])
def test_embedding_refuses_ids_out_of_range_in_one_line(kernel_backend, ids, message):
    """A negative id must not wrap around to the end of the table (NumPy's and CuPy's indexing would)."""
    with pytest.raises(ValueError, match=f"^{message}$"):
        F.embedding(ids, mg.Tensor(np.zeros((3, 2)), requires_grad=True))


@pytest.mark.parametrize("kernel_backend", ["numpy", "cpp"], indirect=True)
def test_cross_entropy_refuses_a_target_out_of_range_in_one_line(kernel_backend):
    logits = mg.Tensor(np.zeros((2, 3, 5)), requires_grad=True)
    with pytest.raises(ValueError, match=r"^crossentropy_forward: targets\[4\] = 5 is outside \[0, 5\)$"):
        F.cross_entropy(logits, np.array([[0, 1, 2], [3, 5, 0]]))
