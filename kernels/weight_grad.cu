// Weight-gradient of the forward map: dW[co, ci, i, j] = Σ_{b,h,w} g[b,co,h,w] ·
// x[b, ci, h + i − ai, w + j − aj] (zero outside), masked at the anchor. A GEMM with a tiny
// C × C output per tap and a long reduction over N = B·H·W, so split-K in two deterministic
// stages (no atomics):
//   wgrad_partial: grid (nblk, KK). Block (k, t) takes the pixel chunks k, k+nblk, ... of the
//     flattened (b, h, w) range, stages g and the tap-shifted x of a chunk in shared memory
//     pixel-major ([pixel][channel], row stride Cs), and each thread accumulates a 4×4
//     (co, ci) register tile over a subset of the chunk's pixels (two vector loads per 16
//     FMAs). Thread groups that split one tile's pixels are summed in shared memory, in a
//     fixed order; the block writes partial[k][t][co][ci].
//   wgrad_reduce: one thread per output entry sums the nblk partials in order, applies the
//     mask and optionally negates (the fused inverse backward).
// A launch may serve up to four layers of one shape (an Inverse-Flow unit's backward): grid.z
// (grid.y for wgrad_reduce) is the layer, which picks its x, g and anchor and its slice of the
// partial sums and of the output; each layer's sums are those of a launch of its own.

// The argument of this block's layer (blockIdx.z) among one per layer.
template <typename A>
__device__ __forceinline__ A wgrad_layer_arg(A a0, A a1, A a2, A a3) {
    static_assert(INV_CONV_CHAIN_MAX_LAYERS == 4, "one argument per layer");
    const int z = blockIdx.z;
    return z == 0 ? a0 : z == 1 ? a1 : z == 2 ? a2 : a3;
}

template <typename T>
__device__ void wgrad_partial_impl(const T* __restrict__ x, const T* __restrict__ g,
                                   T* __restrict__ partial, int B, int C, int H, int W, int KH,
                                   int KW, int ai, int aj, int chunk) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int Cp = round_up4(C), Cs = Cp + 4, G = Cp / 4, KK = KH * KW;
    const int t = blockIdx.y, di = t / KW - ai, dj = t - (t / KW) * KW - aj;
    const i64 HW = (i64)H * W, CHW = C * HW, N = (i64)B * HW;
    const i64 nchunks = (N + chunk - 1) / chunk;
    T* gs = reinterpret_cast<T*>(smem_raw);
    T* xs = gs + (i64)chunk * Cs;
    T* red = xs + (i64)chunk * Cs;  // blockDim.x * 16
    // Padding channels stay zero for the whole kernel.
    for (int e = threadIdx.x; e < chunk * (Cs - C); e += blockDim.x) {
        const int nl = e / (Cs - C), c = C + e % (Cs - C);
        gs[nl * Cs + c] = T(0);
        xs[nl * Cs + c] = T(0);
    }
    const int nl_fixed = threadIdx.x & (chunk - 1);
    const int c_first = threadIdx.x / chunk, c_step = blockDim.x / chunk;
    const int tiles = G * G;
    const int per_pass = min(tiles, (int)blockDim.x);
    const int nsplit = blockDim.x / per_pass;
    const int group = threadIdx.x / per_pass;
    for (int tile0 = 0; tile0 < tiles; tile0 += per_pass) {
        const int tile = tile0 + threadIdx.x % per_pass;
        const bool active = group < nsplit && tile < tiles;
        const int cg = tile / G, xg = tile % G;
        T acc[16];
#pragma unroll
        for (int k = 0; k < 16; ++k) acc[k] = T(0);
        for (i64 ch = blockIdx.x; ch < nchunks; ch += gridDim.x) {
            const i64 n0 = ch * chunk;
            const int cnt = (int)min((i64)chunk, N - n0);
            __syncthreads();  // the previous chunk has been consumed
            // `chunk` divides blockDim.x: each thread stages one pixel (fixed per chunk, so its
            // position is worked out once) for channels c_first, c_first + c_step, ...
            const i64 n = n0 + nl_fixed;
            const bool valid = nl_fixed < cnt;
            i64 g_at = 0, x_at = -1;
            if (valid) {
                const i64 b = n / HW, hw = n - b * HW;
                const int h = (int)(hw / W), w = (int)(hw - (i64)(hw / W) * W);
                g_at = b * CHW + hw;
                const int hs = h + di, ws = w + dj;
                if (hs >= 0 && hs < H && ws >= 0 && ws < W) x_at = b * CHW + (i64)hs * W + ws;
            }
            for (int c = c_first; c < C; c += c_step) {
                gs[nl_fixed * Cs + c] = valid ? g[g_at + c * HW] : T(0);
                xs[nl_fixed * Cs + c] = x_at >= 0 ? x[x_at + c * HW] : T(0);
            }
            __syncthreads();
            if (active) {
                for (int nl = group; nl < cnt; nl += nsplit) {
                    const Quad<T> gq = *reinterpret_cast<const Quad<T>*>(gs + nl * Cs + 4 * cg);
                    const Quad<T> xq = *reinterpret_cast<const Quad<T>*>(xs + nl * Cs + 4 * xg);
#pragma unroll
                    for (int a = 0; a < 4; ++a)
#pragma unroll
                        for (int c = 0; c < 4; ++c) acc[a * 4 + c] += gq.v[a] * xq.v[c];
                }
            }
        }
#pragma unroll
        for (int k = 0; k < 16; ++k) red[threadIdx.x * 16 + k] = active ? acc[k] : T(0);
        __syncthreads();
        for (int e = threadIdx.x; e < per_pass * 16; e += blockDim.x) {
            const int tl = e / 16, k = e % 16, tile_e = tile0 + tl;
            if (tile_e >= tiles) continue;
            T s = T(0);
            for (int grp = 0; grp < nsplit; ++grp) s += red[(grp * per_pass + tl) * 16 + k];
            const int co = 4 * (tile_e / G) + k / 4, ci = 4 * (tile_e % G) + k % 4;
            if (co < C && ci < C)
                partial[(((i64)blockIdx.x * KK + t) * C + co) * C + ci] = s;
        }
        __syncthreads();
    }
}

