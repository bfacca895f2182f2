//! Launchers of the wavefront solves: the inverse and its adjoint (kernels/prepare.cu,
//! kernels/conv.cu's channel_mix, kernels/wavefront.cu).

#![allow(clippy::too_many_arguments)]

use super::conv::prepare_taps;
use super::device::{device, launch, launch_with, Args, Device};
use super::limits::{CHAIN_MAX_LAYERS, CHANNEL_MIX_MAX_SMEM};
use super::plan::{
    band_plan, blk_plan, generic_sweep_plan, padded, prep_len, regs_plan, solve_chain_plan,
    sweep_plan, tile_plan, GenericSweepPlan, RegsPlan, Window,
};
use super::{
    batch_blocks, check_scratch, dims, generic_only, grid_1d, programmatic_allowed, solve_tile,
    solve_tsplit, sweep_blk, sweep_ctas, Dims, Dtype, Target, THREADS,
};
use crate::error::{Error, Result};
use crate::geometry::{Order, Problem};

/// Canonical coordinates: the axes flipped so that the sweep starts at the corner that depends
/// on nothing (the order's start for the inverse, the opposite corner for the adjoint), and the
/// tap signs (th, tw) that follow. Returns (flip_h, flip_w, th, tw).
fn canonical(p: &Problem, adjoint: bool) -> (bool, bool, i32, i32) {
    let sign = if adjoint { -1 } else { 1 };
    let (rows_ascending, cols_ascending) = p.sweep_ascending(adjoint);
    let (flip_h, flip_w) = (!rows_ascending, !cols_ascending);
    let th = sign * if flip_h { -1 } else { 1 };
    let tw = sign * if flip_w { -1 } else { 1 };
    (flip_h, flip_w, th, tw)
}

/// Dynamic shared memory the solves plan with: the device's, less 1 KB for the kernels' static
/// shared memory (their tap tables).
fn smem_budget(max_smem: u32) -> usize {
    max_smem as usize - 1024
}

/// Whether the A/B switches leave the one-launch solve on (no request for the generic kernels
/// or for banded sweeps of more than one CTA per sample).
fn regs_allowed() -> bool {
    !generic_only() && sweep_ctas().map_or(true, |n| n <= 1)
}

/// The one-launch plan (`solve_regs`) where it applies and the switches allow it.
fn regs_launch_plan(p: &Problem, dt: Dtype, max_smem: u32) -> Option<RegsPlan> {
    regs_plan(p, dt, smem_budget(max_smem), solve_tsplit(), solve_tile()).filter(|_| regs_allowed())
}

/// A chain of solves, `outs[l] = A_l⁻¹ outs[l − 1]` (`outs[−1]` = `rhs`; `A_l` of `orders[l]`
/// and `weights[l]`; the adjoints with `adjoint`): one `solve_regs` launch per layer, each
/// after the first launched programmatically where the device and `INV_CONV_PDL` allow, so
/// that it prepares its coefficients (reading only its weight) while the layer before still
/// solves. Bitwise the results of one [`solve`] per layer. Returns `Ok(false)`, launching
/// nothing, unless the one-launch plan applies with a sample's whole image in one block (the
/// caller then solves layer by layer).
pub fn solve_chain(
    p: &Problem,
    orders: &[Order],
    dt: Dtype,
    t: Target,
    rhs: u64,
    weights: &[u64],
    outs: &[u64],
    adjoint: bool,
) -> Result<bool> {
    let layers = orders.len();
    if layers == 0 || layers > CHAIN_MAX_LAYERS || weights.len() != layers || outs.len() != layers {
        return Err(Error::Shape(format!(
            "solve_chain takes 1 to {CHAIN_MAX_LAYERS} layers with one weight and one output each; got {layers} orders, {} weights and {} outputs",
            weights.len(),
            outs.len()
        )));
    }
    let dev = device(t.device)?;
    let plan = solve_chain_plan(
        p,
        dt,
        smem_budget(dev.max_smem),
        solve_tsplit(),
        solve_tile(),
    );
    let Some(plan) = plan.filter(|_| regs_allowed()) else {
        return Ok(false);
    };
    let mut input = rhs;
    for l in 0..layers {
        let layer = Problem {
            order: orders[l],
            ..*p
        };
        launch_regs(
            &dev,
            &plan,
            &layer,
            t,
            (input, outs[l], weights[l]),
            adjoint,
            l > 0,
        )?;
        input = outs[l];
    }
    Ok(true)
}

