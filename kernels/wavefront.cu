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

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define INV_CONV_HAS_CLUSTERS 1
__device__ __forceinline__ unsigned cluster_rank() {
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}
__device__ __forceinline__ void cluster_barrier() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::
                     : "memory");
}
__device__ __forceinline__ unsigned cluster_map(const void* p, unsigned rank) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    unsigned r;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(rank));
    return r;
}
__device__ __forceinline__ void cluster_store(unsigned addr, float v) {
    asm volatile("st.shared::cluster.f32 [%0], %1;" ::"r"(addr), "f"(v) : "memory");
}
__device__ __forceinline__ void cluster_store(unsigned addr, double v) {
    asm volatile("st.shared::cluster.f64 [%0], %1;" ::"r"(addr), "d"(v) : "memory");
}
#else
#define INV_CONV_HAS_CLUSTERS 0
#endif

#define WINDOW_FULL 0
#define WINDOW_RING 1
#define WINDOW_GLOBAL 2
// Taps whose offsets are tabled in static shared memory (larger kernels compute the rest).
#define MAX_TABLE_TAPS 64

// NCTA > 1 (sm_90, `sweep_band{N}`): a cluster of NCTA CTAs per sample, CTA r owning the
// canonical rows [r·band, (r+1)·band) with a ring window (rows of its band plus the KH−1 rows
// above it, which its upper neighbour fills through DSMEM as it solves them: canonical offsets
// point up-left, so a band reads only its own rows and the KH−1 above). One cluster barrier per
// diagonal replaces the block barrier. The lanes per dot product are planned for the band's
// height, so the rounding can differ from a one-block sweep's; each launch shape is repeatable.
template <typename T, int WINDOW, int NCTA>
__device__ void sweep_impl(T* data, const T* __restrict__ prep, int C, int H, int W, int KH,
                           int KW, int ai, int aj, int th, int tw, int flip_h, int flip_w,
                           int ring, int q_in_smem, int split, int ci_lanes, int band) {
    static_assert(NCTA == 1 || WINDOW == WINDOW_RING, "bands keep a ring window");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* smem = reinterpret_cast<T*>(smem_raw);
    const int Cp = round_up4(C), G = Cp / 4, KK = KH * KW, anchor_t = ai * KW + aj;
    const i64 HW = (i64)H * W, CHW = C * HW;
    unsigned rank = 0;
#if INV_CONV_HAS_CLUSTERS
    if (NCTA > 1) rank = cluster_rank();
#endif
    // This CTA's rows [h0, h1); its ring holds rows [row0, row0 + rows).
    const int h0 = NCTA > 1 ? (int)rank * band : 0;
    const int h1 = NCTA > 1 ? min(H, h0 + band) : H;
    const int row0 = NCTA > 1 ? h0 - (KH - 1) : 0;
    const int rows = NCTA > 1 ? band + KH - 1 : H;
    T* img = data + (i64)(blockIdx.x / NCTA) * CHW;
    const T* q = prep + 2 * (i64)C * Cp;
    T* win = smem;
    if (q_in_smem) {
        for (i64 e = threadIdx.x; e < (i64)KK * C * Cp; e += blockDim.x) smem[e] = q[e];
        q = smem;
        win = smem + (i64)KK * C * Cp;
    }
    // Channel stride where `at` points below: the full window's channels are padded apart so
    // that lanes reading consecutive channels of one pixel hit different banks.
    const i64 wstride = WINDOW == WINDOW_FULL ? HW + INV_CONV_SWEEP_FULL_PAD : HW;
    if (WINDOW == WINDOW_FULL) {
        for (i64 e = threadIdx.x; e < CHW; e += blockDim.x) win[e / HW * wstride + e % HW] = img[e];
    }
    // The lower neighbour's ring, which this CTA's last KH−1 rows also go to.
    const bool push = NCTA > 1 && (int)rank + 1 < NCTA;
    unsigned remote = 0;
    (void)push;
    (void)remote;
#if INV_CONV_HAS_CLUSTERS
    if (push) remote = cluster_map(win, rank + 1);
#endif

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
    const i64 cstride = WINDOW == WINDOW_RING ? (i64)rows : wstride;
    // Off-anchor taps: weight index, canonical offset, and the read's offset from the pixel in
    // the full or global window (the flips make it a constant per tap), once per block.
    __shared__ int tap_t[MAX_TABLE_TAPS], tap_dh[MAX_TABLE_TAPS], tap_dw[MAX_TABLE_TAPS],
        tap_off[MAX_TABLE_TAPS];
    for (int tn = threadIdx.x; tn < KK - 1 && tn < MAX_TABLE_TAPS; tn += blockDim.x) {
        const int t = tn + (tn >= anchor_t);
        tap_t[tn] = t;
        tap_dh[tn] = th * (t / KW - ai);
        tap_dw[tn] = tw * (t % KW - aj);
        tap_off[tn] = (flip_h ? -tap_dh[tn] : tap_dh[tn]) * W + (flip_w ? -tap_dw[tn] : tap_dw[tn]);
    }
    __syncthreads();
#if INV_CONV_HAS_CLUSTERS
    if (NCTA > 1) cluster_barrier();  // every CTA's shared memory is live before any DSMEM store
#endif
    for (int d = 0; d < H + W - 1; ++d) {
        const int h_lo = max(h0, d - (W - 1)), h_hi = min(d, h1 - 1);
        const int npix = h_hi - h_lo + 1;
        for (int kb = 0; kb < npix; kb += kstep) {  // uniform trip count: shuffles below
            const int k = kb + k0;
            const bool active = has_role && k < npix;
            const int hc = h_lo + k, wc = d - hc;
            const int hr = flip_h ? H - 1 - hc : hc, wr = flip_w ? W - 1 - wc : wc;
            T* at = (WINDOW == WINDOW_FULL ? win : img) + (i64)hr * W + wr;
            // z, read before the dot product so that its latency overlaps it.
            T z[4];
            if (active && lane == 0) {
#pragma unroll
                for (int kq = 0; kq < 4; ++kq) z[kq] = 4 * g + kq < C ? at[(4 * g + kq) * wstride] : T(0);
            }
            T acc[4] = {T(0), T(0), T(0), T(0)};
            if (active) {
                for (int tn = tap_first; tn < KK - 1; tn += tap_step) {
                    int t, dh, dw, off;
                    if (tn < MAX_TABLE_TAPS) {
                        t = tap_t[tn];
                        dh = tap_dh[tn];
                        dw = tap_dw[tn];
                        off = tap_off[tn];
                    } else {
                        t = tn + (tn >= anchor_t);
                        dh = th * (t / KW - ai);
                        dw = tw * (t % KW - aj);
                        off = (flip_h ? -dh : dh) * W + (flip_w ? -dw : dw);
                    }
                    const int hs = hc + dh, ws = wc + dw;
                    if (hs < 0 || ws < 0) continue;
                    const T* src = WINDOW == WINDOW_RING
                                       ? win + (i64)((hs + ws) % ring) * C * rows + (hs - row0)
                                       : at + off;
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
                const i64 slot_off = (i64)(d % ring) * C;
#pragma unroll
                for (int kq = 0; kq < 4; ++kq) {
                    const int co = 4 * g + kq;
                    if (co >= C) continue;
                    const T s = z[kq] - acc[kq];  // z − Σ Q x
                    at[co * wstride] = s;
                    if (WINDOW == WINDOW_RING) win[(slot_off + co) * rows + (hc - row0)] = s;
#if INV_CONV_HAS_CLUSTERS
                    if (push && hc >= h1 - (KH - 1)) {  // the neighbour's row hc − h1 + KH − 1
                        const i64 e = (slot_off + co) * rows + (hc - h1 + KH - 1);
                        cluster_store(remote + (unsigned)(e * (i64)sizeof(T)), s);
                    }
#endif
                }
            }
        }
#if INV_CONV_HAS_CLUSTERS
        if (NCTA > 1) {
            cluster_barrier();
            continue;
        }
#endif
        __syncthreads();
    }
    if (WINDOW == WINDOW_FULL) {
        for (i64 e = threadIdx.x; e < CHW; e += blockDim.x) img[e] = win[e / HW * wstride + e % HW];
    }
}

#define INV_CONV_SWEEP_ENTRY(NAME, T, WINDOW, NCTA, ATTR)                                      \
    extern "C" __global__ void __launch_bounds__(INV_CONV_SWEEP_MAX_THREADS) ATTR NAME(          \
        T* data, const T* prep, int C, int H, int W, int KH, int KW, int ai, int aj, int th,    \
        int tw, int flip_h, int flip_w, int ring, int q_in_smem, int split, int ci_lanes,      \
        int band) {                                                                            \
        sweep_impl<T, WINDOW, NCTA>(data, prep, C, H, W, KH, KW, ai, aj, th, tw, flip_h,       \
                                    flip_w, ring, q_in_smem, split, ci_lanes, band);           \
    }
INV_CONV_SWEEP_ENTRY(sweep_full_f32, float, WINDOW_FULL, 1, )
INV_CONV_SWEEP_ENTRY(sweep_full_f64, double, WINDOW_FULL, 1, )
INV_CONV_SWEEP_ENTRY(sweep_ring_f32, float, WINDOW_RING, 1, )
INV_CONV_SWEEP_ENTRY(sweep_ring_f64, double, WINDOW_RING, 1, )
INV_CONV_SWEEP_ENTRY(sweep_global_f32, float, WINDOW_GLOBAL, 1, )
INV_CONV_SWEEP_ENTRY(sweep_global_f64, double, WINDOW_GLOBAL, 1, )
#if INV_CONV_HAS_CLUSTERS
INV_CONV_SWEEP_ENTRY(sweep_band2_f32, float, WINDOW_RING, 2, __cluster_dims__(2, 1, 1))
INV_CONV_SWEEP_ENTRY(sweep_band2_f64, double, WINDOW_RING, 2, __cluster_dims__(2, 1, 1))
INV_CONV_SWEEP_ENTRY(sweep_band4_f32, float, WINDOW_RING, 4, __cluster_dims__(4, 1, 1))
INV_CONV_SWEEP_ENTRY(sweep_band4_f64, double, WINDOW_RING, 4, __cluster_dims__(4, 1, 1))
INV_CONV_SWEEP_ENTRY(sweep_band8_f32, float, WINDOW_RING, 8, __cluster_dims__(8, 1, 1))
INV_CONV_SWEEP_ENTRY(sweep_band8_f64, double, WINDOW_RING, 8, __cluster_dims__(8, 1, 1))
#else
// Before sm_90 there are no clusters: the host never launches these (it checks the arch).
#define INV_CONV_NO_CLUSTER_ENTRY(NAME, T)                                                     \
    extern "C" __global__ void NAME(T*, const T*, int, int, int, int, int, int, int, int, int,  \
                                    int, int, int, int, int, int, int) {                       \
        __trap();                                                                              \
    }
INV_CONV_NO_CLUSTER_ENTRY(sweep_band2_f32, float)
INV_CONV_NO_CLUSTER_ENTRY(sweep_band2_f64, double)
INV_CONV_NO_CLUSTER_ENTRY(sweep_band4_f32, float)
INV_CONV_NO_CLUSTER_ENTRY(sweep_band4_f64, double)
INV_CONV_NO_CLUSTER_ENTRY(sweep_band8_f32, float)
INV_CONV_NO_CLUSTER_ENTRY(sweep_band8_f64, double)
#endif

// ---------------------------------------------------------------------------------------------
// sweep_tile: the ring-window sweep, re-mapped for C % 8 == 0.
//
// Lanes are pixels of the diagonal (consecutive hc: conflict-free ring reads) and a warp shares
// one (8-output-channel group, tap subset): the coefficient reads are warp broadcasts, two
// 16-byte loads and one ring load per 8 FMAs. `tsplit` warps split the off-anchor taps of one
// (pixel, group) and are summed in shared memory in a fixed order (deterministic).
// NCTA = 2: a thread-block cluster of two CTAs per sample (sm_90), each owning half of the
// output channels; every solution value is stored into both CTAs' rings (DSMEM), and one
// cluster barrier per diagonal replaces the block barrier. So a batch of 64 fills 128 SMs.
// Shared memory: Q for this CTA's channels [t][gl][ci][8], the ring [slot][c][hc] plus one
// all-zero slot (read by out-of-image taps, so the inner loop has no select), the partials.


template <typename T, int NCTA>
__device__ void sweep_tile_impl(T* data, const T* __restrict__ prep, int C, int H, int W, int KH,
                                int KW, int ai, int aj, int th, int tw, int flip_h, int flip_w,
                                int ring, int pw, int tsplit) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* smem = reinterpret_cast<T*>(smem_raw);
    const int Cp = round_up4(C), KK = KH * KW, anchor_t = ai * KW + aj;
    const int CoC = C / NCTA, Gc = CoC / 8;
    unsigned rank = 0;
#if INV_CONV_HAS_CLUSTERS
    if (NCTA > 1) rank = cluster_rank();
#endif
    const int co0 = (int)rank * CoC;
    const i64 HW = (i64)H * W, CHW = C * HW;
    T* img = data + (i64)(blockIdx.x / NCTA) * CHW;
    T* qs = smem;                                   // KK * C * CoC
    T* win = qs + (i64)KK * C * CoC;                // (ring + 1) * C * H, slot `ring` is zero
    T* red = win + (i64)(ring + 1) * C * H;         // (tsplit - 1) * CoC * pw
    const T* q = prep + 2 * (i64)C * Cp;
    // qs[((t * Gc + gl) * C + ci) * 8 + k] = Q_t[co0 + 8 gl + k][ci]
    for (i64 e = threadIdx.x; e < (i64)KK * C * CoC; e += blockDim.x) {
        const int k = (int)(e & 7);
        const i64 r = e >> 3;
        const int ci = (int)(r % C);
        const i64 r2 = r / C;
        const int gl = (int)(r2 % Gc), t = (int)(r2 / Gc);
        qs[e] = q[((i64)t * C + ci) * Cp + co0 + 8 * gl + k];
    }
    for (i64 e = threadIdx.x; e < (i64)C * H; e += blockDim.x) win[(i64)ring * C * H + e] = T(0);
    __shared__ int tap_t[MAX_TABLE_TAPS], tap_dh[MAX_TABLE_TAPS], tap_dw[MAX_TABLE_TAPS];
    for (int tn = threadIdx.x; tn < KK - 1 && tn < MAX_TABLE_TAPS; tn += blockDim.x) {
        const int t = tn + (tn >= anchor_t);
        tap_t[tn] = t;
        tap_dh[tn] = th * (t / KW - ai);
        tap_dw[tn] = tw * (t % KW - aj);
    }
    const int kt = threadIdx.x % pw;
    const int gl = (threadIdx.x / pw) % Gc;
    const int ts = threadIdx.x / (pw * Gc);
    const int warp_k0 = kt & ~31;  // pw is a multiple of 32: one warp, one (gl, ts)
    unsigned remote = 0;
    (void)remote;
#if INV_CONV_HAS_CLUSTERS
    if (NCTA > 1) remote = cluster_map(win, rank ^ 1u);
#endif
    __syncthreads();
#if INV_CONV_HAS_CLUSTERS
    if (NCTA > 1) cluster_barrier();  // the partner's shared memory is live before any store
#endif
    const Quad<T>* qg = reinterpret_cast<const Quad<T>*>(qs) + (i64)gl * C * 2;
    for (int d = 0; d < H + W - 1; ++d) {
        const int h_lo = max(0, d - (W - 1)), h_hi = min(d, H - 1);
        const int npix = h_hi - h_lo + 1;
        for (int kb = 0; kb < npix; kb += pw) {  // uniform trip count (barriers below)
            const int k = kb + kt;
            const bool active = k < npix;
            const bool warp_active = kb + warp_k0 < npix;
            const int hc = h_lo + k, wc = d - hc;
            const int hr = flip_h ? H - 1 - hc : hc, wr = flip_w ? W - 1 - wc : wc;
            const i64 pix = (i64)hr * W + wr;
            T z[8];
            if (ts == 0 && active) {
#pragma unroll
                for (int c = 0; c < 8; ++c) z[c] = img[(i64)(co0 + 8 * gl + c) * HW + pix];
            }
            T acc[8];
#pragma unroll
            for (int c = 0; c < 8; ++c) acc[c] = T(0);
            if (warp_active) {
                for (int tn = ts; tn < KK - 1; tn += tsplit) {
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
                    const bool ok = active && hs >= 0 && ws >= 0;
                    const T* xs = win + (ok ? (i64)((hs + ws) % ring) * C * H + hs : (i64)ring * C * H);
                    const Quad<T>* qq = qg + (i64)t * Gc * C * 2;
#pragma unroll 4
                    for (int ci = 0; ci < C; ++ci) {
                        const T v = xs[(i64)ci * H];
                        const Quad<T> c0 = qq[2 * ci], c1 = qq[2 * ci + 1];
#pragma unroll
                        for (int c = 0; c < 4; ++c) {
                            acc[c] += c0.v[c] * v;
                            acc[4 + c] += c1.v[c] * v;
                        }
                    }
                }
            }
            if (tsplit > 1) {
                if (ts > 0 && active) {
#pragma unroll
                    for (int c = 0; c < 8; ++c)
                        red[((i64)(ts - 1) * CoC + 8 * gl + c) * pw + kt] = acc[c];
                }
                __syncthreads();
                if (ts == 0 && active) {
                    for (int s = 1; s < tsplit; ++s) {
#pragma unroll
                        for (int c = 0; c < 8; ++c)
                            acc[c] += red[((i64)(s - 1) * CoC + 8 * gl + c) * pw + kt];
                    }
                }
            }
            if (ts == 0 && active) {
                const i64 slot = (i64)(d % ring) * C;
#pragma unroll
                for (int c = 0; c < 8; ++c) {
                    const int co = co0 + 8 * gl + c;
                    const T s = z[c] - acc[c];
                    img[(i64)co * HW + pix] = s;
                    win[(slot + co) * H + hc] = s;
#if INV_CONV_HAS_CLUSTERS
                    if (NCTA > 1)
                        cluster_store(remote + (unsigned)(((slot + co) * H + hc) * (i64)sizeof(T)), s);
#endif
                }
            }
            if (tsplit > 1) __syncthreads();  // partials consumed before the next pass
        }
#if INV_CONV_HAS_CLUSTERS
        if (NCTA > 1) {
            cluster_barrier();
            continue;
        }
#endif
        __syncthreads();
    }
}