template <typename T>
__device__ void wgrad_reduce_impl(const T* __restrict__ partial, T* __restrict__ out, int C,
                                  int KK, int anchor_t, int nblk, int negate) {
    const i64 total = (i64)C * C * KK;
    partial += (i64)blockIdx.y * nblk * total;  // this layer's partials and output
    out += (i64)blockIdx.y * total;
    for (i64 e = blockIdx.x * (i64)blockDim.x + threadIdx.x; e < total;
         e += (i64)gridDim.x * blockDim.x) {
        const int t = (int)(e % KK);
        const int ci = (int)((e / KK) % C);
        const int co = (int)(e / ((i64)KK * C));
        T s = T(0);
        if (!(t == anchor_t && ci >= co)) {
            // Summed in block order, but loaded 8 at a time: one load in flight at a time made
            // this latency-bound (5.7 µs per call at the cifar10 preset's shapes, H200).
            const T* p = partial + ((i64)t * C + co) * C + ci;
            const i64 stride = (i64)KK * C * C;
            int k = 0;
            for (; k + 8 <= nblk; k += 8) {
                T v[8];
#pragma unroll
                for (int u = 0; u < 8; ++u) v[u] = p[(k + u) * stride];
#pragma unroll
                for (int u = 0; u < 8; ++u) s += v[u];
            }
            for (; k < nblk; ++k) s += p[k * stride];
        }
        out[e] = negate ? -s : s;  // negate: the inverse's weight-gradient −Σ u·pad(x)
    }
}

// This block's layer's x, g, anchor and slice of the partial sums (gridDim.x blocks × KK ×
// C × C each) in the layered entry points, which take x0..x3, g0..g3, ai0..ai3, aj0..aj3.
#define WGRAD_LAYER_X wgrad_layer_arg(x0, x1, x2, x3)
#define WGRAD_LAYER_G wgrad_layer_arg(g0, g1, g2, g3)
#define WGRAD_LAYER_AI wgrad_layer_arg(ai0, ai1, ai2, ai3)
#define WGRAD_LAYER_AJ wgrad_layer_arg(aj0, aj1, aj2, aj3)
#define WGRAD_LAYER_PARTIAL (partial + (i64)blockIdx.z * gridDim.x * KH * KW * C * C)

