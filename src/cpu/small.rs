//! The CPU backend's small GEMMs: a row of pixels times a C×C tap matrix, and the weight
//! gradient's C×C sums, where a packed GEMM's operand packing would cost more than the
//! arithmetic. Fixed-size kernels for the channel counts flows use most, and a generic one that
//! adds the same products in the same order (bitwise the same results).

use super::Real;

/// Below this many multiply-adds a row's GEMM runs as [`small_gemm_acc`]: packing the operands
/// costs more than the arithmetic.
const SMALL_GEMM_WORK: usize = 2048;

/// Whether `rows` rows of `c` channels go through [`small_gemm_acc`] / [`small_gemm_tn_acc`]
/// rather than a packed GEMM: always below [`SMALL_GEMM_WORK`], and at any row count where a
/// fixed-size kernel exists up to C = 12. Measured at B = 16, 32×32: C = 4 forward 0.60 → 0.44
/// ms, weight gradient 0.89 → 0.25; at C = 16 the GEMM wins (the C×C sums no longer fit in
/// registers).
pub(super) fn small_kernel_pays(rows: usize, c: usize) -> bool {
    rows * c * c <= SMALL_GEMM_WORK || (has_fixed_kernel(c) && c <= 12)
}

/// The channel counts [`by_channel_count!`] has a fixed-size kernel for (its arms).
fn has_fixed_kernel(c: usize) -> bool {
    matches!(c, 1 | 2 | 3 | 4 | 6 | 8 | 12 | 16)
}

/// Calls `$fixed::<T, C>` with the channel count as a constant for the counts flows use most
/// (the loops then unroll into registers; keep [`has_fixed_kernel`] to these arms), else
/// `$generic` with it as a value. Both add the
/// same products in the same order, so the results are bitwise the same.
macro_rules! by_channel_count {
    ($c:expr, $fixed:ident, $generic:ident, $($arg:expr),*) => {
        match $c {
            1 => $fixed::<T, 1>($($arg),*),
            2 => $fixed::<T, 2>($($arg),*),
            3 => $fixed::<T, 3>($($arg),*),
            4 => $fixed::<T, 4>($($arg),*),
            6 => $fixed::<T, 6>($($arg),*),
            8 => $fixed::<T, 8>($($arg),*),
            12 => $fixed::<T, 12>($($arg),*),
            16 => $fixed::<T, 16>($($arg),*),
            c => $generic($($arg,)* c),
        }
    };
}

/// `acc[c×c] += Σ_s g_sᵀ · x_s` over the `segments` in order, each a pair of starts (in `g`, in
/// `x`) of `n` rows of `c`: a small weight-gradient GEMM over several image rows, where packing
/// the operands would cost more than the arithmetic.
pub(super) fn small_gemm_tn_acc<T: Real>(
    acc: &mut [T],
    g: &[T],
    x: &[T],
    segments: impl Iterator<Item = (usize, usize)>,
    n: usize,
    c: usize,
) {
    by_channel_count!(
        c,
        gemm_tn_acc_fixed,
        gemm_tn_acc_any,
        acc,
        g,
        x,
        segments,
        n
    )
}

fn gemm_tn_acc_any<T: Real>(
    acc: &mut [T],
    g: &[T],
    x: &[T],
    segments: impl Iterator<Item = (usize, usize)>,
    n: usize,
    c: usize,
) {
    for (g_at, x_at) in segments {
        let (g, x) = (&g[g_at..g_at + n * c], &x[x_at..x_at + n * c]);
        for (g_row, x_row) in g.chunks_exact(c).zip(x.chunks_exact(c)) {
            for (&gv, acc_row) in g_row.iter().zip(acc.chunks_exact_mut(c)) {
                for (a, &xv) in acc_row.iter_mut().zip(x_row) {
                    *a += gv * xv;
                }
            }
        }
    }
}