// ---------------------------------------------------------------------------------------------
// sweep_blk: sweep_tile's work for float32 with register blocking. A thread computes 4 pixels ×
// 8 output channels, so per (tap, 4 input channels) 4 window loads and 8 broadcast coefficient
// loads (16 bytes each) feed 128 multiply-adds (sweep_tile: 3 loads per 8; at C = 48 it issued
// ~3 instructions per useful multiply-add and waited on shared loads). The pixels of a pass are
// k = 16·j + pg (j < 4): a half-warp's lanes take 16 consecutive pixels of the diagonal and
// share one (channel group, tap part), so coefficient loads are broadcasts, and the window is
// pixel-major with a pixel stride of C + 4 floats, so the lanes' 16-byte window loads hit
// distinct banks. `tsplit` parts of the taps write their sums to shared memory; each part then
// adds up (in part order: deterministic) and stores 1/tsplit of the outputs, so the tail of a
// diagonal is spread over all warps. NCTA = 2: two CTAs per sample, as sweep_tile2 (each
// solved value also goes to the partner's ring as a 16-byte DSMEM store).
// Shared memory: Q for this CTA's channels [t][gl][ci][8] (as sweep_tile), the ring
// [slot][hc][C + 4] plus one all-zero slot, the parts' sums [part][gl][pg][BLK_RED].
#define BLK_PG INV_CONV_SWEEP_BLK_PG
#define BLK_PX INV_CONV_SWEEP_BLK_PX
#define BLK_RED INV_CONV_SWEEP_BLK_RED
static_assert(BLK_PX == 4 && BLK_RED >= 8 * BLK_PX && BLK_RED % 4 == 0,
              "sweep_blk: the pass's pixel-count switch has 4 cases; a record holds 2·BLK_PX "
              "float4 sums");

