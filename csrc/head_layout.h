// Where the heads of an attention input or output lie in memory; shared by csrc/cpu and csrc/cuda.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define MINIGRAD_HOST_DEVICE __host__ __device__  // callable from CUDA kernels too
#else
#define MINIGRAD_HOST_DEVICE
#endif

namespace minigrad {

// Row t of head h of batch element b starts at b * batch + h * head + t * row (in elements), and
// holds the head's hs numbers contiguously. Heads as (B, NH, T, hs): {NH*T*hs, T*hs, hs}. The q of
// a fused projection qkv (B, T, 3C), heads side by side: {T*3C, hs, 3C} (k and v the same, from
// qkv + C and qkv + 2C). An output (B, T, C) with the heads side by side: {T*C, hs, C}.
struct HeadLayout {
    int64_t batch, head, row;
    // the offset of head bh = b * NH + h
    MINIGRAD_HOST_DEVICE int64_t offset(int64_t bh, int64_t NH) const { return (bh / NH) * batch + (bh % NH) * head; }
};

}  // namespace minigrad
