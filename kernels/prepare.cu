// Preparation of the per-call coefficient tables (see the layout in common.cu). Two tiny
// launches per op, no host round trip: the weight stays on the device.
//
// Modes: 0 forward (Q_t = ŵ_t), 1 forward adjoint (Q_t = ŵ_tᵀ), 2 inverse (Q_t = L⁻¹ M_t,
// P = L⁻¹), 3 inverse adjoint (Q_t = L⁻ᵀ M_tᵀ, P = L⁻ᵀ), with M_t the tap matrices of the
// forward map and L the anchor's unit lower-triangular matrix. The anchor's Q is zero in
// modes 2 and 3: the sweep applies P to the right-hand side instead (x = P·y − Σ Q_t x_t).

// L⁻¹ by forward substitution (unit_lower_inverse), then Pᵀ. One block. The substitution runs
// in shared memory when L and L⁻¹ fit (`in_smem`): its reads of earlier rows are then ~30
// cycles, not a global round trip.
// Otherwise it works in `prep` itself, which is then not read through the read-only cache.
template <typename T>
__device__ void prepare_inverse_impl(const T* __restrict__ w, T* prep, int C, int KK, int anchor_t,
                                     int adjoint, int in_smem) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int Cp = round_up4(C);
    T* out_linv = prep;
    T* pt = prep + (i64)C * Cp;
    T* linv = out_linv;
    T* lmat = nullptr;  // L's strictly lower part, row-major C × C (shared memory only)
    if (in_smem) {
        linv = reinterpret_cast<T*>(smem_raw);
        lmat = linv + (i64)C * Cp;
        for (i64 e = threadIdx.x; e < (i64)C * C; e += blockDim.x)
            lmat[e] = w[e * KK + anchor_t];  // w[(r*C + m)*KK + anchor_t], e = r*C + m
        __syncthreads();
    }
    unit_lower_inverse<T>(
        [&](int r, int m) {
            return in_smem ? lmat[(i64)r * C + m] : w[((i64)r * C + m) * KK + anchor_t];
        },
        linv, C, Cp);
    // Pᵀ[c][co] = P[co][c]: P = L⁻¹ (inverse) or L⁻ᵀ (adjoint). Also publish L⁻¹ for
    // prepare_taps.
    for (i64 e = threadIdx.x; e < (i64)C * Cp; e += blockDim.x) {
        const int c = (int)(e / Cp), co = (int)(e % Cp);
        T v = T(0);
        if (co < C) v = adjoint ? linv[(i64)c * Cp + co] : linv[(i64)co * Cp + c];
        pt[e] = v;
        if (in_smem) out_linv[e] = linv[e];
    }
}

template <typename T>
__device__ void prepare_taps_impl(const T* __restrict__ w, T* prep, int C, int KK, int anchor_t,
                                  int mode) {
    const int Cp = round_up4(C);
    const T* linv = prep;
    T* q = prep + 2 * (i64)C * Cp;
    const i64 total = (i64)KK * C * Cp;
    for (i64 e = blockIdx.x * (i64)blockDim.x + threadIdx.x; e < total;
         e += (i64)gridDim.x * blockDim.x) {
        const int co = (int)(e % Cp);
        const int ci = (int)((e / Cp) % C);
        const int t = (int)(e / ((i64)Cp * C));
        T v = T(0);
        if (co < C) {
            if (mode == 0) {
                v = effective_weight(w, C, KK, co, ci, t, anchor_t);
            } else if (mode == 1) {
                v = effective_weight(w, C, KK, ci, co, t, anchor_t);
            } else if (t != anchor_t) {
                v = inverse_tap_coef(w, linv, Cp, C, KK, co, ci, t, mode == 3);
            }
        }
        q[e] = v;
    }
}

extern "C" __global__ void prepare_inverse_f32(const float* w, float* prep, int C, int KK,
                                               int anchor_t, int adjoint, int in_smem) {
    prepare_inverse_impl<float>(w, prep, C, KK, anchor_t, adjoint, in_smem);
}
extern "C" __global__ void prepare_inverse_f64(const double* w, double* prep, int C, int KK,
                                               int anchor_t, int adjoint, int in_smem) {
    prepare_inverse_impl<double>(w, prep, C, KK, anchor_t, adjoint, in_smem);
}
extern "C" __global__ void prepare_taps_f32(const float* w, float* prep, int C, int KK,
                                            int anchor_t, int mode) {
    prepare_taps_impl<float>(w, prep, C, KK, anchor_t, mode);
}
extern "C" __global__ void prepare_taps_f64(const double* w, double* prep, int C, int KK,
                                            int anchor_t, int mode) {
    prepare_taps_impl<double>(w, prep, C, KK, anchor_t, mode);
}
