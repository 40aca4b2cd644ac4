// The AdamW update (one launch per parameter) and the global gradient norm (deterministic, in double).
#include <cmath>

#include "cuda/common.cuh"

namespace minigrad::cuda {

template <class T>
__global__ void adamw_kernel(T* p, const T* g, T* m, T* v, int64_t n, T decay, T b1, T one_minus_b1, T b2,
                             T one_minus_b2, T sqrt_bc2, T step_size, T eps) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const T gi = g[i];
        const T mi = b1 * m[i] + one_minus_b1 * gi;
        const T vi = b2 * v[i] + one_minus_b2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step_size * (mi / (dsqrt(vi) / sqrt_bc2 + eps));
    }
}

template <class T>
int adamw_update(T* p, const T* g, T* m, T* v, int64_t n, double lr, double beta1, double beta2, double eps,
                 double weight_decay, int64_t step, Stream stream) {
    if (n == 0) return 0;
    // The scalars are formed in double, then rounded to T, as NumPy does for a Python float times a T array.
    const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
    const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step));
    adamw_kernel<<<grid_for(n, 256), 256, 0, as_stream(stream)>>>(
        p, g, m, v, n, static_cast<T>(1.0 - lr * weight_decay), static_cast<T>(beta1), static_cast<T>(1.0 - beta1),
        static_cast<T>(beta2), static_cast<T>(1.0 - beta2), static_cast<T>(std::sqrt(bias_correction2)),
        static_cast<T>(lr / bias_correction1), static_cast<T>(eps));
    return static_cast<int>(cudaGetLastError());
}

// partials[b] = sum of g^2 over the elements block b visits (a fixed grid of kNormBlocks blocks).
template <class T>
__global__ void sum_of_squares_kernel(double* partials, const T* g, int64_t n) {
    __shared__ double red[32];
    double sum = 0.0;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        sum += static_cast<double>(g[i]) * static_cast<double>(g[i]);
    sum = block_sum(sum, red);
    if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

__global__ void sum_partials_kernel(double* partials, int64_t count) {
    __shared__ double red[32];
    double sum = 0.0;
    for (int64_t i = threadIdx.x; i < count; i += blockDim.x) sum += partials[i];
    sum = block_sum(sum, red);
    if (threadIdx.x == 0) partials[count] = sum;
}

template <class T>
int sum_of_squares(double* partials, const T* g, int64_t n, Stream stream) {
    sum_of_squares_kernel<<<kNormBlocks, 256, 0, as_stream(stream)>>>(partials, g, n);
    return static_cast<int>(cudaGetLastError());
}

int sum_partials(double* total, double* partials, int64_t count, Stream stream) {
    const cudaStream_t s = as_stream(stream);
    sum_partials_kernel<<<1, 256, 0, s>>>(partials, count);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaMemcpyAsync(total, partials + count, sizeof(double), cudaMemcpyDeviceToHost, s);
    if (e == cudaSuccess) e = cudaStreamSynchronize(s);
    return static_cast<int>(e);
}

template int adamw_update<float>(float*, const float*, float*, float*, int64_t, double, double, double, double, double,
                                 int64_t, Stream);
template int adamw_update<double>(double*, const double*, double*, double*, int64_t, double, double, double, double,
                                  double, int64_t, Stream);
template int sum_of_squares<float>(double*, const float*, int64_t, Stream);
template int sum_of_squares<double>(double*, const double*, int64_t, Stream);

}  // namespace minigrad::cuda