/// `solve_regs` on `plan`: `x = A⁻¹ y` (or the adjoint), one launch per tile anti-diagonal
/// (tiles of a diagonal in grid.y); `tensors` = (y, x, weight). `after_own`: the launch before
/// on the stream is one of ours that writes none of the weight (a chain's layer before). Where
/// the device and `INV_CONV_PDL` allow, a launch whose predecessor is ours (every tile
/// diagonal after the first) is programmatic (see [`launch_with`]): the kernel reads only the
/// weight until that predecessor is done.
fn launch_regs(
    dev: &Device,
    plan: &RegsPlan,
    p: &Problem,
    t: Target,
    tensors: (u64, u64, u64),
    adjoint: bool,
    after_own: bool,
) -> Result<()> {
    let pdl = dev.props().programmatic_launch() && programmatic_allowed();
    let d = dims(p)?;
    let (flip_h, flip_w, th, tw) = canonical(p, adjoint);
    let (tiles_h, tiles_w) = plan.tiles(p);
    let samples = batch_blocks(p.batch, 1)?;
    for td in 0..tiles_h + tiles_w - 1 {
        let on_diagonal = td.min(tiles_h - 1) + 1 - td.saturating_sub(tiles_w - 1);
        let args = Args::default()
            .ptr(tensors.0)
            .ptr(tensors.1)
            .ptr(tensors.2)
            .ints(&d.geometry())
            .ints(&[th, tw, flip_h as i32, flip_w as i32, adjoint as i32])
            .ints(&[
                plan.tile_h as i32,
                plan.tile_w as i32,
                td as i32,
                tiles_w as i32,
            ]);
        launch_with(
            dev,
            plan.kernel,
            (samples, on_diagonal as u32, 1),
            plan.threads,
            plan.smem as u32,
            t.stream,
            args,
            pdl && (after_own || td > 0),
        )?;
    }
    Ok(())
}

/// The arguments every sweep kernel takes first: the image being solved in place, the
/// coefficients, the problem's dimensions, the canonical tap signs and axis flips, and the ring
/// length (KH + KW − 1 diagonals).
fn sweep_args(out: u64, prep: u64, d: &Dims, signs: (i32, i32), flips: (bool, bool)) -> Args {
    Args::default()
        .ptr(out)
        .ptr(prep)
        .int(d.c)
        .ints(&d.geometry())
        .ints(&[
            signs.0,
            signs.1,
            flips.0 as i32,
            flips.1 as i32,
            d.kh + d.kw - 1,
        ])
}

