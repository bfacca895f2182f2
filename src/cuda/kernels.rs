//! The kernel sources, embedded at build time and compiled together as one NVRTC program.

/// Every kernels/*.cu file, in the order they are concatenated (common.cu first: the others
/// use its helpers).
pub const SOURCES: [(&str, &str); 6] = [
    ("common.cu", include_str!("../../kernels/common.cu")),
    ("prepare.cu", include_str!("../../kernels/prepare.cu")),
    ("conv.cu", include_str!("../../kernels/conv.cu")),
    ("chain.cu", include_str!("../../kernels/chain.cu")),
    ("wavefront.cu", include_str!("../../kernels/wavefront.cu")),
    (
        "weight_grad.cu",
        include_str!("../../kernels/weight_grad.cu"),
    ),
];

/// Every `extern "C"` entry point the backend launches, with its number of parameters (checked
/// at each launch: the driver cannot tell when a launch passes too few).
pub const ENTRY_POINTS: [(&str, usize); 32] = [
    ("prepare_inverse_f32", 7),
    ("prepare_inverse_f64", 7),
    ("prepare_taps_f32", 6),
    ("prepare_taps_f64", 6),
    ("conv_f32", 13),
    ("conv_f64", 13),
    ("conv_tile_f32", 13),
    ("conv_tile_f64", 13),
    ("conv_chain_f32", 20),
    ("conv_chain_f64", 20),
    ("channel_mix_f32", 6),
    ("channel_mix_f64", 6),
    ("sweep_full_f32", 17),
    ("sweep_full_f64", 17),
    ("sweep_ring_f32", 17),
    ("sweep_ring_f64", 17),
    ("sweep_global_f32", 17),
    ("sweep_global_f64", 17),
    ("sweep_tile_f32", 16),
    ("sweep_tile_f64", 16),
    ("sweep_tile2_f32", 16),
    ("sweep_tile2_f64", 16),
    ("wgrad_partial_f32", 12),
    ("wgrad_partial_f64", 12),
    ("wgrad_tile1_f32", 12),
    ("wgrad_tile1_f64", 12),
    ("wgrad_tile2_f32", 12),
    ("wgrad_tile2_f64", 12),
    ("wgrad_tile3_f32", 12),
    ("wgrad_tile3_f64", 12),
    ("wgrad_reduce_f32", 7),
    ("wgrad_reduce_f64", 7),
];

/// The program text: the files concatenated, each preceded by a `#line` directive so that
/// compiler messages name the right file and line.
pub fn program_source() -> String {
    let mut s = String::new();
    for (name, text) in SOURCES {
        s.push_str(&format!("#line 1 \"kernels/{name}\"\n"));
        s.push_str(text);
        s.push('\n');
    }
    s
}
