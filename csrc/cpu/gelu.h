// GPT-2's tanh-approximated GELU, elementwise, with an optional bias added to its input first.
#pragma once

#include <cstdint>

namespace minigrad {

// out = gelu(z) = 0.5 z (1 + tanh(u)), u = sqrt(2/pi) (z + 0.044715 z^3), z = x + bias: x, out (n,) as
// rows of C numbers and bias (C,), or bias null and z = x (C is then unused).
template <class T>
void gelu_forward(T* out, const T* x, const T* bias, int64_t n, int64_t C);

// dx = dout * gelu'(z), gelu'(z) = 0.5 (1 + t) + 0.5 z (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 z^2),
// t = tanh(u), z as above: (n,) each. dx is also the bias's gradient before the sum over rows.
template <class T>
void gelu_backward(T* dx, const T* dout, const T* x, const T* bias, int64_t n, int64_t C);

}  // namespace minigrad
