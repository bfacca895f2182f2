//! The kernel sources, embedded at build time and compiled together as one NVRTC program.

/// Every kernels/*.cu file, in the order they are concatenated (common.cu first: the others
/// use its helpers).
pub const SOURCES: [(&str, &str); 5] = [
    ("common.cu", include_str!("../../kernels/common.cu")),
    ("prepare.cu", include_str!("../../kernels/prepare.cu")),
    ("conv.cu", include_str!("../../kernels/conv.cu")),
    ("wavefront.cu", include_str!("../../kernels/wavefront.cu")),
    (
        "weight_grad.cu",
        include_str!("../../kernels/weight_grad.cu"),
    ),
];

/// Every `extern "C"` entry point the backend launches.
pub const ENTRY_POINTS: [&str; 18] = [
    "prepare_inverse_f32",
    "prepare_inverse_f64",
    "prepare_taps_f32",
    "prepare_taps_f64",
    "conv_f32",
    "conv_f64",
    "channel_mix_f32",
    "channel_mix_f64",
    "sweep_full_f32",
    "sweep_full_f64",
    "sweep_ring_f32",
    "sweep_ring_f64",
    "sweep_global_f32",
    "sweep_global_f64",
    "wgrad_partial_f32",
    "wgrad_partial_f64",
    "wgrad_reduce_f32",
    "wgrad_reduce_f64",
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
