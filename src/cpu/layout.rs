//! Conversions between NCHW and the pixel-major `[H][W][B][C]` layout of the CPU backend.

use rayon::prelude::*;

use super::Real;

/// NCHW → `[H][W][B][C]`, parallel over rows.
pub(super) fn to_pixel_major<T: Real>(src: &[T], b: usize, c: usize, h: usize, w: usize) -> Vec<T> {
    let mut dst = vec![T::ZERO; b * c * h * w];
    dst.par_chunks_mut(w * b * c)
        .enumerate()
        .for_each(|(row, out)| {
            for bi in 0..b {
                for ci in 0..c {
                    let line = &src[((bi * c + ci) * h + row) * w..][..w];
                    for (col, &v) in line.iter().enumerate() {
                        out[(col * b + bi) * c + ci] = v;
                    }
                }
            }
        });
    dst
}

/// `[H][W][B][C]` → NCHW, parallel over (sample, channel) planes.
pub(super) fn from_pixel_major<T: Real>(
    src: &[T],
    dst: &mut [T],
    b: usize,
    c: usize,
    h: usize,
    w: usize,
) {
    dst.par_chunks_mut(h * w)
        .enumerate()
        .for_each(|(plane, out)| {
            let (bi, ci) = (plane / c, plane % c);
            for (px, v) in out.iter_mut().enumerate() {
                *v = src[(px * b + bi) * c + ci];
            }
        });
}
