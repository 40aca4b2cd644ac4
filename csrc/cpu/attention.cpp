#include "cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/threads.h"
#include "cpu/vmath.h"

namespace minigrad {

// How the loops are laid out (the arithmetic is the textbook one, see attention.h). Every product
// is a small matrix product written as W-lane vector FMAs (W = Simd<T>::width: 16 floats, 8 doubles):
// - Queries go kRows at a time: each key or value vector loaded from memory serves kRows rows, and
//   the kRows accumulators are independent chains that the CPU overlaps.
// - Scores of a block, sum_d q[i, d] k[j, d], run over W consecutive keys j: k is transposed once
//   per head into kT (hsp, Tp), and a row's q[i, d] multiplies the vector kT[d, j0:j0+W].
// - Sums over keys, out[i, :] = sum_j P[i, j] v[j, :], and the transposed ones for dk and dv,
//   run over W consecutive columns d of v (or k, q, dout) rows.
// - hs is zero-padded to hsp (a multiple of W) and T to Tp in per-head copies, so every vector
//   loop has whole vectors; the padding adds zeros to sums and is never copied out.
// - Row i only ever weights keys j < len_i (i + 1 when causal): P and dS are zero past it, and
//   the sums over keys stop there, so a change (even a NaN) in the future never reaches the past.

constexpr int64_t kRows = 8;

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// A head's T rows of hs numbers, row r at src + r * ld -> (rows_p, hsp) rows, times scale, zero-padded.
template <class T>
static void pad_rows(T* __restrict dst, const T* __restrict src, int64_t ld, int64_t T_, int64_t rows_p, int64_t hs,
                     int64_t hsp, T scale) {
    std::fill(dst, dst + rows_p * hsp, T(0));
    for (int64_t r = 0; r < T_; ++r)
        for (int64_t d = 0; d < hs; ++d) dst[r * hsp + d] = src[r * ld + d] * scale;
}

// rows[i][l] -> rows[l][i] for a W x W block held in W vectors. Each step swaps the off-diagonal
// h x h blocks of every 2h x 2h block, h = W/2, ..., 2, 1: two-vector lane shuffles (one AVX-512
// instruction each), W log2(W) of them instead of W^2 single-number moves.
template <class T>
MINIGRAD_INLINE static void transpose_block(typename Simd<T>::Vec* rows) {
    using S = Simd<T>;
#if defined(__clang__) || !defined(__GNUC__)
    T a[S::width][S::width];  // no __builtin_shuffle: one number at a time
    std::memcpy(a, rows, sizeof a);
    for (int i = 0; i < S::width; ++i)
        for (int l = 0; l < S::width; ++l) rows[l][i] = a[i][l];
#else
#pragma GCC unroll 8
    for (int h = S::width / 2; h > 0; h /= 2) {
        typename S::Mask keep_low, keep_high;  // lanes of (a, b) for new rows i and i + h (b's lane l is W + l)
        for (int l = 0; l < S::width; ++l) {
            keep_low[l] = (l & h) ? S::width + l - h : l;
            keep_high[l] = (l & h) ? S::width + l : l + h;
        }
#pragma GCC unroll 16
        for (int i = 0; i < S::width; ++i)
            if (!(i & h)) {
                const typename S::Vec a = rows[i], b = rows[i + h];
                rows[i] = __builtin_shuffle(a, b, keep_low);
                rows[i + h] = __builtin_shuffle(a, b, keep_high);
            }
    }
#endif
}

// A head's padded rows (Tp rounded up to W, hsp) -> (hsp, Tp) transposed, W x W blocks at a time.
template <class T>
MINIGRAD_INLINE static void transpose_rows(T* __restrict dst, const T* __restrict src, int64_t hsp, int64_t Tp) {
    using S = Simd<T>;
    typename S::Vec block[S::width];
    for (int64_t r0 = 0; r0 < Tp; r0 += S::width)
        for (int64_t d0 = 0; d0 < hsp; d0 += S::width) {
            for (int i = 0; i < S::width; ++i) block[i] = S::load(src + (r0 + i) * hsp + d0);
            transpose_block<T>(block);
            for (int i = 0; i < S::width; ++i) S::store(dst + (d0 + i) * Tp + r0, block[i]);
        }
}

// s[r, j] = sum_d a[r, d] bT[d, j] for the kRows rows r of a (kRows, hsp) and keys j < jend, a
// multiple of W. bT (hsp, Tp), s (kRows, Tp). The forward and the backward both build scores
// here, so the backward's scores are the forward's bit for bit.
template <class T>
MINIGRAD_INLINE static void scores_block(T* __restrict s, const T* __restrict a, const T* __restrict bT,
                                         int64_t hsp, int64_t Tp, int64_t jend) {
    using S = Simd<T>;
    for (int64_t j0 = 0; j0 < jend; j0 += S::width) {
        typename S::Vec acc[kRows] = {};
        for (int64_t d = 0; d < hsp; ++d) {
            const typename S::Vec b = S::load(bT + d * Tp + j0);
            for (int64_t r = 0; r < kRows; ++r) acc[r] += a[r * hsp + d] * b;
        }
        for (int64_t r = 0; r < kRows; ++r) S::store(s + r * Tp + j0, acc[r]);
    }
}

// out[r, :] = sum_{j < len[r]} w[r, j] x[j, :] for the kRows rows; w (kRows, Tp), x (rows, hsp),
// out (kRows, hsp). The keys every row sees run in one loop, each row's last few in a second.
template <class T>
MINIGRAD_INLINE static void weighted_rows(T* __restrict out, const T* __restrict w, const T* __restrict x,
                                          const int64_t* len, int64_t hsp, int64_t Tp) {
    using S = Simd<T>;
    const int64_t shared = *std::min_element(len, len + kRows), longest = *std::max_element(len, len + kRows);
    for (int64_t d0 = 0; d0 < hsp; d0 += S::width) {
        typename S::Vec acc[kRows] = {};
        for (int64_t j = 0; j < shared; ++j) {
            const typename S::Vec xj = S::load(x + j * hsp + d0);
            for (int64_t r = 0; r < kRows; ++r) acc[r] += w[r * Tp + j] * xj;
        }
        for (int64_t j = shared; j < longest; ++j) {
            const typename S::Vec xj = S::load(x + j * hsp + d0);
            for (int64_t r = 0; r < kRows; ++r)
                if (j < len[r]) acc[r] += w[r * Tp + j] * xj;
        }
        for (int64_t r = 0; r < kRows; ++r) S::store(out + r * hsp + d0, acc[r]);
    }
}

// The transposed products of the backward, both in one pass over the keys j < jend:
// dk[j, :] += sum_r dS[r, j] qs[r, :] and dv[j, :] += sum_r P[r, j] dout[r, :] over the kRows rows of the
// block. dS and P (kRows, Tp) are zero past each row's length, so every row can join every key: the
// weights are exact zeros there, and qs, dout are the block's own rows, never a future one.
template <class T>
MINIGRAD_INLINE static void add_transposed_products(T* __restrict dk, T* __restrict dv, const T* __restrict ds,
                                                    const T* __restrict p, const T* __restrict qs,
                                                    const T* __restrict dout, int64_t jend, int64_t hsp, int64_t Tp) {
    using S = Simd<T>;
    for (int64_t d0 = 0; d0 < hsp; d0 += S::width) {
        typename S::Vec q_rows[kRows], dout_rows[kRows];
        for (int64_t r = 0; r < kRows; ++r) {
            q_rows[r] = S::load(qs + r * hsp + d0);
            dout_rows[r] = S::load(dout + r * hsp + d0);
        }
        for (int64_t j = 0; j < jend; ++j) {
            typename S::Vec sum_k = S::load(dk + j * hsp + d0), sum_v = S::load(dv + j * hsp + d0);
            for (int64_t r = 0; r < kRows; ++r) {
                sum_k += ds[r * Tp + j] * q_rows[r];
                sum_v += p[r * Tp + j] * dout_rows[r];
            }
            S::store(dk + j * hsp + d0, sum_k);
            S::store(dv + j * hsp + d0, sum_v);
        }
    }
}

// The scratch one thread needs for one head at a time, padded as described at the top:
// Tp = T rounded up to W; rows_p = T rounded up to both kRows (whole blocks of queries) and W (whole
// blocks to transpose): both are powers of two, so to the larger.
template <class T>
struct HeadScratch {
    int64_t hsp, Tp, rows_p;
    std::vector<T> qs, kT, vT, kp, vp, dop;  // q * scale, k, v, dout: (rows_p, hsp) rows or (hsp, Tp) transposed
    std::vector<T> s, ds, out;               // (kRows, Tp): scores then P; dP then dS. (kRows, hsp): a result
    std::vector<T> dk, dv;                   // (rows_p, hsp): the sums for dk and dv
    HeadScratch(int64_t T_, int64_t hs)
        : hsp(round_up(hs, Simd<T>::width)), Tp(round_up(T_, Simd<T>::width)), rows_p(round_up(T_, std::max<int64_t>(kRows, Simd<T>::width))),
          qs(rows_p * hsp), kT(hsp * Tp), vT(hsp * Tp), kp(rows_p * hsp), vp(rows_p * hsp), dop(rows_p * hsp),
          s(kRows * Tp), ds(kRows * Tp), out(kRows * hsp), dk(rows_p * hsp), dv(rows_p * hsp) {}
};

// How many keys each query row of the block i0 .. i0 + kRows - 1 sees (0 for rows past T).
static inline void block_lengths(int64_t* len, int64_t i0, int64_t T_, bool is_causal) {
    for (int64_t r = 0; r < kRows; ++r) len[r] = i0 + r >= T_ ? 0 : (is_causal ? i0 + r + 1 : T_);
}

// rows (kRows, hsp) of a result -> the first hs numbers of the head's rows i0 .. (row t at dst + t * ld),
// row r times scale[r]
template <class T>
static void copy_out(T* dst, int64_t ld, const T* rows, const int64_t* len, int64_t i0, int64_t hs, int64_t hsp,
                     const T* scale) {
    for (int64_t r = 0; r < kRows && len[r] > 0; ++r)
        for (int64_t d = 0; d < hs; ++d) dst[(i0 + r) * ld + d] = scale[r] * rows[r * hsp + d];
}

// max_{j < n} s[j] for n >= 1, W lanes at a time; s[n .. n rounded up to W) is scratch, set to -inf
// here (a NaN may or may not win, as in any max).
template <class T>
MINIGRAD_INLINE static T row_max(T* s, int64_t n) {
    using S = Simd<T>;
    const int64_t n_vec = round_up(n, S::width);
    std::fill(s + n, s + n_vec, -std::numeric_limits<T>::infinity());
    typename S::Vec acc = S::load(s);
    for (int64_t j0 = S::width; j0 < n_vec; j0 += S::width) acc = S::max(S::load(s + j0), acc);
    return S::max(acc);
}

// s[j] = exp(s[j] - m) for j < n, 0 for the rest of the last vector; returns the sum of the exps.
template <class T>
MINIGRAD_INLINE static T exp_row(T* s, int64_t n, T m) {
    using S = Simd<T>;
    const int64_t n_vec = round_up(n, S::width);
    for (int64_t j0 = 0; j0 < n_vec; j0 += S::width) S::store(s + j0, S::exp(S::load(s + j0) - m));
    std::fill(s + n, s + n_vec, T(0));
    typename S::Vec sum = {};
    for (int64_t j0 = 0; j0 < n_vec; j0 += S::width) sum += S::load(s + j0);
    return S::sum(sum);
}

// One row of the softmax's backward, for j < jend (a multiple of W): p[j] = exp(s[j] - lse) rebuilds P
// from the scores in place, and dp (dP) becomes dS = P (dP - delta), delta = sum_j dP P / sum_j P; both
// are 0 from n on (dP is zeroed there before it is used, so a NaN in the future cannot reach the sums).
template <class T>
MINIGRAD_INLINE static void softmax_backward_row(T* __restrict p, T* __restrict dp, int64_t n, int64_t jend, T lse) {
    using S = Simd<T>;
    const int64_t n_vec = round_up(n, S::width);
    // s - lse <= 0 (lse is at least the row's max): this exp cannot overflow
    for (int64_t j0 = 0; j0 < n_vec; j0 += S::width) S::store(p + j0, S::exp(S::load(p + j0) - lse));
    std::fill(p + n, p + jend, T(0));
    std::fill(dp + n, dp + jend, T(0));
    typename S::Vec dot = {}, total = {};
    for (int64_t j0 = 0; j0 < n_vec; j0 += S::width) {
        dot += S::load(dp + j0) * S::load(p + j0);
        total += S::load(p + j0);
    }
    // NOTE: sum_j P is 1 only up to the rounding of lse, and dP - delta cancels: dividing by the sum
    // keeps that rounding a relative error of dS instead of an amplified one.
    const T delta = S::sum(dot) / S::sum(total);
    for (int64_t j0 = 0; j0 < n_vec; j0 += S::width) S::store(dp + j0, S::load(p + j0) * (S::load(dp + j0) - delta));
}

template <class T>
MINIGRAD_SIMD_CLONES static void forward_heads(T* out, T* lse, const T* q, const T* k, const T* v, int64_t begin,
                                               int64_t end, int64_t NH, int64_t T_, int64_t hs, HeadLayout in,
                                               HeadLayout out_layout, bool is_causal) {
    HeadScratch<T> w(T_, hs);
    const int64_t hsp = w.hsp, Tp = w.Tp;
    const T scale = T(1) / std::sqrt(T(hs));
    for (int64_t h = begin; h < end; ++h) {
        const int64_t off = in.offset(h, NH), out_off = out_layout.offset(h, NH);
        pad_rows(w.qs.data(), q + off, in.row, T_, w.rows_p, hs, hsp, scale);
        pad_rows(w.kp.data(), k + off, in.row, T_, w.rows_p, hs, hsp, T(1));
        transpose_rows(w.kT.data(), w.kp.data(), hsp, Tp);
        pad_rows(w.vp.data(), v + off, in.row, T_, w.rows_p, hs, hsp, T(1));
        for (int64_t i0 = 0; i0 < T_; i0 += kRows) {
            int64_t len[kRows];
            block_lengths(len, i0, T_, is_causal);
            const int64_t jend = round_up(*std::max_element(len, len + kRows), Simd<T>::width);
            scores_block(w.s.data(), w.qs.data() + i0 * hsp, w.kT.data(), hsp, Tp, jend);
            T inv[kRows];  // 1 / sum_j exp(S[i, j] - max) per row
            for (int64_t r = 0; r < kRows && len[r] > 0; ++r) {
                T* __restrict pr = w.s.data() + r * Tp;
                // NOTE: subtract the row max before exp, or exp overflows for large scores.
                const T m = row_max(pr, len[r]);
                // e_j = exp(S[i, j] - m) in place and summed in the same pass; P = e / sum is applied to
                // the output row instead (one multiply per channel, not per key)
                const T sum = exp_row(pr, len[r], m);
                inv[r] = T(1) / sum;
                // all the backward keeps of this row: with it, it rebuilds P[i, :] from the same scores
                lse[h * T_ + i0 + r] = m + std::log(sum);
            }
            weighted_rows(w.out.data(), w.s.data(), w.vp.data(), len, hsp, Tp);  // e v
            copy_out(out + out_off, out_layout.row, w.out.data(), len, i0, hs, hsp, inv);  // (e v) / sum = P v
        }
    }
}

template <class T>
MINIGRAD_SIMD_CLONES static void backward_heads(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k,
                                                const T* v, const T* lse, int64_t begin, int64_t end, int64_t NH,
                                                int64_t T_, int64_t hs, HeadLayout in, HeadLayout out_layout,
                                                bool is_causal) {
    HeadScratch<T> w(T_, hs);
    const int64_t hsp = w.hsp, Tp = w.Tp;
    const T scale = T(1) / std::sqrt(T(hs));
    T scales[kRows];  // dq's rows are all scaled alike
    std::fill(scales, scales + kRows, scale);
    for (int64_t h = begin; h < end; ++h) {
        const int64_t off = in.offset(h, NH), dout_off = out_layout.offset(h, NH);
        // q * scale, k and v, as in the forward
        pad_rows(w.qs.data(), q + off, in.row, T_, w.rows_p, hs, hsp, scale);
        pad_rows(w.kp.data(), k + off, in.row, T_, w.rows_p, hs, hsp, T(1));
        pad_rows(w.vp.data(), v + off, in.row, T_, w.rows_p, hs, hsp, T(1));
        transpose_rows(w.kT.data(), w.kp.data(), hsp, Tp);
        transpose_rows(w.vT.data(), w.vp.data(), hsp, Tp);
        pad_rows(w.dop.data(), dout + dout_off, out_layout.row, T_, w.rows_p, hs, hsp, T(1));
        std::fill(w.dk.begin(), w.dk.end(), T(0));
        std::fill(w.dv.begin(), w.dv.end(), T(0));
        for (int64_t i0 = 0; i0 < T_; i0 += kRows) {
            int64_t len[kRows];
            block_lengths(len, i0, T_, is_causal);
            const int64_t longest = *std::max_element(len, len + kRows);
            const int64_t jend = round_up(longest, Simd<T>::width);
            const T* qs = w.qs.data() + i0 * hsp;    // (kRows, hsp)
            const T* dob = w.dop.data() + i0 * hsp;  // (kRows, hsp)
            // P again, from the scores (bit for bit the forward's) and each row's log-sum-exp: a second
            // q k^T costs less than writing and reading back the (T, T) matrix P (flash attention's trade)
            scores_block(w.s.data(), qs, w.kT.data(), hsp, Tp, jend);
            scores_block(w.ds.data(), dob, w.vT.data(), hsp, Tp, jend);  // dP = dout v^T
            for (int64_t r = 0; r < kRows; ++r) {
                const T row_lse = lse[h * T_ + std::min(i0 + r, T_ - 1)];  // rows past T: n = 0, lse unused
                softmax_backward_row(w.s.data() + r * Tp, w.ds.data() + r * Tp, len[r], jend, row_lse);
            }
            weighted_rows(w.out.data(), w.ds.data(), w.kp.data(), len, hsp, Tp);  // dS k
            copy_out(dq + off, in.row, w.out.data(), len, i0, hs, hsp, scales);
            add_transposed_products(w.dk.data(), w.dv.data(), w.ds.data(), w.s.data(), qs, dob, longest, hsp, Tp);
        }
        for (int64_t j = 0; j < T_; ++j)
            for (int64_t d = 0; d < hs; ++d) {
                dk[off + j * in.row + d] = w.dk[j * hsp + d];
                dv[off + j * in.row + d] = w.dv[j * hsp + d];
            }
    }
}

template <class T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, int64_t B, int64_t NH, int64_t T_,
                       int64_t hs, HeadLayout qkv_layout, HeadLayout out_layout, bool is_causal) {
    const int64_t BH = B * NH;
    const double work_per_head = (is_causal ? 0.5 : 1.0) * double(T_) * double(T_) * (4.0 * double(hs) + 20.0);
    parallel_for(BH, num_chunks(BH, work_per_head), [=](int, int64_t begin, int64_t end) {
        forward_heads(out, lse, q, k, v, begin, end, NH, T_, hs, qkv_layout, out_layout, is_causal);
    });
}

template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* lse,
                        int64_t B, int64_t NH, int64_t T_, int64_t hs, HeadLayout qkv_layout, HeadLayout out_layout,
                        bool is_causal) {
    const int64_t BH = B * NH;
    const double work_per_head = (is_causal ? 0.5 : 1.0) * double(T_) * double(T_) * (12.0 * double(hs) + 28.0);
    parallel_for(BH, num_chunks(BH, work_per_head), [=](int, int64_t begin, int64_t end) {
        backward_heads(dq, dk, dv, dout, q, k, v, lse, begin, end, NH, T_, hs, qkv_layout, out_layout, is_causal);
    });
}

#define MINIGRAD_ATTENTION(T)                                                                                      \
    template void attention_forward<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t, int64_t, int64_t,  \
                                       HeadLayout, HeadLayout, bool);                                             \
    template void attention_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, int64_t,    \
                                        int64_t, int64_t, int64_t, HeadLayout, HeadLayout, bool);
MINIGRAD_ATTENTION(float)
MINIGRAD_ATTENTION(double)

}  // namespace minigrad
