//! Launch plans: pure functions of the problem, the dtype and the device's properties (no
//! driver, no GPU), so `cargo test --features cuda` checks them anywhere. The launchers in
//! `mod.rs` turn a plan into kernel arguments; the sizes the kernels share come from
//! [`super::limits`].

use super::limits::*;
use super::Dtype;
use crate::error::{Error, Result};
use crate::geometry::Problem;

/// What the plans need to know about a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceProps {
    /// Largest dynamic shared memory one block may use (after opting in), in bytes.
    pub max_smem: usize,
    pub sm_count: usize,
    /// Compute capability (major, minor).
    pub compute_capability: (u32, u32),
}

impl DeviceProps {
    /// Thread-block clusters with distributed shared memory: compute capability 9.0 and up.
    pub fn clusters(&self) -> bool {
        self.compute_capability.0 >= 9
    }

    /// Programmatic dependent launch (a launch that starts while the one before it runs, its
    /// kernel waiting with `griddepcontrol.wait`): compute capability 9.0 and up.
    pub fn programmatic_launch(&self) -> bool {
        self.compute_capability.0 >= 9
    }
}

pub fn padded(c: usize) -> usize {
    c.div_ceil(4) * 4
}

/// Elements of the coefficient scratch every op but weight_grad needs (see kernels/common.cu).
pub fn prep_len(p: &Problem) -> usize {
    (2 + p.kernel_h * p.kernel_w) * p.channels * padded(p.channels)
}

/// The tiled direct convolution's plan (kernels/conv.cu, `conv_tile`): 32 × 16 output tiles ×
/// 16 output channels per block; None when the shape needs the generic kernel.
pub struct ConvTilePlan {
    pub tiles_h: usize,
    pub tiles_w: usize,
    pub grid_x: u32,
    pub smem: u32,
}

