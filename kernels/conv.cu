// Direct convolutions: the forward map (sign = +1, Q_t = ŵ_t) and its adjoint, the forward
// op's input-gradient (sign = -1, Q_t = ŵ_tᵀ): out[b, co, p] = Σ_t Σ_ci Q_t[co][ci] ·
// in[b, ci, p + sign·off_t], zero outside the image. Also the 1×1 channel mix z = P·y that
// starts a wavefront solve.
//
// One thread computes 4 output channels of one pixel (a Quad of coefficients per input value:
// one vector load for 4 FMAs). Coefficients sit in shared memory when they fit.

template <typename T>
__device__ void conv_impl(const T* __restrict__ in, T* __restrict__ out, const T* __restrict__ prep,
                          int B, int C, int H, int W, int KH, int KW, int ai, int aj, int sign,
                          int q_in_smem) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int Cp = round_up4(C), G = Cp / 4, KK = KH * KW;
    const int g = blockIdx.y;
    // This block's 4 output channels: quad (t, ci) at q_base[(t*C + ci) * q_stride].
    const Quad<T>* q_base = reinterpret_cast<const Quad<T>*>(prep + 2 * (i64)C * Cp) + g;
    i64 q_stride = G;
    if (q_in_smem) {
        Quad<T>* s = reinterpret_cast<Quad<T>*>(smem_raw);
        for (i64 e = threadIdx.x; e < (i64)KK * C; e += blockDim.x) s[e] = q_base[e * G];
        __syncthreads();
        q_base = s;
        q_stride = 1;
    }
    const i64 HW = (i64)H * W, CHW = C * HW;
    const i64 pix = blockIdx.x * (i64)blockDim.x + threadIdx.x;
    if (pix >= (i64)B * HW) return;
    const i64 b = pix / HW, hw = pix % HW;
    const int h = (int)(hw / W), w = (int)(hw % W);
    const T* img = in + b * CHW;
    T acc[4] = {T(0), T(0), T(0), T(0)};
    for (int t = 0; t < KK; ++t) {
        const int i = t / KW, j = t - (t / KW) * KW;
        const int hs = h + sign * (i - ai), ws = w + sign * (j - aj);
        if (hs < 0 || hs >= H || ws < 0 || ws >= W) continue;
        const T* src = img + (i64)hs * W + ws;
        quad_dot(acc, src, HW, q_base + (i64)t * C * q_stride, q_stride, C);
    }
    T* dst = out + b * CHW + hw;
#pragma unroll
    for (int k = 0; k < 4; ++k)
        if (4 * g + k < C) dst[(4 * g + k) * HW] = acc[k];
}

// z[b, co, p] = Σ_c P[co][c] · src[b, c, p]   (Pᵀ at prep + C*Cp, see common.cu).
// A thread = a pixel, MIX_QUADS quads of output channels per pass over the input channels:
// each input value loaded once per pass feeds 4·MIX_QUADS multiply-adds (float32: 12 quads, so
// C ≤ 48 is one pass; float64: 4). The inputs are loaded MIX_LOADS at a time before their
// multiply-adds, so that a thread has that many loads in flight. Pᵀ is staged in shared memory
// when `p_in_smem` (its reads are warp broadcasts). Each output is summed over c in ascending
// order, whatever the pass width or path.
#define MIX_LOADS 8

// One pass with C = 4·NQ known at compile time (float32, Pᵀ staged, C ≤ 48): the unrolled
// loops carry no bounds checks (ncu at S2 on the H200: the runtime-sized loops' checks about
// doubled the instructions issued). Instantiated for the common widths only (C = 12, 16, 24,
// 32, 48): each instance adds to NVRTC's time at first use.
template <int NQ>
__device__ void channel_mix_quads(const float* __restrict__ s, float* __restrict__ d,
                                  const Quad<float>* p, i64 HW) {
    constexpr int C = 4 * NQ, L = C % MIX_LOADS == 0 ? MIX_LOADS : 4;
    static_assert(C % L == 0, "the pass takes its inputs L at a time");
    float acc[NQ][4] = {};
    // The next L inputs are loaded before this L's multiply-adds: 2L loads in flight.
    float v[L], next[L];
#pragma unroll
    for (int u = 0; u < L; ++u) v[u] = s[u * HW];
#pragma unroll
    for (int c = 0; c < C; c += L) {
        if (c + L < C) {
#pragma unroll
            for (int u = 0; u < L; ++u) next[u] = s[(c + L + u) * HW];
        }
#pragma unroll
        for (int u = 0; u < L; ++u) {
#pragma unroll
            for (int g = 0; g < NQ; ++g) {
                const Quad<float> q = p[(c + u) * NQ + g];
#pragma unroll
                for (int k = 0; k < 4; ++k) acc[g][k] += q.v[k] * v[u];
            }
        }
#pragma unroll
        for (int u = 0; u < L; ++u) v[u] = next[u];
    }
#pragma unroll
    for (int g = 0; g < NQ; ++g) {
#pragma unroll
        for (int k = 0; k < 4; ++k) d[(4 * g + k) * HW] = acc[g][k];
    }
}

