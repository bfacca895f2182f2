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

template <typename T>
__device__ void conv_chain_impl(const T* __restrict__ x, T* __restrict__ out, const T* const* ws,
                                const int* anchors, int nlayers, int C, int H, int W, int KH,
                                int KW) {
    extern __shared__ __align__(32) unsigned char smem_raw[];
    const int Cp = round_up4(C), G = Cp / 4, KK = KH * KW, HW = H * W;
    const int S = round_up4(C * HW);
    T* buf[2] = {reinterpret_cast<T*>(smem_raw), reinterpret_cast<T*>(smem_raw) + S};
    T* coef = buf[1] + S;
    const i64 base = (i64)blockIdx.x * C * HW;
    for (int e = threadIdx.x; e < C * HW; e += blockDim.x) buf[0][e] = x[base + e];
    for (int l = 0; l < nlayers; ++l) {
        const T* w = ws[l];
        const int ai = anchors[2 * l], aj = anchors[2 * l + 1], anchor_t = ai * KW + aj;
        for (int e = threadIdx.x; e < KK * C * Cp; e += blockDim.x) {
            const int co = e % Cp, rest = e / Cp, ci = rest % C, t = rest / C;
            coef[e] = co < C ? effective_weight(w, C, KK, co, ci, t, anchor_t) : T(0);
        }
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
    for (int e = threadIdx.x; e < C * HW; e += blockDim.x) out[base + e] = last[e];
}

static_assert(INV_CONV_CHAIN_MAX_LAYERS == 4, "conv_chain's entry points take four weights");

#define INV_CONV_CHAIN_ENTRY(NAME, T)                                                            \
    extern "C" __global__ void NAME(const T* x, T* out, const T* w0, const T* w1, const T* w2,   \
                                    const T* w3, int nlayers, int C, int H, int W, int KH,       \
                                    int KW, int ai0, int aj0, int ai1, int aj1, int ai2,         \
                                    int aj2, int ai3, int aj3) {                                 \
        const T* ws[INV_CONV_CHAIN_MAX_LAYERS] = {w0, w1, w2, w3};                               \
        const int anchors[2 * INV_CONV_CHAIN_MAX_LAYERS] = {ai0, aj0, ai1, aj1,                  \
                                                            ai2, aj2, ai3, aj3};                 \
        conv_chain_impl<T>(x, out, ws, anchors, nlayers, C, H, W, KH, KW);                       \
    }
INV_CONV_CHAIN_ENTRY(conv_chain_f32, float)
INV_CONV_CHAIN_ENTRY(conv_chain_f64, double)
