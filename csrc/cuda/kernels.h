// The CUDA launchers of minigrad._C_cuda, declared without CUDA headers so that bindings_cuda.cpp
// (pybind11, compiled by the C++ compiler) never includes cuda_runtime.h.
//
// Every pointer is a device pointer to C-contiguous memory (attention's heads may lie inside a
// larger one). `stream` is a cudaStream_t passed as an integer (CuPy's current stream). Each launcher
// enqueues work (only sum_partials and copy_to_host also wait for it) and returns a cudaError_t as an
// int, 0 on success; error_string(code) says what it means. Same math as csrc/cpu/ and minigrad.kernels.
#pragma once

#include <cstdint>
#include <string>

#include "head_layout.h"

namespace minigrad::cuda {

using Stream = std::uintptr_t;

// Number of usable devices; 0 with the reason in *reason when there is none (no driver, no GPU).
int device_count(std::string* reason);
std::string error_string(int code);
int runtime_version();  // CUDART_VERSION the module was compiled against, e.g. 13000

// LayerNorm over the last axis: x, out (N, C); weight, bias (C,) (bias may be null); mean, rstd (N,).
template <class T>
int layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* weight, const T* bias, int64_t N, int64_t C,
                      T eps, Stream stream);
// dx (N, C); dweight, dbias (C,), summed over the rows in double in a fixed order (deterministic).
template <class T>
int layernorm_backward(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight, const T* mean,
                       const T* rstd, int64_t N, int64_t C, Stream stream);

// tanh-GELU of x for n elements, and its backward.
template <class T>
int gelu_forward(T* out, const T* x, int64_t n, Stream stream);
template <class T>
int gelu_backward(T* dx, const T* dout, const T* x, int64_t n, Stream stream);

// Attention over B*NH heads: q, k, v laid out as qkv_layout, out as out_layout (head_layout.h: (B, NH, T, hs)
// heads, or the heads side by side in qkv (B, T, 3C) and out (B, T, C)); lse (B, NH, T), each score row's
// log-sum-exp. probs (B, NH, T, T) is scratch the caller allocates.
template <class T>
int attention_forward(T* out, T* lse, T* probs, const T* q, const T* k, const T* v, int64_t B, int64_t NH,
                      int64_t T_, int64_t hs, HeadLayout qkv_layout, HeadLayout out_layout, bool is_causal,
                      Stream stream);
// dq, dk, dv laid out as qkv_layout, dout as out_layout; probs and dscores (B, NH, T, T) are scratch the caller
// allocates (P rebuilt from q, k and lse; dS between the two passes).
template <class T>
int attention_backward(T* dq, T* dk, T* dv, T* probs, T* dscores, const T* dout, const T* q, const T* k, const T* v,
                       const T* lse, int64_t B, int64_t NH, int64_t T_, int64_t hs, HeadLayout qkv_layout,
                       HeadLayout out_layout, bool is_causal, Stream stream);

// The kernels that take indices (targets, ids) set *bad (one int64 on the device, zeroed by the launcher)
// to 1 when one is outside [0, V), and never read or write out of bounds with it: the caller reads the
// flag back and raises.

// Softmax + cross-entropy over N rows of V logits: probs (N, V); loss (1,) the mean over the rows;
// row_losses (N,) is scratch.
template <class T>
int crossentropy_forward(T* loss, T* probs, double* row_losses, int64_t* bad, const T* logits, const int64_t* targets,
                         int64_t N, int64_t V, Stream stream);
template <class T>
int crossentropy_backward(T* dlogits, int64_t* bad, const T* probs, const int64_t* targets, double dloss, int64_t N,
                          int64_t V, Stream stream);

// dweight (V, C) = the rows of dout (N, C) summed by their ids (N,), in a fixed order (deterministic).
template <class T>
int embedding_backward(T* dweight, int64_t* bad, const T* dout, const int64_t* ids, int64_t N, int64_t C, int64_t V,
                       Stream stream);

// Copies `bytes` from the device to the host once the stream's work before it is done, and waits.
int copy_to_host(void* dst, const void* src, int64_t bytes, Stream stream);

// One AdamW step in place on p, m, v (n,) from g (n,), as csrc/cpu/adamw.h.
template <class T>
int adamw_update(T* p, const T* g, T* m, T* v, int64_t n, double lr, double beta1, double beta2, double eps,
                 double weight_decay, int64_t step, Stream stream);

// The global norm in two passes: sum_of_squares writes kNormBlocks partial sums of g^2 (in double) to
// partials; sum_partials adds count partials in a fixed order, copies the total to *total and waits.
constexpr int kNormBlocks = 64;
template <class T>
int sum_of_squares(double* partials, const T* g, int64_t n, Stream stream);
int sum_partials(double* total, double* partials, int64_t count, Stream stream);  // partials has count + 1 entries

}  // namespace minigrad::cuda
