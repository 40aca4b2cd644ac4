// Scaled dot-product attention, fused: scores, causal mask, softmax and probs @ v in one pass per row.
#pragma once

#include <cstdint>

#include "head_layout.h"

namespace minigrad {

// Biases added to q, k and v as the kernels read them (head h's hs numbers at h * hs of each), or null
// for none: the fused projection's bias, when qkv comes from it without one.
template <class T>
struct QKVBias {
    const T* q = nullptr;
    const T* k = nullptr;
    const T* v = nullptr;
};

// For each of the B*NH heads: S = q k^T / sqrt(hs), masked to -inf above the diagonal when causal,
// P = softmax(S) along each row, out = P v; and stats[i] = (max_j S[i, j], 1 / sum_j exp(S[i, j] - max)),
// all that the backward needs to rebuild P row by row from the same scores, bit for bit (P itself,
// (T, T) per head, is never stored; the forward applies 1/sum to out's row, not to P's).
// q, k, v laid out as qkv_layout, out as out_layout; stats (B, NH, T, 2).
template <class T>
void attention_forward(T* out, T* stats, const T* q, const T* k, const T* v, int64_t B, int64_t NH, int64_t T_,
                       int64_t hs, HeadLayout qkv_layout, HeadLayout out_layout, bool is_causal,
                       QKVBias<T> bias = {});

// With P[i, j] = exp(S[i, j] - max_i) / sum_i recomputed from stats: dv = P^T dout, dP = dout v^T,
// dS = P * (dP - rowsum(dP * P)), dq = dS k / sqrt(hs), dk = dS^T q / sqrt(hs).
// q, k, v and dq, dk, dv laid out as qkv_layout; dout as out_layout; stats, is_causal and bias as in the
// forward (dq, dk, dv are also the gradients of the biases, before the sum over rows).
template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* stats,
                        int64_t B, int64_t NH, int64_t T_, int64_t hs, HeadLayout qkv_layout, HeadLayout out_layout,
                        bool is_causal, QKVBias<T> bias = {});

}  // namespace minigrad
