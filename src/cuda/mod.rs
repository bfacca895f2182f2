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
//!   over anti-diagonals, the solution kept in shared memory where it fits); for float32,
//!   3 × 3 and C = 12 or 24 all of it in one launch, `solve_regs` (one launch per tile
//!   anti-diagonal for images larger than a block's shared memory).
//! - conv_chain (an Inverse-Flow unit's sampling direction): up to four masked convolutions in
//!   one launch, the image in shared memory; `conv_chain_c{12,24}` for the presets' shapes.
//! - solve_chain (an Inverse-Flow unit's density direction, or its adjoint): up to four
//!   `solve_regs` launches, each after the first programmatic (sm_90+: it prepares its
//!   coefficients while the layer before still solves).
//! - weight_grad: `wgrad_tile` (one staging of a pixel tile + halo for all taps) or
//!   `wgrad_partial` (split-K partial sums into caller scratch), then `wgrad_reduce`; up to
//!   four layers of one shape per launch (the unit's backward, `inverse_chain_backward`).

// The ops take a problem, a dtype, a target and raw buffers: more than seven arguments is
// their nature.
#![allow(clippy::too_many_arguments)]

mod conv;
mod device;
mod kernels;
pub mod limits;
pub mod nvrtc;
pub mod plan;
mod solve;
mod wgrad;

use crate::error::{Error, Result};
use crate::geometry::Problem;

pub use conv::{conv, conv_chain, ChainEnds, CouplingEnd};
pub use device::{device, device_count, driver, Device};
use plan::padded;
pub use plan::{prep_len, DeviceProps};
pub use solve::{solve, solve_chain};
pub use wgrad::{
    inverse_backward, inverse_chain_backward, weight_grad, weight_grad_layers,
    weight_grad_scratch_len,
};

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
/// tiled, banded and one-launch ones (conv_tile, sweep_tile, sweep_band, solve_regs,
/// wgrad_tile): for A/B timing and for tests.
fn generic_only() -> bool {
    std::env::var_os("INV_CONV_CUDA_GENERIC").is_some_and(|v| v != "0" && !v.is_empty())
}

/// `INV_CONV_SWEEP_CTAS=n` (read at each call) makes the banded sweep use n CTAs per sample
/// where it can (1: never): for A/B timing and for tests.
fn sweep_ctas() -> Option<usize> {
    std::env::var("INV_CONV_SWEEP_CTAS").ok()?.parse().ok()
}

/// `INV_CONV_SWEEP_BLK=0` (read at each call) keeps `sweep_tile` where the register-blocked
/// `sweep_blk` would run: for A/B timing.
fn sweep_blk() -> bool {
    std::env::var_os("INV_CONV_SWEEP_BLK").map_or(true, |v| v != "0")
}

/// `INV_CONV_PDL=0` (read at each call) starts no `solve_regs` launch before the one before it
/// has finished (no programmatic dependent launch for a chain's later layers and a tiled
/// solve's later tile diagonals): for A/B timing and for tests.
fn programmatic_allowed() -> bool {
    std::env::var_os("INV_CONV_PDL").map_or(true, |v| v != "0")
}

/// `INV_CONV_SOLVE_TSPLIT=n` (read at each call) picks the `solve_regs` variant, and the
/// `sweep_blk` plan, whose dot products are split over n lanes (parts): for A/B timing and
/// for tests.
fn solve_tsplit() -> Option<usize> {
    std::env::var("INV_CONV_SOLVE_TSPLIT").ok()?.parse().ok()
}

/// `INV_CONV_SOLVE_TILE=n` (read at each call) caps the side of `solve_regs`' tiles at n
/// pixels (images that fit one block are then cut too): for A/B timing and for tests.
fn solve_tile() -> Option<usize> {
    std::env::var("INV_CONV_SOLVE_TILE").ok()?.parse().ok()
}

fn int(name: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::TooLarge(format!(
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

impl Dims {
    /// The image and kernel sizes and the anchor, in the order the kernels take them:
    /// (H, W, KH, KW, anchor_i, anchor_j).
    fn geometry(&self) -> [i32; 6] {
        [self.h, self.w, self.kh, self.kw, self.ai, self.aj]
    }
}

fn dims(p: &Problem) -> Result<Dims> {
    let (ai, aj) = p.anchor();
    let kk = p.kernel_h.checked_mul(p.kernel_w).ok_or_else(|| {
        Error::TooLarge(format!(
            "kernel_h·kernel_w = {}·{} is too large for the CUDA kernels",
            p.kernel_h, p.kernel_w
        ))
    })?;
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
            Error::TooLarge(format!(
                "the problem has {n} work items, more than one launch can cover"
            ))
        })
}

/// Blocks of a launch grid of `blocks_per_sample` blocks per sample, or the error when the
/// batch does not fit one launch.
fn batch_blocks(batch: usize, blocks_per_sample: usize) -> Result<u32> {
    u32::try_from(batch)
        .ok()
        .and_then(|b| b.checked_mul(blocks_per_sample as u32))
        .filter(|&g| g <= i32::MAX as u32)
        .ok_or_else(|| batch_too_large(batch, blocks_per_sample))
}

/// The error for a batch that does not fit one launch grid of `blocks_per_sample` blocks each.
fn batch_too_large(batch: usize, blocks_per_sample: usize) -> Error {
    Error::TooLarge(format!(
        "batch = {batch} is too large for one CUDA launch (at most {} samples)",
        i32::MAX as usize / blocks_per_sample.max(1)
    ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Order;

    #[test]
    fn sizes_past_the_kernels_integers_are_too_large_and_named() {
        let big = i32::MAX as usize + 1;
        for (shape, name) in [
            ([big, 1, 1, 1], "batch"),
            ([1, 1, big, 1], "H + W"),
            ([1, 1, 1, 1], "C·Cp·KH·KW"),
        ] {
            let kernel = if name == "C·Cp·KH·KW" { 1 << 16 } else { 1 };
            let p = Problem::new("x", &shape, &[1, 1, kernel, kernel], Order::TL).unwrap();
            let e = dims(&p).err().expect("dims must refuse the problem");
            assert!(matches!(e, Error::TooLarge(_)), "{e:?}");
            assert!(e.to_string().starts_with(name), "{e}");
        }
        let e = grid_1d(u64::MAX, THREADS).unwrap_err();
        assert!(matches!(e, Error::TooLarge(_)), "{e:?}");
        let e = batch_blocks(big, 2).unwrap_err();
        assert!(e.to_string().contains(&format!("batch = {big}")), "{e}");
        assert_eq!(batch_blocks(1 << 20, 2).unwrap(), 1 << 21);
        assert!(batch_blocks(i32::MAX as usize / 2 + 1, 2).is_err());
    }
}
