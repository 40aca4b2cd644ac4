// tanh-GELU of x, one thread per element (grid-stride), in the overflow-safe form of csrc/cpu/gelu.cpp.
#include "cuda/common.cuh"

namespace minigrad::cuda {

constexpr double kGeluScale = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kGeluCubic = 0.044715;

// NOTE: 0.5 (1 + tanh(u)) = sigmoid(2u), and 1 + tanh(u) loses every digit for very negative x.
// With e = exp(-|2u|) in (0, 1] (never overflows): sigmoid(2u) = 1/(1+e) for u >= 0, e/(1+e) for u < 0,
// and sigmoid(2u) (1 - sigmoid(2u)) = e/(1+e)^2 either way.
template <class T>
__global__ void gelu_forward_kernel(T* out, const T* x, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const T xi = x[i];
        const T u = T(kGeluScale) * (xi + T(kGeluCubic) * xi * xi * xi);
        const T e = dexp(-dabs(T(2) * u));
        const T inv = T(1) / (T(1) + e);
        out[i] = xi * (u >= T(0) ? inv : e * inv);
    }
}

template <class T>
__global__ void gelu_backward_kernel(T* dx, const T* dout, const T* x, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const T xi = x[i];
        const T u = T(kGeluScale) * (xi + T(kGeluCubic) * xi * xi * xi);
        const T du = T(kGeluScale) * (T(1) + T(3 * kGeluCubic) * xi * xi);  // du/dx
        const T e = dexp(-dabs(T(2) * u));
        const T inv = T(1) / (T(1) + e);
        const T sig = u >= T(0) ? inv : e * inv;
        // d/dx [x sigmoid(2u)] = sigmoid(2u) + 2 x sigmoid(2u) (1 - sigmoid(2u)) du/dx
        dx[i] = dout[i] * (sig + T(2) * xi * (e * inv * inv) * du);
    }
}

template <class T>
int gelu_forward(T* out, const T* x, int64_t n, Stream stream) {
    if (n == 0) return 0;
    gelu_forward_kernel<<<grid_for(n, 256), 256, 0, as_stream(stream)>>>(out, x, n);
    return static_cast<int>(cudaGetLastError());
}

template <class T>
int gelu_backward(T* dx, const T* dout, const T* x, int64_t n, Stream stream) {
    if (n == 0) return 0;
    gelu_backward_kernel<<<grid_for(n, 256), 256, 0, as_stream(stream)>>>(dx, dout, x, n);
    return static_cast<int>(cudaGetLastError());
}

template int gelu_forward<float>(float*, const float*, int64_t, Stream);
template int gelu_forward<double>(double*, const double*, int64_t, Stream);
template int gelu_backward<float>(float*, const float*, const float*, int64_t, Stream);
template int gelu_backward<double>(double*, const double*, const double*, int64_t, Stream);

}  // namespace minigrad::cuda
