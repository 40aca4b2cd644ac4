// GPT-2's tanh-approximated GELU, elementwise.
#pragma once

#include <cstdint>

namespace minigrad {

// out = gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3); x, out (n,).
template <class T>
void gelu_forward(T* out, const T* x, int64_t n);

// dx = dout * gelu'(x), gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2),
// t = tanh(u); dx, dout, x (n,).
template <class T>
void gelu_backward(T* dx, const T* dout, const T* x, int64_t n);

}  // namespace minigrad