#define WGRAD_PARTIAL_ENTRY(T, SFX)                                                            \
    extern "C" __global__ void wgrad_partial_##SFX(                                            \
        const T* x0, const T* x1, const T* x2, const T* x3, const T* g0, const T* g1,          \
        const T* g2, const T* g3, T* partial, int B, int C, int H, int W, int KH, int KW,      \
        int ai0, int aj0, int ai1, int aj1, int ai2, int aj2, int ai3, int aj3, int chunk) {   \
        wgrad_partial_impl<T>(WGRAD_LAYER_X, WGRAD_LAYER_G, WGRAD_LAYER_PARTIAL, B, C, H, W,   \
                              KH, KW, WGRAD_LAYER_AI, WGRAD_LAYER_AJ, chunk);                  \
    }
WGRAD_PARTIAL_ENTRY(float, f32)
WGRAD_PARTIAL_ENTRY(double, f64)

// grid.y: the layer, anchor_t0..3 its anchor tap.
#define WGRAD_REDUCE_ENTRY(T, SFX)                                                             \
    extern "C" __global__ void wgrad_reduce_##SFX(const T* partial, T* out, int C, int KK,     \
                                                  int anchor_t0, int anchor_t1, int anchor_t2,  \
                                                  int anchor_t3, int nblk, int negate) {        \
        const int l = blockIdx.y;                                                              \
        const int anchor_t = l == 0 ? anchor_t0 : l == 1 ? anchor_t1 : l == 2 ? anchor_t2      \
                                                                               : anchor_t3;    \
        wgrad_reduce_impl<T>(partial, out, C, KK, anchor_t, nblk, negate);                     \
    }
WGRAD_REDUCE_ENTRY(float, f32)
WGRAD_REDUCE_ENTRY(double, f64)

// ---------------------------------------------------------------------------------------------
// wgrad_tile: one staging per pixel tile for all taps. Block k takes the spatial tiles
// k, k + nblk, ... (tile = TR rows × TW columns of one sample) and stages g of the tile and x of
// the tile plus its (KH−1) × (KW−1) halo, pixel-major ([pixel][channel], row stride Cs), once.
// Thread unit u = (i, cg, xg) owns the 4×4 (co, ci) tile of every tap (i, j), j < KW, of tap
// row i: 16·KW register accumulators. Per step of PX consecutive pixels of a tile row it loads
// PX g vectors and PX + KW − 1 x vectors (the taps of a row are horizontal shifts, so the
// window is shared) for 16·KW·PX FMAs. Units beyond blockDim.x run in further passes over the
// tiles. Per-thread order is fixed and the block writes partial[k][t][co][ci], which
// wgrad_reduce sums in order: deterministic. The staging is double-buffered: the next tile's
// loads (cp.async on sm_80+) are in flight while the block computes on this one.

// dst[(r * cols + col) * Cs + c] = src[c, h0 + r, w0 + col] (zero outside the image), for
// r < rows, col < cols, c < C, issued as asynchronous copies (cp.async, zero-filled outside
// the image) where the device has them: complete after wgrad_stage_wait and a barrier. Needs
// blockDim.x >= cols.
template <typename T>
__device__ __forceinline__ void wgrad_stage(T* __restrict__ dst, const T* __restrict__ src,
                                            int C, int H, int W, i64 HW, int rows, int cols,
                                            int h0, int w0, int Cs) {
    const int col = threadIdx.x % cols;
    const int step = blockDim.x / cols;
    const int first = threadIdx.x / cols;
    if (first >= step) return;
    const int w = w0 + col;
    const bool wok = w >= 0 && w < W;
    // (channel, row) pairs k = c·rows + r, channel-major, k = first, first + step, ...
    int c = first / rows, r = first % rows;
    for (; c < C;) {
        const int h = h0 + r;
        const bool ok = wok && h >= 0 && h < H;
        T* d = dst + (r * cols + col) * Cs + c;
        const T* s = ok ? src + c * HW + (i64)h * W + w : src;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        const unsigned daddr = (unsigned)__cvta_generic_to_shared(d);
        if (sizeof(T) == 4)
            asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(daddr), "l"(s),
                         "r"(ok ? 4 : 0));
        else
            asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(daddr), "l"(s),
                         "r"(ok ? 8 : 0));