pub fn conv_tile_plan(p: &Problem, dt: Dtype, max_smem: usize) -> Option<ConvTilePlan> {
    let (c, kh, kw) = (p.channels, p.kernel_h, p.kernel_w);
    if c % CONV_TILE_CO != 0
        || kh > CONV_TILE_MAX_K
        || kw > CONV_TILE_MAX_K
        || c / CONV_TILE_CO > 65535
    {
        return None;
    }
    let smem = (CONV_TILE_CI * (CONV_TILE_H + kh - 1) * CONV_TILE_ROW_STRIDE
        + kh * kw * CONV_TILE_CI * CONV_TILE_CO)
        * dt.size();
    if smem > max_smem {
        return None;
    }
    let tiles_h = p.height.div_ceil(CONV_TILE_H);
    let tiles_w = p.width.div_ceil(CONV_TILE_W);
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

/// Shared bytes [`conv_chain`] needs: two copies of one sample's image and one layer's masked
/// coefficients (kernels/chain.cu); None when that exceeds `max_smem`.
pub fn chain_smem(p: &Problem, dt: Dtype, max_smem: usize) -> Option<usize> {
    let image = (p.channels.checked_mul(p.pixels())?).div_ceil(4) * 4;
    let coef = p.kernel_h * p.kernel_w * p.channels * padded(p.channels);
    let bytes = (2 * image + coef).checked_mul(dt.size())?;
    (bytes <= max_smem).then_some(bytes)
}

/// `conv_chain_regs` variants (kernels/chain.cu): (C, output channels per thread, pixels per
/// thread, entry point).
const CHAIN_REGS_VARIANTS: [(usize, usize, usize, &str); 2] = [
    (12, 12, 2, "conv_chain_c12_f32"),
    (24, 12, 2, "conv_chain_c24_f32"),
];

/// The register-blocked chain for float32 with C = 12 or 24 and at least
/// [`CHAIN_REGS_MIN_PIXELS`] pixels that one pass of the block's threads covers: entry point
/// and threads (C / COT groups of threads, a thread per PX pixels, within the kernel's launch
/// bound [`CHAIN_REGS_THREADS`]); None otherwise (the generic `conv_chain`, whose thread per 4
/// channels keeps more warps busy on small images). Larger images stay on the generic kernel
/// until the register kernel's pixel loop has run on a GPU.
pub fn chain_regs_plan(p: &Problem, dt: Dtype) -> Option<(&'static str, u32)> {
    let &(_, cot, px, kernel) = CHAIN_REGS_VARIANTS
        .iter()
        .find(|v| dt == Dtype::F32 && v.0 == p.channels)?;
    let groups = p.channels / cot;
    let per_group = p.pixels().div_ceil(px).div_ceil(32) * 32;
    (p.pixels() >= CHAIN_REGS_MIN_PIXELS && per_group * groups <= CHAIN_REGS_THREADS)
        .then_some((kernel, (per_group * groups) as u32))
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
    let full = p.channels * (p.pixels() + SWEEP_FULL_PAD) * sz;
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

/// The register-blocked `sweep_blk` (kernels/wavefront.cu) in place of `sweep_tile`: float32
/// only; a 2-CTA cluster per sample (`clusters`) from C = SWEEP_BLK_CLUSTER_MIN_C, else one
/// CTA; the most tap parts (`tsplit`, or the one asked for) whose threads stay within the
/// launch bound and whose shared memory fits. `pw` is the pixels of one pass.
pub fn blk_plan(
    p: &Problem,
    dt: Dtype,
    clusters: bool,
    max_smem: usize,
    tsplit: Option<usize>,
) -> Option<TilePlan> {
    let c = p.channels;
    let taps = (p.kernel_h * p.kernel_w).checked_sub(1)?;
    let ncta = if clusters && c % 16 == 0 && c >= SWEEP_BLK_CLUSTER_MIN_C {
        2
    } else {
        1
    };
    if dt != Dtype::F32 || taps == 0 || c % 8 != 0 {
        return None;
    }
    let gc = c / ncta / 8;
    let ring = p.kernel_h + p.kernel_w - 1;
    let candidates = tsplit.map_or(vec![8, 4, 2, 1], |n| vec![n]);
    candidates.into_iter().find_map(|ts| {
        let threads = SWEEP_BLK_PG * gc * ts;
        let records = if ts > 1 { ts } else { 0 };
        let smem = ((taps + 1) * c * (c / ncta)
            + (ring + 1) * p.height * (c + 4)
            + records * gc * SWEEP_BLK_PG * SWEEP_BLK_RED)
            * dt.size();
        (ts >= 1 && ts <= taps && threads <= SWEEP_BLK_THREADS && smem <= max_smem).then_some(
            TilePlan {
                ncta,
                pw: SWEEP_BLK_PG * SWEEP_BLK_PX,
                tsplit: ts,
                threads,
                smem,
            },
        )
    })
}

/// The one-launch solve (kernels/solve_regs.cu): entry point, threads per block, shared
/// bytes, and the tile (the whole image where it fits; else one launch per tile
/// anti-diagonal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegsPlan {
    pub kernel: &'static str,
    pub threads: u32,
    pub smem: usize,
    pub tile_h: usize,
    pub tile_w: usize,
}

impl RegsPlan {
    /// Tiles per column and per row of the image.
    pub fn tiles(&self, p: &Problem) -> (usize, usize) {
        (
            p.height.div_ceil(self.tile_h),
            p.width.div_ceil(self.tile_w),
        )
    }
}

/// `solve_regs` variants: (C, lanes per dot product, output channels per thread, entry point,
/// launch bound). The first of each C is the default, the fastest measured at the presets'
/// shapes in CUDA graphs (H200: C = 24 t2o1 0.0373 / 0.0178 ms at 16² / 8²,
/// t4o2 0.0413 / 0.0190); `INV_CONV_SOLVE_TSPLIT` picks another by its lane count (A/B timing,
/// tests).
type RegsVariant = (usize, usize, usize, &'static str, usize);
const REGS_VARIANTS: [RegsVariant; 6] = [
    (12, 4, 4, "solve_regs_c12_t4_o4_f32", SOLVE_REGS_THREADS_96),
    (12, 8, 4, "solve_regs_c12_t8_o4_f32", SOLVE_REGS_THREADS_48),
    (12, 1, 1, "solve_regs_c12_t1_o1_f32", SOLVE_REGS_THREADS_96),
    (24, 2, 1, "solve_regs_c24_t2_o1_f32", SOLVE_REGS_THREADS_96),
    (24, 4, 2, "solve_regs_c24_t4_o2_f32", SOLVE_REGS_THREADS_96),
    (24, 8, 4, "solve_regs_c24_t8_o4_f32", SOLVE_REGS_THREADS_96),
];

/// Used for float32 problems with KH·KW = 9 and C = 12 or 24 (the flow presets' shapes); None
/// otherwise. The tile is the whole image where its window (with the border) fits in shared
/// memory; else the image is cut into equal tiles of at most the block's pixel slots a side
/// (a tile diagonal in one pass of the threads; at least [`SOLVE_REGS_MIN_TILE`]), or of
/// `max_tile`. Measured on an H200 (B16 C12 128², inverse): tiles of 64 0.295 ms, 48 0.292,
/// 32 0.239, 16 0.248; B16 C24 64²: 32 0.378, 16 0.288. Threads: one pixel slot (C / channels
/// per thread × lanes threads) per pixel of the tile's longest diagonal, within the launch
/// bound.
pub fn regs_plan(
    p: &Problem,
    dt: Dtype,
    max_smem: usize,
    tsplit: Option<usize>,
    max_tile: Option<usize>,
) -> Option<RegsPlan> {
    if dt != Dtype::F32 || p.kernel_h * p.kernel_w != 9 {
        return None;
    }
    let &(c, lanes, copt, kernel, bound) = REGS_VARIANTS
        .iter()
        .find(|v| v.0 == p.channels && tsplit.map_or(true, |t| t == v.1))?;
    // L⁻¹, P, the 8 off-anchor taps' Q and the weight (C × C each, 9 taps), then the window.
    let smem =
        |th: usize, tw: usize| ((th + p.kernel_h - 1) * (tw + p.kernel_w - 1) * c + 19 * c * c) * 4;
    let per_pixel = c / copt * lanes;
    let fits_whole = smem(p.height, p.width) <= max_smem;
    let cap = match max_tile {
        Some(n) => n.max(1),
        None if fits_whole => usize::MAX,
        None => (bound / per_pixel).max(SOLVE_REGS_MIN_TILE),
    };
    let side = (1..=p.height.max(p.width).min(cap))
        .take_while(|&t| smem(t.min(p.height), t.min(p.width)) <= max_smem)
        .last()?;
    let even = |n: usize| n.div_ceil(n.div_ceil(side));
    let (tile_h, tile_w) = (even(p.height), even(p.width));
    let slots = tile_h.min(tile_w).min(bound / per_pixel);
    let threads = (slots * per_pixel).div_ceil(32) * 32;
    Some(RegsPlan {
        kernel,
        threads: threads as u32,
        smem: smem(tile_h, tile_w),
        tile_h,
        tile_w,
    })
}

/// The solve chain's plan (one `solve_regs` launch per layer, the later ones programmatic):
/// the one-launch solve's, where a sample's whole image is one tile; None otherwise.
pub fn solve_chain_plan(
    p: &Problem,
    dt: Dtype,
    max_smem: usize,
    tsplit: Option<usize>,
    max_tile: Option<usize>,
) -> Option<RegsPlan> {
    regs_plan(p, dt, max_smem, tsplit, max_tile).filter(|plan| plan.tiles(p) == (1, 1))
}

/// The banded sweep's plan (`sweep_band{ncta}`, kernels/wavefront.cu, sm_90+): a cluster of
/// `ncta` CTAs per sample, CTA r solving the canonical rows [r·band, (r+1)·band) with a ring
/// window of band + KH − 1 rows; the coefficients in shared memory or not; shared bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BandPlan {
    pub ncta: usize,
    pub band: usize,
    pub q_in_smem: bool,
    pub smem: usize,
}

/// Used on a GPU with clusters when the batch leaves most SMs idle (one block per sample): as
/// many CTAs per sample (2, 4 or 8) as keep the grid within half the SMs, each band at least
/// KH − 1 rows high (so that it reads only its upper neighbour's rows) and none empty. Half,
/// because each diagonal then costs a cluster barrier (measured on an H200, B64 C12 32²: one
/// block 0.144 ms, 2 CTAs 0.169; B16 C12 128²: one block 1.38 ms, 4 CTAs 0.91, 8 CTAs 1.29;
/// B1 C12 32²: one block 0.143, 8 CTAs 0.112). `ctas` overrides the choice (1: never). None
/// when it does not apply or fit.
pub fn band_plan(
    p: &Problem,
    dt: Dtype,
    props: &DeviceProps,
    max_smem: usize,
    ctas: Option<usize>,
) -> Option<BandPlan> {
    if !props.clusters() {
        return None;
    }
    let halo = p.kernel_h - 1;
    let fits = |n: usize| {
        let band = p.height.div_ceil(n);
        band >= halo.max(1) && (n - 1) * band < p.height
    };
    let mut ncta = match ctas {
        Some(n) if !(2..=SWEEP_BAND_MAX_CTAS).contains(&n) || !n.is_power_of_two() || !fits(n) => {
            return None
        }
        Some(n) => n,
        None => {
            let mut n = 1;
            while n < SWEEP_BAND_MAX_CTAS && p.batch.saturating_mul(n * 4) <= props.sm_count {
                n *= 2;
            }
            n
        }
    };
    while ncta >= 2 && !fits(ncta) {
        ncta /= 2;
    }
    if ncta < 2 {
        return None;
    }
    let band = p.height.div_ceil(ncta);
    let sz = dt.size();
    let q = p.kernel_h * p.kernel_w * p.channels * padded(p.channels) * sz;
    let ring = (p.kernel_h + p.kernel_w - 1) * p.channels * (band + halo) * sz;
    let (q_in_smem, smem) = if q + ring <= max_smem {
        (true, q + ring)
    } else if ring <= max_smem {
        (false, ring)
    } else {
        return None;
    };
    Some(BandPlan {
        ncta,
        band,
        q_in_smem,
        smem,
    })
}

/// The weight-gradient launch plan: the tiled kernel where it applies, else the chunked
/// one. Both write `nblk` partial C × C × KK sums into scratch for `wgrad_reduce`.
pub enum WgradPlan {
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
    pub fn nblk(&self) -> u32 {
        match self {
            WgradPlan::Chunk { nblk, .. } | WgradPlan::Tile { nblk, .. } => *nblk,
        }
    }
}

/// The tiled plan (kernels/weight_grad.cu, `wgrad_tile`): KW ≤ 3 and enough (tap row, 4×4
/// channel tile) units to fill a block (≥ 64, so C ≥ 16 at K = 3; C = 12 keeps the chunked
/// kernel, which is faster there). None when it does not apply.
pub fn wgrad_tile_plan(p: &Problem, dt: Dtype, dev: &DeviceProps) -> Option<WgradPlan> {
    if p.kernel_w > 3 {
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
        Dtype::F32 => (WGRAD_TILE_THREADS_F32, WGRAD_TILE_PX_F32, 128usize),
        Dtype::F64 => (WGRAD_TILE_THREADS_F64, WGRAD_TILE_PX_F64, 176),
    };
    let passes = units.div_ceil(max_t);
    let threads = units.div_ceil(passes).div_ceil(32) * 32;
    let tw = if p.width >= 32 {
        32
    } else {
        p.width.div_ceil(px) * px
    };
    let cs = cp + 4;
    let budget = (dev.max_smem).min(200 * 1024);
    let bytes = |tr: usize| {
        WGRAD_TILE_BUFFERS
            * (tr * tw + (tr + p.kernel_h - 1) * (tw + p.kernel_w - 1))
            * cs
            * dt.size()
    };
    let tr = [4usize, 2, 1].into_iter().find(|&tr| bytes(tr) <= budget)?;
    // The staging loops need a thread per halo column.
    if threads < tw + p.kernel_w - 1 {
        return None;
    }
    let tiles = (p.batch as u64) * (p.height.div_ceil(tr) as u64) * (p.width.div_ceil(tw) as u64);
    let per_sm = (2048 / threads)
        .min(dev.max_smem / bytes(tr))
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

/// The weight-gradient plan: the tiled kernel where it applies (unless `generic`), else the
/// chunked one.
pub fn wgrad_plan(p: &Problem, dt: Dtype, dev: &DeviceProps, generic: bool) -> Result<WgradPlan> {
    if let Some(plan) = wgrad_tile_plan(p, dt, dev).filter(|_| !generic) {
        return Ok(plan);
    }
    let cs = padded(p.channels) + 4;
    let budget = (dev.max_smem).min(100 * 1024);
    let bytes = |chunk: usize| (2 * chunk * cs + THREADS * 16) * dt.size();
    let mut chunk = 256usize;
    while chunk > 8 && bytes(chunk) > budget {
        chunk /= 2;
    }
    if bytes(chunk) > dev.max_smem {
        return Err(Error::TooLarge(format!(
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

/// The generic sweep's thread roles (kernels/wavefront.cu): `split` lanes share one dot
/// product, `ci_lanes` of them over input channels; `block` threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenericSweepPlan {
    pub split: usize,
    pub block: u32,
    pub ci_lanes: usize,
}

pub fn generic_sweep_plan(p: &Problem, rows: usize) -> Result<GenericSweepPlan> {
    // Threads per block: (pixels on the longest diagonal of the block's `rows`) × (4-channel
    // groups) × split, where `split` lanes share one dot product; aim at ~768 threads so short
    // diagonals still fill the SM's schedulers.
    let groups = padded(p.channels) / 4;
    let items = rows.min(p.width) * groups;
    let pairs = (p.kernel_h * p.kernel_w - 1) * p.channels;
    let mut split = 1usize;
    while split < 32 && items * split * 2 <= 768 && split < pairs {
        split *= 2;
    }
    // A block holds whole pixels (split × groups threads each), at least one.
    if split * groups > SWEEP_MAX_THREADS {
        return Err(Error::TooLarge(format!(
            "C = {} is too large for the CUDA wavefront kernel (at most 4096 channels)",
            p.channels
        )));
    }
    let block = ((items * split)
        .min(SWEEP_MAX_THREADS)
        .max(split * groups)
        .div_ceil(32)
        * 32)
        .max(64) as u32;
    // Lanes split first over input channels (a power of two dividing both C and split, so the
    // channel loop is balanced), the rest over taps.
    let mut ci_lanes = 1usize;
    while ci_lanes < split && p.channels % (ci_lanes * 2) == 0 {
        ci_lanes *= 2;
    }
    Ok(GenericSweepPlan {
        split,
        block,
        ci_lanes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Order;

    const H200: DeviceProps = DeviceProps {
        max_smem: 227 * 1024,
        sm_count: 132,
        compute_capability: (9, 0),
    };
    const A100: DeviceProps = DeviceProps {
        max_smem: 163 * 1024,
        sm_count: 108,
        compute_capability: (8, 0),
    };

    fn problem(b: usize, c: usize, h: usize, w: usize, k: usize) -> Problem {
        Problem::new("x", &[b, c, h, w], &[c, c, k, k], Order::TL).unwrap()
    }

    #[test]
    fn bands_fill_the_sms_and_stay_at_least_a_halo_high() {
        let max = H200.max_smem - 1024;
        let plan =
            |b, c, h, k, ctas| band_plan(&problem(b, c, h, h, k), Dtype::F32, &H200, max, ctas);
        // Within half of 132 SMs: B = 16 gets four CTAs per sample, B = 8 eight, B = 32 two.
        let ctas = |b, h| plan(b, 12, h, 3, None).map(|b| (b.ncta, b.band));
        assert_eq!(ctas(16, 128), Some((4, 32)));
        assert_eq!(ctas(8, 128), Some((8, 16)));
        assert_eq!(ctas(32, 64), Some((2, 32)));
        // A batch that fills half the SMs, a GPU without clusters: the one-block kernels.
        assert_eq!(ctas(64, 32), None);
        assert_eq!(ctas(34, 32), None);
        assert_eq!(
            band_plan(&problem(1, 12, 32, 32, 3), Dtype::F32, &A100, max, None),
            None
        );
        // Short images: fewer CTAs, so that every band is at least KH − 1 rows and none empty.
        assert_eq!(
            plan(1, 4, 5, 3, None).map(|b| (b.ncta, b.band)),
            Some((2, 3))
        );
        assert_eq!(
            plan(1, 4, 9, 5, None).map(|b| (b.ncta, b.band)),
            Some((2, 5))
        );
        assert_eq!(plan(1, 4, 2, 3, None), None);
        // 5 rows in 4 CTAs would leave the last one empty.
        assert_eq!(plan(1, 4, 5, 1, Some(4)), None);
        assert_eq!(plan(1, 4, 5, 1, Some(3)), None);
        assert_eq!(plan(1, 4, 8, 3, Some(4)).map(|b| b.band), Some(2));
        // The ring fits; the coefficients go to shared memory when they fit too.
        let p = plan(1, 512, 64, 3, None).unwrap();
        assert!(!p.q_in_smem && p.smem <= max);
        assert!(plan(1, 12, 64, 3, None).unwrap().q_in_smem);
    }

    #[test]
    fn chain_regs_plan_groups_threads_by_output_channels() {
        let plan = |c, h, w, dt| {
            let p = Problem::new("x", &[100, c, h, w], &[c, c, 3, 3], Order::TL).unwrap();
            chain_regs_plan(&p, dt)
        };
        assert_eq!(
            plan(12, 32, 32, Dtype::F32),
            Some(("conv_chain_c12_f32", 512))
        );
        assert_eq!(
            plan(24, 16, 16, Dtype::F32),
            Some(("conv_chain_c24_f32", 256))
        );
        assert_eq!(
            plan(24, 13, 20, Dtype::F32),
            Some(("conv_chain_c24_f32", 320))
        );
        // Small images keep the generic kernel (B100 C24 8², H200: 0.049 ms, this one 0.093).
        assert_eq!(plan(24, 8, 8, Dtype::F32), None);
        assert_eq!(plan(12, 15, 17, Dtype::F32), None);
        // The kernel's launch bound holds for every shape it takes (a launch past it fails
        // with CUDA_ERROR_INVALID_VALUE: 12 × 32 × 33 asked for 544 threads once), and only
        // images one pass of those threads covers take it.
        for c in [12, 24] {
            for (h, w) in [
                (32, 33),
                (23, 23),
                (64, 64),
                (16, 100),
                (1, 431),
                (1, 513),
                (33, 31),
            ] {
                if let Some((_, threads)) = plan(c, h, w, Dtype::F32) {
                    assert!(
                        threads as usize <= CHAIN_REGS_THREADS,
                        "{c} {h} {w}: {threads}"
                    );
                    assert!(
                        2 * threads as usize / (c / 12) >= h * w,
                        "{c} {h} {w}: {threads}"
                    );
                }
            }
        }
        assert_eq!(plan(12, 32, 33, Dtype::F32), None);
        assert_eq!(plan(24, 1, 513, Dtype::F32), None);
        assert_eq!(
            plan(24, 16, 32, Dtype::F32),
            Some(("conv_chain_c24_f32", 512))
        );
        assert_eq!(plan(12, 32, 32, Dtype::F64), None);
        assert_eq!(plan(16, 32, 32, Dtype::F32), None);
    }

    #[test]
    fn solve_chain_plan_takes_whole_images_of_the_presets_and_refuses_tiled_ones() {
        let max = H200.max_smem - 1024;
        let plan = |c, h, w, ts| {
            let p = Problem::new("x", &[64, c, h, w], &[c, c, 3, 3], Order::BR).unwrap();
            solve_chain_plan(&p, Dtype::F32, max, ts, None)
        };
        // Every shape of the cifar10, imagenet64 and celeba64 presets' units.
        for (c, s) in [(12, 16), (24, 8), (12, 32), (24, 16), (24, 32)] {
            let pl = plan(c, s, s, None).unwrap_or_else(|| panic!("C = {c}, {s}²"));
            assert_eq!((pl.tile_h, pl.tile_w), (s, s));
        }
        assert_eq!(
            plan(12, 16, 16, None).unwrap().kernel,
            "solve_regs_c12_t4_o4_f32"
        );
        assert_eq!(
            plan(24, 8, 8, Some(4)).unwrap().kernel,
            "solve_regs_c24_t4_o2_f32"
        );
        // Images that need tiles (one launch per tile diagonal) do not chain.
        assert!(plan(12, 128, 128, None).is_none());
        assert!(plan(16, 16, 16, None).is_none());
    }

    #[test]
    fn regs_plan_covers_the_presets_shapes_and_refuses_the_rest() {
        let max = H200.max_smem - 1024;
        let tiled = |c, h, w, k, dt, ts, cap| {
            let p = Problem::new("x", &[64, c, h, w], &[c, c, k, k], Order::TL).unwrap();
            regs_plan(&p, dt, max, ts, cap).map(|pl| (pl, pl.tiles(&p)))
        };
        let plan = |c, h, w, k, dt, ts| tiled(c, h, w, k, dt, ts, None).map(|(pl, _)| pl);
        // The presets: C = 12 at 32² / 16², C = 24 at 16² / 8².
        let s1 = plan(12, 32, 32, 3, Dtype::F32, None).unwrap();
        assert_eq!((s1.kernel, s1.threads), ("solve_regs_c12_t4_o4_f32", 384));
        assert_eq!(s1.smem, (19 * 144 + 34 * 34 * 12) * 4);
        assert_eq!((s1.tile_h, s1.tile_w), (32, 32));
        let c24 = plan(24, 8, 8, 3, Dtype::F32, None).unwrap();
        assert_eq!((c24.kernel, c24.threads), ("solve_regs_c24_t2_o1_f32", 384));
        // 16 pixels × 48 threads exceed the bound: 8 slots, two passes on long diagonals.
        assert_eq!(plan(24, 16, 16, 3, Dtype::F32, None).unwrap().threads, 384);
        let t8 = plan(12, 32, 32, 3, Dtype::F32, Some(8)).unwrap();
        assert_eq!((t8.kernel, t8.threads), ("solve_regs_c12_t8_o4_f32", 768));
        assert_eq!(
            plan(24, 8, 8, 3, Dtype::F32, Some(4)).unwrap().kernel,
            "solve_regs_c24_t4_o2_f32"
        );
        assert!(plan(24, 8, 8, 3, Dtype::F32, Some(1)).is_none());
        // One pixel per diagonal still makes a whole warp.
        assert_eq!(plan(12, 1, 40, 3, Dtype::F32, None).unwrap().threads, 32);
        // Every plan stays within its launch bound and the shared memory.
        for (c, h, w) in [(12, 64, 64), (12, 5, 70), (24, 40, 40), (24, 1, 1)] {
            for ts in [None, Some(1), Some(2), Some(4), Some(8)] {
                if let Some(pl) = plan(c, h, w, 3, Dtype::F32, ts) {
                    let v = REGS_VARIANTS.iter().find(|v| v.3 == pl.kernel).unwrap();
                    assert!(pl.threads as usize <= v.4 && pl.smem <= max, "{pl:?}");
                    assert!(pl.threads as usize >= c / v.2 * v.1, "{pl:?}");
                }
            }
        }
        // Images too large for a block are cut into equal tiles of at most the pixel slots a
        // side (C = 12: 32; C = 24: 8, raised to 16), or of a given cap, which may exceed the
        // slots but not the shared memory (65 a side for C = 12 here).
        let (big, tiles) = tiled(12, 128, 128, 3, Dtype::F32, None, None).unwrap();
        assert_eq!((big.tile_h, big.tile_w, tiles), (32, 32, (4, 4)));
        assert_eq!(big.smem, (19 * 144 + 34 * 34 * 12) * 4);
        assert_eq!(big.threads, 384);
        let (c24, tiles) = tiled(24, 64, 70, 3, Dtype::F32, None, None).unwrap();
        assert_eq!((c24.tile_h, c24.tile_w, tiles), (16, 14, (4, 5)));
        let (odd, tiles) = tiled(24, 300, 7, 3, Dtype::F32, None, None).unwrap();
        assert_eq!((odd.tile_h, odd.tile_w, tiles), (16, 7, (19, 1)));
        let (wide, tiles) = tiled(12, 128, 128, 3, Dtype::F32, None, Some(100)).unwrap();
        assert_eq!((wide.tile_h, wide.tile_w, tiles), (64, 64, (2, 2)));
        // The presets' shapes fit whole: the slots do not cut them.
        assert_eq!(
            tiled(24, 16, 16, 3, Dtype::F32, None, None).unwrap().1,
            (1, 1)
        );
        let (capped, tiles) = tiled(12, 13, 17, 3, Dtype::F32, None, Some(5)).unwrap();
        assert_eq!((capped.tile_h, capped.tile_w, tiles), (5, 5, (3, 4)));
        assert_eq!(capped.threads, 64);
        for (c, h, w) in [(12, 300, 1), (24, 1, 5000), (12, 257, 129), (24, 64, 64)] {
            let (pl, (th, tw)) = tiled(c, h, w, 3, Dtype::F32, None, None).unwrap();
            assert!(pl.smem <= max && pl.tile_h <= h && pl.tile_w <= w, "{pl:?}");
            assert!(
                (th - 1) * pl.tile_h < h && (tw - 1) * pl.tile_w < w,
                "{pl:?}"
            );
        }
        // Not covered: float64, other channel counts or kernels, an unknown lane count.
        assert_eq!(plan(12, 32, 32, 3, Dtype::F64, None), None);
        assert_eq!(plan(16, 32, 32, 3, Dtype::F32, None), None);
        assert_eq!(plan(12, 32, 32, 5, Dtype::F32, None), None);
        assert_eq!(plan(12, 2, 32, 2, Dtype::F32, None), None);
        assert_eq!(plan(12, 32, 32, 3, Dtype::F32, Some(2)), None);
    }

    #[test]
    fn clusters_follow_the_compute_capability() {
        assert!(H200.clusters());
        assert!(!A100.clusters());
        assert!(H200.programmatic_launch());
        assert!(!A100.programmatic_launch());
    }

    #[test]
    fn conv_tile_covers_the_image_and_fits() {
        let p = problem(64, 48, 64, 64, 3);
        let plan = conv_tile_plan(&p, Dtype::F32, H200.max_smem).unwrap();
        assert_eq!(
            plan.tiles_h * CONV_TILE_H >= 64,
            plan.tiles_w * CONV_TILE_W >= 64
        );
        assert_eq!(plan.grid_x as usize, 64 * plan.tiles_h * plan.tiles_w);
        assert!(plan.smem as usize <= H200.max_smem);
        // C not a multiple of the block's output channels, or a kernel too wide: generic kernel.
        assert!(conv_tile_plan(&problem(64, 12, 32, 32, 3), Dtype::F32, H200.max_smem).is_none());
        assert!(conv_tile_plan(
            &problem(1, 16, 32, 32, CONV_TILE_MAX_K + 1),
            Dtype::F32,
            H200.max_smem
        )
        .is_none());
    }

    #[test]
    fn sweep_windows_and_tiles_fit_the_device() {
        let (window, _, smem) = sweep_plan(&problem(64, 12, 32, 32, 3), Dtype::F32, H200.max_smem);
        assert_eq!(window, Window::Full);
        assert!(smem <= H200.max_smem);
        let s2 = problem(64, 48, 64, 64, 3);
        let (window, _, _) = sweep_plan(&s2, Dtype::F32, H200.max_smem);
        assert_eq!(window, Window::Ring);
        let tile = tile_plan(&s2, Dtype::F32, H200.max_smem, H200.clusters(), window).unwrap();
        assert_eq!(tile.ncta, 2);
        assert!(tile.threads <= SWEEP_MAX_THREADS && tile.smem <= H200.max_smem);
        let tile = tile_plan(&s2, Dtype::F32, A100.max_smem, A100.clusters(), window).unwrap();
        assert_eq!(tile.ncta, 1);
        let (window, _, smem) = sweep_plan(&problem(1, 4096, 64, 64, 3), Dtype::F64, H200.max_smem);
        assert_eq!((window, smem), (Window::Global, 0));
        let generic = generic_sweep_plan(&problem(64, 12, 32, 32, 3), 32).unwrap();
        assert!(generic.block as usize <= SWEEP_MAX_THREADS && generic.block % 32 == 0);
        assert!(generic.split.is_power_of_two() && generic.ci_lanes <= generic.split);
        assert!(generic_sweep_plan(&problem(1, 8192, 4, 4, 3), 4).is_err());
    }

    #[test]
    fn blk_plans_respect_the_launch_bound_and_fit() {
        let max = H200.max_smem - 1024;
        let s2 = problem(64, 48, 64, 64, 3);
        // S2: 16 pixel slots × 3 channel groups per CTA × 8 tap parts.
        let plan = blk_plan(&s2, Dtype::F32, true, max, None).unwrap();
        assert_eq!((plan.ncta, plan.tsplit, plan.threads), (2, 8, 384));
        assert!(plan.smem <= max);
        assert_eq!(
            blk_plan(&s2, Dtype::F32, true, max, Some(4))
                .unwrap()
                .threads,
            192
        );
        // One CTA per sample: twice the channel groups, so half the tap parts.
        let one = blk_plan(&s2, Dtype::F32, false, max, None).unwrap();
        assert_eq!((one.ncta, one.tsplit), (1, 4));
        // Below SWEEP_BLK_CLUSTER_MIN_C channels, one CTA even where clusters exist; a
        // channel count that is a multiple of 8 but not of 16 too.
        let c16 = blk_plan(&problem(64, 16, 32, 32, 3), Dtype::F32, true, max, None).unwrap();
        assert_eq!((c16.ncta, c16.threads), (1, 256));
        assert_eq!(
            blk_plan(&problem(8, 40, 9, 9, 3), Dtype::F32, true, max, None)
                .unwrap()
                .ncta,
            1
        );
        // float64, channels that do not split into groups of 8, a 1 × 1 kernel: none.
        assert!(blk_plan(&s2, Dtype::F64, true, max, None).is_none());
        assert!(blk_plan(&problem(64, 44, 64, 64, 3), Dtype::F32, true, max, None).is_none());
        assert!(blk_plan(&problem(64, 48, 64, 64, 1), Dtype::F32, true, max, None).is_none());
        // More tap parts than taps, or too many threads: refused even when asked for.
        assert!(blk_plan(&s2, Dtype::F32, true, max, Some(16)).is_none());
        assert!(blk_plan(&problem(4, 512, 16, 16, 3), Dtype::F32, true, max, None).is_none());
        for c in [8, 16, 32, 48, 64, 96, 128] {
            for (clusters, h) in [(false, 64), (true, 64), (true, 200)] {
                if let Some(plan) =
                    blk_plan(&problem(2, c, h, h, 3), Dtype::F32, clusters, max, None)
                {
                    assert!(plan.threads <= SWEEP_BLK_THREADS && plan.smem <= max);
                    assert_eq!(plan.threads % SWEEP_BLK_PG, 0);
                }
            }
        }
    }

    #[test]
    fn weight_grad_plans_respect_the_launch_bounds() {
        for (c, dt, tiled) in [
            (48, Dtype::F32, true),
            (48, Dtype::F64, true),
            (12, Dtype::F32, false),
        ] {
            let p = problem(64, c, 64, 64, 3);
            match wgrad_plan(&p, dt, &H200, false).unwrap() {
                WgradPlan::Tile {
                    threads,
                    nblk,
                    smem,
                    ..
                } => {
                    assert!(tiled);
                    let bound = if dt == Dtype::F32 {
                        WGRAD_TILE_THREADS_F32
                    } else {
                        WGRAD_TILE_THREADS_F64
                    };
                    assert!(threads as usize <= bound && threads % 32 == 0);
                    assert!(nblk as usize <= 64 * 64 * 64 && smem as usize <= H200.max_smem);
                }
                WgradPlan::Chunk { chunk, smem, .. } => {
                    assert!(!tiled);
                    assert!(chunk as usize <= THREADS && chunk.is_power_of_two());
                    assert!(smem as usize <= H200.max_smem);
                }
            }
            assert!(matches!(
                wgrad_plan(&p, dt, &H200, true).unwrap(),
                WgradPlan::Chunk { .. }
            ));
        }
    }

    #[test]
    fn too_many_channels_is_too_large_not_a_device_fault() {
        let e = generic_sweep_plan(&problem(1, 5000, 2, 2, 3), 2).unwrap_err();
        assert!(matches!(e, Error::TooLarge(_)), "{e:?}");
        assert!(e.to_string().contains("C = 5000"));
        let e = wgrad_plan(&problem(1, 100_000, 2, 2, 3), Dtype::F64, &H200, true)
            .err()
            .expect("a plan for C = 100000");
        assert!(matches!(e, Error::TooLarge(_)), "{e:?}");
        assert!(e.to_string().contains("C = 100000"));
    }

    #[test]
    fn chain_fits_the_flow_presets_images_and_refuses_large_ones() {
        for (c, s) in [(12, 16), (24, 8), (12, 32), (48, 8)] {
            assert!(chain_smem(&problem(100, c, s, s, 3), Dtype::F32, H200.max_smem).is_some());
        }
        assert!(chain_smem(&problem(1, 12, 128, 128, 3), Dtype::F32, H200.max_smem).is_none());
    }
}
