//! CPU backend (rayon), generic over `f32` and `f64`.
//!
//! Every op works on a *pixel-major* copy of its image arguments, laid out `[H][W][B][C]`: the
//! B×C values of one pixel are one small row-major matrix, and one image row is a (W·B)×C
//! matrix. In that layout a tap of the convolution applied to a whole row is a single GEMM
//! (`out_row += shifted_src_row · K`), and one step of the wavefront applied to a pixel of every
//! sample of a batch chunk at once is a small GEMM — the batch is the GEMM's M dimension.
//!
//! In row-vector form, with `M_t` the effective C×C matrix of tap t (out, in) and `off_t` its
//! pixel offset (see [`crate::geometry`]):
//! - forward:          `Y[p] = Σ_t X[p + off_t] · M_tᵀ`
//! - forward adjoint:  `G'[p] = Σ_t G[p − off_t] · M_t`                 (= Aᵀ g)
//! - inverse:          `X[p] = (Y[p] − Σ_{t≠anchor} X[p + off_t] · M_tᵀ) · L⁻ᵀ`, from the start corner
//! - inverse adjoint:  `U[p] = (G[p] − Σ_{t≠anchor} U[p − off_t] · M_t) · L⁻¹`, from the far corner
//! - weight gradient:  `∂/∂M_t = Σ_p G[p]ᵀ · X[p + off_t]`, masked at the anchor
//!
//! where L is the anchor tap's unit lower-triangular matrix. Memory: two pixel-major copies of
//! an image, O(B·C·H·W), plus O(C²·KH·KW) for the tap matrices.
//!
//! Determinism: every op is bitwise repeatable on one machine, whatever the thread count and
//! however many callers run at once. Each output element is computed by one task in an order
//! fixed by the problem's shape; the one cross-task sum, the weight gradient's, adds per-block
//! partial sums in block order over blocks chosen from the shape alone.

mod layout;
mod pool;
mod real;
mod small;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::geometry::Problem;

pub use pool::{install, install_sized};
pub use real::Real;

use layout::{from_pixel_major, to_pixel_major};
use small::{small_gemm_acc, small_gemm_tn_acc, small_kernel_pays};

/// One tap as the row-level routines use it: `out[p] += src[p + (di, dj)] · k` (k is C×C,
/// row-major, applied from the right).
struct ShiftedTap<'a, T> {
    di: isize,
    dj: isize,
    k: &'a [T],
}

/// Transposes each C×C matrix of `m` (matrices one after another) in place.
fn transpose_each<T: Real>(m: &mut [T], c: usize) {
    for block in m.chunks_exact_mut(c * c) {
        for r in 0..c {
            for s in r + 1..c {
                block.swap(r * c + s, s * c + r);
            }
        }
    }
}

/// Inverse of a unit lower-triangular C×C matrix (row-major), by forward substitution.
fn unit_lower_inverse<T: Real>(l: &[T], c: usize) -> Vec<T> {
    let mut inv = vec![T::ZERO; c * c];
    for col in 0..c {
        inv[col * c + col] = T::ONE;
        for row in col + 1..c {
            let mut acc = T::ZERO;
            for m in col..row {
                acc += l[row * c + m] * inv[m * c + col];
            }
            inv[row * c + col] = -acc;
        }
    }
    inv
}

fn check_len(name: &str, len: usize, want: usize) -> Result<()> {
    if len != want {
        return Err(Error::Shape(format!(
            "{name} buffer holds {len} elements; the problem needs {want}"
        )));
    }
    Ok(())
}

fn check_image_and_weight<T>(
    p: &Problem,
    image: (&str, &[T]),
    weight: &[T],
    out: &[T],
) -> Result<()> {
    check_len(image.0, image.1.len(), p.image_len())?;
    check_len("weight", weight.len(), p.weight_len())?;
    check_len("output", out.len(), p.image_len())
}

