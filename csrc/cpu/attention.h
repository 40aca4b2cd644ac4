// Scaled dot-product attention, fused: scores, causal mask, softmax and probs @ v in one pass per row.
#pragma once

#include <cstdint>

namespace minigrad {

// For each of the BH = B*NH heads: S = q k^T / sqrt(hs), masked to -inf above the diagonal when
// causal, P = softmax(S) along each row, out = P v.
// q, k, v, out (BH, T, hs); probs (BH, T, T), exactly 0 where masked.
template <class T>
void attention_forward(T* out, T* probs, const T* q, const T* k, const T* v, int64_t BH, int64_t T_, int64_t hs,
                       bool is_causal);

// dv = P^T dout, dP = dout v^T, dS = P * (dP - rowsum(dP * P)), dq = dS k / sqrt(hs), dk = dS^T q / sqrt(hs).
// dout, q, k, v, dq, dk, dv (BH, T, hs); probs (BH, T, T).
// An entry P[i, j] = 0 adds nothing to any gradient (its dS is 0 too), so each row's loops stop
// after its last nonzero probability: at the diagonal for causal attention, with no flag needed.
template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* probs,
                        int64_t BH, int64_t T_, int64_t hs);

}  // namespace minigrad