#else
        *d = ok ? *s : T(0);
#endif
        r += step;
        while (r >= rows) {
            r -= rows;
            ++c;
        }
    }
}

// cp.async bookkeeping (no-ops where wgrad_stage stores directly): `commit` closes this
// thread's group of copies issued since the last commit; `wait<N>` returns when all but the
// newest N groups have landed (a barrier then makes them visible to the block).
__device__ __forceinline__ void wgrad_stage_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int Pending>
__device__ __forceinline__ void wgrad_stage_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending));
#endif
}

template <typename T, int KWT, int PX>
__device__ void wgrad_tile_impl(const T* __restrict__ x, const T* __restrict__ g,
                                T* __restrict__ partial, int B, int C, int H, int W, int KH,
                                int ai, int aj, int TR, int TW) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int Cp = round_up4(C), Cs = Cp + 4, G = Cp / 4, KK = KH * KWT;
    const int TRh = TR + KH - 1, TWh = TW + KWT - 1;
    const int gpx = TR * TW, xpx = TRh * TWh;
    // Two buffers, each g of a tile then x of its window: [buf][pixel][Cs].
    static_assert(INV_CONV_WGRAD_TILE_BUFFERS == 2, "wgrad_tile alternates two buffers");
    T* const base = reinterpret_cast<T*>(smem_raw);
    const i64 buf_elems = (i64)(gpx + xpx) * Cs;
    // Padding channels (C .. Cs − 1) of every staged pixel stay zero for the whole kernel.
    for (int e = threadIdx.x; e < INV_CONV_WGRAD_TILE_BUFFERS * (gpx + xpx) * (Cs - C);
         e += blockDim.x) {
        const int px = e / (Cs - C), c = C + e % (Cs - C);
        base[(i64)px * Cs + c] = T(0);
    }
    const i64 HW = (i64)H * W, CHW = (i64)C * HW;
    const int tiles_h = (H + TR - 1) / TR, tiles_w = (W + TW - 1) / TW;
    const i64 per_sample = (i64)tiles_h * tiles_w, ntiles = (i64)B * per_sample;
    const int units = G * G * KH;
    for (int u0 = 0; u0 < units; u0 += blockDim.x) {
        const int u = u0 + threadIdx.x;
        const bool active = u < units;
        const int xg = u % G, cg = (u / G) % G, i = u / (G * G);
        T acc[KWT][16];
#pragma unroll
        for (int j = 0; j < KWT; ++j)
#pragma unroll
            for (int k = 0; k < 16; ++k) acc[j][k] = T(0);
        // Tile origin (sample, first row, first column).
        auto origin = [&](i64 tile, i64& b, int& r0, int& c0) {
            b = tile / per_sample;
            const int rem = (int)(tile - b * per_sample);
            r0 = (rem / tiles_w) * TR;
            c0 = (rem % tiles_w) * TW;
        };
        auto stage = [&](i64 tile, int buf) {
            if (tile >= ntiles) return;
            i64 b;
            int r0, c0;
            origin(tile, b, r0, c0);
            T* gs = base + buf * buf_elems;
            wgrad_stage<T>(gs, g + b * CHW, C, H, W, HW, TR, TW, r0, c0, Cs);
            wgrad_stage<T>(gs + (i64)gpx * Cs, x + b * CHW, C, H, W, HW, TRh, TWh, r0 - ai,
                           c0 - aj, Cs);
        };
        __syncthreads();  // the previous pass is done with both buffers
        stage(blockIdx.x, 0);
        wgrad_stage_commit();
        int buf = 0;
        for (i64 tile = blockIdx.x; tile < ntiles; tile += gridDim.x, buf ^= 1) {
            stage(tile + gridDim.x, buf ^ 1);  // the next tile's loads go out first
            wgrad_stage_commit();
            wgrad_stage_wait<1>();  // this tile's copies have landed
            __syncthreads();
            i64 b;
            int r0, c0;
            origin(tile, b, r0, c0);
            const T* gs = base + buf * buf_elems;
            const T* xs = gs + (i64)gpx * Cs;
            if (active) {
                const int rv = min(TR, H - r0);
                const int cv = (min(TW, W - c0) + PX - 1) / PX * PX;  // <= TW (TW % PX == 0)
                for (int r = 0; r < rv; ++r) {
                    const T* gp = gs + (r * TW) * Cs + 4 * cg;
                    const T* xp = xs + ((r + i) * TWh) * Cs + 4 * xg;
                    for (int w0 = 0; w0 < cv; w0 += PX) {
                        Quad<T> xq[PX + KWT - 1];
#pragma unroll
                        for (int q = 0; q < PX + KWT - 1; ++q)
                            xq[q] = *reinterpret_cast<const Quad<T>*>(xp + (w0 + q) * Cs);
#pragma unroll
                        for (int p = 0; p < PX; ++p) {
                            const Quad<T> gq =
                                *reinterpret_cast<const Quad<T>*>(gp + (w0 + p) * Cs);
#pragma unroll
                            for (int j = 0; j < KWT; ++j)
#pragma unroll
                                for (int a = 0; a < 4; ++a)
#pragma unroll
                                    for (int c = 0; c < 4; ++c)
                                        acc[j][a * 4 + c] += gq.v[a] * xq[p + j].v[c];
                        }
                    }
                }
            }
            __syncthreads();  // this buffer is consumed before the next stage refills it
        }
        if (active) {
#pragma unroll
            for (int j = 0; j < KWT; ++j) {
                const int t = i * KWT + j;
#pragma unroll
                for (int k = 0; k < 16; ++k) {
                    const int co = 4 * cg + k / 4, ci = 4 * xg + k % 4;
                    if (co < C && ci < C)
                        partial[(((i64)blockIdx.x * KK + t) * C + co) * C + ci] = acc[j][k];
                }
            }
        }
    }
}

