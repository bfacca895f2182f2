//! Launchers of the direct convolutions: the forward map, its adjoint (the forward op's
//! input-gradient) and the fused sampling chain (kernels/conv.cu, kernels/chain.cu).

// The ops take a problem, a dtype, a target and raw buffers: more than seven arguments is
// their nature.
#![allow(clippy::too_many_arguments)]

use super::device::{device, launch, Args, Device};
use super::limits::{self, CHAIN_MAX_LAYERS};
use super::plan::{chain_regs_plan, chain_smem, conv_tile_plan, padded, prep_len};
use super::{
    batch_blocks, check_scratch, dims, generic_only, grid_1d, Dims, Dtype, Target, THREADS,
};
use crate::error::{Error, Result};
use crate::geometry::Problem;

/// prepare_taps: Q_t for mode 0 forward, 1 forward adjoint, 2 inverse, 3 inverse adjoint.
pub(super) fn prepare_taps(
    dev: &Device,
    t: Target,
    dt: Dtype,
    d: &Dims,
    p: &Problem,
    w: u64,
    prep: u64,
    mode: i32,
) -> Result<()> {
    let n = (d.kk as u64) * (p.channels as u64) * (padded(p.channels) as u64);
    let grid = grid_1d(n, THREADS)?.min(4096);
    let args = Args::default()
        .ptr(w)
        .ptr(prep)
        .ints(&[d.c, d.kk, d.anchor_t, mode]);
    launch(
        dev,
        &format!("prepare_taps_{}", dt.suffix()),
        (grid, 1, 1),
        THREADS,
        0,
        t.stream,
        args,
    )
}

/// The forward map `y = conv2d(pad(x), ŵ)` (`adjoint`: its adjoint `Aᵀ g`, the forward op's
/// input-gradient). `prep` is caller scratch of [`prep_len`] elements.
pub fn conv(
    p: &Problem,
    dt: Dtype,
    t: Target,
    input: u64,
    weight: u64,
    out: u64,
    prep: u64,
    prep_elems: usize,
    adjoint: bool,
) -> Result<()> {
    check_scratch("coefficient", prep_elems, prep_len(p))?;
    let d = dims(p)?;
    let dev = device(t.device)?;
    prepare_taps(
        &dev,
        t,
        dt,
        &d,
        p,
        weight,
        prep,
        if adjoint { 1 } else { 0 },
    )?;
    if let Some(plan) = conv_tile_plan(p, dt, dev.max_smem as usize).filter(|_| !generic_only()) {
        let args = Args::default()
            .ptr(input)
            .ptr(out)
            .ptr(prep)
            .int(d.c)
            .ints(&d.geometry())
            .ints(&[
                if adjoint { -1 } else { 1 },
                plan.tiles_h as i32,
                plan.tiles_w as i32,
            ]);
        return launch(
            &dev,
            &format!("conv_tile_{}", dt.suffix()),
            (plan.grid_x, (p.channels / limits::CONV_TILE_CO) as u32, 1),
            limits::CONV_TILE_THREADS as u32,
            plan.smem,
            t.stream,
            args,
        );
    }
    let groups = padded(p.channels) / 4;
    // One group's coefficients (KK·C quads) in shared memory when they fit in the default 48 KB.
    let q_bytes = (d.kk as usize) * p.channels * 4 * dt.size();
    let q_in_smem = q_bytes <= 48 * 1024;
    let smem = if q_in_smem { q_bytes as u32 } else { 0 };
    let grid = (
        grid_1d(d.pixels, THREADS)?,
        u32::try_from(groups).unwrap_or(u32::MAX),
        1,
    );
    let args = Args::default()
        .ptr(input)
        .ptr(out)
        .ptr(prep)
        .ints(&[d.b, d.c])
        .ints(&d.geometry())
        .ints(&[if adjoint { -1 } else { 1 }, q_in_smem as i32]);
    launch(
        &dev,
        &format!("conv_{}", dt.suffix()),
        grid,
        THREADS,
        smem,
        t.stream,
        args,
    )
}

