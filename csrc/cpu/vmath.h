// Small math helpers written so that GCC/Clang vectorise the loops that call them without
// -ffast-math: a branch-free exp, and sums/maxima over 8 independent lanes; and Simd<T>, explicit
// 64-byte vectors (with the same exp) for kernels that lay out their own loops.
//
// Why: std::exp is an opaque library call, one element at a time; and a plain `s += x[i]` loop
// is a chain the compiler may not reorder under IEEE rules. Eight partial sums are eight chains
// it may run side by side in SIMD registers (NumPy's own sums use eight too).
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

// MINIGRAD_SIMD_CLONES before a kernel's hot function compiles it three times, for AVX-512
// (x86-64-v4), AVX2 + FMA (x86-64-v3) and baseline x86-64, and lets the loader pick the best one
// the CPU running it has (GCC's function multi-versioning, through an ifunc). The wheel still runs
// on any x86-64, and the loops vectorise 16 floats wide where the CPU can. With FMA the last bit
// of a result may differ between machines; the tests compare with tolerances, never bit for bit
// across machines. Elsewhere (Clang, macOS, ARM, older GCC) it is empty: one baseline build.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && defined(__linux__)
#define MINIGRAD_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MINIGRAD_SIMD_CLONES
#endif

// MINIGRAD_INLINE on a helper of such a kernel makes GCC compile it into each clone. Left to itself,
// GCC may keep one baseline copy of a helper called from two places, and every 64-byte vector then
// goes through memory on each call (measured: a matrix product 40x slower).
#if defined(__GNUC__)
#define MINIGRAD_INLINE inline __attribute__((always_inline))
#else
#define MINIGRAD_INLINE inline
#endif

namespace minigrad {

// exp(x) = 2^n exp(r) with n = round(x / ln 2) and r = x - n ln 2 in [-ln2/2, ln2/2], where the
// Taylor polynomial of exp(r) is exact to rounding (degree 13 for double, 7 for float).
// NOTE: returns 0 below ln(smallest normal) instead of a subnormal, and +inf a little before the
// true overflow point (709 for double, 88 for float), so that 2^n stays a normal number.
template <class T>
struct ExpTraits;

template <>
struct ExpTraits<double> {
    using Bits = uint64_t;
    static constexpr double hi = 709.0, lo = -708.39;
    static constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    static constexpr double shifter = 6755399441055744.0;  // 1.5 * 2^52: x + shifter rounds x to an integer
    static constexpr int mantissa_bits = 52, exponent_bias = 1023, degree = 13;
};

template <>
struct ExpTraits<float> {
    using Bits = uint32_t;
    static constexpr float hi = 88.0f, lo = -87.33f;
    static constexpr float ln2_hi = 0.693145751953125f, ln2_lo = 1.428606765330187045e-06f;
    static constexpr float shifter = 12582912.0f;  // 1.5 * 2^23
    static constexpr int mantissa_bits = 23, exponent_bias = 127, degree = 7;
};

// 1/k! for k = 0..13, exact to double rounding.
constexpr double kInverseFactorial[14] = {
    1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320, 1.0 / 362880,
    1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800};

// c ? a : b for one number (c a bool), or lane by lane for vectors (c the all-ones-or-zeros lanes that
// comparing two vectors gives), as bit operations: GCC compiles those to the vector instructions
// every time, where its `?:` on vectors sometimes falls back to one lane at a time.
template <class T>
MINIGRAD_INLINE T select(bool c, T a, T b) {
    return c ? a : b;
}
template <class M, class V>
MINIGRAD_INLINE V select(M c, V a, V b) {
    static_assert(sizeof(M) == sizeof(V), "select: a lane mask and a vector of the same size");
    M a_bits, b_bits;
    std::memcpy(&a_bits, &a, sizeof a);
    std::memcpy(&b_bits, &b, sizeof b);
    const M bits = (a_bits & c) | (b_bits & ~c);
    V out;
    std::memcpy(&out, &bits, sizeof out);
    return out;
}

// The steps of exp for one number (V = T, B = its bits as an unsigned integer) or for every lane of
// a vector (V = Simd<T>::Vec, B = Simd<T>::Bits): the same branch-free code serves both.
template <class T, class V, class B>
MINIGRAD_INLINE V exp_steps(V x) {
    using E = ExpTraits<T>;
    constexpr T log2e = T(1.4426950408889634);
    V kd = x * log2e + E::shifter;  // n sits in the low bits of kd's mantissa
    B n_bits;
    std::memcpy(&n_bits, &kd, sizeof(V));
    kd -= E::shifter;  // n as a floating-point number
    V r = (x - kd * E::ln2_hi) - kd * E::ln2_lo;  // ln 2 in two parts: kd * ln2_hi is exact
    V p = V{} + T(kInverseFactorial[E::degree]);  // Horner: sum_k r^k / k!
#pragma GCC unroll 16
    for (int k = E::degree - 1; k >= 0; --k) p = p * r + T(kInverseFactorial[k]);
    B scale_bits = (n_bits + typename E::Bits(E::exponent_bias)) << E::mantissa_bits;  // 2^n
    V scale;
    std::memcpy(&scale, &scale_bits, sizeof(V));
    V y = p * scale;  // garbage outside [lo, hi], replaced below; a NaN x gives a NaN r, p and y
    y = select(x > E::hi, V{} + std::numeric_limits<T>::infinity(), y);
    return select(x < E::lo, V{}, y);
}

template <class T>
inline T vexp(T x) {
    return exp_steps<T, T, typename ExpTraits<T>::Bits>(x);
}

// One 64-byte SIMD register's worth of T (16 floats or 8 doubles), with GCC/Clang's vector
// extension: `a += s * b` on Vec is one fused multiply-add per lane (one AVX-512 instruction, or
// 2 AVX2 or 4 SSE2 ones in the other clones). load/store take any address (unaligned moves).
template <class T>
struct Simd {
    typedef T Vec __attribute__((vector_size(64)));
    static constexpr int64_t width = 64 / sizeof(T);
    MINIGRAD_INLINE static Vec load(const T* p) {
        Vec v;
        std::memcpy(&v, p, sizeof v);
        return v;
    }
    MINIGRAD_INLINE static void store(T* p, Vec v) { std::memcpy(p, &v, sizeof v); }
    typedef typename ExpTraits<T>::Bits Bits __attribute__((vector_size(64)));
    // signed integers of T's size, one per lane: what comparing two Vecs gives, and shuffle indices
    typedef std::conditional_t<sizeof(T) == 4, int32_t, int64_t> Lane;
    typedef Lane Mask __attribute__((vector_size(64)));
    MINIGRAD_INLINE static Vec exp(Vec x) { return exp_steps<T, Vec, Bits>(x); }  // vexp of every lane
    MINIGRAD_INLINE static Vec max(Vec a, Vec b) { return select(a > b, a, b); }  // lane by lane
    // the sum and the max of the lanes, as trees of halves (4 steps for 16 floats, not a chain of 15)
    MINIGRAD_INLINE static T sum(Vec v) {
        return fold<sizeof(Vec)>(v, [](auto a, auto b) { return a + b; });
    }
    MINIGRAD_INLINE static T max(Vec v) {
        return fold<sizeof(Vec)>(v, [](auto a, auto b) { return select(a > b, a, b); });
    }

