//! Launchers of the weight-gradient (kernels/weight_grad.cu) and of the inverse's fused
//! backward.

#![allow(clippy::too_many_arguments)]

use super::device::{device, launch, Args};
use super::limits::CHAIN_MAX_LAYERS;
use super::plan::{wgrad_plan, WgradPlan};
use super::solve::{solve, solve_chain};
use super::{check_scratch, dims, generic_only, grid_1d, Dtype, Target, THREADS};
use crate::error::{Error, Result};
use crate::geometry::{Order, Problem};

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
    weight_grad_layers(
        p,
        dt,
        t,
        &[(x, g, p.order)],
        out,
        scratch,
        scratch_elems,
        negate,
    )
}

/// [`weight_grad`] of up to four layers of one shape in one launch (and one reduction): layer
/// `l` = (x, g, order) writes its (C, C, KH, KW) gradient at `out + l·C·C·KH·KW` elements,
/// bitwise what its own call writes. Scratch: `layers.len()` times [`weight_grad_scratch_len`].
pub fn weight_grad_layers(
    p: &Problem,
    dt: Dtype,
    t: Target,
    layers: &[(u64, u64, Order)],
    out: u64,
    scratch: u64,
    scratch_elems: usize,
    negate: bool,
) -> Result<()> {
    let n_layers = layers.len();
    if n_layers == 0 || n_layers > CHAIN_MAX_LAYERS {
        return Err(Error::Shape(format!(
            "weight_grad takes 1 to {CHAIN_MAX_LAYERS} layers; got {n_layers}"
        )));
    }
    let d = dims(p)?;
    let dev = device(t.device)?;
    let plan = wgrad_plan(p, dt, &dev.props(), generic_only())?;
    let kk = p.kernel_h * p.kernel_w;
    check_scratch(
        "weight_grad",
        scratch_elems,
        n_layers * plan.nblk() as usize * kk * p.channels * p.channels,
    )?;
    // Each layer's x and g, then (partial sums), sizes, and each layer's anchor; unused
    // layer slots repeat the first layer (never read: grid.z is the layer count).
    let layer = |l: usize| layers.get(l).copied().unwrap_or(layers[0]);
    let mut args = Args::default();
    for l in 0..CHAIN_MAX_LAYERS {
        args = args.ptr(layer(l).0);
    }
    for l in 0..CHAIN_MAX_LAYERS {
        args = args.ptr(layer(l).1);
    }
    let anchors: Vec<(usize, usize)> = (0..CHAIN_MAX_LAYERS)
        .map(|l| {
            Problem {
                order: layer(l).2,
                ..*p
            }
            .anchor()
        })
        .collect();
    let anchor_args = |args: Args| {
        anchors
            .iter()
            .fold(args, |a, &(ai, aj)| a.int(ai as i32).int(aj as i32))
    };
    let sfx = dt.suffix();
    let z = n_layers as u32;
    match plan {
        WgradPlan::Chunk { chunk, nblk, smem } => {
            let args = args
                .ptr(scratch)
                .ints(&[d.b, d.c])
                .ints(&[d.h, d.w, d.kh, d.kw]);
            let args = anchor_args(args).int(chunk as i32);
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
                (nblk, taps, z),
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
            let args = args.ptr(scratch).ints(&[d.b, d.c, d.h, d.w, d.kh]);
            let args = anchor_args(args).ints(&[tr as i32, tw as i32]);
            launch(
                &dev,
                &format!("wgrad_tile{}_{sfx}", p.kernel_w),
                (nblk, 1, z),
                threads,
                smem,
                t.stream,
                args,
            )?;
        }
    }
    let n = (kk * p.channels * p.channels) as u64;
    let args = Args::default()
        .ptr(scratch)
        .ptr(out)
        .ints(&[d.c, d.kk])
        .ints(
            &anchors
                .iter()
                .map(|&(ai, aj)| (ai * p.kernel_w + aj) as i32)
                .collect::<Vec<_>>(),
        )
        .ints(&[plan.nblk() as i32, negate as i32]);
    launch(
        &dev,
        &format!("wgrad_reduce_{sfx}"),
        (grid_1d(n, THREADS)?.min(4096), z, 1),
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

/// The backward of a chain of inverses `x_l = A_l⁻¹ x_{l−1}` (`x_{−1}` = y; `A_l` of
/// `orders[l]` and `weights[l]`) given `xs[l]` = x_l and `g` = ∂/∂x_last: the adjoint chain
/// `us[l] = A_l⁻ᵀ us[l + 1]` (`us[last + 1]` = g; `us[0]` is ∂/∂y) by [`solve_chain`], then
/// `grad_w[l] = −Σ us[l] · pad(xs[l])` (masked), all layers in one launch, at `grad_w + l·C·C·KH·KW`.
/// Bitwise one [`inverse_backward`] per layer. `scratch` of `orders.len()` times
/// [`weight_grad_scratch_len`]. Returns `Ok(false)`, launching nothing, where [`solve_chain`]
/// does not apply.
pub fn inverse_chain_backward(
    p: &Problem,
    orders: &[Order],
    dt: Dtype,
    t: Target,
    xs: &[u64],
    g: u64,
    weights: &[u64],
    us: &[u64],
    grad_w: u64,
    scratch: u64,
    scratch_elems: usize,
) -> Result<bool> {
    let n = orders.len();
    if xs.len() != n || us.len() != n || weights.len() != n {
        return Err(Error::Shape(format!(
            "inverse_chain_backward: {n} orders need as many x, u and weight buffers; got {}, {} and {}",
            xs.len(),
            us.len(),
            weights.len()
        )));
    }
    // The adjoint chain runs the layers last to first.
    let rev = |v: &[u64]| v.iter().rev().copied().collect::<Vec<_>>();
    let rev_orders: Vec<Order> = orders.iter().rev().copied().collect();
    if !solve_chain(p, &rev_orders, dt, t, g, &rev(weights), &rev(us), true)? {
        return Ok(false);
    }
    let layers: Vec<(u64, u64, Order)> = (0..n).map(|l| (xs[l], us[l], orders[l])).collect();
    weight_grad_layers(p, dt, t, &layers, grad_w, scratch, scratch_elems, true)?;
    Ok(true)
}