#if INV_CONV_HAS_CLUSTERS
__device__ __forceinline__ void cluster_store4(unsigned addr, float4 v) {
    asm volatile("st.shared::cluster.v4.f32 [%0], {%1, %2, %3, %4};" ::"r"(addr), "f"(v.x),
                 "f"(v.y), "f"(v.z), "f"(v.w)
                 : "memory");
}
#endif

__device__ __forceinline__ float lane_of(const float4& v, int c) {
    return c == 0 ? v.x : c == 1 ? v.y : c == 2 ? v.z : v.w;
}

// acc[j][k] += Σ_ci Q[k][ci] · win[off[j] + ci] for the J pixels of a pass with work, one tap.
template <int J>
__device__ __forceinline__ void blk_dot(float (&acc)[BLK_PX][8], const float* win,
                                        const int (&off)[BLK_PX], const float4* qq, int C) {
#pragma unroll 2
    for (int c4 = 0; c4 < C / 4; ++c4) {
        float4 xv[J];
#pragma unroll
        for (int j = 0; j < J; ++j) xv[j] = reinterpret_cast<const float4*>(win + off[j])[c4];
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const float4 q0 = qq[(4 * c4 + c) * 2], q1 = qq[(4 * c4 + c) * 2 + 1];
#pragma unroll
            for (int j = 0; j < J; ++j) {
                const float v = lane_of(xv[j], c);
                acc[j][0] += q0.x * v;
                acc[j][1] += q0.y * v;
                acc[j][2] += q0.z * v;
                acc[j][3] += q0.w * v;
                acc[j][4] += q1.x * v;
                acc[j][5] += q1.y * v;
                acc[j][6] += q1.z * v;
                acc[j][7] += q1.w * v;
            }
        }
    }
}

