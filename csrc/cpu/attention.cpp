#include "cpu/attention.h"

#include <cmath>
#include <vector>

#include "cpu/threads.h"
#include "cpu/vmath.h"

namespace minigrad {

// Layout: each head works on k and v transposed into scratch buffers kT, vT (hs, Tp), so that
// every inner loop runs over keys j, contiguous in memory, and vectorises the obvious way:
// - a row of scores sum_d q[i,d] kT[d,j] is built kBlock keys at a time in registers;
// - out[i,d] = sum_j P[i,j] vT[d,j] and dq[i,d] are 8-lane sums over j;
// - dk and dv accumulate transposed, dkT[d,j] += q[i,d] dS[i,j], and are transposed back per head.
// Tp, T rounded up to kBlock, lets a block read past the row end without leaving the buffer.

constexpr int64_t kBlock = 16;

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// (rows, cols) -> (cols, ld)
template <class T>
static void transpose(T* __restrict dst, const T* __restrict src, int64_t rows, int64_t cols, int64_t ld) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) dst[c * ld + r] = src[r * cols + c];
}

// (rows, ld), of which the first cols columns -> (cols, rows)
template <class T>
static void transpose_back(T* __restrict dst, const T* __restrict src, int64_t rows, int64_t cols, int64_t ld) {
    for (int64_t c = 0; c < cols; ++c)
        for (int64_t r = 0; r < rows; ++r) dst[c * rows + r] = src[r * ld + c];
}

// s[j] = sum_d a[d] * bT[d, j] for j < round_up(len, kBlock); bT (hs, ld) with ld >= that.
template <class T>
static inline void row_times_transposed(T* __restrict s, const T* __restrict a, const T* __restrict bT, int64_t hs,
                                        int64_t ld, int64_t len) {
    for (int64_t j0 = 0; j0 < len; j0 += kBlock) {
        T acc[kBlock] = {};
        for (int64_t d = 0; d < hs; ++d) {
            const T ad = a[d];
            const T* b = bT + d * ld + j0;
            for (int64_t l = 0; l < kBlock; ++l) acc[l] += ad * b[l];
        }
        for (int64_t l = 0; l < kBlock; ++l) s[j0 + l] = acc[l];
    }
}

// One pass over j < n for one d of the backward: returns sum_j ds[j] * kd[j] (for dq[i, d]) while
// adding a * ds[j] to dkd[j] and b * p[j] to dvd[j] (dk and dv, transposed). The sum runs in 8 lanes.
template <class T>
static inline T backward_row_pass(T* __restrict dkd, T* __restrict dvd, const T* __restrict ds,
                                  const T* __restrict kd, const T* __restrict p, T a, T b, int64_t n) {
    T acc[kLanes] = {};
    int64_t j = 0;
    for (; j + kLanes <= n; j += kLanes)
        for (int64_t l = 0; l < kLanes; ++l) {
            acc[l] += ds[j + l] * kd[j + l];
            dkd[j + l] += a * ds[j + l];
            dvd[j + l] += b * p[j + l];
        }
    T sum = 0;
    for (; j < n; ++j) {
        sum += ds[j] * kd[j];
        dkd[j] += a * ds[j];
        dvd[j] += b * p[j];
    }
    for (int64_t l = 0; l < kLanes; ++l) sum += acc[l];
    return sum;
}

template <class T>
static void forward_heads(T* out, T* stats, const T* q, const T* k, const T* v, int64_t begin, int64_t end,
                          int64_t T_, int64_t hs, bool is_causal) {
    const int64_t Tp = round_up(T_, kBlock);
    const T scale = T(1) / std::sqrt(T(hs));
    std::vector<T> kT(static_cast<size_t>(hs * Tp), T(0)), vT(kT.size(), T(0));  // (hs, Tp) each
    std::vector<T> p(static_cast<size_t>(Tp)), qs(static_cast<size_t>(hs));   // a row of scores; q[i, :] * scale
    for (int64_t h = begin; h < end; ++h) {
        const int64_t off = h * T_ * hs;  // this head's (T, hs) blocks
        transpose(kT.data(), k + off, T_, hs, Tp);
        transpose(vT.data(), v + off, T_, hs, Tp);
        for (int64_t i = 0; i < T_; ++i) {
            const int64_t len = is_causal ? i + 1 : T_;  // the keys this query sees
            for (int64_t d = 0; d < hs; ++d) qs[d] = q[off + i * hs + d] * scale;
            T* __restrict pr = p.data();
            row_times_transposed(pr, qs.data(), kT.data(), hs, Tp, len);  // the scores S[i, :]
            // NOTE: subtract the row max before exp, or exp overflows for large scores.
            const T m = lane_max(pr, len);
            for (int64_t j = 0; j < len; ++j) pr[j] = vexp(pr[j] - m);
            const T inv = T(1) / lane_sum<T>(len, [pr](int64_t j) { return pr[j]; });
            for (int64_t j = 0; j < len; ++j) pr[j] *= inv;
            // all the backward keeps of this row: with them it rebuilds P[i, :] bit for bit
            stats[(h * T_ + i) * 2] = m;
            stats[(h * T_ + i) * 2 + 1] = inv;
            for (int64_t d = 0; d < hs; ++d) {
                const T* __restrict vd = vT.data() + d * Tp;
                out[off + i * hs + d] = lane_sum<T>(len, [pr, vd](int64_t j) { return pr[j] * vd[j]; });
            }
        }
    }
}

