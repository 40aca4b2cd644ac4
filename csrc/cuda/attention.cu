// Causal self-attention over B*NH heads laid out as head_layout.h says, written plainly: the
// probabilities are materialised as (B, NH, T, T) in scratch memory that lives for one call. The
// forward keeps only each row's log-sum-exp, from which the backward rebuilds them. One block per row
// (head h, query i) forward; backward in three passes without atomics: P again, then per query row
// (dS and dq), then per key row (dk and dv), so the result is deterministic.
#include "cuda/common.cuh"

namespace minigrad::cuda {

constexpr int kThreads = 128;

// S_ij = q_i . k_j * scale, the dot product over the head's hs channels (the forward and the backward
// compute it alike, so the backward's P is the forward's).
template <class T>
__device__ inline T score(const T* qi, const T* kj, int64_t hs, T scale) {
    T s = 0;
    for (int64_t d = 0; d < hs; ++d) s += qi[d] * kj[d];
    return s * scale;
}

// lse[h, i] = log sum_j exp(S_ij) and out[h, i, :] = sum_j P_ij v_j, P_i = softmax(S_i) over the keys j
// the query sees, held in the scratch row probs[h, i, :len]. Thread t owns the keys j = t, t + 128, ....
template <class T>
__global__ void attention_forward_kernel(T* out, T* lse, T* probs, const T* q, const T* k, const T* v, int64_t NH,
                                         int64_t T_, int64_t hs, HeadLayout in, HeadLayout out_layout,
                                         bool is_causal, T scale) {
    __shared__ T red[32];
    const int64_t row = blockIdx.x;  // h * T + i
    const int64_t h = row / T_, i = row % T_;
    const int64_t ld = in.row;                   // from one key (or value) row to the next
    const T* qi = q + in.offset(h, NH) + i * ld;  // (hs,)
    const T* kh = k + in.offset(h, NH);          // (T, hs), rows ld apart
    const T* vh = v + in.offset(h, NH);
    T* p = probs + row * T_;                     // (len,): scores, then probabilities
    const int64_t len = is_causal ? i + 1 : T_;  // keys this query sees
    T m = neg_inf<T>();
    for (int64_t j = threadIdx.x; j < len; j += blockDim.x) {
        p[j] = score(qi, kh + j * ld, hs, scale);
        m = dmax(m, p[j]);
    }
    // NOTE: subtract the row max before exp, or exp overflows for large scores.
    m = block_max(m, red);
    T sum = 0;
    for (int64_t j = threadIdx.x; j < len; j += blockDim.x) {
        p[j] = dexp(p[j] - m);
        sum += p[j];
    }
    sum = block_sum(sum, red);
    if (threadIdx.x == 0) lse[row] = m + dlog(sum);
    const T inv = T(1) / sum;
    for (int64_t j = threadIdx.x; j < len; j += blockDim.x) p[j] *= inv;
    __syncthreads();  // every p[j] of the row written before any thread reads them all
    for (int64_t d = threadIdx.x; d < hs; d += blockDim.x) {
        T o = 0;
        for (int64_t j = 0; j < len; ++j) o += p[j] * vh[j * ld + d];
        out[out_layout.offset(h, NH) + i * out_layout.row + d] = o;
    }
}

// Pass 1, a block per query row i: probs[h, i, j] = exp(S_ij - lse[h, i]) for the keys j the query sees,
// zero beyond them (S_ij - lse <= 0: this exp cannot overflow).
template <class T>
__global__ void attention_probs_kernel(T* probs, const T* q, const T* k, const T* lse, int64_t NH, int64_t T_,
                                       int64_t hs, HeadLayout in, bool is_causal, T scale) {
    const int64_t row = blockIdx.x;  // h * T + i
    const int64_t h = row / T_, i = row % T_;
    const T* qi = q + in.offset(h, NH) + i * in.row;  // (hs,)
    const T* kh = k + in.offset(h, NH);              // (T, hs), rows in.row apart
    const int64_t len = is_causal ? i + 1 : T_;
    for (int64_t j = threadIdx.x; j < T_; j += blockDim.x)
        probs[row * T_ + j] = j < len ? dexp(score(qi, kh + j * in.row, hs, scale) - lse[row]) : T(0);
}

// Pass 2, a block per query row i: dP_ij = dout_i . v_j, dS_ij = P_ij (dP_ij - delta_i) with
// delta_i = sum_j dP_ij P_ij / sum_j P_ij, dq_i = sum_j dS_ij k_j / sqrt(hs). Keys with P_ij = 0 (the masked
// future) give dS_ij = 0 exactly.
template <class T>
__global__ void attention_dq_kernel(T* dq, T* dscores, const T* dout, const T* k, const T* v, const T* probs,
                                    int64_t NH, int64_t T_, int64_t hs, HeadLayout in, HeadLayout out_layout,
                                    T scale) {
    __shared__ T red[32];
    __shared__ int len;  // 1 + the last key with a nonzero probability
    const int64_t row = blockIdx.x;
    const int64_t h = row / T_, i = row % T_;
    const int64_t ld = in.row;
    const T* doi = dout + out_layout.offset(h, NH) + i * out_layout.row;  // (hs,)
    const T* kh = k + in.offset(h, NH);                                   // (T, hs), rows ld apart
    const T* vh = v + in.offset(h, NH);
    const T* p = probs + row * T_;   // (T,)
    T* ds = dscores + row * T_;      // (T,): dP, then dS
    if (threadIdx.x == 0) len = 0;
    __syncthreads();
    T dot = 0, total = 0;
    for (int64_t j = threadIdx.x; j < T_; j += blockDim.x) {
        T dp = 0;
        if (p[j] != T(0)) {
            for (int64_t d = 0; d < hs; ++d) dp += doi[d] * vh[j * ld + d];
            atomicMax(&len, static_cast<int>(j + 1));
        }
        ds[j] = dp;
        dot += dp * p[j];
        total += p[j];
    }
    // NOTE: sum_j P_ij is 1 only up to the rounding of lse, and dP_ij - delta_i cancels: dividing by the
    // sum keeps that rounding a relative error of dS instead of an amplified one.
    const T delta = block_sum(dot, red) / block_sum(total, red);  // also a barrier: len is final after it
    for (int64_t j = threadIdx.x; j < T_; j += blockDim.x) ds[j] = p[j] * (ds[j] - delta);
    __syncthreads();
    for (int64_t d = threadIdx.x; d < hs; d += blockDim.x) {
        T acc = 0;
        for (int64_t j = 0; j < len; ++j) acc += ds[j] * kh[j * ld + d];
        dq[in.offset(h, NH) + i * ld + d] = acc * scale;
    }
}

// Pass 3, a block per key row j: dk_j = sum_i dS_ij q_i / sqrt(hs), dv_j = sum_i P_ij dout_i.
template <class T>
__global__ void attention_dkv_kernel(T* dk, T* dv, const T* dscores, const T* dout, const T* q, const T* probs,
                                     int64_t NH, int64_t T_, int64_t hs, HeadLayout in, HeadLayout out_layout,
                                     T scale) {
    const int64_t row = blockIdx.x;  // h * T + j
    const int64_t h = row / T_, j = row % T_;
    const T* qh = q + in.offset(h, NH);             // (T, hs), rows in.row apart
    const T* doh = dout + out_layout.offset(h, NH);  // (T, hs), rows out_layout.row apart
    const T* ph = probs + h * T_ * T_;  // (T, T)
    const T* dsh = dscores + h * T_ * T_;
    for (int64_t d = threadIdx.x; d < hs; d += blockDim.x) {
        T acc_k = 0, acc_v = 0;
        for (int64_t i = 0; i < T_; ++i) {
            const T pij = ph[i * T_ + j];
            if (pij == T(0)) continue;  // a query that does not see this key
            acc_k += dsh[i * T_ + j] * qh[i * in.row + d];
            acc_v += pij * doh[i * out_layout.row + d];
        }
        dk[in.offset(h, NH) + j * in.row + d] = acc_k * scale;
        dv[in.offset(h, NH) + j * in.row + d] = acc_v;
    }
}

template <class T>
int attention_forward(T* out, T* lse, T* probs, const T* q, const T* k, const T* v, int64_t B, int64_t NH,
                      int64_t T_, int64_t hs, HeadLayout qkv_layout, HeadLayout out_layout, bool is_causal,
                      Stream stream) {
    if (B * NH * T_ == 0) return 0;
    const T scale = T(1) / sqrt(T(hs));
    attention_forward_kernel<<<static_cast<unsigned>(B * NH * T_), kThreads, 0, as_stream(stream)>>>(
        out, lse, probs, q, k, v, NH, T_, hs, qkv_layout, out_layout, is_causal, scale);
    return static_cast<int>(cudaGetLastError());
}

template <class T>
int attention_backward(T* dq, T* dk, T* dv, T* probs, T* dscores, const T* dout, const T* q, const T* k, const T* v,
                       const T* lse, int64_t B, int64_t NH, int64_t T_, int64_t hs, HeadLayout qkv_layout,
                       HeadLayout out_layout, bool is_causal, Stream stream) {
    if (B * NH * T_ == 0) return 0;
    const T scale = T(1) / sqrt(T(hs));
    const auto rows = static_cast<unsigned>(B * NH * T_);
    const int dkv_threads = static_cast<int>(hs >= 128 ? 128 : (hs + 31) / 32 * 32);  // one thread per channel
    attention_probs_kernel<<<rows, kThreads, 0, as_stream(stream)>>>(probs, q, k, lse, NH, T_, hs, qkv_layout,
                                                                     is_causal, scale);
    attention_dq_kernel<<<rows, kThreads, 0, as_stream(stream)>>>(dq, dscores, dout, k, v, probs, NH, T_, hs,
                                                                  qkv_layout, out_layout, scale);
    attention_dkv_kernel<<<rows, dkv_threads, 0, as_stream(stream)>>>(dk, dv, dscores, dout, q, probs, NH, T_, hs,
                                                                      qkv_layout, out_layout, scale);
    return static_cast<int>(cudaGetLastError());
}

#define MINIGRAD_CUDA_ATTENTION(T)                                                                                \
    template int attention_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t, int64_t,       \
                                      int64_t, HeadLayout, HeadLayout, bool, Stream);                            \
    template int attention_backward<T>(T*, T*, T*, T*, T*, const T*, const T*, const T*, const T*, const T*,     \
                                       int64_t, int64_t, int64_t, int64_t, HeadLayout, HeadLayout, bool, Stream);
MINIGRAD_CUDA_ATTENTION(float)
MINIGRAD_CUDA_ATTENTION(double)

}  // namespace minigrad::cuda
