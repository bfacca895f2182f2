// Shared helpers for every kernel of inv_conv. NVRTC compiles this file first, followed by
// the other kernels/*.cu files, as one program (see `program_source` in src/cuda/kernels.rs).
//
// Layouts (all contiguous): images NCHW, weight (C, C, KH, KW). Tap t = i * KW + j; its
// forward read offset is (i - anchor_i, j - anchor_j). The "prepared" scratch buffer that
// `prepare_*` fills holds, in elements of T:
//   [0,        C*Cp)            L^{-1}, row-major with row stride Cp (inverse ops only)
//   [C*Cp,     2*C*Cp)          P^T: P[co][c] stored at c*Cp + co   (inverse ops only)
//   [2*C*Cp,   (2+KK)*C*Cp)     Q_t^T: Q_t[co][ci] stored at (t*C + ci)*Cp + co
// where Cp = C rounded up to a multiple of 4 (the padding columns hold zeros), so that a
// thread can read the coefficients of 4 consecutive output channels as one vector.

typedef long long i64;

template <typename T>
struct __align__(4 * sizeof(T)) Quad {
    T v[4];
};

__device__ __forceinline__ int round_up4(int c) { return (c + 3) & ~3; }

// acc[k] += Σ_ci q[ci·q_stride].v[k] · src[ci·src_stride]: one tap's contribution to 4 output
// channels (one Quad of coefficients per input value).
template <typename T, typename S>
__device__ __forceinline__ void quad_dot(T (&acc)[4], const T* __restrict__ src, S src_stride,
                                         const Quad<T>* __restrict__ q, S q_stride, int C) {
#pragma unroll 4
    for (int ci = 0; ci < C; ++ci) {
        const T v = src[ci * src_stride];
        const Quad<T> c = q[ci * q_stride];
#pragma unroll
        for (int k = 0; k < 4; ++k) acc[k] += c.v[k] * v;
    }
}

// Effective weight: the anchor tap's C x C matrix is unit lower-triangular; the masked
// entries of `w` are never read (they may hold anything, NaN included).
template <typename T>
__device__ __forceinline__ T effective_weight(const T* __restrict__ w, int C, int KK, int co,
                                              int ci, int t, int anchor_t) {
    if (t == anchor_t && ci >= co) return ci == co ? T(1) : T(0);
    return w[((i64)co * C + ci) * KK + t];
}
