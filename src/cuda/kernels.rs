//! The kernel sources, embedded at build time and compiled together as one NVRTC program.

/// Every kernels/*.cu file, in the order they are concatenated (common.cu first: the others
/// use its helpers).
pub const SOURCES: [(&str, &str); 7] = [
    ("common.cu", include_str!("../../kernels/common.cu")),
    ("prepare.cu", include_str!("../../kernels/prepare.cu")),
    ("conv.cu", include_str!("../../kernels/conv.cu")),
    ("chain.cu", include_str!("../../kernels/chain.cu")),
    ("wavefront.cu", include_str!("../../kernels/wavefront.cu")),
    ("solve_regs.cu", include_str!("../../kernels/solve_regs.cu")),
    (
        "weight_grad.cu",
        include_str!("../../kernels/weight_grad.cu"),
    ),
];

/// Every `extern "C"` entry point the backend launches, with its parameter types, one letter
/// each: `p` a device pointer, `i` an `int`, `l` a `long long`. Each launch is checked against
/// it (the driver cannot tell a wrong argument list), and tests/test_kernels_compile.py checks
/// it against the declarations in kernels/*.cu.
pub const ENTRY_POINTS: [(&str, &str); 48] = [
    ("prepare_inverse_f32", "ppiiiii"),
    ("prepare_inverse_f64", "ppiiiii"),
    ("prepare_taps_f32", "ppiiii"),
    ("prepare_taps_f64", "ppiiii"),
    ("conv_f32", "pppiiiiiiiiii"),
    ("conv_f64", "pppiiiiiiiiii"),
    ("conv_tile_f32", "pppiiiiiiiiii"),
    ("conv_tile_f64", "pppiiiiiiiiii"),
    ("conv_chain_f32", "ppppppiiiiiiiiiiiiiipllliddpp"),
    ("conv_chain_f64", "ppppppiiiiiiiiiiiiiipllliddpp"),
    ("conv_chain_c12_f32", "ppppppiiiiiiiiiiiiiipllliddpp"),
    ("conv_chain_c24_f32", "ppppppiiiiiiiiiiiiiipllliddpp"),
    ("channel_mix_f32", "pppiili"),
    ("channel_mix_f64", "pppiili"),
    ("sweep_full_f32", "ppiiiiiiiiiiiiiiii"),
    ("sweep_full_f64", "ppiiiiiiiiiiiiiiii"),
    ("sweep_ring_f32", "ppiiiiiiiiiiiiiiii"),
    ("sweep_ring_f64", "ppiiiiiiiiiiiiiiii"),
    ("sweep_global_f32", "ppiiiiiiiiiiiiiiii"),
    ("sweep_global_f64", "ppiiiiiiiiiiiiiiii"),
    ("sweep_band2_f32", "ppiiiiiiiiiiiiiiii"),
    ("sweep_band2_f64", "ppiiiiiiiiiiiiiiii"),
    ("sweep_band4_f32", "ppiiiiiiiiiiiiiiii"),
    ("sweep_band4_f64", "ppiiiiiiiiiiiiiiii"),
    ("sweep_band8_f32", "ppiiiiiiiiiiiiiiii"),
    ("sweep_band8_f64", "ppiiiiiiiiiiiiiiii"),
    ("sweep_tile_f32", "ppiiiiiiiiiiiiii"),
    ("sweep_tile_f64", "ppiiiiiiiiiiiiii"),
    ("sweep_tile2_f32", "ppiiiiiiiiiiiiii"),
    ("sweep_tile2_f64", "ppiiiiiiiiiiiiii"),
    ("sweep_blk_f32", "ppiiiiiiiiiiiiii"),
    ("sweep_blk2_f32", "ppiiiiiiiiiiiiii"),
    ("solve_regs_c12_t1_o1_f32", "pppiiiiiiiiiiiiiii"),
    ("solve_regs_c12_t4_o4_f32", "pppiiiiiiiiiiiiiii"),
    ("solve_regs_c12_t8_o4_f32", "pppiiiiiiiiiiiiiii"),
    ("solve_regs_c24_t2_o1_f32", "pppiiiiiiiiiiiiiii"),
    ("solve_regs_c24_t4_o2_f32", "pppiiiiiiiiiiiiiii"),
    ("solve_regs_c24_t8_o4_f32", "pppiiiiiiiiiiiiiii"),
    ("wgrad_partial_f32", "pppppppppiiiiiiiiiiiiiii"),
    ("wgrad_partial_f64", "pppppppppiiiiiiiiiiiiiii"),
    ("wgrad_tile1_f32", "pppppppppiiiiiiiiiiiiiii"),
    ("wgrad_tile1_f64", "pppppppppiiiiiiiiiiiiiii"),
    ("wgrad_tile2_f32", "pppppppppiiiiiiiiiiiiiii"),
    ("wgrad_tile2_f64", "pppppppppiiiiiiiiiiiiiii"),
    ("wgrad_tile3_f32", "pppppppppiiiiiiiiiiiiiii"),
    ("wgrad_tile3_f64", "pppppppppiiiiiiiiiiiiiii"),
    ("wgrad_reduce_f32", "ppiiiiiiii"),
    ("wgrad_reduce_f64", "ppiiiiiiii"),
];

/// The program text: the files concatenated, each preceded by a `#line` directive so that
/// compiler messages name the right file and line.
pub fn program_source() -> String {
    let mut s = super::limits::header();
    for (name, text) in SOURCES {
        s.push_str(&format!("#line 1 \"kernels/{name}\"\n"));
        s.push_str(text);
        s.push('\n');
    }
    s
}