#define WGRAD_TILE_ENTRY(KWT, T, SFX, BOUND, PX)                                               \
    extern "C" __global__ void __launch_bounds__(BOUND) wgrad_tile##KWT##_##SFX(               \
        const T* x0, const T* x1, const T* x2, const T* x3, const T* g0, const T* g1,          \
        const T* g2, const T* g3, T* partial, int B, int C, int H, int W, int KH, int ai0,     \
        int aj0, int ai1, int aj1, int ai2, int aj2, int ai3, int aj3, int TR, int TW) {       \
        const int KW = KWT;                                                                    \
        wgrad_tile_impl<T, KWT, PX>(WGRAD_LAYER_X, WGRAD_LAYER_G, WGRAD_LAYER_PARTIAL, B, C, H, \
                                    W, KH, WGRAD_LAYER_AI, WGRAD_LAYER_AJ, TR, TW);            \
    }
WGRAD_TILE_ENTRY(1, float, f32, INV_CONV_WGRAD_TILE_THREADS_F32, INV_CONV_WGRAD_TILE_PX_F32)
WGRAD_TILE_ENTRY(1, double, f64, INV_CONV_WGRAD_TILE_THREADS_F64, INV_CONV_WGRAD_TILE_PX_F64)
WGRAD_TILE_ENTRY(2, float, f32, INV_CONV_WGRAD_TILE_THREADS_F32, INV_CONV_WGRAD_TILE_PX_F32)
WGRAD_TILE_ENTRY(2, double, f64, INV_CONV_WGRAD_TILE_THREADS_F64, INV_CONV_WGRAD_TILE_PX_F64)
WGRAD_TILE_ENTRY(3, float, f32, INV_CONV_WGRAD_TILE_THREADS_F32, INV_CONV_WGRAD_TILE_PX_F32)
WGRAD_TILE_ENTRY(3, double, f64, INV_CONV_WGRAD_TILE_THREADS_F64, INV_CONV_WGRAD_TILE_PX_F64)
