// solve_regs: the whole inverse x = A⁻¹ y (or its adjoint u = A⁻ᵀ g) of a float32 problem with
// a 3 × 3 kernel (KH·KW = 9) and C = 12 or 24 channels, in ONE launch, one block per sample.
// These are the shapes of the flow presets (C = 12 and 24 after the squeezes), where the
// generic sweep (wavefront.cu) is bound by instruction issue and its per-diagonal barrier, and
// three preparation launches (prepare_inverse, prepare_taps, channel_mix) precede it.
//
// An image too large for one block's shared memory is cut into tiles, solved a tile
// anti-diagonal per launch (grid.y = the diagonal's tiles): every tap points up-left in
// canonical coordinates, so a tile needs only the solved values of the tiles above, left and
// above-left, which earlier launches on the stream wrote to x. The whole image is one tile.
//
// Same maths as prepare.cu + channel_mix + sweep_impl, and the same canonical coordinates,
// flips and tap signs from the host:
//   1. The weight into shared memory; 2. L⁻¹ (unit_lower_inverse) and P; 3. Q_t for the 8
//      off-anchor taps (4 × 4 register tiles of P·B_t): every block prepares its own (no
//      scratch, no launch). Then the tile's y, pixel-major in a window in canonical
//      coordinates with a border of KH − 1 rows above and KW − 1 columns to the left (earlier
//      tiles' x, or zero outside the image), so that every tap read is a plain load at a
//      constant offset from the pixel; and z = P·y in place.
//      Steps 1–3 read only the weight: a launch that the host lets start while the one
//      before it on the stream still runs (programmatic dependent launch, a chain's later
//      layers) does them meanwhile, and waits for that launch before it reads y.
//   4. Thread = (pixel slot, COPT output channels, tap part): its NT = 8 / TSPLIT taps'
//      coefficients Q_t[co][·] live in registers for the whole sweep (NT·COPT·C ≤ 96
//      floats), the tap loop is unrolled at compile time, and a tap's C input values are C/4
//      16-byte shared loads, each feeding 4·COPT multiply-adds (the loads, not the
//      arithmetic, bounded the sweep with one channel per thread). The TSPLIT lanes of a pixel
//      add up their parts with shuffles in a fixed order: results are bitwise repeatable.
//   5. One block barrier per anti-diagonal; the tile goes back to global memory at the end.

__host__ __device__ constexpr int ilog2(int v) { return v > 1 ? 1 + ilog2(v / 2) : 0; }

// store(e, load(e)) for e in [0, n), the block's threads strided, with BATCH loads per thread
// issued before the first store: global round trips overlap instead of queueing one by one.
template <int BATCH, typename Load, typename Store>
__device__ __forceinline__ void staged_copy(int n, Load load, Store store) {
    for (int base = 0; base < n; base += BATCH * blockDim.x) {
        decltype(load(0)) v[BATCH];
#pragma unroll
        for (int k = 0; k < BATCH; ++k) {
            const int e = base + k * blockDim.x + threadIdx.x;
            if (e < n) v[k] = load(e);
        }
#pragma unroll
        for (int k = 0; k < BATCH; ++k) {
            const int e = base + k * blockDim.x + threadIdx.x;
            if (e < n) store(e, v[k]);
        }
    }
}

// Programmatic dependent launch (sm_90 and up; no-ops before): `dependents_may_start` lets
// the next launch on the stream, if the host marked it programmatic, start its blocks now;
// `wait_for_prerequisites` waits until the launch before this one has finished and its writes
// are visible (at once for a launch not so marked).
__device__ __forceinline__ void dependents_may_start() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void wait_for_prerequisites() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