template <class T>
static void backward_heads(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* stats,
                           int64_t begin, int64_t end, int64_t T_, int64_t hs, bool is_causal) {
    const int64_t Tp = round_up(T_, kBlock);
    const T scale = T(1) / std::sqrt(T(hs));
    std::vector<T> kT(static_cast<size_t>(hs * Tp), T(0)), vT(kT.size(), T(0));  // (hs, Tp) each
    std::vector<T> dkT(kT.size()), dvT(kT.size());                                // (hs, Tp) each
    std::vector<T> p(static_cast<size_t>(Tp)), ds(p.size());                      // a row: P; dP, then dS
    std::vector<T> qs(static_cast<size_t>(hs));                                   // q[i, :] * scale
    for (int64_t h = begin; h < end; ++h) {
        const int64_t off = h * T_ * hs;
        transpose(kT.data(), k + off, T_, hs, Tp);
        transpose(vT.data(), v + off, T_, hs, Tp);
        for (size_t x = 0; x < dkT.size(); ++x) dkT[x] = dvT[x] = T(0);
        for (int64_t i = 0; i < T_; ++i) {
            const T* __restrict doi = dout + off + i * hs;  // (hs,)
            const T* __restrict qi = q + off + i * hs;
            const int64_t len = is_causal ? i + 1 : T_;
            // P[i, :] again, the forward's way, from the scores and the row's max and 1/sum: a second
            // q k^T row costs less than writing and reading back the (T, T) matrix P (flash attention's trade)
            for (int64_t d = 0; d < hs; ++d) qs[d] = qi[d] * scale;
            T* __restrict pr = p.data();
            row_times_transposed(pr, qs.data(), kT.data(), hs, Tp, len);
            const T m = stats[(h * T_ + i) * 2], inv = stats[(h * T_ + i) * 2 + 1];
            for (int64_t j = 0; j < len; ++j) pr[j] = vexp(pr[j] - m) * inv;
            row_times_transposed(ds.data(), doi, vT.data(), hs, Tp, len);  // dP[i, :]
            T* __restrict dsp = ds.data();
            const T dot = lane_sum<T>(len, [pr, dsp](int64_t j) { return dsp[j] * pr[j]; });
            for (int64_t j = 0; j < len; ++j) dsp[j] = pr[j] * (dsp[j] - dot);  // dS[i, :]
            for (int64_t d = 0; d < hs; ++d)
                dq[off + i * hs + d] = scale * backward_row_pass(dkT.data() + d * Tp, dvT.data() + d * Tp, dsp,
                                                                 kT.data() + d * Tp, pr, qs[d], doi[d], len);
        }
        transpose_back(dk + off, dkT.data(), hs, T_, Tp);
        transpose_back(dv + off, dvT.data(), hs, T_, Tp);
    }
}

template <class T>
void attention_forward(T* out, T* stats, const T* q, const T* k, const T* v, int64_t BH, int64_t T_, int64_t hs,
                       bool is_causal) {
    const double work_per_head = (is_causal ? 0.5 : 1.0) * double(T_) * double(T_) * (4.0 * double(hs) + 20.0);
    parallel_for(BH, num_chunks(BH, work_per_head), [=](int, int64_t begin, int64_t end) {
        forward_heads(out, stats, q, k, v, begin, end, T_, hs, is_causal);
    });
}

template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* stats,
                        int64_t BH, int64_t T_, int64_t hs, bool is_causal) {
    const double work_per_head = (is_causal ? 0.5 : 1.0) * double(T_) * double(T_) * (12.0 * double(hs) + 28.0);
    parallel_for(BH, num_chunks(BH, work_per_head), [=](int, int64_t begin, int64_t end) {
        backward_heads(dq, dk, dv, dout, q, k, v, stats, begin, end, T_, hs, is_causal);
    });
}

template void attention_forward<float>(float*, float*, const float*, const float*, const float*, int64_t, int64_t,
                                       int64_t, bool);
template void attention_forward<double>(double*, double*, const double*, const double*, const double*, int64_t,
                                        int64_t, int64_t, bool);
template void attention_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                        const float*, const float*, int64_t, int64_t, int64_t, bool);
template void attention_backward<double>(double*, double*, double*, const double*, const double*, const double*,
                                         const double*, const double*, int64_t, int64_t, int64_t, bool);

}  // namespace minigrad
