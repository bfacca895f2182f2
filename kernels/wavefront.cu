// Wavefront substitution for the inverse (x = A⁻¹ y) and for its adjoint (u = A⁻ᵀ g).
//
// On entry `data` holds z = P·rhs (channel_mix); on exit the solution s of
//     s[p] = z[p] − Σ_{t ≠ anchor} Q_t · s[p + off'_t]
// (P, Q_t from prepare.cu). The kernel works in "canonical" coordinates (hc, wc), in which
// every read offset off'_t points up-left: real row = flip_h ? H−1−hc : hc (same for columns),
// and the canonical offset of tap (i, j) is (th·(i − ai), tw·(j − aj)) ≤ 0. The host picks
// flips and signs from the order and the direction, so one kernel serves all four orders and
// both directions by index mapping alone.
//
// One block per sample sweeps the H+W−1 anti-diagonals hc + wc = d; the pixels of a diagonal
// are independent, and each (pixel, 4 output channels) is a dot product over the earlier
// diagonals, shared by `split` lanes of a warp, followed by one block barrier per diagonal.
// Where the solution is kept
// while the sweep needs it:
//   WINDOW_FULL:   the whole sample in shared memory (loaded and stored coalesced);
//   WINDOW_RING:   the last KH+KW−1 diagonals in a shared ring [slot][c][hc]; z is read from and
//                  the solution written to global memory as the sweep passes;
//   WINDOW_GLOBAL: nothing in shared memory but (maybe) the coefficients; global reads of what
//                  this block wrote before the last barrier (visible to the block).

#define WINDOW_FULL 0
#define WINDOW_RING 1
#define WINDOW_GLOBAL 2
// Taps whose offsets are tabled in static shared memory (larger kernels compute the rest).
#define MAX_TABLE_TAPS 64