template <int C, int TSPLIT, int COPT>
__device__ void solve_regs_impl(const float* y_all, float* x_all, const float* __restrict__ w,
                                int H, int W, int KH, int KW, int ai, int aj, int th, int tw,
                                int flip_h, int flip_w, int adjoint, int tile_h, int tile_w,
                                int td, int tiles_w) {
    constexpr int TAPS = 8;            // off-anchor taps of a kernel with KH·KW = 9
    constexpr int NT = TAPS / TSPLIT;  // taps per thread
    constexpr int C4 = C / 4;
    constexpr int PER_PIXEL = C / COPT * TSPLIT;
    static_assert(C % 4 == 0 && TAPS % TSPLIT == 0 && 32 % TSPLIT == 0 && C % COPT == 0 &&
                      (COPT & (COPT - 1)) == 0,
                  "solve_regs layout");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    float* linv = reinterpret_cast<float*>(smem_raw);  // L⁻¹, row-major C × C
    float* pt = linv + C * C;                           // Pᵀ: P[co][c] at c·C + co
    float* qs = pt + C * C;                             // Q_t[co][ci] at (tn·C + ci)·C + co
    float* wb = qs + TAPS * C * C;                      // B_t[m][ci] at (t·C + m)·C + ci
    const int KK = KH * KW, anchor_t = ai * KW + aj;
    // This block's tile: (I, J) on tile anti-diagonal td, rows [R0, R0 + TH) and columns
    // [C0, C0 + TW) in canonical coordinates; `mr0`, `mc0`: its first row and column in memory.
    const int I = max(0, td - (tiles_w - 1)) + blockIdx.y, J = td - I;
    const int R0 = I * tile_h, C0 = J * tile_w;
    const int TH = min(tile_h, H - R0), TW = min(tile_w, W - C0), TP = TH * TW;
    const int mr0 = flip_h ? H - R0 - TH : R0, mc0 = flip_w ? W - C0 - TW : C0;
    float* win = wb + C * C * KK;                       // (TH + KH − 1) × (TW + KW − 1) × C
    const int PH = KH - 1, PW = KW - 1, WP = TW + PW;
    const i64 HW = (i64)H * W;
    const float* y = y_all + (i64)blockIdx.x * C * HW;
    float* x = x_all + (i64)blockIdx.x * C * HW;
    // The window cell of the tile's pixel at memory offset (r, c) from (mr0, mc0).
    auto cell_of = [&](int r, int c) {
        const int lh = flip_h ? TH - 1 - r : r, lw = flip_w ? TW - 1 - c : c;
        return win + ((lh + PH) * WP + lw + PW) * C;
    };

    dependents_may_start();
    // 1. The weight, tap-major, as the matrices B_t of step 2 (B_t = M_t for the inverse,
    // M_tᵀ for the adjoint; M_t[a][b] = w[a][b][t]).
    staged_copy<8>(
        C * C * KK, [&](int e) { return w[e]; },
        [&](int e, float v) {
            const int t = e % KK, b = (e / KK) % C, a = e / (KK * C);
            wb[(t * C + (adjoint ? b : a)) * C + (adjoint ? a : b)] = v;
        });
    __syncthreads();

    // 2. L⁻¹ of the anchor's L (L[r][m] = M_anchor[r][m]), then Pᵀ: P = L⁻¹ (inverse) or L⁻ᵀ
    // (adjoint).
    const float* l_anchor = wb + anchor_t * C * C;
    unit_lower_inverse<float>(
        [&](int r, int m) { return adjoint ? l_anchor[m * C + r] : l_anchor[r * C + m]; }, linv,
        C, C);
    for (int e = threadIdx.x; e < C * C; e += blockDim.x) {
        const int c = e / C, co = e % C;
        pt[e] = adjoint ? linv[e] : linv[co * C + c];
    }
    __syncthreads();

    // 3. The off-anchor taps' Q_t = P·B_t (inverse_tap_coef's formula: Q_t[co][ci] =
    // Σ_m Pᵀ[m][co]·B_t[m][ci], m ascending; the terms it skips are exact zeros of the
    // triangular P here) as 4 × 4 register tiles.
    for (int item = threadIdx.x; item < TAPS * C4 * C4; item += blockDim.x) {
        const int tn = item / (C4 * C4), co4 = (item / C4) % C4, ci4 = item % C4;
        const float* bt = wb + (tn + (tn >= anchor_t)) * C * C;
        float acc[4][4] = {};
#pragma unroll
        for (int m = 0; m < C; ++m) {
            const float4 a4 = reinterpret_cast<const float4*>(pt + m * C)[co4];
            const float4 b4 = reinterpret_cast<const float4*>(bt + m * C)[ci4];
            const float av[4] = {a4.x, a4.y, a4.z, a4.w}, bv[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
            for (int i = 0; i < 4; ++i) {
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
            }
        }
#pragma unroll
        for (int j = 0; j < 4; ++j)
            reinterpret_cast<float4*>(qs + (tn * C + 4 * ci4 + j) * C)[co4] =
                make_float4(acc[0][j], acc[1][j], acc[2][j], acc[3][j]);
    }

    // y and earlier tiles' x come from earlier launches: from here on they must be done.
    // y goes into the window's cells, pixel-major, 4 channels per thread (coalesced reads);
    // then the border: the KH − 1 rows above and KW − 1 columns left of the tile, solved
    // values of earlier tiles where inside the image (earlier launches wrote them to x), zero
    // outside, so that a tap read needs no bounds test.
    wait_for_prerequisites();
    staged_copy<4>(
        C4 * TP,
        [&](int item) {
            const int g = item / TP, pix = item - g * TP, r = pix / TW;
            const float* src = y + (i64)(4 * g) * HW + (i64)(mr0 + r) * W + mc0 + pix - r * TW;
            return make_float4(src[0], src[HW], src[2 * HW], src[3 * HW]);
        },
        [&](int item, float4 v) {
            const int g = item / TP, pix = item - g * TP, r = pix / TW;
            reinterpret_cast<float4*>(cell_of(r, pix - r * TW))[g] = v;
        });
    // Border cell e: the PH rows above (all WP columns), then the PW columns left of the
    // tile's TH rows; its (row, column) relative to the tile's first pixel.
    const int top = PH * WP, border = top + TH * PW;
    auto border_cell = [&](int e) {
        return e < top ? make_int2(e / WP - PH, e % WP - PW)
                       : make_int2((e - top) / PW, (e - top) % PW - PW);
    };
    staged_copy<2>(
        C4 * border,
        [&](int item) {
            const int g = item / border;
            const int2 l = border_cell(item - g * border);
            const int hc = R0 + l.x, wc = C0 + l.y;
            if (hc < 0 || wc < 0) return make_float4(0.f, 0.f, 0.f, 0.f);
            const int hr = flip_h ? H - 1 - hc : hc, wr = flip_w ? W - 1 - wc : wc;
            const float* src = x + (i64)(4 * g) * HW + (i64)hr * W + wr;
            return make_float4(src[0], src[HW], src[2 * HW], src[3 * HW]);
        },
        [&](int item, float4 v) {
            const int g = item / border;
            const int2 l = border_cell(item - g * border);
            reinterpret_cast<float4*>(win + ((l.x + PH) * WP + l.y + PW) * C)[g] = v;
        });
    __syncthreads();

    // z = P·y in place, 4 output channels of a pixel per thread, summed over c in ascending
    // order like channel_mix. A pixel's C/4 threads are in one pass (their reads precede the
    // pass's barrier, their writes follow).
    const int per_pass = blockDim.x / C4 * C4;
    for (int base = 0; base < C4 * TP; base += per_pass) {
        const int item = base + threadIdx.x;
        const bool mine = threadIdx.x < per_pass && item < C4 * TP;
        const int pix = item / C4, g = item - pix * C4;
        float4* cell = reinterpret_cast<float4*>(
            win + ((pix / TW + PH) * WP + pix % TW + PW) * C);  // each cell once: no flips needed
        float v[C];
        if (mine) {
#pragma unroll
            for (int k = 0; k < C4; ++k) {
                const float4 v4 = cell[k];
                v[4 * k] = v4.x, v[4 * k + 1] = v4.y, v[4 * k + 2] = v4.z, v[4 * k + 3] = v4.w;
            }
        }
        __syncthreads();
        if (mine) {
            float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
            for (int c = 0; c < C; ++c) {
                const float4 p4 = reinterpret_cast<const float4*>(pt + c * C)[g];
                z.x += p4.x * v[c];
                z.y += p4.y * v[c];
                z.z += p4.z * v[c];
                z.w += p4.w * v[c];
            }
            cell[g] = z;
        }
    }

    // 4. Thread roles, fixed for the sweep, and their coefficients and read offsets.
    const int slot = threadIdx.x / PER_PIXEL;
    const int cog = (threadIdx.x % PER_PIXEL) / TSPLIT;  // output channels cog·COPT + [0, COPT)
    const int part = threadIdx.x % TSPLIT;               // PER_PIXEL is a multiple of TSPLIT
    const int kstep = blockDim.x / PER_PIXEL;
    float q[NT][COPT][C];
    int off[NT];
#pragma unroll
    for (int n = 0; n < NT; ++n) {
        const int tn = part * NT + n;
        const int t = tn + (tn >= anchor_t);
        off[n] = (th * (t / KW - ai) * WP + tw * (t % KW - aj)) * C;
#pragma unroll
        for (int ci = 0; ci < C; ++ci) {
#pragma unroll
            for (int j = 0; j < COPT; ++j) q[n][j][ci] = qs[(tn * C + ci) * C + cog * COPT + j];
        }
    }
    // After the reduction below, lane `part` holds the sums of HELD channels starting at
    // cog·COPT + ch0; lanes that differ only in the bits below TSPLIT >> ROUNDS hold the same
    // ones, and the first of them (`writer`) stores them.
    constexpr int ROUNDS = ilog2(COPT < TSPLIT ? COPT : TSPLIT), HELD = COPT >> ROUNDS;
    int ch0 = 0;
#pragma unroll
    for (int r = 0; r < ROUNDS; ++r) ch0 += (part & (TSPLIT >> (r + 1))) ? COPT >> (r + 1) : 0;
    const bool writer = (part & ((TSPLIT >> ROUNDS) - 1)) == 0;
    __syncthreads();

    // 5. The sweep: x = z − Σ_t Q_t x[p + off_t] per pixel, anti-diagonal by anti-diagonal.
    for (int d = 0; d < TH + TW - 1; ++d) {
        const int h_lo = max(0, d - (TW - 1)), h_hi = min(d, TH - 1);
        const int npix = h_hi - h_lo + 1;
        for (int kb = 0; kb < npix; kb += kstep) {  // uniform trip count: shuffles below
            const int k = kb + slot;
            const bool active = slot < kstep && k < npix;
            const int hc = h_lo + k, wc = d - hc;
            float* cell = win + ((hc + PH) * WP + wc + PW) * C + cog * COPT;
            // Two sums per channel (alternate 4-channel groups): shorter dependent FMA chains.
            float z[HELD], sums[COPT][2] = {};
            if (active) {
#pragma unroll
                for (int h = 0; h < HELD; ++h) z[h] = writer ? cell[ch0 + h] : 0.f;
#pragma unroll
                for (int n = 0; n < NT; ++n) {
                    const float4* src = reinterpret_cast<const float4*>(cell - cog * COPT + off[n]);
#pragma unroll
                    for (int g = 0; g < C4; ++g) {
                        const float4 v = src[g];
#pragma unroll
                        for (int j = 0; j < COPT; ++j) {
                            float& s = sums[j][(n * C4 + g) & 1];
                            s += q[n][j][4 * g] * v.x;
                            s += q[n][j][4 * g + 1] * v.y;
                            s += q[n][j][4 * g + 2] * v.z;
                            s += q[n][j][4 * g + 3] * v.w;
                        }
                    }
                }
            }
            float acc[COPT];
#pragma unroll
            for (int j = 0; j < COPT; ++j) acc[j] = sums[j][0] + sums[j][1];
            // Reduce over the TSPLIT lanes of the pixel: first halve the channels held per
            // round (a lane keeps the half its bit selects, sends the other: one shuffle per
            // kept value), then add up what is left. A fixed order: bitwise repeatable.
#pragma unroll
            for (int r = 0, held = COPT; r < ROUNDS; ++r, held >>= 1) {
                const int bit = TSPLIT >> (r + 1);
                const bool upper = part & bit;
#pragma unroll
                for (int h = 0; h < held / 2; ++h) {
                    const float lo = acc[h], hi = acc[h + held / 2];
                    acc[h] = (upper ? hi : lo) + __shfl_xor_sync(0xffffffffu, upper ? lo : hi, bit);
                }
            }
#pragma unroll
            for (int bit = (TSPLIT >> ROUNDS) >> 1; bit > 0; bit >>= 1) {
#pragma unroll
                for (int h = 0; h < HELD; ++h) acc[h] += __shfl_xor_sync(0xffffffffu, acc[h], bit);
            }
            if (active && writer) {
#pragma unroll
                for (int h = 0; h < HELD; ++h) cell[ch0 + h] = z[h] - acc[h];
            }
        }
        __syncthreads();
    }

    // The tile's solution back to global memory, coalesced along its memory rows.
    for (int pix = threadIdx.x; pix < TP; pix += blockDim.x) {
        const int r = pix / TW, c = pix - r * TW;
        const float4* cell = reinterpret_cast<const float4*>(cell_of(r, c));
        float* dst = x + (i64)(mr0 + r) * W + mc0 + c;
#pragma unroll
        for (int g = 0; g < C4; ++g) {
            const float4 v = cell[g];
            dst[(i64)(4 * g) * HW] = v.x;
            dst[(i64)(4 * g + 1) * HW] = v.y;
            dst[(i64)(4 * g + 2) * HW] = v.z;
            dst[(i64)(4 * g + 3) * HW] = v.w;
        }
    }
}

// MAXT: the launch bound, from the registers a thread holds (NT·COPT·C coefficients).
#define INV_CONV_SOLVE_REGS_ENTRY(NAME, CHANNELS, LANES, COPT, MAXT)                         \
    extern "C" __global__ void __launch_bounds__(MAXT) NAME(                                   \
        const float* y, float* x, const float* w, int H, int W, int KH, int KW, int ai, int aj, \
        int th, int tw, int flip_h, int flip_w, int adjoint, int tile_h, int tile_w, int td,   \
        int tiles_w) {                                                                         \
        solve_regs_impl<CHANNELS, LANES, COPT>(y, x, w, H, W, KH, KW, ai, aj, th, tw, flip_h,   \
                                               flip_w, adjoint, tile_h, tile_w, td, tiles_w);  \
    }
INV_CONV_SOLVE_REGS_ENTRY(solve_regs_c12_t1_o1_f32, 12, 1, 1, INV_CONV_SOLVE_REGS_THREADS_96)
INV_CONV_SOLVE_REGS_ENTRY(solve_regs_c12_t4_o4_f32, 12, 4, 4, INV_CONV_SOLVE_REGS_THREADS_96)
INV_CONV_SOLVE_REGS_ENTRY(solve_regs_c12_t8_o4_f32, 12, 8, 4, INV_CONV_SOLVE_REGS_THREADS_48)
INV_CONV_SOLVE_REGS_ENTRY(solve_regs_c24_t2_o1_f32, 24, 2, 1, INV_CONV_SOLVE_REGS_THREADS_96)
INV_CONV_SOLVE_REGS_ENTRY(solve_regs_c24_t4_o2_f32, 24, 4, 2, INV_CONV_SOLVE_REGS_THREADS_96)
INV_CONV_SOLVE_REGS_ENTRY(solve_regs_c24_t8_o4_f32, 24, 8, 4, INV_CONV_SOLVE_REGS_THREADS_96)