/// The inverse of an affine coupling applied to the chain's input (kernels/chain.cu,
/// `ChainEnds`): channels `split..C` become `y · exp(log_offset − logsigmoid(r + offset)) − s`
/// with (s, r) interleaved in `h`, whose element (b, k, p) is at `b·strides.0 + k·strides.1 +
/// p·strides.2` elements.
#[derive(Clone, Copy, Debug)]
pub struct CouplingEnd {
    pub h: u64,
    pub strides: (i64, i64, i64),
    pub split: usize,
    pub offset: f64,
    pub log_offset: f64,
}

/// What a chain does besides its convolutions: an affine coupling's inverse before them, and
/// an ActNorm's inverse after them (`(log_scale, bias)`, C each: `v · exp(−log_scale) − bias`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ChainEnds {
    pub coupling: Option<CouplingEnd>,
    pub actnorm: Option<(u64, u64)>,
}

/// `out = A_n ⋯ A_1 x`: the masked convolutions of `orders[l]` with `weights[l]` (raw weights,
/// masked by the kernel), applied in sequence to each sample in one launch, with `ends`
/// around them. Returns `Ok(false)`, launching nothing, when a sample's image does not fit in
/// shared memory (the caller then runs the layers one by one).
#[allow(clippy::too_many_arguments)]
pub fn conv_chain(
    p: &Problem,
    orders: &[crate::geometry::Order],
    dt: Dtype,
    t: Target,
    x: u64,
    weights: &[u64],
    out: u64,
    ends: &ChainEnds,
) -> Result<bool> {
    if let Some(c) = ends.coupling.filter(|c| c.split >= p.channels) {
        return Err(Error::Shape(format!(
            "conv_chain: the coupling's split ({}) must be below the channel count ({})",
            c.split, p.channels
        )));
    }
    if orders.is_empty() || orders.len() > CHAIN_MAX_LAYERS || orders.len() != weights.len() {
        return Err(Error::Shape(format!(
            "conv_chain takes 1 to {CHAIN_MAX_LAYERS} layers with one weight each; got {} orders and {} weights",
            orders.len(),
            weights.len()
        )));
    }
    let d = dims(p)?;
    let dev = device(t.device)?;
    let Some(smem) = chain_smem(p, dt, dev.max_smem as usize) else {
        return Ok(false);
    };
    let batch = batch_blocks(p.batch, 1)?;
    let items = (padded(p.channels) / 4) * p.pixels();
    let (kernel, threads) = match chain_regs_plan(p, dt).filter(|_| !generic_only()) {
        Some((name, threads)) => (name.to_string(), threads),
        None => (
            format!("conv_chain_{}", dt.suffix()),
            (items.div_ceil(32) * 32).clamp(64, 1024) as u32,
        ),
    };
    let mut args = Args::default().ptr(x).ptr(out);
    for l in 0..CHAIN_MAX_LAYERS {
        args = args.ptr(weights.get(l).copied().unwrap_or(0));
    }
    args = args.ints(&[orders.len() as i32, d.c, d.h, d.w, d.kh, d.kw]);
    for l in 0..CHAIN_MAX_LAYERS {
        let (ai, aj) = orders
            .get(l)
            .map(|&order| Problem { order, ..*p }.anchor())
            .unwrap_or((0, 0));
        args = args.int(ai as i32).int(aj as i32);
    }
    let c = ends.coupling.unwrap_or(CouplingEnd {
        h: 0,
        strides: (0, 0, 0),
        split: p.channels,
        offset: 0.0,
        log_offset: 0.0,
    });
    let (log_scale, bias) = ends.actnorm.unwrap_or((0, 0));
    args = args
        .ptr(c.h)
        .long(c.strides.0)
        .long(c.strides.1)
        .long(c.strides.2)
        .int(c.split as i32)
        .double(c.offset)
        .double(c.log_offset)
        .ptr(log_scale)
        .ptr(bias);
    launch(
        &dev,
        &kernel,
        (batch, 1, 1),
        threads,
        smem as u32,
        t.stream,
        args,
    )?;
    Ok(true)
}