  private:
    // op(op(low half, high half) ...) down to one number; a vector of Bytes bytes
    template <int Bytes, class V, class Op>
    MINIGRAD_INLINE static T fold(V v, Op op) {
        if constexpr (Bytes == sizeof(T)) {
            T x;
            std::memcpy(&x, &v, sizeof x);
            return x;
        } else {
            typedef T Half __attribute__((vector_size(Bytes / 2)));
            Half low, high;
            std::memcpy(&low, &v, sizeof low);
            std::memcpy(&high, reinterpret_cast<const char*>(&v) + sizeof low, sizeof high);
            return fold<Bytes / 2>(op(low, high), op);
        }
    }
};

constexpr int kLanes = 8;

// sum_{i < n} f(i) in 8 lanes.
template <class Acc, class F>
inline Acc lane_sum(int64_t n, F f) {
    Acc acc[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (int l = 0; l < kLanes; ++l) acc[l] += f(i + l);
    Acc s = 0;  // the tail, kept apart: an acc[i % kLanes] here would keep acc out of registers
    for (; i < n; ++i) s += f(i);
    for (int l = 0; l < kLanes; ++l) s += acc[l];
    return s;
}

// max_{i < n} x[i] for n >= 1, in 8 lanes (a NaN in x may or may not win, as in any max).
template <class T>
inline T lane_max(const T* x, int64_t n) {
    T acc[kLanes];
    for (int l = 0; l < kLanes; ++l) acc[l] = x[0];
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (int l = 0; l < kLanes; ++l) acc[l] = x[i + l] > acc[l] ? x[i + l] : acc[l];
    for (; i < n; ++i) acc[0] = x[i] > acc[0] ? x[i] : acc[0];
    T m = acc[0];
    for (int l = 1; l < kLanes; ++l) m = acc[l] > m ? acc[l] : m;
    return m;
}

}  // namespace minigrad
