//! CUDA backend: kernels from `kernels/*.cu`, compiled at first use per device by NVRTC for the
//! device's compute capability, launched through `cudarc` on a stream the caller owns.
//!
//! Contract with the caller (the Python layer): every pointer is a device address on device
//! `ordinal`, of `dtype`, contiguous, sized for the [`Problem`]; outputs and scratch are
//! allocated by the caller (torch's caching allocator). An op enqueues its kernels on `stream`
//! and returns: no device allocation, no synchronization, so ops can be captured in CUDA graphs.
//! Launch errors come back as [`Error::Cuda`] with the CUDA error name.
//!
//! Per op (see the kernel files for the maths):
//! - forward / forward_adjoint: `prepare_taps` (ŵ or ŵᵀ, 4-channel padded), then `conv`.
//! - inverse / inverse_adjoint: `prepare_inverse` (L⁻¹ and P), `prepare_taps` (Q_t = P·M_t),
//!   `channel_mix` (z = P·rhs into the output), then `sweep` (one block per sample, wavefront
//!   over anti-diagonals, the solution kept in shared memory where it fits).
//! - weight_grad: `wgrad_tile` (v6: one staging of a pixel tile + halo for all taps) or
//!   `wgrad_partial` (split-K partial sums into caller scratch), then `wgrad_reduce`.

// The ops take a problem, a dtype, a target and raw buffers: more than seven arguments is
// their nature.
#![allow(clippy::too_many_arguments)]

mod device;
mod kernels;
pub mod limits;
pub mod nvrtc;
pub mod plan;

use crate::error::{Error, Result};
use crate::geometry::Problem;

pub use device::{device, device_count, driver, Device};
use device::{launch, Args};
use limits::CHAIN_MAX_LAYERS;
use plan::*;
pub use plan::{prep_len, DeviceProps};

/// Element type of the buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }
    fn suffix(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        }
    }
}

impl std::str::FromStr for Dtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Dtype> {
        match s {
            "float32" | "f32" | "torch.float32" => Ok(Dtype::F32),
            "float64" | "f64" | "torch.float64" => Ok(Dtype::F64),
            _ => Err(Error::Dtype(format!(
                "the CUDA ops take float32 or float64; got {s}"
            ))),
        }
    }
}

/// Where an op runs: the device ordinal and the raw `CUstream` handle to enqueue on.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub device: usize,
    pub stream: u64,
}

const THREADS: u32 = limits::THREADS as u32;

/// `INV_CONV_CUDA_GENERIC=1` (read at each call) forces the generic kernels instead of the
/// tiled ones (conv_tile, sweep_tile, wgrad_tile): for A/B timing and for tests.
fn generic_only() -> bool {
    std::env::var_os("INV_CONV_CUDA_GENERIC").is_some_and(|v| v != "0" && !v.is_empty())
}

fn int(name: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::Shape(format!(
            "{name} = {v} is too large for the CUDA kernels (max {})",
            i32::MAX
        ))
    })
}

/// The problem's integers for the kernels, range-checked once.
struct Dims {
    b: i32,
    c: i32,
    h: i32,
    w: i32,
    kh: i32,
    kw: i32,
    ai: i32,
    aj: i32,
    kk: i32,
    anchor_t: i32,
    pixels: u64,
}

fn dims(p: &Problem) -> Result<Dims> {
    let (ai, aj) = p.anchor();
    let kk = p
        .kernel_h
        .checked_mul(p.kernel_w)
        .ok_or_else(|| Error::Shape("kernel too large".into()))?;
    // Every index the kernels form fits in 64 bits; these bounds keep the 32-bit ones exact.
    let cp = padded(p.channels);
    int(
        "C·Cp·KH·KW",
        kk.saturating_mul(p.channels).saturating_mul(cp),
    )?;
    int("H + W", p.height.saturating_add(p.width))?;
    Ok(Dims {
        b: int("batch", p.batch)?,
        c: int("channels", p.channels)?,
        h: int("height", p.height)?,
        w: int("width", p.width)?,
        kh: int("kernel_h", p.kernel_h)?,
        kw: int("kernel_w", p.kernel_w)?,
        ai: ai as i32,
        aj: aj as i32,
        kk: kk as i32,
        anchor_t: (ai * p.kernel_w + aj) as i32,
        pixels: (p.batch as u64) * (p.pixels() as u64),
    })
}

fn check_scratch(name: &str, have: usize, want: usize) -> Result<()> {
    if have < want {
        return Err(Error::Shape(format!(
            "{name} scratch holds {have} elements; the op needs {want}"
        )));
    }
    Ok(())
}

fn grid_1d(n: u64, per_block: u32) -> Result<u32> {
    let blocks = n.div_ceil(per_block as u64);
    u32::try_from(blocks)
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| {
            Error::Shape(format!(
                "the problem has {n} work items, more than one launch can cover"
            ))
        })
}

