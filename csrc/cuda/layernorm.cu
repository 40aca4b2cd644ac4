// LayerNorm: one warp per row for out/mean/rstd and for dx; dweight and dbias by a column-sum kernel.
#include "cuda/common.cuh"

namespace minigrad::cuda {

constexpr int kRowsPerBlock = 8;  // 8 warps of 32 threads, one row each

template <class T>
__global__ void layernorm_forward_kernel(T* out, T* mean, T* rstd, const T* x, const T* weight, const T* bias,
                                         int64_t N, int64_t C, T eps) {
    const int64_t n = blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (n >= N) return;  // the whole warp leaves together
    const T* xn = x + n * C;  // (C,)
    T sum = 0;
    for (int64_t i = lane; i < C; i += 32) sum += xn[i];
    const T m = warp_sum(sum) / T(C);
    // NOTE: the variance from the centred values, not E[x^2] - m^2, which cancels badly.
    T sq = 0;
    for (int64_t i = lane; i < C; i += 32) sq += (xn[i] - m) * (xn[i] - m);
    const T s = T(1) / dsqrt(warp_sum(sq) / T(C) + eps);
    for (int64_t i = lane; i < C; i += 32) {
        const T y = (xn[i] - m) * s * weight[i];
        out[n * C + i] = bias != nullptr ? y + bias[i] : y;
    }
    if (lane == 0) {
        mean[n] = m;
        rstd[n] = s;
    }
}

// dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dout weight, xhat = (x - mean) rstd; a warp per row.
template <class T>
__global__ void layernorm_dx_kernel(T* dx, const T* dout, const T* x, const T* weight, const T* mean, const T* rstd,
                                    int64_t N, int64_t C) {
    const int64_t n = blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (n >= N) return;
    const T* xn = x + n * C;
    const T* dn = dout + n * C;
    const T m = mean[n], s = rstd[n];
    T sum_g = 0, sum_gx = 0;
    for (int64_t i = lane; i < C; i += 32) {
        const T g = dn[i] * weight[i];
        sum_g += g;
        sum_gx += g * ((xn[i] - m) * s);
    }
    const T mean_g = warp_sum(sum_g) / T(C), mean_gx = warp_sum(sum_gx) / T(C);
    for (int64_t i = lane; i < C; i += 32) {
        const T xhat = (xn[i] - m) * s;
        dx[n * C + i] = s * (dn[i] * weight[i] - mean_g - xhat * mean_gx);
    }
}

// dweight[c] = sum_n dout[n, c] xhat[n, c], dbias[c] = sum_n dout[n, c]: a block of 32 x 32 threads
// owns 32 channels (threadIdx.x, so each row is read coalesced); threadIdx.y walks every 32nd row, in
// double; then the 32 partial sums of each channel are added in order. No atomics: deterministic.
template <class T>
__global__ void __launch_bounds__(1024) layernorm_dweight_kernel(T* dweight, T* dbias, const T* dout, const T* x, const T* mean,
                                         const T* rstd, int64_t N, int64_t C) {
    __shared__ double part_w[32][33], part_b[32][33];  // (rows lane, channel), padded against bank conflicts
    const int64_t c = blockIdx.x * int64_t(32) + threadIdx.x;
    double w = 0.0, b = 0.0;
    if (c < C) {
        for (int64_t n = threadIdx.y; n < N; n += 32) {
            const T d = dout[n * C + c];
            w += static_cast<double>(d * ((x[n * C + c] - mean[n]) * rstd[n]));
            b += static_cast<double>(d);
        }
    }
    part_w[threadIdx.y][threadIdx.x] = w;
    part_b[threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        for (int r = 1; r < 32; ++r) {
            w += part_w[r][threadIdx.x];
            b += part_b[r][threadIdx.x];
        }
        dweight[c] = static_cast<T>(w);
        dbias[c] = static_cast<T>(b);
    }
}

template <class T>
int layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* weight, const T* bias, int64_t N, int64_t C,
                      T eps, Stream stream) {
    if (N == 0) return 0;
    const auto blocks = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
    layernorm_forward_kernel<<<blocks, 32 * kRowsPerBlock, 0, as_stream(stream)>>>(out, mean, rstd, x, weight, bias,
                                                                                   N, C, eps);
    return static_cast<int>(cudaGetLastError());
}

template <class T>
int layernorm_backward(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight, const T* mean,
                       const T* rstd, int64_t N, int64_t C, Stream stream) {
    const cudaStream_t s = as_stream(stream);
    if (N > 0) {
        const auto blocks = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
        layernorm_dx_kernel<<<blocks, 32 * kRowsPerBlock, 0, s>>>(dx, dout, x, weight, mean, rstd, N, C);
    }
    const auto channel_blocks = static_cast<unsigned>((C + 31) / 32);
    layernorm_dweight_kernel<<<channel_blocks, dim3(32, 32), 0, s>>>(dweight, dbias, dout, x, mean, rstd, N, C);
    return static_cast<int>(cudaGetLastError());
}

template int layernorm_forward<float>(float*, float*, float*, const float*, const float*, const float*, int64_t,
                                      int64_t, float, Stream);
template int layernorm_forward<double>(double*, double*, double*, const double*, const double*, const double*,
                                       int64_t, int64_t, double, Stream);
template int layernorm_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                       const float*, const float*, int64_t, int64_t, Stream);
template int layernorm_backward<double>(double*, double*, double*, const double*, const double*, const double*,
                                        const double*, const double*, int64_t, int64_t, Stream);

}  // namespace minigrad::cuda
