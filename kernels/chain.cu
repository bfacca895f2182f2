// conv_chain: up to four masked convolutions applied one after another to each sample, in one
// launch — the sampling direction of an Inverse-Flow unit (BR, BL, TR, TL forward maps). One
// block per sample keeps the whole image in shared memory between the layers (two buffers),
// so the unit costs one read and one write of the image instead of four of each, and one
// launch instead of eight (no coefficient preparation: the mask is applied while each layer's
// weight is staged).
//
// Layer l reads src and writes dst: dst[co, p] = Σ_t Σ_ci ŵ_l[co][ci][t] · src[ci, p + off_t],
// off_t = (i − anchor_i, j − anchor_j), zero outside the image. Thread roles: lanes are
// consecutive pixels of one 4-output-channel group, so the coefficient reads (a Quad over co)
// are warp broadcasts and the image reads are conflict-free. Shared memory (elements of T):
//   [0, S)           buffer 0 (C·H·W, S = that rounded up to a multiple of 4)
//   [S, 2S)          buffer 1
//   [2S, 2S + KK·C·Cp)  the current layer's masked coefficients, at (t·C + ci)·Cp + co

// The chain's optional ends, which make it the whole sampling direction of one Inverse-Flow
// step of flow (inv_flow's AffineCoupling, InvFlowUnit and ActNorm reverses in one launch):
//  - coupling (h non-null), before the first layer: input channels c ≥ split become
//      y · exp(log_offset − logsigmoid(r + offset)) − s,
//    s = h[2(c − split)], r = h[2(c − split) + 1] (h interleaves shift and raw scale; h's
//    element (b, k, p) is at b·hb + k·hc + p·hp, so channels-last works as is);
//  - actnorm (an_log_scale non-null), after the last layer: v · exp(−log_scale[c]) − bias[c].
// Each step is rounded on its own (no contraction into FMAs), as torch's elementwise ops are,
// in the order AffineCoupling.reverse and ActNorm.reverse apply them.
template <typename T>
struct ChainEnds {
    const T* h;
    i64 hb, hc, hp;
    int split;
    T offset, log_offset;
    const T* an_log_scale;
    const T* an_bias;
};

__device__ __forceinline__ float rn_add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double rn_add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float rn_sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double rn_sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float rn_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double rn_mul(double a, double b) { return __dmul_rn(a, b); }

// Element e = c·HW + p of sample b's chain input.
template <typename T>
__device__ __forceinline__ T chain_input(const T* __restrict__ x, i64 base, int e, int HW, int b,
                                         const ChainEnds<T>& ends) {
    T v = x[base + e];
    const int c = e / HW;
    if (ends.h != nullptr && c >= ends.split) {
        const int k = c - ends.split, p = e - c * HW;
        const T* hs = ends.h + b * ends.hb + p * ends.hp + 2 * k * ends.hc;
        const T shift = hs[0], t = rn_add(hs[ends.hc], ends.offset);
        const T log_sigmoid = rn_sub(min(T(0), t), log1p(exp(-abs(t))));
        v = rn_sub(rn_mul(v, exp(rn_sub(ends.log_offset, log_sigmoid))), shift);
    }
    return v;
}

// Element of output channel c of the chain, after the last layer.
template <typename T>
__device__ __forceinline__ T chain_output(T v, int c, const ChainEnds<T>& ends) {
    if (ends.an_log_scale != nullptr)
        v = rn_sub(rn_mul(v, exp(-ends.an_log_scale[c])), ends.an_bias[c]);
    return v;
}

// One layer's masked coefficients into `coef` at (t·C + ci)·Cp + co (zero for co ≥ C).
template <typename T>
__device__ __forceinline__ void stage_chain_coef(T* coef, const T* __restrict__ w, int C, int Cp,
                                                 int KK, int anchor_t) {
    for (int e = threadIdx.x; e < KK * C * Cp; e += blockDim.x) {
        const int co = e % Cp, rest = e / Cp, ci = rest % C, t = rest / C;
        coef[e] = co < C ? effective_weight(w, C, KK, co, ci, t, anchor_t) : T(0);
    }
}

