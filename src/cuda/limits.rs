//! Every tile size and launch limit that the kernels and the host's launch plans share, in one
//! place: the plans use these constants, and the kernels see them as `INV_CONV_<NAME>` macros
//! that [`header`] puts in front of the program NVRTC compiles.

/// Threads per block of the generic (untiled) kernels.
pub const THREADS: usize = 256;
/// `conv_tile`: output columns and rows per tile, channels per staged chunk (also the output
/// channels per block), the staged row stride (columns + halo, padded), threads per block, and
/// the largest kernel side it handles.
pub const CONV_TILE_W: usize = 32;
pub const CONV_TILE_H: usize = 16;
pub const CONV_TILE_CI: usize = 16;
/// Output channels per `conv_tile` block (its threads are laid out for exactly 16).
pub const CONV_TILE_CO: usize = 16;
pub const CONV_TILE_ROW_STRIDE: usize = 40;
pub const CONV_TILE_THREADS: usize = 256;
pub const CONV_TILE_MAX_K: usize = 9;
/// `wgrad_tile`: threads per block (its launch bound) and pixels per step, per dtype.
pub const WGRAD_TILE_THREADS_F32: usize = 512;
pub const WGRAD_TILE_THREADS_F64: usize = 256;
pub const WGRAD_TILE_PX_F32: usize = 4;
pub const WGRAD_TILE_PX_F64: usize = 2;
/// `wgrad_tile` stages the next tile while it computes on this one.
pub const WGRAD_TILE_BUFFERS: usize = 2;
/// The wavefront sweeps' launch bound.
pub const SWEEP_MAX_THREADS: usize = 1024;
/// Elements between channels in the one-block sweep's full window (kernels/wavefront.cu):
/// an odd channel stride puts consecutive channels of one pixel in different banks.
pub const SWEEP_FULL_PAD: usize = 1;
/// Largest Pᵀ (bytes) that `channel_mix` stages in shared memory (the default dynamic limit,
/// so no opt-in is needed); larger ones are read from global memory.
pub const CHANNEL_MIX_MAX_SMEM: usize = 48 * 1024;
/// `sweep_blk`: lanes of a half-warp (each a pixel slot), pixels per thread (so a pass covers
/// SWEEP_BLK_PG · SWEEP_BLK_PX pixels of a diagonal), the floats of one record of partial sums
/// (2 × SWEEP_BLK_PX × 4 sums, padded so that consecutive records start 4 banks apart), and
/// the launch bound.
pub const SWEEP_BLK_PG: usize = 16;
pub const SWEEP_BLK_PX: usize = 4;
pub const SWEEP_BLK_RED: usize = 36;
pub const SWEEP_BLK_THREADS: usize = 384;
/// Fewest channels for which `sweep_blk` splits a sample over a 2-CTA cluster: below it the
/// cluster barrier per diagonal costs more than the second SM gains (H200: C = 16 at 32², B64,
/// 0.24 ms with two CTAs, 0.16 with one; C = 48 at 64²: 1.00 against 1.52).
pub const SWEEP_BLK_CLUSTER_MIN_C: usize = 32;
/// Largest cluster of `sweep_band` CTAs per sample (the portable cluster size; the kernels
/// exist for 2, 4 and 8).
pub const SWEEP_BAND_MAX_CTAS: usize = 8;
/// `solve_regs` launch bounds: threads per block of the variants whose threads hold 96 and 48
/// coefficients in registers (65536 registers per SM over the block).
pub const SOLVE_REGS_THREADS_96: usize = 384;
pub const SOLVE_REGS_THREADS_48: usize = 768;
/// Smallest side of `solve_regs`' tiles the plan picks for images too large for one block
/// (below it, a tile diagonal's launch and preparation cost more than its sweep).
pub const SOLVE_REGS_MIN_TILE: usize = 16;
/// `conv_chain_regs`' launch bound (a thread holds 2 pixels × 12 channels of sums); a launch
/// with more threads fails (CUDA_ERROR_INVALID_VALUE).
pub const CHAIN_REGS_THREADS: usize = 512;
/// Fewest pixels per image for `conv_chain_regs` (below it, too few threads per block).
pub const CHAIN_REGS_MIN_PIXELS: usize = 256;
/// Most layers `conv_chain` applies in one launch (an Inverse-Flow unit's four orders).
pub const CHAIN_MAX_LAYERS: usize = 4;

/// The `#define` lines the kernels are compiled with.
pub fn header() -> String {
    let defines = [
        ("THREADS", THREADS),
        ("CONV_TILE_W", CONV_TILE_W),
        ("CONV_TILE_H", CONV_TILE_H),
        ("CONV_TILE_CI", CONV_TILE_CI),
        ("CONV_TILE_CO", CONV_TILE_CO),
        ("CONV_TILE_ROW_STRIDE", CONV_TILE_ROW_STRIDE),
        ("CONV_TILE_THREADS", CONV_TILE_THREADS),
        ("CONV_TILE_MAX_K", CONV_TILE_MAX_K),
        ("WGRAD_TILE_THREADS_F32", WGRAD_TILE_THREADS_F32),
        ("WGRAD_TILE_THREADS_F64", WGRAD_TILE_THREADS_F64),
        ("WGRAD_TILE_PX_F32", WGRAD_TILE_PX_F32),
        ("WGRAD_TILE_PX_F64", WGRAD_TILE_PX_F64),
        ("WGRAD_TILE_BUFFERS", WGRAD_TILE_BUFFERS),
        ("SWEEP_MAX_THREADS", SWEEP_MAX_THREADS),
        ("SWEEP_FULL_PAD", SWEEP_FULL_PAD),
        ("SWEEP_BLK_PG", SWEEP_BLK_PG),
        ("SWEEP_BLK_PX", SWEEP_BLK_PX),
        ("SWEEP_BLK_RED", SWEEP_BLK_RED),
        ("SWEEP_BLK_THREADS", SWEEP_BLK_THREADS),
        ("SOLVE_REGS_THREADS_96", SOLVE_REGS_THREADS_96),
        ("SOLVE_REGS_THREADS_48", SOLVE_REGS_THREADS_48),
        ("CHAIN_MAX_LAYERS", CHAIN_MAX_LAYERS),
        ("CHAIN_REGS_THREADS", CHAIN_REGS_THREADS),
    ];
    defines
        .iter()
        .map(|(name, value)| format!("#define INV_CONV_{name} {value}\n"))
        .collect()
}