template <int NCTA>
__device__ void sweep_blk_impl(float* data, const float* __restrict__ prep, int C, int H, int W,
                               int KH, int KW, int ai, int aj, int th, int tw, int flip_h,
                               int flip_w, int ring, int tsplit) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    float* smem = reinterpret_cast<float*>(smem_raw);
    const int Cp = round_up4(C), KK = KH * KW, anchor_t = ai * KW + aj;
    const int CoC = C / NCTA, Gc = CoC / 8, CS = C + 4;
    unsigned rank = 0;
#if INV_CONV_HAS_CLUSTERS
    if (NCTA > 1) rank = cluster_rank();
#endif
    const int co0 = (int)rank * CoC;
    const i64 HW = (i64)H * W;
    float* img = data + (i64)(blockIdx.x / NCTA) * C * HW;
    float* qs = smem;                                  // KK * C * CoC
    float* win = qs + KK * C * CoC;                    // (ring + 1) * H * CS, slot `ring` is zero
    float* red = win + (ring + 1) * H * CS;            // tsplit * Gc * BLK_PG * BLK_RED
    const int zero_slot = ring * H * CS;
    const float* q = prep + 2 * (i64)C * Cp;
    for (int e = threadIdx.x; e < KK * C * CoC; e += blockDim.x) {
        const int k = e & 7, r = e >> 3;
        const int ci = r % C, gl = (r / C) % Gc, t = r / (C * Gc);
        qs[e] = q[((i64)t * C + ci) * Cp + co0 + 8 * gl + k];
    }
    for (int e = threadIdx.x; e < H * CS; e += blockDim.x) win[zero_slot + e] = 0.f;
    const int pg = threadIdx.x % BLK_PG;
    const int gl = (threadIdx.x / BLK_PG) % Gc, part = threadIdx.x / (BLK_PG * Gc);
    const int own = co0 + 8 * gl;  // this thread's first output channel
    unsigned remote = 0;
    (void)remote;
