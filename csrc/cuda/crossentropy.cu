// Softmax + cross-entropy: a block per row for probs and the row's loss, then one block for the mean.
#include "cuda/common.cuh"

namespace minigrad::cuda {

constexpr int kThreads = 128;

// probs[n, :] = softmax(logits[n, :]); row_losses[n] = logsumexp(logits[n, :]) - logits[n, t_n], in double.
template <class T>
__global__ void crossentropy_rows_kernel(T* probs, double* row_losses, int64_t* bad, const T* logits,
                                         const int64_t* targets, int64_t V) {
    __shared__ T red[32];
    const int64_t n = blockIdx.x;
    const T* x = logits + n * V;  // (V,)
    T* p = probs + n * V;
    // NOTE: the log-sum-exp trick: shift the row by its max so exp never overflows.
    T m = neg_inf<T>();
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) m = dmax(m, x[j]);
    m = block_max(m, red);
    T sum = 0;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        p[j] = dexp(x[j] - m);
        sum += p[j];
    }
    sum = block_sum(sum, red);
    const T inv = T(1) / sum;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) p[j] *= inv;
    if (threadIdx.x == 0) {
        const int64_t t = targets[n];
        if (t >= 0 && t < V)
            row_losses[n] = static_cast<double>(dlog(sum) - (x[t] - m));
        else  // never read out of bounds: flagged, and the binding raises
            *bad = 1;
    }
}

// loss[0] = mean of row_losses, added in double in a fixed order by one block.
template <class T>
__global__ void mean_kernel(T* loss, const double* row_losses, int64_t N) {
    __shared__ double red[32];
    double sum = 0.0;
    for (int64_t n = threadIdx.x; n < N; n += blockDim.x) sum += row_losses[n];
    sum = block_sum(sum, red);
    if (threadIdx.x == 0) loss[0] = static_cast<T>(sum / static_cast<double>(N));
}

// dlogits = (probs - onehot(targets)) dloss / N, one thread per element (a target outside [0, V)
// matches no column; the thread of column 0 flags it).
template <class T>
__global__ void crossentropy_backward_kernel(T* dlogits, int64_t* bad, const T* probs, const int64_t* targets,
                                             T scale, int64_t N, int64_t V) {
    for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < N * V; e += int64_t(gridDim.x) * blockDim.x) {
        const int64_t n = e / V, j = e % V;
        if (j == 0 && (targets[n] < 0 || targets[n] >= V)) *bad = 1;
        dlogits[e] = (j == targets[n] ? probs[e] - T(1) : probs[e]) * scale;
    }
}

template <class T>
int crossentropy_forward(T* loss, T* probs, double* row_losses, int64_t* bad, const T* logits, const int64_t* targets,
                         int64_t N, int64_t V, Stream stream) {
    cudaError_t e = cudaMemsetAsync(bad, 0, sizeof(int64_t), as_stream(stream));
    if (e != cudaSuccess) return static_cast<int>(e);
    crossentropy_rows_kernel<<<static_cast<unsigned>(N), kThreads, 0, as_stream(stream)>>>(probs, row_losses, bad,
                                                                                          logits, targets, V);
    mean_kernel<<<1, 256, 0, as_stream(stream)>>>(loss, row_losses, N);
    return static_cast<int>(cudaGetLastError());
}

template <class T>
int crossentropy_backward(T* dlogits, int64_t* bad, const T* probs, const int64_t* targets, double dloss, int64_t N,
                          int64_t V, Stream stream) {
    cudaError_t e = cudaMemsetAsync(bad, 0, sizeof(int64_t), as_stream(stream));
    if (e != cudaSuccess) return static_cast<int>(e);
    const T scale = static_cast<T>(dloss / static_cast<double>(N));
    crossentropy_backward_kernel<<<grid_for(N * V, 256), 256, 0, as_stream(stream)>>>(dlogits, bad, probs, targets,
                                                                                      scale, N, V);
    return static_cast<int>(cudaGetLastError());
}

template int crossentropy_forward<float>(float*, float*, double*, int64_t*, const float*, const int64_t*, int64_t,
                                         int64_t, Stream);
template int crossentropy_forward<double>(double*, double*, double*, int64_t*, const double*, const int64_t*, int64_t,
                                          int64_t, Stream);
template int crossentropy_backward<float>(float*, int64_t*, const float*, const int64_t*, double, int64_t, int64_t,
                                          Stream);
template int crossentropy_backward<double>(double*, int64_t*, const double*, const int64_t*, double, int64_t, int64_t,
                                           Stream);

}  // namespace minigrad::cuda
