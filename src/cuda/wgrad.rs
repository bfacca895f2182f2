//! Launchers of the weight-gradient (kernels/weight_grad.cu) and of the inverse's fused
//! backward.

#![allow(clippy::too_many_arguments)]

use super::device::{device, launch, Args};
use super::plan::{wgrad_plan, WgradPlan};
use super::solve::solve;
use super::{check_scratch, dims, generic_only, grid_1d, Dtype, Target, THREADS};
use crate::error::{Error, Result};
use crate::geometry::Problem;

/// Elements of scratch [`weight_grad`] needs on device `ordinal` (compiles the kernels if this
/// is the device's first use).
pub fn weight_grad_scratch_len(p: &Problem, dt: Dtype, ordinal: usize) -> Result<usize> {
    let dev = device(ordinal)?;
    let plan = wgrad_plan(p, dt, &dev.props(), generic_only())?;
    Ok(plan.nblk() as usize * p.kernel_h * p.kernel_w * p.channels * p.channels)
}

/// `out[co, ci, i, j] = Σ g[b,co,h,w] · pad(x)[b,ci,h+i,w+j]`, masked at the anchor (negated
/// when `negate`: exactly −(the sum), the inverse's weight-gradient).
pub fn weight_grad(
    p: &Problem,
    dt: Dtype,
    t: Target,
    x: u64,
    g: u64,
    out: u64,
    scratch: u64,
    scratch_elems: usize,
    negate: bool,
) -> Result<()> {
    let d = dims(p)?;
    let dev = device(t.device)?;
    let plan = wgrad_plan(p, dt, &dev.props(), generic_only())?;
    let kk = p.kernel_h * p.kernel_w;
    check_scratch(
        "weight_grad",
        scratch_elems,
        plan.nblk() as usize * kk * p.channels * p.channels,
    )?;
    let sfx = dt.suffix();
    match plan {
        WgradPlan::Chunk { chunk, nblk, smem } => {
            let args = Args::default()
                .ptr(x)
                .ptr(g)
                .ptr(scratch)
                .ints(&[d.b, d.c])
                .ints(&d.geometry())
                .int(chunk as i32);
            let taps = u32::try_from(kk)
                .ok()
                .filter(|&k| k <= 65535)
                .ok_or_else(|| {
                    Error::TooLarge(format!(
                        "kernel_h·kernel_w = {kk} taps; the weight-gradient launch takes at most 65535"
                    ))
                })?;
            launch(
                &dev,
                &format!("wgrad_partial_{sfx}"),
                (nblk, taps, 1),
                THREADS,
                smem,
                t.stream,
                args,
            )?;
        }
        WgradPlan::Tile {
            tr,
            tw,
            threads,
            nblk,
            smem,
        } => {
            let args = Args::default()
                .ptr(x)
                .ptr(g)
                .ptr(scratch)
                .ints(&[d.b, d.c, d.h, d.w, d.kh, d.ai, d.aj, tr as i32, tw as i32]);
            launch(
                &dev,
                &format!("wgrad_tile{}_{sfx}", p.kernel_w),
                (nblk, 1, 1),
                threads,
                smem,
                t.stream,
                args,
            )?;
        }
    }
    let n = (kk * p.channels * p.channels) as u64;
    let args = Args::default().ptr(scratch).ptr(out).ints(&[
        d.c,
        d.kk,
        d.anchor_t,
        plan.nblk() as i32,
        negate as i32,
    ]);
    launch(
        &dev,
        &format!("wgrad_reduce_{sfx}"),
        (grid_1d(n, THREADS)?.min(4096), 1, 1),
        THREADS,
        0,
        t.stream,
        args,
    )
}

/// The inverse's backward in one call: `u = A⁻ᵀ g` into `u`, then `grad_w = −Σ u · pad(x)`
/// (masked) into `grad_w`; `prep` as for [`solve`], `scratch` as for [`weight_grad`].
pub fn inverse_backward(
    p: &Problem,
    dt: Dtype,
    t: Target,
    x: u64,
    g: u64,
    weight: u64,
    u: u64,
    grad_w: u64,
    prep: u64,
    prep_elems: usize,
    scratch: u64,
    scratch_elems: usize,
) -> Result<()> {
    solve(p, dt, t, g, weight, u, prep, prep_elems, true)?;
    weight_grad(p, dt, t, x, u, grad_w, scratch, scratch_elems, true)
}
