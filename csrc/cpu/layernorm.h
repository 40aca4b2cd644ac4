// LayerNorm over the last axis of N rows of C channels.
#pragma once

#include <cstdint>

namespace minigrad {

// out = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps), var the biased variance.
// x, out (N, C); weight, bias (C,), bias may be null; mean, rstd (N,).
template <class T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* weight, const T* bias, int64_t N, int64_t C,
                       T eps);

// xhat = (x - mean) * rstd, g = dout * weight:
// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), dweight = sum_rows dout * xhat, dbias = sum_rows dout.
// dout, x, dx (N, C); weight, dweight, dbias (C,); mean, rstd (N,).
template <class T>
void layernorm_backward(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight, const T* mean,
                        const T* rstd, int64_t N, int64_t C);

}  // namespace minigrad