template <typename T>
__device__ void channel_mix_impl(const T* __restrict__ src, T* __restrict__ dst,
                                 const T* __restrict__ prep, int B, int C, i64 HW, int p_in_smem) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int Cp = round_up4(C), G = Cp / 4;
    const Quad<T>* pt = reinterpret_cast<const Quad<T>*>(prep + (i64)C * Cp);
    Quad<T>* staged = reinterpret_cast<Quad<T>*>(smem_raw);
    if (p_in_smem) {
        for (int e = threadIdx.x; e < C * G; e += blockDim.x) staged[e] = pt[e];
        __syncthreads();
    }
    const i64 pix = blockIdx.x * (i64)blockDim.x + threadIdx.x;
    if (pix >= (i64)B * HW) return;
    const i64 b = pix / HW, hw = pix % HW, CHW = C * HW;
    const T* s = src + b * CHW + hw;
    T* d = dst + b * CHW + hw;
    constexpr int MIX_QUADS = sizeof(T) == 4 ? 12 : 4;
    if constexpr (sizeof(T) == 4) {
        if (p_in_smem && C == 4 * G) {
            switch (G) {
#define INV_CONV_MIX_CASE(NQ) \
    case NQ: channel_mix_quads<NQ>(s, d, staged, HW); return;
                INV_CONV_MIX_CASE(3) INV_CONV_MIX_CASE(4) INV_CONV_MIX_CASE(6)
                INV_CONV_MIX_CASE(8) INV_CONV_MIX_CASE(12)
#undef INV_CONV_MIX_CASE
            }
        }
    }
    auto mix = [&](const Quad<T>* p) {
        for (int g0 = 0; g0 < G; g0 += MIX_QUADS) {
            T acc[MIX_QUADS][4] = {};
            for (int c0 = 0; c0 < C; c0 += MIX_LOADS) {
                T v[MIX_LOADS];
#pragma unroll
                for (int u = 0; u < MIX_LOADS; ++u) v[u] = c0 + u < C ? s[(c0 + u) * HW] : T(0);
#pragma unroll
                for (int u = 0; u < MIX_LOADS; ++u) {
                    const int c = c0 + u;
                    if (c >= C) break;
#pragma unroll
                    for (int gg = 0; gg < MIX_QUADS; ++gg) {
                        if (g0 + gg < G) {
                            const Quad<T> q = p[(i64)c * G + g0 + gg];
#pragma unroll
                            for (int k = 0; k < 4; ++k) acc[gg][k] += q.v[k] * v[u];
                        }
                    }
                }
            }
#pragma unroll
            for (int gg = 0; gg < MIX_QUADS; ++gg) {
#pragma unroll
                for (int k = 0; k < 4; ++k) {
                    const int co = 4 * (g0 + gg) + k;
                    if (co < C) d[co * HW] = acc[gg][k];
                }
            }
        }
    };
    if (p_in_smem)
        mix(staged);
    else
        mix(pt);
}

#define INV_CONV_CONV_ENTRY(NAME, T)                                                          \
    extern "C" __global__ void NAME(const T* in, T* out, const T* prep, int B, int C, int H,   \
                                    int W, int KH, int KW, int ai, int aj, int sign,          \
                                    int q_in_smem) {                                          \
        conv_impl<T>(in, out, prep, B, C, H, W, KH, KW, ai, aj, sign, q_in_smem);             \
    }
INV_CONV_CONV_ENTRY(conv_f32, float)
INV_CONV_CONV_ENTRY(conv_f64, double)

extern "C" __global__ void channel_mix_f32(const float* src, float* dst, const float* prep, int B,
                                           int C, long long HW, int p_in_smem) {
    channel_mix_impl<float>(src, dst, prep, B, C, HW, p_in_smem);
}
extern "C" __global__ void channel_mix_f64(const double* src, double* dst, const double* prep,
                                           int B, int C, long long HW, int p_in_smem) {
    channel_mix_impl<double>(src, dst, prep, B, C, HW, p_in_smem);
}

// ---------------------------------------------------------------------------------------------
// conv_tile (C % 16 == 0, KH, KW <= 9): block = a 32-column × 16-row output tile × 16
// output channels (grid.y), 256 threads = 32 columns × 4 row groups × 2 channel groups. Each
// thread computes 4 rows × 8 channels. Per chunk of 16 input channels the block stages the input
// tile with its halo (rows stride CONV_XS) and the chunk's coefficients in shared memory; per
// (ci, tap) a thread does 4 ring loads (consecutive across the warp) and two broadcast 16-byte
// coefficient loads for 32 FMAs. Same sums as conv_impl in a different order (exact fp32 FMA).
static_assert(INV_CONV_CONV_TILE_CO == 16, "conv_tile's threads cover 2 groups of 8 output channels");
#define CONV_TC INV_CONV_CONV_TILE_W
#define CONV_ROWS 4
#define CONV_TR INV_CONV_CONV_TILE_H
#define CONV_CI INV_CONV_CONV_TILE_CI
#define CONV_XS INV_CONV_CONV_TILE_ROW_STRIDE

