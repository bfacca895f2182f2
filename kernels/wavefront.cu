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

    // Thread = (item, lane): `split` consecutive lanes (a power of two <= 32, inside one warp)
    // share one item's dot product over the (tap, ci) pairs and add up with shuffles, so that
    // short diagonals still keep many threads busy.
    const int lane = threadIdx.x & (split - 1);
    const i64 cstride = WINDOW == WINDOW_RING ? (i64)H : HW;
    for (int d = 0; d < H + W - 1; ++d) {
        const int h_lo = max(0, d - (W - 1)), h_hi = min(d, H - 1);
        const int npix = h_hi - h_lo + 1;
        const int nthreads = npix * G * split;
        for (int base = 0; base < nthreads; base += blockDim.x) {
            const int idx = base + threadIdx.x;
            const bool active = idx < nthreads;
            const int item = idx / split;
            const int g = item / npix;
            const int hc = h_lo + (item - g * npix), wc = d - hc;
            T acc[4] = {T(0), T(0), T(0), T(0)};
            if (active) {
                // Lane = (tap lane, channel lane): taps tn = tap_lane, tap_lane + tap_lanes, ...
                // among the off-anchor taps; for each, channels ci = ci_lane + k·ci_lanes.
                // Per-tap index work stays outside the channel loop.
                for (int tn = lane / ci_lanes; tn < KK - 1; tn += split / ci_lanes) {
                    const int t = tn + (tn >= anchor_t);
                    const int i = t / KW, j = t - (t / KW) * KW;
                    const int hs = hc + th * (i - ai), ws = wc + tw * (j - aj);
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
                    for (int ci = lane & (ci_lanes - 1); ci < C; ci += ci_lanes) {
                        const T v = src[ci * cstride];
                        const Quad<T> c = qt[ci * G];
#pragma unroll
                        for (int k = 0; k < 4; ++k) acc[k] += c.v[k] * v;
                    }
                }
            }
            for (int off = split >> 1; off > 0; off >>= 1) {
#pragma unroll
                for (int k = 0; k < 4; ++k) acc[k] += __shfl_xor_sync(0xffffffffu, acc[k], off);
            }
            if (active && lane == 0) {
                const int hr = flip_h ? H - 1 - hc : hc, wr = flip_w ? W - 1 - wc : wc;
                const i64 pix = (i64)hr * W + wr;
#pragma unroll
                for (int k = 0; k < 4; ++k) {
                    const int co = 4 * g + k;
                    if (co >= C) continue;
                    T* at = (WINDOW == WINDOW_FULL ? win : img) + co * HW + pix;
                    const T s = *at - acc[k];  // z − Σ Q x
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