template <typename T>
__device__ void conv_chain_impl(const T* __restrict__ x, T* __restrict__ out, const T* const* ws,
                                const int* anchors, int nlayers, int C, int H, int W, int KH,
                                int KW, const ChainEnds<T>& ends) {
    extern __shared__ __align__(32) unsigned char smem_raw[];
    const int Cp = round_up4(C), G = Cp / 4, KK = KH * KW, HW = H * W;
    const int S = round_up4(C * HW);
    T* buf[2] = {reinterpret_cast<T*>(smem_raw), reinterpret_cast<T*>(smem_raw) + S};
    T* coef = buf[1] + S;
    const i64 base = (i64)blockIdx.x * C * HW;
    for (int e = threadIdx.x; e < C * HW; e += blockDim.x)
        buf[0][e] = chain_input(x, base, e, HW, blockIdx.x, ends);
    for (int l = 0; l < nlayers; ++l) {
        const T* w = ws[l];
        const int ai = anchors[2 * l], aj = anchors[2 * l + 1], anchor_t = ai * KW + aj;
        stage_chain_coef(coef, w, C, Cp, KK, anchor_t);
        __syncthreads();
        const T* src = buf[l & 1];
        T* dst = buf[(l + 1) & 1];
        for (int item = threadIdx.x; item < G * HW; item += blockDim.x) {
            const int g = item / HW, p = item - g * HW;
            const int h = p / W, wc = p - h * W;
            T acc[4] = {T(0), T(0), T(0), T(0)};
            for (int t = 0; t < KK; ++t) {
                const int i = t / KW, j = t - i * KW;
                const int hs = h + i - ai, wsrc = wc + j - aj;
                if (hs < 0 || hs >= H || wsrc < 0 || wsrc >= W) continue;
                const T* s = src + hs * W + wsrc;
                const Quad<T>* q = reinterpret_cast<const Quad<T>*>(coef + (i64)t * C * Cp) + g;
                quad_dot(acc, s, HW, q, G, C);
            }
#pragma unroll
            for (int k = 0; k < 4; ++k)
                if (4 * g + k < C) dst[(4 * g + k) * HW + p] = acc[k];
        }
        __syncthreads();  // dst complete, and coef free for the next layer
    }
    const T* last = buf[nlayers & 1];
    for (int e = threadIdx.x; e < C * HW; e += blockDim.x)
        out[base + e] = chain_output(last[e], e / HW, ends);
}

// conv_chain_regs: float32, C = 12 or 24 (the flow presets' units): the same layers, shared
// memory and coefficient layout, but a thread computes COT output channels of PX pixels
// (pixels strided by the group's threads, so lanes stay consecutive pixels), with C known at
// compile time: per (tap, ci) PX image loads and COT/4 broadcast 16-byte coefficient loads
// feed PX·COT multiply-adds (the generic kernel: 2 loads per 4). The sums per output run over
// (tap, ci) in the generic kernel's order.
template <int C, int COT, int PX>
__device__ void conv_chain_regs_impl(const float* __restrict__ x, float* __restrict__ out,
                                     const float* const* ws, const int* anchors, int nlayers,
                                     int H, int W, int KH, int KW,
                                     const ChainEnds<float>& ends) {
    static_assert(C % COT == 0 && COT % 4 == 0, "conv_chain_regs layout");
    extern __shared__ __align__(32) unsigned char smem_raw[];
    const int KK = KH * KW, HW = H * W, S = round_up4(C * HW);
    float* buf[2] = {reinterpret_cast<float*>(smem_raw), reinterpret_cast<float*>(smem_raw) + S};
    float* coef = buf[1] + S;
    const i64 base = (i64)blockIdx.x * C * HW;
    // Threads: C / COT groups of `tpg`, group cog computing channels [cog·COT, (cog+1)·COT).
    const int tpg = blockDim.x / (C / COT), cog = threadIdx.x / tpg, lt = threadIdx.x % tpg;
    const bool working = cog < C / COT;
    for (int e = threadIdx.x; e < C * HW; e += blockDim.x)
        buf[0][e] = chain_input(x, base, e, HW, blockIdx.x, ends);
    for (int l = 0; l < nlayers; ++l) {
        const int ai = anchors[2 * l], aj = anchors[2 * l + 1];
        stage_chain_coef(coef, ws[l], C, C, KK, ai * KW + aj);
        __syncthreads();
        const float* src = buf[l & 1];
        float* dst = buf[(l + 1) & 1];
        for (int p0 = lt; working && p0 < HW; p0 += PX * tpg) {
            int h[PX], wc[PX];
            bool live[PX];  // pixels past the end read and write nothing
#pragma unroll
            for (int k = 0; k < PX; ++k) {
                const int p = p0 + k * tpg;
                live[k] = p < HW;
                h[k] = p / W;
                wc[k] = p - h[k] * W;
            }
            float acc[PX][COT] = {};
            for (int t = 0; t < KK; ++t) {
                const int di = t / KW - ai, dj = t % KW - aj;
                int off[PX];
                bool in[PX];
#pragma unroll
                for (int k = 0; k < PX; ++k) {
                    const int hs = h[k] + di, wsrc = wc[k] + dj;
                    in[k] = live[k] && hs >= 0 && hs < H && wsrc >= 0 && wsrc < W;
                    off[k] = in[k] ? hs * W + wsrc : 0;
                }
                const float4* q = reinterpret_cast<const float4*>(coef + t * C * C + cog * COT);
#pragma unroll
                for (int ci = 0; ci < C; ++ci) {
                    float v[PX];
#pragma unroll
                    for (int k = 0; k < PX; ++k) v[k] = in[k] ? src[ci * HW + off[k]] : 0.f;
#pragma unroll
                    for (int g = 0; g < COT / 4; ++g) {
                        const float4 c4 = q[ci * (C / 4) + g];
#pragma unroll
                        for (int k = 0; k < PX; ++k) {
                            acc[k][4 * g] += c4.x * v[k];
                            acc[k][4 * g + 1] += c4.y * v[k];
                            acc[k][4 * g + 2] += c4.z * v[k];
                            acc[k][4 * g + 3] += c4.w * v[k];
                        }
                    }
                }
            }
#pragma unroll
            for (int k = 0; k < PX; ++k) {
                if (!live[k]) continue;
#pragma unroll
                for (int j = 0; j < COT; ++j) dst[(cog * COT + j) * HW + p0 + k * tpg] = acc[k][j];
            }
        }
        __syncthreads();  // dst complete, and coef free for the next layer
    }
    const float* last = buf[nlayers & 1];
    for (int e = threadIdx.x; e < C * HW; e += blockDim.x)
        out[base + e] = chain_output(last[e], e / HW, ends);
}

