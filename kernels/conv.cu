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
        const Quad<T>* qt = q_base + (i64)t * C * q_stride;
#pragma unroll 4
        for (int ci = 0; ci < C; ++ci) {
            const T v = src[ci * HW];
            const Quad<T> c = qt[ci * q_stride];
#pragma unroll
            for (int k = 0; k < 4; ++k) acc[k] += c.v[k] * v;
        }
    }
    T* dst = out + b * CHW + hw;
#pragma unroll
    for (int k = 0; k < 4; ++k)
        if (4 * g + k < C) dst[(4 * g + k) * HW] = acc[k];
}

// z[b, co, p] = Σ_c P[co][c] · src[b, c, p]   (Pᵀ at prep + C*Cp, see common.cu).
template <typename T>
__device__ void channel_mix_impl(const T* __restrict__ src, T* __restrict__ dst,
                                 const T* __restrict__ prep, int B, int C, i64 HW) {
    const int Cp = round_up4(C), G = Cp / 4;
    const i64 pix = blockIdx.x * (i64)blockDim.x + threadIdx.x;
    if (pix >= (i64)B * HW) return;
    const i64 b = pix / HW, hw = pix % HW, CHW = C * HW;
    const T* s = src + b * CHW + hw;
    T* d = dst + b * CHW + hw;
    const Quad<T>* pt = reinterpret_cast<const Quad<T>*>(prep + (i64)C * Cp);
    for (int g = 0; g < G; ++g) {
        T acc[4] = {T(0), T(0), T(0), T(0)};
        for (int c = 0; c < C; ++c) {
            const T v = s[c * HW];
            const Quad<T> p = pt[(i64)c * G + g];
#pragma unroll
            for (int k = 0; k < 4; ++k) acc[k] += p.v[k] * v;
        }
#pragma unroll
        for (int k = 0; k < 4; ++k)
            if (4 * g + k < C) d[(4 * g + k) * HW] = acc[k];
    }
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
                                           int C, long long HW) {
    channel_mix_impl<float>(src, dst, prep, B, C, HW);
}
extern "C" __global__ void channel_mix_f64(const double* src, double* dst, const double* prep,
                                           int B, int C, long long HW) {
    channel_mix_impl<double>(src, dst, prep, B, C, HW);
}