fn gemm_tn_acc_fixed<T: Real, const C: usize>(
    acc: &mut [T],
    g: &[T],
    x: &[T],
    segments: impl Iterator<Item = (usize, usize)>,
    n: usize,
) {
    // The C×C sums stay in local memory (registers for small C) across all segments.
    let mut sums = [[T::ZERO; C]; C];
    for (row, chunk) in sums.iter_mut().zip(acc.chunks_exact(C)) {
        row.copy_from_slice(chunk);
    }
    for (g_at, x_at) in segments {
        let (g, x) = (&g[g_at..g_at + n * C], &x[x_at..x_at + n * C]);
        for (g_row, x_row) in g.chunks_exact(C).zip(x.chunks_exact(C)) {
            for (row, &gv) in sums.iter_mut().zip(g_row) {
                for (a, &xv) in row.iter_mut().zip(x_row) {
                    *a += gv * xv;
                }
            }
        }
    }
    for (row, chunk) in sums.iter().zip(acc.chunks_exact_mut(C)) {
        chunk.copy_from_slice(row);
    }
}

/// `out[m×c] += alpha · a[m×c] · k[c×c]`, for the per-pixel steps of the wavefront where a
/// general GEMM's packing would cost more than the arithmetic.
pub(super) fn small_gemm_acc<T: Real>(out: &mut [T], a: &[T], k: &[T], c: usize, alpha: T) {
    by_channel_count!(c, gemm_acc_fixed, gemm_acc_any, out, a, k, alpha)
}

fn gemm_acc_any<T: Real>(out: &mut [T], a: &[T], k: &[T], alpha: T, c: usize) {
    for (o, a) in out.chunks_exact_mut(c).zip(a.chunks_exact(c)) {
        for (&av, krow) in a.iter().zip(k.chunks_exact(c)) {
            let s = alpha * av;
            for (ov, &kv) in o.iter_mut().zip(krow) {
                *ov += s * kv;
            }
        }
    }
}

fn gemm_acc_fixed<T: Real, const C: usize>(out: &mut [T], a: &[T], k: &[T], alpha: T) {
    let k = &k[..C * C];
    for (o, a) in out.chunks_exact_mut(C).zip(a.chunks_exact(C)) {
        let mut row = [T::ZERO; C];
        row.copy_from_slice(o);
        for (&av, krow) in a.iter().zip(k.chunks_exact(C)) {
            let s = alpha * av;
            for (ov, &kv) in row.iter_mut().zip(krow) {
                *ov += s * kv;
            }
        }
        o.copy_from_slice(&row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) (no rand dependency): a linear congruential sequence.
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    #[test]
    fn fixed_channel_kernels_are_bitwise_the_generic_ones() {
        for c in [1, 2, 3, 4, 5, 6, 8, 12, 16] {
            let rows = 7;
            let (a, k) = (values(rows * c, c as u64), values(c * c, 100 + c as u64));
            let start = values(rows * c, 200 + c as u64);
            let (mut fixed, mut any) = (start.clone(), start.clone());
            small_gemm_acc(&mut fixed, &a, &k, c, -1.0);
            gemm_acc_any(&mut any, &a, &k, -1.0, c);
            assert_eq!(fixed, any, "small_gemm_acc, c = {c}");
            assert_ne!(fixed, start, "c = {c}: nothing was added");

            let acc0 = values(c * c, 300 + c as u64);
            let (mut fixed, mut any) = (acc0.clone(), acc0.clone());
            // Two segments of the rows: one starting at row 0, one at row 2.
            let segments = || [(0, 0), (2 * c, 2 * c)].into_iter();
            small_gemm_tn_acc(&mut fixed, &a, &start, segments(), rows - 2, c);
            gemm_tn_acc_any(&mut any, &a, &start, segments(), rows - 2, c);
            assert_eq!(fixed, any, "small_gemm_tn_acc, c = {c}");
            assert_ne!(fixed, acc0, "c = {c}: nothing was added");
        }
    }
}