static_assert(INV_CONV_CHAIN_MAX_LAYERS == 4, "conv_chain's entry points take four weights");

// Entry points: x, out, the four weights, nlayers, C, H, W, KH, KW, the four anchors, then
// the ends (ChainEnds' fields; null pointers leave an end out).
#define INV_CONV_CHAIN_UNPACK(T)                                                                 \
    const T* ws[INV_CONV_CHAIN_MAX_LAYERS] = {w0, w1, w2, w3};                                   \
    const int anchors[2 * INV_CONV_CHAIN_MAX_LAYERS] = {ai0, aj0, ai1, aj1, ai2, aj2, ai3, aj3}; \
    const ChainEnds<T> ends = {h,      hb,           hc,          hp, split, T(offset),          \
                               T(log_offset), an_log_scale, an_bias}

#define INV_CONV_CHAIN_ENTRY(NAME, T)                                                            \
    extern "C" __global__ void NAME(                                                             \
        const T* x, T* out, const T* w0, const T* w1, const T* w2, const T* w3, int nlayers,     \
        int C, int H, int W, int KH, int KW, int ai0, int aj0, int ai1, int aj1, int ai2,        \
        int aj2, int ai3, int aj3, const T* h, long long hb, long long hc, long long hp,         \
        int split, double offset, double log_offset, const T* an_log_scale, const T* an_bias) {  \
        INV_CONV_CHAIN_UNPACK(T);                                                                \
        conv_chain_impl<T>(x, out, ws, anchors, nlayers, C, H, W, KH, KW, ends);                 \
    }
INV_CONV_CHAIN_ENTRY(conv_chain_f32, float)
INV_CONV_CHAIN_ENTRY(conv_chain_f64, double)

#define INV_CONV_CHAIN_REGS_ENTRY(NAME, CHANNELS, COT, PX)                                       \
    extern "C" __global__ void __launch_bounds__(INV_CONV_CHAIN_REGS_THREADS, 1)                 \
        NAME(const float* x, float* out, const float* w0, const float* w1, const float* w2,     \
             const float* w3, int nlayers, int C, int H, int W, int KH, int KW, int ai0,        \
             int aj0, int ai1, int aj1, int ai2, int aj2, int ai3, int aj3, const float* h,     \
             long long hb, long long hc, long long hp, int split, double offset,                \
             double log_offset, const float* an_log_scale, const float* an_bias) {              \
        INV_CONV_CHAIN_UNPACK(float);                                                            \
        conv_chain_regs_impl<CHANNELS, COT, PX>(x, out, ws, anchors, nlayers, H, W, KH, KW,     \
                                                ends);                                          \
    }
INV_CONV_CHAIN_REGS_ENTRY(conv_chain_c12_f32, 12, 12, 2)
INV_CONV_CHAIN_REGS_ENTRY(conv_chain_c24_f32, 24, 12, 2)
