#include "cpu/attention.h"

#include <cmath>
#include <vector>

#include "cpu/threads.h"
#include "cpu/vmath.h"

namespace minigrad {

// The inner loops run over contiguous memory without a reduction, so that they vectorise:
// a row of scores is built as sum_d q[i,d] * kT[d, :] from k transposed into a scratch buffer,
// and a row of out as sum_j P[i,j] * v[j, :].

// (T, hs) -> (hs, T)
template <class T>
static void transpose(T* dst, const T* src, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}

// s[j] = sum_d a[d] * bT[d, j] for j < len; bT (hs, ld).
template <class T>
static void row_times_transposed(T* s, const T* a, const T* bT, int64_t hs, int64_t ld, int64_t len) {
    for (int64_t j = 0; j < len; ++j) s[j] = T(0);
    for (int64_t d = 0; d < hs; ++d) {
        const T ad = a[d];
        const T* b = bT + d * ld;
        for (int64_t j = 0; j < len; ++j) s[j] += ad * b[j];
    }
}

template <class T>
void attention_forward(T* out, T* probs, const T* q, const T* k, const T* v, int64_t BH, int64_t T_, int64_t hs,
                       bool is_causal) {
    const T scale = T(1) / std::sqrt(T(hs));
    const double work_per_head = (is_causal ? 0.5 : 1.0) * double(T_) * double(T_) * (4.0 * double(hs) + 20.0);
    parallel_for(BH, num_chunks(BH, work_per_head), [=](int, int64_t begin, int64_t end) {
        std::vector<T> kT(static_cast<size_t>(hs * T_));  // (hs, T)
        std::vector<T> qs(static_cast<size_t>(hs));        // one row of q, scaled
        for (int64_t h = begin; h < end; ++h) {
            const T* qh = q + h * T_ * hs;  // (T, hs)
            const T* vh = v + h * T_ * hs;
            T* oh = out + h * T_ * hs;
            T* ph = probs + h * T_ * T_;  // (T, T)
            transpose(kT.data(), k + h * T_ * hs, T_, hs);
            for (int64_t i = 0; i < T_; ++i) {
                const int64_t len = is_causal ? i + 1 : T_;  // keys this query sees
                T* p = ph + i * T_;                          // (T,): scores, then probabilities
                for (int64_t d = 0; d < hs; ++d) qs[d] = qh[i * hs + d] * scale;
                row_times_transposed(p, qs.data(), kT.data(), hs, T_, len);
                // NOTE: subtract the row max before exp, or exp overflows for large scores.
                const T m = lane_max(p, len);
                for (int64_t j = 0; j < len; ++j) p[j] = vexp(p[j] - m);
                const T inv = T(1) / lane_sum<T>(len, [p](int64_t j) { return p[j]; });
                for (int64_t j = 0; j < len; ++j) p[j] *= inv;
                for (int64_t j = len; j < T_; ++j) p[j] = T(0);  // the masked future
                T* o = oh + i * hs;  // (hs,)
                for (int64_t d = 0; d < hs; ++d) o[d] = T(0);
                for (int64_t j = 0; j < len; ++j) {
                    const T pj = p[j];
                    const T* vj = vh + j * hs;
                    for (int64_t d = 0; d < hs; ++d) o[d] += pj * vj[d];
                }
            }
        }
    });
}

template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* probs,
                        int64_t BH, int64_t T_, int64_t hs) {
    const T scale = T(1) / std::sqrt(T(hs));
    const double work_per_head = double(T_) * double(T_) * (8.0 * double(hs) + 8.0);
    parallel_for(BH, num_chunks(BH, work_per_head), [=](int, int64_t begin, int64_t end) {
        std::vector<T> vT(static_cast<size_t>(hs * T_));  // (hs, T)
        std::vector<T> ds(static_cast<size_t>(T_));        // one row: dP, then dS
        for (int64_t h = begin; h < end; ++h) {
            const size_t off = static_cast<size_t>(h * T_ * hs);  // (T, hs) blocks of this head
            const T* ph = probs + h * T_ * T_;                   // (T, T)
            transpose(vT.data(), v + off, T_, hs);
            for (int64_t x = 0; x < T_ * hs; ++x) dk[off + x] = dv[off + x] = T(0);
            for (int64_t i = 0; i < T_; ++i) {
                const T* p = ph + i * T_;
                int64_t len = T_;  // up to the last nonzero probability
                while (len > 0 && p[len - 1] == T(0)) --len;
                const T* doi = dout + off + i * hs;  // (hs,)
                const T* qi = q + off + i * hs;
                row_times_transposed(ds.data(), doi, vT.data(), hs, T_, len);  // dP[i, :]
                const T dot = lane_sum<T>(len, [&](int64_t j) { return ds[j] * p[j]; });
                for (int64_t j = 0; j < len; ++j) ds[j] = p[j] * (ds[j] - dot);  // dS[i, :]
                T* dqi = dq + off + i * hs;
                for (int64_t d = 0; d < hs; ++d) dqi[d] = T(0);
                for (int64_t j = 0; j < len; ++j) {
                    const T pj = p[j], dsj = ds[j], dsj_scaled = ds[j] * scale;
                    const T* kj = k + off + j * hs;
                    T* dkj = dk + off + j * hs;
                    T* dvj = dv + off + j * hs;
                    for (int64_t d = 0; d < hs; ++d) {
                        dqi[d] += dsj * kj[d];
                        dkj[d] += dsj_scaled * qi[d];
                        dvj[d] += pj * doi[d];
                    }
                }
                for (int64_t d = 0; d < hs; ++d) dqi[d] *= scale;
            }
        }
    });
}

template void attention_forward<float>(float*, float*, const float*, const float*, const float*, int64_t, int64_t,
                                       int64_t, bool);
template void attention_forward<double>(double*, double*, const double*, const double*, const double*, int64_t,
                                        int64_t, int64_t, bool);
template void attention_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                        const float*, const float*, int64_t, int64_t, int64_t);
template void attention_backward<double>(double*, double*, double*, const double*, const double*, const double*,
                                         const double*, const double*, int64_t, int64_t, int64_t);

}  // namespace minigrad