template <typename T>
__device__ void conv_tile_impl(const T* __restrict__ in, T* __restrict__ out,
                               const T* __restrict__ prep, int C, int H, int W, int KH, int KW,
                               int ai, int aj, int sign, int tiles_h, int tiles_w) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int Cp = round_up4(C), KK = KH * KW, TRH = CONV_TR + KH - 1;
    T* xs = reinterpret_cast<T*>(smem_raw);      // [CONV_CI][TRH][CONV_XS]
    T* qs = xs + (i64)CONV_CI * TRH * CONV_XS;   // [KK][CONV_CI][16]
    const i64 tiles = (i64)tiles_h * tiles_w;
    const i64 b = blockIdx.x / tiles;
    const int tile = (int)(blockIdx.x - b * tiles);
    const int r0 = (tile / tiles_w) * CONV_TR, c0 = (tile % tiles_w) * CONV_TC;
    const int co0 = blockIdx.y * INV_CONV_CONV_TILE_CO;
    // Offset range of the reads: sign·(i − ai) ∈ [oh, oh + KH − 1].
    const int oh = sign > 0 ? -ai : -(KH - 1 - ai), ow = sign > 0 ? -aj : -(KW - 1 - aj);
    const i64 HW = (i64)H * W, CHW = C * HW;
    const T* src = in + b * CHW;
    const int lane = threadIdx.x & 31, rg = (threadIdx.x >> 5) & 3, cg = threadIdx.x >> 7;
    T acc[CONV_ROWS][8];
#pragma unroll
    for (int m = 0; m < CONV_ROWS; ++m)
#pragma unroll
        for (int c = 0; c < 8; ++c) acc[m][c] = T(0);
    const T* q = prep + 2 * (i64)C * Cp;
    const int tcw = CONV_TC + KW - 1;
    for (int ci0 = 0; ci0 < C; ci0 += CONV_CI) {
        __syncthreads();  // the previous chunk has been consumed
        for (int e = threadIdx.x; e < CONV_CI * TRH * tcw; e += blockDim.x) {
            const int cc = e % tcw, r = e / tcw, rr = r % TRH, cil = r / TRH;
            const int hs = r0 + oh + rr, ws = c0 + ow + cc, ci = ci0 + cil;
            T v = T(0);
            if (ci < C && hs >= 0 && hs < H && ws >= 0 && ws < W) v = src[(i64)ci * HW + (i64)hs * W + ws];
            xs[(cil * TRH + rr) * CONV_XS + cc] = v;
        }
        for (int e = threadIdx.x; e < KK * CONV_CI * 16; e += blockDim.x) {
            const int col = e & 15, r = e >> 4, cil = r % CONV_CI, t = r / CONV_CI;
            const int ci = ci0 + cil;
            qs[e] = ci < C ? q[((i64)t * C + ci) * Cp + co0 + col] : T(0);
        }
        __syncthreads();
        for (int cil = 0; cil < CONV_CI; ++cil) {
            for (int i = 0; i < KH; ++i) {
                const int lr = sign * (i - ai) - oh;
                const T* xrow = xs + (cil * TRH + rg * CONV_ROWS + lr) * CONV_XS + lane;
                for (int j = 0; j < KW; ++j) {
                    const int lc = sign * (j - aj) - ow, t = i * KW + j;
                    const Quad<T>* qq = reinterpret_cast<const Quad<T>*>(qs + (t * CONV_CI + cil) * 16 + 8 * cg);
                    const Quad<T> q0 = qq[0], q1 = qq[1];
#pragma unroll
                    for (int m = 0; m < CONV_ROWS; ++m) {
                        const T v = xrow[m * CONV_XS + lc];
#pragma unroll
                        for (int c = 0; c < 4; ++c) {
                            acc[m][c] += q0.v[c] * v;
                            acc[m][4 + c] += q1.v[c] * v;
                        }
                    }
                }
            }
        }
    }
    const int w = c0 + lane;
    if (w >= W) return;
    T* dst = out + b * CHW;
#pragma unroll
    for (int m = 0; m < CONV_ROWS; ++m) {
        const int h = r0 + rg * CONV_ROWS + m;
        if (h >= H) continue;
#pragma unroll
        for (int c = 0; c < 8; ++c) dst[(i64)(co0 + 8 * cg + c) * HW + (i64)h * W + w] = acc[m][c];
    }
}

#define INV_CONV_CONV_TILE_ENTRY(NAME, T)                                                     \
    extern "C" __global__ void __launch_bounds__(INV_CONV_CONV_TILE_THREADS) NAME(                                   \
        const T* in, T* out, const T* prep, int C, int H, int W, int KH, int KW, int ai,       \
        int aj, int sign, int tiles_h, int tiles_w) {                                          \
        conv_tile_impl<T>(in, out, prep, C, H, W, KH, KW, ai, aj, sign, tiles_h, tiles_w);     \
    }
INV_CONV_CONV_TILE_ENTRY(conv_tile_f32, float)
INV_CONV_CONV_TILE_ENTRY(conv_tile_f64, double)