/// Taps of the forward map (`transposed == false`) or of its adjoint (`true`), all of them or
/// only the off-anchor ones, over `matrices`: the problem's tap matrices, each already
/// transposed for the forward map (its rows are applied from the right).
fn shifted_taps<'a, T: Real>(
    p: &Problem,
    matrices: &'a [T],
    transposed: bool,
    with_anchor: bool,
) -> Vec<ShiftedTap<'a, T>> {
    let sign = if transposed { -1 } else { 1 };
    p.taps()
        .into_iter()
        .zip(matrices.chunks_exact(p.channels * p.channels))
        .filter(|(t, _)| with_anchor || !t.is_anchor())
        .map(|(t, k)| ShiftedTap {
            di: sign * t.di,
            dj: sign * t.dj,
            k,
        })
        .collect()
}

/// The pixels of output row `row` whose tap source `(row + di, w + dj)` lies inside the
/// image, as flat pixel indices of the first output and first source pixel, and their count.
struct RowSpan {
    out_pixel: usize,
    src_pixel: usize,
    len: usize,
}

fn row_span(row: usize, di: isize, dj: isize, height: usize, width: usize) -> Option<RowSpan> {
    let src_row = row as isize + di;
    if src_row < 0 || src_row >= height as isize {
        return None;
    }
    let lo = (-dj).max(0) as usize;
    let hi = (width as isize - dj).clamp(0, width as isize) as usize;
    (lo < hi).then(|| RowSpan {
        out_pixel: row * width + lo,
        src_pixel: src_row as usize * width + (lo as isize + dj) as usize,
        len: hi - lo,
    })
}

/// `out_row += src[row + di] shifted by dj · k` for one output row of a pixel-major image.
///
/// Safety: `src` and `out` point to pixel-major images of `height × width × rows_per_pixel × c`
/// elements; `out_row`'s range must not overlap the source row's range.
#[allow(clippy::too_many_arguments)]
unsafe fn accumulate_row<T: Real>(
    src: *const T,
    out: *mut T,
    row: usize,
    height: usize,
    width: usize,
    rows_per_pixel: usize,
    c: usize,
    tap: &ShiftedTap<'_, T>,
    alpha: T,
) {
    let Some(span) = row_span(row, tap.di, tap.dj, height, width) else {
        return;
    };
    let pixel = rows_per_pixel * c;
    let a = src.add(span.src_pixel * pixel);
    let o = out.add(span.out_pixel * pixel);
    let m = span.len * rows_per_pixel;
    if small_kernel_pays(m, c) {
        let (a, o) = (
            std::slice::from_raw_parts(a, m * c),
            std::slice::from_raw_parts_mut(o, m * c),
        );
        return small_gemm_acc(o, a, tap.k, c, alpha);
    }
    T::gemm(
        m,
        c,
        c,
        alpha,
        a,
        c as isize,
        1,
        tap.k.as_ptr(),
        c as isize,
        1,
        T::ONE,
        o,
        c as isize,
        1,
    );
}

/// A plain convolution in pixel-major layout: `out[p] = Σ_t src[p + off_t] · K_t`, rows in
/// parallel.
fn convolve_pixel_major<T: Real>(
    src: &[T],
    out: &mut [T],
    p: &Problem,
    taps: &[ShiftedTap<'_, T>],
    rows_per_pixel: usize,
) {
    let (h, w, c) = (p.height, p.width, p.channels);
    let row_len = w * rows_per_pixel * c;
    let src_ptr = SendPtr(src.as_ptr() as *mut T);
    out.par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(row, out_row)| {
            // Offset the row pointer back so that `accumulate_row` can index by absolute row.
            let base = unsafe { out_row.as_mut_ptr().sub(row * row_len) };
            for tap in taps {
                unsafe {
                    accumulate_row(
                        src_ptr.get(),
                        base,
                        row,
                        h,
                        w,
                        rows_per_pixel,
                        c,
                        tap,
                        T::ONE,
                    )
                };
            }
        });
}

