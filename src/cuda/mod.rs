//! CUDA backend: kernels from `kernels/*.cu` compiled at first use by NVRTC and launched through
//! `cudarc` on a stream borrowed from the caller. (Filled in by the CUDA issue.)