/// prepare_taps: Q_t for mode 0 forward, 1 forward adjoint, 2 inverse, 3 inverse adjoint.
fn prepare_taps(
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
        .int(d.c)
        .int(d.kk)
        .int(d.anchor_t)
        .int(mode);
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

fn conv(
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
            .int(d.h)
            .int(d.w)
            .int(d.kh)
            .int(d.kw)
            .int(d.ai)
            .int(d.aj)
            .int(if adjoint { -1 } else { 1 })
            .int(plan.tiles_h as i32)
            .int(plan.tiles_w as i32);
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
        .int(d.b)
        .int(d.c)
        .int(d.h)
        .int(d.w)
        .int(d.kh)
        .int(d.kw)
        .int(d.ai)
        .int(d.aj)
        .int(if adjoint { -1 } else { 1 })
        .int(q_in_smem as i32);
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

/// Forward map `y = conv2d(pad(x), ŵ)`. `prep` is caller scratch of [`prep_len`] elements.
pub fn forward(
    p: &Problem,
    dt: Dtype,
    t: Target,
    x: u64,
    weight: u64,
    y: u64,
    prep: u64,
    prep_elems: usize,
) -> Result<()> {
    conv(p, dt, t, x, weight, y, prep, prep_elems, false)
}

/// The forward map's adjoint `Aᵀ g` (the forward op's input-gradient).
pub fn forward_adjoint(
    p: &Problem,
    dt: Dtype,
    t: Target,
    g: u64,
    weight: u64,
    out: u64,
    prep: u64,
    prep_elems: usize,
) -> Result<()> {
    conv(p, dt, t, g, weight, out, prep, prep_elems, true)
}

/// `out = A_n ⋯ A_1 x`: the masked convolutions of `orders[l]` with `weights[l]` (raw weights,
/// masked by the kernel), applied in sequence to each sample in one launch. Returns
/// `Ok(false)`, launching nothing, when a sample's image does not fit in shared memory (the
/// caller then runs the layers one by one).
pub fn conv_chain(
    p: &Problem,
    orders: &[crate::geometry::Order],
    dt: Dtype,
    t: Target,
    x: u64,
    weights: &[u64],
    out: u64,
) -> Result<bool> {
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
    let batch = u32::try_from(p.batch)
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| Error::Shape("batch too large".into()))?;
    let items = (padded(p.channels) / 4) * p.pixels();
    let threads = (items.div_ceil(32) * 32).clamp(64, 1024) as u32;
    let mut args = Args::default().ptr(x).ptr(out);
    for l in 0..CHAIN_MAX_LAYERS {
        args = args.ptr(weights.get(l).copied().unwrap_or(0));
    }
    args = args
        .int(orders.len() as i32)
        .int(d.c)
        .int(d.h)
        .int(d.w)
        .int(d.kh)
        .int(d.kw);
    for l in 0..CHAIN_MAX_LAYERS {
        let (ai, aj) = orders
            .get(l)
            .map(|&order| Problem { order, ..*p }.anchor())
            .unwrap_or((0, 0));
        args = args.int(ai as i32).int(aj as i32);
    }
    launch(
        &dev,
        &format!("conv_chain_{}", dt.suffix()),
        (batch, 1, 1),
        threads,
        smem as u32,
        t.stream,
        args,
    )?;
    Ok(true)
}

/// The arguments every sweep kernel takes first: the image being solved in place, the
/// coefficients, the problem's dimensions, the canonical tap signs and axis flips, and the ring
/// length (KH + KW − 1 diagonals).
fn sweep_args(out: u64, prep: u64, d: &Dims, signs: (i32, i32), flips: (bool, bool)) -> Args {
    Args::default()
        .ptr(out)
        .ptr(prep)
        .int(d.c)
        .int(d.h)
        .int(d.w)
        .int(d.kh)
        .int(d.kw)
        .int(d.ai)
        .int(d.aj)
        .int(signs.0)
        .int(signs.1)
        .int(flips.0 as i32)
        .int(flips.1 as i32)
        .int(d.kh + d.kw - 1)
}

fn solve(
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
    // L⁻¹ and P (one block), then Q_t = P·M_t, then z = P·rhs into the output.
    let subst_bytes = (padded(p.channels) + p.channels) * p.channels * dt.size();
    let subst_in_smem = subst_bytes <= dev.max_smem as usize;
    let args = Args::default()
        .ptr(weight)
        .ptr(prep)
        .int(d.c)
        .int(d.kk)
        .int(d.anchor_t)
        .int(adjoint as i32)
        .int(subst_in_smem as i32);
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
    let args = Args::default()
        .ptr(rhs)
        .ptr(out)
        .ptr(prep)
        .int(d.b)
        .int(d.c)
        .long(p.pixels() as i64);
    launch(
        &dev,
        &format!("channel_mix_{sfx}"),
        (grid_1d(d.pixels, THREADS)?, 1, 1),
        THREADS,
        0,
        t.stream,
        args,
    )?;

    // Canonical coordinates: flip the axes so that the sweep starts at the corner that depends
    // on nothing (the order's start for the inverse, the opposite corner for the adjoint).
    let sign = if adjoint { -1 } else { 1 };
    let flip_h = p.order.pads_top() == adjoint;
    let flip_w = p.order.pads_left() == adjoint;
    let th = sign * if flip_h { -1 } else { 1 };
    let tw = sign * if flip_w { -1 } else { 1 };
    // Keep 1 KB for the kernel's static shared memory (its tap table).
    let (window, q_in_smem, smem) = sweep_plan(p, dt, dev.max_smem as usize - 1024);
    let clusters = dev.props().clusters();
    let tile = tile_plan(p, dt, dev.max_smem as usize - 1024, clusters, window);
    if let Some(plan) = tile.filter(|_| !generic_only()) {
        let batch = u32::try_from(p.batch)
            .ok()
            .and_then(|b| b.checked_mul(plan.ncta as u32))
            .filter(|&g| g <= i32::MAX as u32)
            .ok_or_else(|| Error::Shape("batch too large".into()))?;
        let args = sweep_args(out, prep, &d, (th, tw), (flip_h, flip_w))
            .int(plan.pw as i32)
            .int(plan.tsplit as i32);
        let kernel = if plan.ncta == 2 {
            "sweep_tile2"
        } else {
            "sweep_tile"
        };
        return launch(
            &dev,
            &format!("{kernel}_{sfx}"),
            (batch, 1, 1),
            plan.threads as u32,
            plan.smem as u32,
            t.stream,
            args,
        );
    }
    let kernel = match window {
        Window::Full => "sweep_full",
        Window::Ring => "sweep_ring",
        Window::Global => "sweep_global",
    };
    let GenericSweepPlan {
        split,
        block,
        ci_lanes,
    } = generic_sweep_plan(p)?;
    let batch = u32::try_from(p.batch).map_err(|_| Error::Shape("batch too large".into()))?;
    let args = sweep_args(out, prep, &d, (th, tw), (flip_h, flip_w))
        .int(q_in_smem as i32)
        .int(split as i32)
        .int(ci_lanes as i32);
    launch(
        &dev,
        &format!("{kernel}_{sfx}"),
        (batch, 1, 1),
        block,
        smem as u32,
        t.stream,
        args,
    )
}

/// Density direction `x = A⁻¹ y`.
pub fn inverse(
    p: &Problem,
    dt: Dtype,
    t: Target,
    y: u64,
    weight: u64,
    x: u64,
    prep: u64,
    prep_elems: usize,
) -> Result<()> {
    solve(p, dt, t, y, weight, x, prep, prep_elems, false)
}

/// The inverse's input-gradient `u = A⁻ᵀ g`.
pub fn inverse_adjoint(
    p: &Problem,
    dt: Dtype,
    t: Target,
    g: u64,
    weight: u64,
    u: u64,
    prep: u64,
    prep_elems: usize,
) -> Result<()> {
    solve(p, dt, t, g, weight, u, prep, prep_elems, true)
}

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
                .int(d.b)
                .int(d.c)
                .int(d.h)
                .int(d.w)
                .int(d.kh)
                .int(d.kw)
                .int(d.ai)
                .int(d.aj)
                .int(chunk as i32);
            let taps = u32::try_from(kk)
                .ok()
                .filter(|&k| k <= 65535)
                .ok_or_else(|| Error::Shape("kernel too large".into()))?;
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
                .int(d.b)
                .int(d.c)
                .int(d.h)
                .int(d.w)
                .int(d.kh)
                .int(d.ai)
                .int(d.aj)
                .int(tr as i32)
                .int(tw as i32);
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
    let args = Args::default()
        .ptr(scratch)
        .ptr(out)
        .int(d.c)
        .int(d.kk)
        .int(d.anchor_t)
        .int(plan.nblk() as i32)
        .int(negate as i32);
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
/// (masked) into `grad_w`; `prep` as for [`inverse_adjoint`], `scratch` as for [`weight_grad`].
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
    inverse_adjoint(p, dt, t, g, weight, u, prep, prep_elems)?;
    weight_grad(p, dt, t, x, u, grad_w, scratch, scratch_elems, true)
}

/// Every kernel entry point with its parameter types (see `kernels::ENTRY_POINTS`).
pub fn entry_points() -> &'static [(&'static str, &'static str)] {
    &kernels::ENTRY_POINTS
}

/// What [`compile_check`] reports.
pub struct CompileReport {
    pub millis: f64,
    pub cubin_bytes: usize,
    pub nvrtc_path: String,
    pub nvrtc_version: (i32, i32),
    pub log: String,
}

/// Compiles every kernel for `arch` with NVRTC; no driver or GPU needed.
pub fn compile_check(arch: &str) -> Result<CompileReport> {
    let lib = nvrtc::library()?;
    let t0 = std::time::Instant::now();
    let (cubin, log) = lib.compile(&kernels::program_source(), "inv_conv.cu", arch, &[])?;
    Ok(CompileReport {
        millis: t0.elapsed().as_secs_f64() * 1e3,
        cubin_bytes: cubin.len(),
        nvrtc_path: lib.path.clone(),
        nvrtc_version: lib.version,
        log,
    })
}