#if INV_CONV_HAS_CLUSTERS
    if (NCTA > 1) remote = cluster_map(win, rank ^ 1u);
#endif
    __syncthreads();
#if INV_CONV_HAS_CLUSTERS
    if (NCTA > 1) cluster_barrier();  // the partner's shared memory is live before any store
#endif
    const float4* qg = reinterpret_cast<const float4*>(qs) + gl * C * 2;
    // This thread's record of partial sums, and part 0's record of its (gl, pg): the records
    // of the other parts follow at a stride of Gc · BLK_PG records.
    float4* mine = reinterpret_cast<float4*>(red) + ((part * Gc + gl) * BLK_PG + pg) * (BLK_RED / 4);
    const float4* parts = reinterpret_cast<const float4*>(red) + (gl * BLK_PG + pg) * (BLK_RED / 4);
    for (int d = 0; d < H + W - 1; ++d) {
        const int h_lo = max(0, d - (W - 1)), h_hi = min(d, H - 1);
        const int npix = h_hi - h_lo + 1;
        for (int kb = 0; kb < npix; kb += BLK_PG * BLK_PX) {  // uniform trip count (barriers)
            const int jn = min(BLK_PX, (npix - kb + BLK_PG - 1) / BLK_PG);
            int hc[BLK_PX];
            bool valid[BLK_PX];
#pragma unroll
            for (int j = 0; j < BLK_PX; ++j) {
                const int k = kb + BLK_PG * j + pg;
                valid[j] = j < jn && k < npix;
                hc[j] = h_lo + k;
            }
            // Pixel j's offset in a channel plane (recomputed where used: fewer live registers).
            auto pix = [&](int j) {
                const int hr = flip_h ? H - 1 - hc[j] : hc[j];
                const int wr = flip_w ? W - 1 - (d - hc[j]) : d - hc[j];
                return (i64)hr * W + wr;
            };
            // The outputs of a pass are 2·BLK_PX slices (pixel j, half h: 4 channels); part p
            // finishes slices p, p + tsplit, ... (all parts share the tail of the diagonal).
            float4 z[2 * BLK_PX];
#pragma unroll
            for (int sl = 0; sl < 2 * BLK_PX; ++sl) {
                const int j = sl / 2;
                if (sl % tsplit == part && valid[j]) {
                    const float* src = img + (own + 4 * (sl % 2)) * HW + pix(j);
                    z[sl] = make_float4(src[0], src[HW], src[2 * HW], src[3 * HW]);
                }
            }
            float acc[BLK_PX][8];
#pragma unroll
            for (int j = 0; j < BLK_PX; ++j) {
#pragma unroll
                for (int c = 0; c < 8; ++c) acc[j][c] = 0.f;
            }
            for (int tn = part; tn < KK - 1; tn += tsplit) {
                const int t = tn + (tn >= anchor_t);
                const int dh = th * (t / KW - ai), dw = tw * (t % KW - aj);
                int off[BLK_PX];
#pragma unroll
                for (int j = 0; j < BLK_PX; ++j) {
                    const int hs = hc[j] + dh, ws = d - hc[j] + dw;
                    const bool ok = valid[j] && hs >= 0 && ws >= 0;
                    off[j] = ok ? (((hs + ws) % ring) * H + hs) * CS : zero_slot;
                }
                const float4* qq = qg + t * Gc * C * 2;
                switch (jn) {  // uniform: the pixels with work in this pass
                    case 1: blk_dot<1>(acc, win, off, qq, C); break;
                    case 2: blk_dot<2>(acc, win, off, qq, C); break;
                    case 3: blk_dot<3>(acc, win, off, qq, C); break;
                    default: blk_dot<4>(acc, win, off, qq, C); break;
                }
            }
            if (tsplit > 1) {
#pragma unroll
                for (int j = 0; j < BLK_PX; ++j) {
                    if (j < jn) {
                        mine[2 * j] = make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
                        mine[2 * j + 1] = make_float4(acc[j][4], acc[j][5], acc[j][6], acc[j][7]);
                    }
                }
                __syncthreads();
            }
            const int slot = (d % ring) * H;
#pragma unroll
            for (int sl = 0; sl < 2 * BLK_PX; ++sl) {
                const int j = sl / 2, h = sl % 2;
                if (sl % tsplit != part || !valid[j]) continue;
                float4 sum;
                if (tsplit == 1) {
                    sum = make_float4(acc[j][4 * h], acc[j][4 * h + 1], acc[j][4 * h + 2],
                                      acc[j][4 * h + 3]);
                } else {  // the parts in ascending order: deterministic
                    sum = make_float4(0.f, 0.f, 0.f, 0.f);
                    for (int pp = 0; pp < tsplit; ++pp) {
                        const float4 v = parts[(pp * Gc * BLK_PG) * (BLK_RED / 4) + sl];
                        sum.x += v.x, sum.y += v.y, sum.z += v.z, sum.w += v.w;
                    }
                }
                const float4 x4 = make_float4(z[sl].x - sum.x, z[sl].y - sum.y, z[sl].z - sum.z,
                                              z[sl].w - sum.w);
                const int co = own + 4 * h;
                float* dst = img + co * HW + pix(j);
                dst[0] = x4.x;
                dst[HW] = x4.y;
                dst[2 * HW] = x4.z;
                dst[3 * HW] = x4.w;
                const int cell = (slot + hc[j]) * CS + co;
                *reinterpret_cast<float4*>(win + cell) = x4;
#if INV_CONV_HAS_CLUSTERS
                if (NCTA > 1) cluster_store4(remote + (unsigned)cell * 4u, x4);
#endif
            }
            if (tsplit > 1) __syncthreads();  // the parts' sums consumed before the next pass
        }
#if INV_CONV_HAS_CLUSTERS
        if (NCTA > 1) {
            cluster_barrier();
            continue;
        }
#endif
        __syncthreads();
    }
}

