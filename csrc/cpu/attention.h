// Scaled dot-product attention, fused: scores, causal mask, softmax and probs @ v in one pass per row.
#pragma once

#include <cstdint>

#include "head_layout.h"

namespace minigrad {

// For each of the B*NH heads: S = q k^T / sqrt(hs), masked to -inf above the diagonal when causal,
// P = softmax(S) along each row, out = P v; and lse[i] = log sum_j exp(S[i, j]), each row's
// log-sum-exp, all that the backward needs to rebuild P = exp(S - lse) row by row from the same
// scores (P itself, (T, T) per head, is never stored; the forward applies 1/sum to out's row, not to P's).
// q, k, v laid out as qkv_layout, out as out_layout; lse (B, NH, T).
template <class T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, int64_t B, int64_t NH, int64_t T_,
                       int64_t hs, HeadLayout qkv_layout, HeadLayout out_layout, bool is_causal);

// With P[i, j] = exp(S[i, j] - lse[i]) recomputed: dv = P^T dout, dP = dout v^T,
// dS = P * (dP - delta), delta = rowsum(dP * P) / rowsum(P) (rowsum(P) is 1 up to the rounding of lse),
// dq = dS k / sqrt(hs), dk = dS^T q / sqrt(hs).
// q, k, v and dq, dk, dv laid out as qkv_layout; dout as out_layout; lse and is_causal as in the forward.
template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* lse,
                        int64_t B, int64_t NH, int64_t T_, int64_t hs, HeadLayout qkv_layout, HeadLayout out_layout,
                        bool is_causal);

}  // namespace minigrad
