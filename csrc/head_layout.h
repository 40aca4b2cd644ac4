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
// holds the head's hs numbers contiguously. The q of a fused projection qkv (B, T, 3C), heads side
// by side: side_by_side(T, 3C, hs) (k and v the same, from qkv + C and qkv + 2C).
struct HeadLayout {
    int64_t batch, head, row;
    // BH heads of (T, hs) one after another, as BH batches of one head (use NH = 1)
    static HeadLayout heads_first(int64_t T_, int64_t hs) { return {T_ * hs, 0, hs}; }
    // heads side by side in rows of `width` numbers, (B, T, width): qkv (width 3C) or an output (width C)
    static HeadLayout side_by_side(int64_t T_, int64_t width, int64_t hs) { return {T_ * width, hs, width}; }
    // the offset of head bh = b * NH + h
    MINIGRAD_HOST_DEVICE int64_t offset(int64_t bh, int64_t NH) const { return (bh / NH) * batch + (bh % NH) * head; }
};

}  // namespace minigrad
