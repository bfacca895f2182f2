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
pub mod nvrtc;

use crate::error::{Error, Result};
use crate::geometry::Problem;

pub use device::{device, device_count, driver, Device};
use device::{launch, Args};

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

const THREADS: u32 = 256;

/// `INV_CONV_CUDA_GENERIC=1` (read at each call) forces the generic kernels instead of the
/// tiled ones (conv_tile, sweep_tile, wgrad_tile): for A/B timing and for tests.
fn generic_only() -> bool {
    std::env::var_os("INV_CONV_CUDA_GENERIC").is_some_and(|v| v != "0" && !v.is_empty())
}

fn padded(c: usize) -> usize {
    c.div_ceil(4) * 4
}

/// Elements of the coefficient scratch every op but weight_grad needs (see kernels/common.cu).
pub fn prep_len(p: &Problem) -> usize {
    (2 + p.kernel_h * p.kernel_w) * p.channels * padded(p.channels)
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
            (plan.grid_x, (p.channels / 16) as u32, 1),
            256,
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

/// The tiled direct convolution's plan (kernels/conv.cu, `conv_tile`): 32 × 16 output tiles ×
/// 16 output channels per block; None when the shape needs the generic kernel.
struct ConvTilePlan {
    tiles_h: usize,
    tiles_w: usize,
    grid_x: u32,
    smem: u32,
}

fn conv_tile_plan(p: &Problem, dt: Dtype, max_smem: usize) -> Option<ConvTilePlan> {
    let (c, kh, kw) = (p.channels, p.kernel_h, p.kernel_w);
    if c % 16 != 0 || kh > 9 || kw > 9 || c / 16 > 65535 {
        return None;
    }
    let smem = (16 * (16 + kh - 1) * 40 + kh * kw * 16 * 16) * dt.size();
    if smem > max_smem {
        return None;
    }
    let tiles_h = p.height.div_ceil(16);
    let tiles_w = p.width.div_ceil(32);
    let grid_x = (p.batch as u64).checked_mul((tiles_h * tiles_w) as u64)?;
    let grid_x = u32::try_from(grid_x)
        .ok()
        .filter(|&g| g <= i32::MAX as u32)?;
    Some(ConvTilePlan {
        tiles_h,
        tiles_w,
        grid_x,
        smem: smem as u32,
    })
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

/// Most layers [`conv_chain`] applies in one launch (an Inverse-Flow unit's four orders).
pub const CHAIN_MAX_LAYERS: usize = 4;

/// Shared bytes [`conv_chain`] needs: two copies of one sample's image and one layer's masked
/// coefficients (kernels/chain.cu); None when that exceeds `max_smem`.
pub fn chain_smem(p: &Problem, dt: Dtype, max_smem: usize) -> Option<usize> {
    let image = (p.channels.checked_mul(p.pixels())?).div_ceil(4) * 4;
    let coef = p.kernel_h * p.kernel_w * p.channels * padded(p.channels);
    let bytes = (2 * image + coef).checked_mul(dt.size())?;
    (bytes <= max_smem).then_some(bytes)
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

/// Where the sweep keeps the solution while later diagonals need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Full,
    Ring,
    Global,
}

/// The sweep's shared-memory plan: window kind, coefficients in shared memory or not, bytes.
pub fn sweep_plan(p: &Problem, dt: Dtype, max_smem: usize) -> (Window, bool, usize) {
    let sz = dt.size();
    let q = p.kernel_h * p.kernel_w * p.channels * padded(p.channels) * sz;
    let full = p.channels * p.pixels() * sz;
    let ring = (p.kernel_h + p.kernel_w - 1) * p.channels * p.height * sz;
    let options = [
        (Window::Full, true, q + full),
        (Window::Ring, true, q + ring),
        (Window::Full, false, full),
        (Window::Ring, false, ring),
        (Window::Global, true, q),
        (Window::Global, false, 0),
    ];
    options
        .into_iter()
        .find(|o| o.2 <= max_smem)
        .unwrap_or((Window::Global, false, 0))
}

/// The `sweep_tile` plan (kernels/wavefront.cu): CTAs per sample (2 = a cluster, sm_90+),
/// pixel slots per pass, warps splitting the taps, threads, shared bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TilePlan {
    pub ncta: usize,
    pub pw: usize,
    pub tsplit: usize,
    pub threads: usize,
    pub smem: usize,
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

/// Used when C % 16 == 0 on a GPU with clusters (two CTAs per sample), or C % 8 == 0 where the
/// generic sweep would use its ring window; None otherwise or when it does not fit.
pub fn tile_plan(
    p: &Problem,
    dt: Dtype,
    max_smem: usize,
    clusters: bool,
    window: Window,
) -> Option<TilePlan> {
    let c = p.channels;
    let ncta = if clusters && c % 16 == 0 {
        2
    } else if c % 8 == 0 && window == Window::Ring {
        1
    } else {
        return None;
    };
    let coc = c / ncta;
    let gc = coc / 8;
    if gc * 32 > 1024 {
        return None;
    }
    let pw = (p.height.min(p.width).div_ceil(32) * 32).min(1024 / gc / 32 * 32);
    let kk = p.kernel_h * p.kernel_w;
    let ring = p.kernel_h + p.kernel_w - 1;
    let sz = dt.size();
    for tsplit in [4usize, 2, 1] {
        if tsplit > 1 && (tsplit > kk.saturating_sub(1) || pw * gc * tsplit > 1024) {
            continue;
        }
        let smem = (kk * c * coc + (ring + 1) * c * p.height + (tsplit - 1) * coc * pw) * sz;
        if smem <= max_smem {
            return Some(TilePlan {
                ncta,
                pw,
                tsplit,
                threads: pw * gc * tsplit,
                smem,
            });
        }
    }
    None
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
    let clusters = dev
        .arch
        .strip_prefix("sm_")
        .and_then(|s| s.get(..s.len().saturating_sub(1)))
        .and_then(|m| m.parse::<u32>().ok())
        .is_some_and(|m| m >= 9);
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
    // Threads per block: (pixels on the longest diagonal) × (4-channel groups) × split, where
    // `split` lanes share one dot product; aim at ~768 threads so short diagonals still fill
    // the SM's schedulers.
    let groups = padded(p.channels) / 4;
    let items = p.height.min(p.width) * groups;
    let pairs = (p.kernel_h * p.kernel_w - 1) * p.channels;
    let mut split = 1usize;
    while split < 32 && items * split * 2 <= 768 && split < pairs {
        split *= 2;
    }
    // A block holds whole pixels (split × groups threads each), at least one.
    if split * groups > 1024 {
        return Err(Error::Device(format!(
            "C = {} is too large for the CUDA wavefront kernel (at most 4096 channels)",
            p.channels
        )));
    }
    let block = ((items * split).min(1024).max(split * groups).div_ceil(32) * 32).max(64) as u32;
    // Lanes split first over input channels (a power of two dividing both C and split, so the
    // channel loop is balanced), the rest over taps.
    let mut ci_lanes = 1usize;
    while ci_lanes < split && p.channels % (ci_lanes * 2) == 0 {
        ci_lanes *= 2;
    }
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

/// The weight-gradient launch plan: the v6 tiled kernel where it applies, else the v2 chunked
/// one. Both write `nblk` partial C × C × KK sums into scratch for `wgrad_reduce`.
enum WgradPlan {
    /// `wgrad_partial`: pixels per chunk, blocks per tap, shared bytes.
    Chunk { chunk: u32, nblk: u32, smem: u32 },
    /// `wgrad_tile{KW}`: tile rows × columns, threads per block, blocks, shared bytes.
    Tile {
        tr: u32,
        tw: u32,
        threads: u32,
        nblk: u32,
        smem: u32,
    },
}

impl WgradPlan {
    fn nblk(&self) -> u32 {
        match self {
            WgradPlan::Chunk { nblk, .. } | WgradPlan::Tile { nblk, .. } => *nblk,
        }
    }
}

/// The tiled plan (kernels/weight_grad.cu, `wgrad_tile`): KW ≤ 3 and enough (tap row, 4×4
/// channel tile) units to fill a block (≥ 64, so C ≥ 16 at K = 3; C = 12 keeps the chunked
/// kernel, which is faster there). None when it does not apply.
fn wgrad_tile_plan(p: &Problem, dt: Dtype, dev: &Device) -> Option<WgradPlan> {
    if generic_only() || p.kernel_w > 3 {
        return None;
    }
    let cp = padded(p.channels);
    let g = cp / 4;
    let units = g * g * p.kernel_h;
    if units < 64 {
        return None;
    }
    // Launch bounds of the entry points: 512 (f32, ≤ 128 registers) and 256 (f64).
    let (max_t, px, regs) = match dt {
        Dtype::F32 => (512usize, 4usize, 128usize),
        Dtype::F64 => (256, 2, 176),
    };
    let passes = units.div_ceil(max_t);
    let threads = units.div_ceil(passes).div_ceil(32) * 32;
    let tw = if p.width >= 32 {
        32
    } else {
        p.width.div_ceil(px) * px
    };
    let cs = cp + 4;
    let budget = (dev.max_smem as usize).min(200 * 1024);
    let bytes =
        |tr: usize| (tr * tw + (tr + p.kernel_h - 1) * (tw + p.kernel_w - 1)) * cs * dt.size();
    let tr = [4usize, 2, 1].into_iter().find(|&tr| bytes(tr) <= budget)?;
    // The staging loops need a thread per halo column.
    if threads < tw + p.kernel_w - 1 {
        return None;
    }
    let tiles = (p.batch as u64) * (p.height.div_ceil(tr) as u64) * (p.width.div_ceil(tw) as u64);
    let per_sm = (2048 / threads)
        .min(dev.max_smem as usize / bytes(tr))
        .min(65536 / (threads * regs))
        .max(1);
    let nblk = tiles.min((per_sm as u64) * dev.sm_count as u64).max(1) as u32;
    Some(WgradPlan::Tile {
        tr: tr as u32,
        tw: tw as u32,
        threads: threads as u32,
        nblk,
        smem: bytes(tr) as u32,
    })
}

fn wgrad_plan(p: &Problem, dt: Dtype, dev: &Device) -> Result<WgradPlan> {
    if let Some(plan) = wgrad_tile_plan(p, dt, dev) {
        return Ok(plan);
    }
    let cs = padded(p.channels) + 4;
    let budget = (dev.max_smem as usize).min(100 * 1024);
    let bytes = |chunk: usize| (2 * chunk * cs + THREADS as usize * 16) * dt.size();
    let mut chunk = 256usize;
    while chunk > 8 && bytes(chunk) > budget {
        chunk /= 2;
    }
    if bytes(chunk) > dev.max_smem as usize {
        return Err(Error::Device(format!(
            "weight_grad: C = {} is too large for the kernel's shared-memory plan ({} bytes needed, {} available)",
            p.channels,
            bytes(chunk),
            dev.max_smem
        )));
    }
    let kk = (p.kernel_h * p.kernel_w) as u64;
    let nchunks = ((p.batch as u64) * (p.pixels() as u64)).div_ceil(chunk as u64);
    // About four blocks per SM in all, split over the taps (grid.y). `chunk` is a power of two
    // no larger than THREADS, which the kernel's staging loop relies on.
    let per_tap = (4 * dev.sm_count as u64).div_ceil(kk).max(1);
    let nblk = nchunks.min(per_tap).max(1) as u32;
    Ok(WgradPlan::Chunk {
        chunk: chunk as u32,
        nblk,
        smem: bytes(chunk) as u32,
    })
}

/// Elements of scratch [`weight_grad`] needs on device `ordinal` (compiles the kernels if this
/// is the device's first use).
pub fn weight_grad_scratch_len(p: &Problem, dt: Dtype, ordinal: usize) -> Result<usize> {
    let dev = device(ordinal)?;
    let plan = wgrad_plan(p, dt, &dev)?;
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
    let plan = wgrad_plan(p, dt, &dev)?;
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
