// Argument checks on shapes that both binding modules, _C and _C_cuda, make the same way.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

namespace minigrad::bindings {

// A shape as Python prints it: "(2, 3)", "(4,)", "()".
template <class Int>
std::string shape_str(const std::vector<Int>& s) {
    std::string out = "(";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + (s.size() == 1 ? ",)" : ")");
}

// The shape of qkv (B, T, 3C) as c_attn makes it, C = n_head * hs: returns (B, T, C, hs), or raises a
// one-line ValueError that names fn.
template <class Int>
std::tuple<int64_t, int64_t, int64_t, int64_t> qkv_dims(const std::vector<Int>& s, int64_t n_head, const char* fn) {
    if (s.size() != 3 || s[2] % 3 != 0)
        throw pybind11::value_error(std::string(fn) + ": qkv must be (B, T, 3C), q, k and v side by side, got shape " +
                                    shape_str(s));
    const int64_t C = s[2] / 3;
    if (n_head < 1 || C == 0 || C % n_head != 0)
        throw pybind11::value_error(std::string(fn) + ": n_head must be >= 1 and divide C = " + std::to_string(C) +
                                    ", got " + std::to_string(n_head));
    return {s[0], s[1], C, C / n_head};
}

}  // namespace minigrad::bindings