#define INV_CONV_BLK_ENTRY(NAME, NCTA, ATTR)                                                   \
    extern "C" __global__ void __launch_bounds__(INV_CONV_SWEEP_BLK_THREADS) ATTR NAME(        \
        float* data, const float* prep, int C, int H, int W, int KH, int KW, int ai, int aj,  \
        int th, int tw, int flip_h, int flip_w, int ring, int pw, int tsplit) {               \
        (void)pw;                                                                             \
        sweep_blk_impl<NCTA>(data, prep, C, H, W, KH, KW, ai, aj, th, tw, flip_h, flip_w,     \
                             ring, tsplit);                                                   \
    }
INV_CONV_BLK_ENTRY(sweep_blk_f32, 1, )
#if INV_CONV_HAS_CLUSTERS
INV_CONV_BLK_ENTRY(sweep_blk2_f32, 2, __cluster_dims__(2, 1, 1))
#else
// Before sm_90 there are no clusters: the host never launches it (it checks the arch).
extern "C" __global__ void sweep_blk2_f32(float*, const float*, int, int, int, int, int, int, int,
                                          int, int, int, int, int, int, int) {
    __trap();
}
#endif

#define INV_CONV_TILE_ENTRY(NAME, T, NCTA, ATTR)                                               \
    extern "C" __global__ void __launch_bounds__(INV_CONV_SWEEP_MAX_THREADS) ATTR NAME(                              \
        T* data, const T* prep, int C, int H, int W, int KH, int KW, int ai, int aj, int th,    \
        int tw, int flip_h, int flip_w, int ring, int pw, int tsplit) {                        \
        sweep_tile_impl<T, NCTA>(data, prep, C, H, W, KH, KW, ai, aj, th, tw, flip_h, flip_w,  \
                                 ring, pw, tsplit);                                            \
    }
INV_CONV_TILE_ENTRY(sweep_tile_f32, float, 1, )
INV_CONV_TILE_ENTRY(sweep_tile_f64, double, 1, )
#if INV_CONV_HAS_CLUSTERS
INV_CONV_TILE_ENTRY(sweep_tile2_f32, float, 2, __cluster_dims__(2, 1, 1))
INV_CONV_TILE_ENTRY(sweep_tile2_f64, double, 2, __cluster_dims__(2, 1, 1))
#else
// Before sm_90 there are no clusters: the host never launches these (it checks the arch).
extern "C" __global__ void sweep_tile2_f32(float*, const float*, int, int, int, int, int, int,
                                           int, int, int, int, int, int, int, int) {
    __trap();
}
extern "C" __global__ void sweep_tile2_f64(double*, const double*, int, int, int, int, int, int,
                                           int, int, int, int, int, int, int, int) {
    __trap();
}
#endif
