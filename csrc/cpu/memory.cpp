#include "cpu/memory.h"

#include <cstdlib>  // defines __GLIBC__ on glibc systems, which the test below needs

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace minigrad {

// glibc serves a block of 128 KiB or more with its own mmap, and munmaps it on free: each of a
// training step's activations (megabytes) then costs one page fault per 4 KiB page, every step, and
// the kernel zeroes each page (15,000 faults and ~25% of a step on the char-GPT). With these settings
// large blocks come from the heap and freed ones stay there, so the next step reuses them. The price:
// the process keeps its peak memory until it exits, as PyTorch's caching allocator does on a GPU.
bool retain_freed_memory() {
#if defined(__GLIBC__)
    constexpr int kOneGiB = 1 << 30;
    // both return 1 on success; M_MMAP_THRESHOLD's largest allowed value is 32 MiB on 64-bit glibc
    const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
    const bool trim_ok = mallopt(M_TRIM_THRESHOLD, kOneGiB) == 1;
    return mmap_ok && trim_ok;
#else
    return false;
#endif
}

}  // namespace minigrad