/// Wavefront substitution in pixel-major layout, in place: on entry `buf` holds the right-hand
/// side, on exit the solution of `buf[p] = rhs[p] − Σ_t buf[p + off_t] · K_t`, then `· anchor`.
/// Every tap offset must point back along the sweep (rows and columns visited away from the
/// corner that depends on nothing).
fn wavefront_pixel_major<T: Real>(
    buf: &mut [T],
    p: &Problem,
    taps: &[ShiftedTap<'_, T>],
    anchor: &[T],
    rows_per_pixel: usize,
    rows_ascending: bool,
    cols_ascending: bool,
) {
    let (h, w, c) = (p.height, p.width, p.channels);
    let pixel = rows_per_pixel * c;
    let (other_rows, same_row): (Vec<&ShiftedTap<'_, T>>, Vec<&ShiftedTap<'_, T>>) =
        taps.iter().partition(|t| t.di != 0);
    let mut solved = vec![T::ZERO; pixel];
    for i in 0..h {
        let row = if rows_ascending { i } else { h - 1 - i };
        // Rows already solved contribute to the whole row at once: one GEMM per tap.
        let ptr = buf.as_mut_ptr();
        for tap in &other_rows {
            unsafe { accumulate_row(ptr, ptr, row, h, w, rows_per_pixel, c, tap, -T::ONE) };
        }
        // Within the row, pixels depend on their predecessors: one pixel at a time.
        for j in 0..w {
            let col = if cols_ascending { j } else { w - 1 - j };
            let at = (row * w + col) * pixel;
            for tap in &same_row {
                let src_col = col as isize + tap.dj;
                if src_col < 0 || src_col >= w as isize {
                    continue;
                }
                let from = (row * w + src_col as usize) * pixel;
                let (rhs, src) = if from < at {
                    let (lo, hi) = buf.split_at_mut(at);
                    (&mut hi[..pixel], &lo[from..from + pixel])
                } else {
                    let (lo, hi) = buf.split_at_mut(from);
                    (&mut lo[at..at + pixel], &hi[..pixel])
                };
                small_gemm_acc(rhs, src, tap.k, c, -T::ONE);
            }
            solved.fill(T::ZERO);
            small_gemm_acc(&mut solved, &buf[at..at + pixel], anchor, c, T::ONE);
            buf[at..at + pixel].copy_from_slice(&solved);
        }
    }
}

#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

/// Splits the batch into chunks that are solved independently, one rayon task each. Call it
/// inside [`install`]: outside, `current_num_threads` would start rayon's global pool (threads
/// that a forked child does not have) just to count its threads.
fn batch_chunk(p: &Problem) -> usize {
    let threads = rayon::current_num_threads().max(1);
    p.batch.div_ceil(threads).max(1)
}

/// Multiply-adds of one pass over the problem (what decides whether an op runs inline).
fn work_units(p: &Problem) -> usize {
    p.image_len()
        .saturating_mul(p.channels)
        .saturating_mul(p.kernel_h * p.kernel_w)
}

fn convolve<T: Real>(p: &Problem, src: &[T], out: &mut [T], taps: &[ShiftedTap<T>]) {
    install_sized(work_units(p), || {
        let src_pm = to_pixel_major(src, p.batch, p.channels, p.height, p.width);
        let mut out_pm = vec![T::ZERO; p.image_len()];
        convolve_pixel_major(&src_pm, &mut out_pm, p, taps, p.batch);
        from_pixel_major(&out_pm, out, p.batch, p.channels, p.height, p.width);
    });
}

fn solve<T: Real>(
    p: &Problem,
    rhs: &[T],
    out: &mut [T],
    taps: &[ShiftedTap<'_, T>],
    anchor: &[T],
    adjoint: bool,
) {
    let (rows_ascending, cols_ascending) = p.sweep_ascending(adjoint);
    let per_sample = p.channels * p.pixels();
    install_sized(work_units(p), || {
        let chunk = batch_chunk(p);
        out.par_chunks_mut(chunk * per_sample)
            .zip(rhs.par_chunks(chunk * per_sample))
            .for_each(|(out_chunk, rhs_chunk)| {
                let b = rhs_chunk.len() / per_sample;
                let sub = Problem { batch: b, ..*p };
                let mut buf = to_pixel_major(rhs_chunk, b, p.channels, p.height, p.width);
                wavefront_pixel_major(
                    &mut buf,
                    &sub,
                    taps,
                    anchor,
                    b,
                    rows_ascending,
                    cols_ascending,
                );
                from_pixel_major(&buf, out_chunk, b, p.channels, p.height, p.width);
            })
    });
}

/// The four image ops: the forward map `A` or (`inverse`) `A⁻¹`, or (`adjoint`) that map's
/// adjoint, applied to `input` (named in errors as given) after checking every buffer's length.
fn apply<T: Real>(
    p: &Problem,
    input: (&str, &[T]),
    weight: &[T],
    out: &mut [T],
    inverse: bool,
    adjoint: bool,
) -> Result<()> {
    check_image_and_weight(p, input, weight, out)?;
    // A convolution uses every tap; a substitution all but the anchor, whose L it divides by.
    let c = p.channels;
    let mut matrices = p.tap_matrices(weight);
    let (ai, aj) = p.anchor();
    let anchor_at = (ai * p.kernel_w + aj) * c * c;
    let l_inv = inverse.then(|| unit_lower_inverse(&matrices[anchor_at..anchor_at + c * c], c));
    if !adjoint {
        transpose_each(&mut matrices, c);
    }
    let taps = shifted_taps(p, &matrices, adjoint, !inverse);
    if let Some(mut anchor) = l_inv {
        // A step of the inverse multiplies by L⁻ᵀ, one of its adjoint by L⁻¹.
        if !adjoint {
            transpose_each(&mut anchor, c);
        }
        solve(p, input.1, out, &taps, &anchor, adjoint);
    } else {
        convolve(p, input.1, out, &taps);
    }
    Ok(())
}

/// Sampling direction: `y = conv2d(pad(x, PAD[order]), ŵ)`. All buffers are NCHW / OIHW,
/// contiguous.
pub fn forward<T: Real>(p: &Problem, x: &[T], weight: &[T], y: &mut [T]) -> Result<()> {
    apply(p, ("x", x), weight, y, false, false)
}

/// The forward map's adjoint: `Aᵀ g` (the forward op's input-gradient, a transposed convolution).
pub fn forward_adjoint<T: Real>(p: &Problem, g: &[T], weight: &[T], out: &mut [T]) -> Result<()> {
    apply(p, ("grad", g), weight, out, false, true)
}

/// Density direction: `x = A⁻¹ y` by wavefront substitution from the order's starting corner.
pub fn inverse<T: Real>(p: &Problem, y: &[T], weight: &[T], x: &mut [T]) -> Result<()> {
    apply(p, ("y", y), weight, x, true, false)
}

/// The inverse's input-gradient: `u = A⁻ᵀ g`, a reverse wavefront from the far corner.
pub fn inverse_adjoint<T: Real>(p: &Problem, g: &[T], weight: &[T], out: &mut [T]) -> Result<()> {
    apply(p, ("grad", g), weight, out, true, true)
}

/// Weight-gradient of the forward map: `∂L/∂w[c, c', i, j] = Σ_{b,h,w} g[b,c,h,w] ·
/// pad(x)[b,c',h+i,w+j]`, zero at the masked anchor entries. The inverse's weight-gradient is
/// the negation of this with `x = inverse(y)` and `g = inverse_adjoint(grad)`.
pub fn weight_grad<T: Real>(p: &Problem, x: &[T], grad: &[T], out: &mut [T]) -> Result<()> {
    check_len("x", x.len(), p.image_len())?;
    check_len("grad", grad.len(), p.image_len())?;
    check_len("output", out.len(), p.weight_len())?;
    install_sized(work_units(p), || weight_grad_unchecked(p, x, grad, out));
    Ok(())
}

/// The inverse's backward in one call: `u = A⁻ᵀ grad` (its input-gradient) and
/// `grad_w = −Σ u · pad(x)` (its weight-gradient, masked), with `x = A⁻¹ y` its output.
pub fn inverse_backward<T: Real>(
    p: &Problem,
    x: &[T],
    grad: &[T],
    weight: &[T],
    u: &mut [T],
    grad_w: &mut [T],
) -> Result<()> {
    inverse_adjoint(p, grad, weight, u)?;
    weight_grad(p, x, u, grad_w)?;
    grad_w.iter_mut().for_each(|v| *v = -*v);
    Ok(())
}

/// Most row blocks the weight gradient is split into (enough to keep a large machine busy).
const MAX_ROW_BLOCKS: usize = 64;

/// How many contiguous row blocks the weight gradient sums separately before adding them up in
/// block order. A function of the problem only, never of the thread count or of scheduling, so
/// the floating-point sum runs in the same order every time (bitwise repeatable results). The
/// per-block partial sums are bounded by the size of one image, to keep memory O(B·C·H·W).
fn weight_grad_row_blocks(p: &Problem) -> usize {
    let by_memory = (p.image_len() / p.weight_len().max(1)).max(1);
    p.height.min(MAX_ROW_BLOCKS).min(by_memory).max(1)
}

fn weight_grad_unchecked<T: Real>(p: &Problem, x: &[T], grad: &[T], out: &mut [T]) {
    let (h, w, c, bsz) = (p.height, p.width, p.channels, p.batch);
    let taps = p.taps();
    let x_pm = to_pixel_major(x, bsz, c, h, w);
    let g_pm = to_pixel_major(grad, bsz, c, h, w);
    let pixel = bsz * c;
    let blocks = weight_grad_row_blocks(p);
    // Block `b` holds rows [b·h/blocks, (b+1)·h/blocks); rows within a block in ascending order.
    let partials: Vec<Vec<T>> = (0..blocks)
        .into_par_iter()
        .map(|block| {
            let mut acc = vec![T::ZERO; taps.len() * c * c];
            let rows = block * h / blocks..(block + 1) * h / blocks;
            // Tap by tap, the block's rows in ascending order: each tap has its own sums, so
            // every sum runs in the same order as row by row. A tap's span has the same length
            // on every row it reaches (the length depends on dj only).
            for (t, tap) in taps.iter().enumerate() {
                let acc_t = &mut acc[t * c * c..(t + 1) * c * c];
                let spans = rows
                    .clone()
                    .filter_map(|row| row_span(row, tap.di, tap.dj, h, w));
                let Some(len) = spans.clone().next().map(|span| span.len) else {
                    continue;
                };
                // acc_t (C×C) += G_rowᵀ (C × n) · X_row (n × C), n = pixels · batch, per row.
                let n = len * bsz;
                let starts = spans.map(|span| (span.out_pixel * pixel, span.src_pixel * pixel));
                if small_kernel_pays(n, c) {
                    small_gemm_tn_acc(acc_t, &g_pm, &x_pm, starts, n, c);
                    continue;
                }
                for (g_at, x_at) in starts {
                    unsafe {
                        T::gemm(
                            c,
                            n,
                            c,
                            T::ONE,
                            g_pm.as_ptr().add(g_at),
                            1,
                            c as isize,
                            x_pm.as_ptr().add(x_at),
                            c as isize,
                            1,
                            T::ONE,
                            acc_t.as_mut_ptr(),
                            c as isize,
                            1,
                        )
                    };
                }
            }
            acc
        })
        .collect();
    // In block order, on one thread: the same sum whatever thread computed which block.
    let mut partials = partials.into_iter();
    let mut acc = partials.next().unwrap_or_default();
    for partial in partials {
        acc.iter_mut().zip(partial).for_each(|(a, b)| *a += b);
    }
    let kk = p.kernel_h * p.kernel_w;
    for (t, m) in acc.chunks_exact(c * c).enumerate() {
        for co in 0..c {
            for ci in 0..c {
                out[(co * c + ci) * kk + t] = m[co * c + ci];
            }
        }
    }
    p.mask_gradient(out);
}