template <typename T, int WINDOW>
__device__ void sweep_impl(T* data, const T* __restrict__ prep, int C, int H, int W, int KH,
                           int KW, int ai, int aj, int th, int tw, int flip_h, int flip_w,
                           int ring, int q_in_smem, int split, int ci_lanes) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* smem = reinterpret_cast<T*>(smem_raw);
    const int Cp = round_up4(C), G = Cp / 4, KK = KH * KW, anchor_t = ai * KW + aj;
    const i64 HW = (i64)H * W, CHW = C * HW;
    T* img = data + (i64)blockIdx.x * CHW;
    const T* q = prep + 2 * (i64)C * Cp;
    T* win = smem;
    if (q_in_smem) {
        for (i64 e = threadIdx.x; e < (i64)KK * C * Cp; e += blockDim.x) smem[e] = q[e];
        q = smem;
        win = smem + (i64)KK * C * Cp;
    }
    if (WINDOW == WINDOW_FULL) {
        for (i64 e = threadIdx.x; e < CHW; e += blockDim.x) win[e] = img[e];
    }
    __syncthreads();

    // Thread = (pixel slot, channel group g, lane): `split` consecutive lanes (a power of two
    // <= 32, inside one warp) share one dot product over the (tap, ci) pairs and add up with
    // shuffles, so that short diagonals still keep many threads busy. The thread's role is
    // fixed for the whole sweep: all index divisions happen here, once.
    const int lane = threadIdx.x & (split - 1);
    const int slot = threadIdx.x / split;
    const int g = slot % G;
    const int k0 = slot / G;
    const int kstep = blockDim.x / (split * G);  // pixels of a diagonal per pass (>= 1)
    const bool has_role = k0 < kstep;
    const int tap_first = lane / ci_lanes, tap_step = split / ci_lanes;
    const int ci_first = lane & (ci_lanes - 1);
    const i64 cstride = WINDOW == WINDOW_RING ? (i64)H : HW;
    // Off-anchor taps: weight index and canonical offset, computed once per block.
    __shared__ int tap_t[MAX_TABLE_TAPS], tap_dh[MAX_TABLE_TAPS], tap_dw[MAX_TABLE_TAPS];
    for (int tn = threadIdx.x; tn < KK - 1 && tn < MAX_TABLE_TAPS; tn += blockDim.x) {
        const int t = tn + (tn >= anchor_t);
        tap_t[tn] = t;
        tap_dh[tn] = th * (t / KW - ai);
        tap_dw[tn] = tw * (t % KW - aj);
    }
    __syncthreads();
    for (int d = 0; d < H + W - 1; ++d) {
        const int h_lo = max(0, d - (W - 1)), h_hi = min(d, H - 1);
        const int npix = h_hi - h_lo + 1;
        for (int kb = 0; kb < npix; kb += kstep) {  // uniform trip count: shuffles below
            const int k = kb + k0;
            const bool active = has_role && k < npix;
            const int hc = h_lo + k, wc = d - hc;
            T acc[4] = {T(0), T(0), T(0), T(0)};
            if (active) {
                for (int tn = tap_first; tn < KK - 1; tn += tap_step) {
                    int t, hs, ws;
                    if (tn < MAX_TABLE_TAPS) {
                        t = tap_t[tn];
                        hs = hc + tap_dh[tn];
                        ws = wc + tap_dw[tn];
                    } else {
                        t = tn + (tn >= anchor_t);
                        hs = hc + th * (t / KW - ai);
                        ws = wc + tw * (t % KW - aj);
                    }
                    if (hs < 0 || ws < 0) continue;
                    const T* src;
                    if (WINDOW == WINDOW_RING) {
                        src = win + (i64)((hs + ws) % ring) * C * H + hs;
                    } else {
                        const int hsr = flip_h ? H - 1 - hs : hs, wsr = flip_w ? W - 1 - ws : ws;
                        src = (WINDOW == WINDOW_FULL ? win : img) + (i64)hsr * W + wsr;
                    }
                    const Quad<T>* qt = reinterpret_cast<const Quad<T>*>(q) + (i64)t * C * G + g;
#pragma unroll 4
                    for (int ci = ci_first; ci < C; ci += ci_lanes) {
                        const T v = src[ci * cstride];
                        const Quad<T> c = qt[ci * G];
#pragma unroll
                        for (int kq = 0; kq < 4; ++kq) acc[kq] += c.v[kq] * v;
                    }
                }
            }
            for (int off = split >> 1; off > 0; off >>= 1) {
#pragma unroll
                for (int kq = 0; kq < 4; ++kq) acc[kq] += __shfl_xor_sync(0xffffffffu, acc[kq], off);
            }
            if (active && lane == 0) {
                const int hr = flip_h ? H - 1 - hc : hc, wr = flip_w ? W - 1 - wc : wc;
                const i64 pix = (i64)hr * W + wr;
#pragma unroll
                for (int kq = 0; kq < 4; ++kq) {
                    const int co = 4 * g + kq;
                    if (co >= C) continue;
                    T* at = (WINDOW == WINDOW_FULL ? win : img) + co * HW + pix;
                    const T s = *at - acc[kq];  // z − Σ Q x
                    *at = s;
                    if (WINDOW == WINDOW_RING) win[((i64)(d % ring) * C + co) * H + hc] = s;
                }
            }
        }
        __syncthreads();
    }
    if (WINDOW == WINDOW_FULL) {
        for (i64 e = threadIdx.x; e < CHW; e += blockDim.x) img[e] = win[e];
    }
}

#define INV_CONV_SWEEP_ENTRY(NAME, T, WINDOW)                                                  \
    extern "C" __global__ void __launch_bounds__(1024) NAME(T* data, const T* prep, int C, int H, int W, int KH,       \
                                    int KW, int ai, int aj, int th, int tw, int flip_h,        \
                                    int flip_w, int ring, int q_in_smem, int split,            \
                                    int ci_lanes) {                                            \
        sweep_impl<T, WINDOW>(data, prep, C, H, W, KH, KW, ai, aj, th, tw, flip_h, flip_w,     \
                              ring, q_in_smem, split, ci_lanes);                               \
    }
INV_CONV_SWEEP_ENTRY(sweep_full_f32, float, WINDOW_FULL)
INV_CONV_SWEEP_ENTRY(sweep_full_f64, double, WINDOW_FULL)
INV_CONV_SWEEP_ENTRY(sweep_ring_f32, float, WINDOW_RING)
INV_CONV_SWEEP_ENTRY(sweep_ring_f64, double, WINDOW_RING)
INV_CONV_SWEEP_ENTRY(sweep_global_f32, float, WINDOW_GLOBAL)
INV_CONV_SWEEP_ENTRY(sweep_global_f64, double, WINDOW_GLOBAL)