/// The density direction `x = A⁻¹ y` (`adjoint`: the inverse's input-gradient `u = A⁻ᵀ g`).
/// `prep` is caller scratch of [`prep_len`] elements.
pub fn solve(
    p: &Problem,
    dt: Dtype,
    t: Target,
    rhs: u64,
    weight: u64,
    out: u64,
    prep: u64,
    prep_elems: usize,
    adjoint: bool,
) -> Result<()> {
    check_scratch("coefficient", prep_elems, prep_len(p))?;
    let d = dims(p)?;
    let dev = device(t.device)?;
    let sfx = dt.suffix();
    let (flip_h, flip_w, th, tw) = canonical(p, adjoint);
    let batch = |ncta: usize| batch_blocks(p.batch, ncta);
    let smem_budget = smem_budget(dev.max_smem);
    let ctas = sweep_ctas();

    // The presets' shapes: everything in one launch per tile anti-diagonal (one launch in all
    // where the image fits a block; no coefficient scratch used). A request for banded sweeps
    // (more than one CTA per sample) keeps those.
    if let Some(plan) = regs_launch_plan(p, dt, dev.max_smem) {
        return launch_regs(&dev, &plan, p, t, (rhs, out, weight), adjoint, false);
    }

    // L⁻¹ and P (one block), then Q_t = P·M_t, then z = P·rhs into the output.
    let subst_bytes = (padded(p.channels) + p.channels) * p.channels * dt.size();
    let subst_in_smem = subst_bytes <= dev.max_smem as usize;
    let args = Args::default().ptr(weight).ptr(prep).ints(&[
        d.c,
        d.kk,
        d.anchor_t,
        adjoint as i32,
        subst_in_smem as i32,
    ]);
    let smem = if subst_in_smem { subst_bytes as u32 } else { 0 };
    launch(
        &dev,
        &format!("prepare_inverse_{sfx}"),
        (1, 1, 1),
        THREADS,
        smem,
        t.stream,
        args,
    )?;
    prepare_taps(
        &dev,
        t,
        dt,
        &d,
        p,
        weight,
        prep,
        if adjoint { 3 } else { 2 },
    )?;
    let pt_bytes = p.channels * padded(p.channels) * dt.size();
    let pt_in_smem = pt_bytes <= CHANNEL_MIX_MAX_SMEM;
    let args = Args::default()
        .ptr(rhs)
        .ptr(out)
        .ptr(prep)
        .int(d.b)
        .int(d.c)
        .long(p.pixels() as i64)
        .int(pt_in_smem as i32);
    launch(
        &dev,
        &format!("channel_mix_{sfx}"),
        (grid_1d(d.pixels, THREADS)?, 1, 1),
        THREADS,
        if pt_in_smem { pt_bytes as u32 } else { 0 },
        t.stream,
        args,
    )?;

    let (window, q_in_smem, smem) = sweep_plan(p, dt, smem_budget);
    let clusters = dev.props().clusters();
    let tile = tile_plan(p, dt, smem_budget, clusters, window);
    if let Some(tile) = tile.filter(|_| !generic_only()) {
        // The register-blocked kernel where it applies (`INV_CONV_SWEEP_CTAS=1` asks for its
        // one-CTA variant, `INV_CONV_SWEEP_BLK=0` for sweep_tile: A/B runs and tests).
        let clusters = tile.ncta == 2 && ctas != Some(1);
        let blk = blk_plan(p, dt, clusters, smem_budget, solve_tsplit()).filter(|_| sweep_blk());
        let (kernel, plan) = match (blk, tile.ncta) {
            (Some(b), _) => (
                if b.ncta == 2 {
                    "sweep_blk2"
                } else {
                    "sweep_blk"
                },
                b,
            ),
            (None, 2) => ("sweep_tile2", tile),
            (None, _) => ("sweep_tile", tile),
        };
        let args = sweep_args(out, prep, &d, (th, tw), (flip_h, flip_w))
            .int(plan.pw as i32)
            .int(plan.tsplit as i32);
        return launch(
            &dev,
            &format!("{kernel}_{sfx}"),
            (batch(plan.ncta)?, 1, 1),
            plan.threads as u32,
            plan.smem as u32,
            t.stream,
            args,
        );
    }
    let band = band_plan(p, dt, &dev.props(), smem_budget, ctas);
    // The one-block kernels sweep all H rows as one "band" (they ignore the argument).
    let (kernel, ncta, rows, q_in_smem, smem) = match band.filter(|_| !generic_only()) {
        Some(b) => (
            format!("sweep_band{}", b.ncta),
            b.ncta,
            b.band,
            b.q_in_smem,
            b.smem,
        ),
        None => {
            let name = match window {
                Window::Full => "sweep_full",
                Window::Ring => "sweep_ring",
                Window::Global => "sweep_global",
            };
            (name.to_string(), 1, p.height, q_in_smem, smem)
        }
    };
    let GenericSweepPlan {
        split,
        block,
        ci_lanes,
    } = generic_sweep_plan(p, rows)?;
    let args = sweep_args(out, prep, &d, (th, tw), (flip_h, flip_w)).ints(&[
        q_in_smem as i32,
        split as i32,
        ci_lanes as i32,
        rows as i32,
    ]);
    launch(
        &dev,
        &format!("{kernel}_{sfx}"),
        (batch(ncta)?, 1, 1),
        block,
        smem as u32,
        t.stream,
        args,
    )
}
