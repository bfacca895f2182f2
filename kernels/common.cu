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

// L⁻¹ of a unit lower-triangular C × C matrix L, whose strictly lower entries are l(r, m)
// (m < r), by forward substitution: row r of a column is -Σ_{col ≤ m < r} l(r, m)·L⁻¹[m][col],
// summed in ascending m by both variants below, so their results are equal bit for bit.
// `linv` is row-major with row stride ld >= C; columns [C, ld) get zeros. Every thread of the
// block must call it; it ends with a block barrier.
//  - C ≤ 64: a warp per column, lane l holding rows l and l + 32 (R = 2 rows per lane; R = 1
//    for C ≤ 32). At step m row m is final; a shuffle hands it to the rows below, which
//    subtract their term. The dependent chain is C shuffles, not the C²/2 multiply-adds of a
//    thread walking a whole column.
//  - otherwise: a thread per column, top to bottom (a column needs only its own earlier rows).
template <int R, typename T, typename Lower>
__device__ __forceinline__ void unit_lower_inverse_warp(Lower l, T* linv, int C, int ld) {
    const int lane = threadIdx.x % 32;
    for (int col = threadIdx.x / 32; col < ld; col += blockDim.x / 32) {
        T v[R];
#pragma unroll
        for (int i = 0; i < R; ++i) v[i] = lane + 32 * i == col ? T(1) : T(0);
        for (int m = col; m < C - 1; ++m) {
            T lm[R];
#pragma unroll
            for (int i = 0; i < R; ++i) {
                const int r = lane + 32 * i;
                lm[i] = r > m && r < C ? l(r, m) : T(0);
            }
            const T vm = __shfl_sync(0xffffffffu, R > 1 && m >= 32 ? v[R - 1] : v[0], m % 32);
#pragma unroll
            for (int i = 0; i < R; ++i) {
                const int r = lane + 32 * i;
                if (r > m && r < C) v[i] -= lm[i] * vm;
            }
        }
#pragma unroll
        for (int i = 0; i < R; ++i) {
            const int r = lane + 32 * i;
            if (r < C) linv[(i64)r * ld + col] = v[i];
        }
    }
}

template <typename T, typename Lower>
__device__ void unit_lower_inverse(Lower l, T* linv, int C, int ld) {
    if (C <= 32 && blockDim.x % 32 == 0) {
        unit_lower_inverse_warp<1, T>(l, linv, C, ld);
    } else if (C <= 64 && blockDim.x % 32 == 0) {
        unit_lower_inverse_warp<2, T>(l, linv, C, ld);
    } else {
        for (int col = threadIdx.x; col < ld; col += blockDim.x) {
            for (int r = 0; r < C; ++r) {
                T v = T(0);
                if (col == r) {
                    v = T(1);
                } else if (col < r) {
                    for (int m = col; m < r; ++m) v -= l(r, m) * linv[(i64)m * ld + col];
                }
                linv[(i64)r * ld + col] = v;
            }
        }
    }
    __syncthreads();
}

// One coefficient of the inverse's tap t ≠ anchor: (L⁻¹ M_t)[co][ci], or for the adjoint
// (L⁻ᵀ M_tᵀ)[co][ci] = Σ_m L⁻¹[m][co] M_t[ci][m], with M_t[a][b] = w[a][b][t] and L⁻¹
// lower-triangular (row stride ld), so only m <= co (m >= co for the adjoint) contribute.
template <typename T>
__device__ __forceinline__ T inverse_tap_coef(const T* __restrict__ w, const T* linv, int ld,
                                              int C, int KK, int co, int ci, int t, bool adjoint) {
    T v = T(0);
    if (!adjoint) {
        for (int m = 0; m <= co; ++m) v += linv[(i64)co * ld + m] * w[((i64)m * C + ci) * KK + t];
    } else {
        for (int m = co; m < C; ++m) v += linv[(i64)m * ld + co] * w[((i64)ci * C + m) * KK + t];
    }
    return v;
}
