// How the C library's malloc treats the large buffers NumPy asks for.
#pragma once

namespace minigrad {

// Keep freed memory in the process for the next allocation instead of giving it back to the OS.
// Returns false where this C library has no such setting (anything but glibc).
bool retain_freed_memory();

}  // namespace minigrad
