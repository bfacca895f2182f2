//! Errors of the core. Every error the crate raises is one of these kinds; the Python bindings
//! map each kind to one exception class in one place (`python::error`): bad arguments, shapes,
//! orders and problems too large → ValueError, dtypes → TypeError, device problems →
//! `inv_conv.CudaError`, internal faults → RuntimeError.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// A tensor has the wrong number of dimensions, a zero-sized dimension, or does not match
    /// the other arguments. The message names the argument, what was expected and what was given.
    #[error("{0}")]
    Shape(String),
    /// An argument's value the op cannot use (a zero kernel size, an output array that is not
    /// writeable or not C-contiguous). The message names the argument.
    #[error("{0}")]
    Argument(String),
    /// An argument has a dtype (or type) the op does not take.
    #[error("{0}")]
    Dtype(String),
    /// An unknown order string.
    #[error("order must be one of 'TL', 'TR', 'BL', 'BR'; got {0:?}")]
    Order(String),
    /// The problem is valid but too large: more elements than the machine can address, a size
    /// past the kernels' 32-bit integers, a launch grid or a shared-memory plan out of range.
    /// The message names the argument or size that is too large and the limit.
    #[error("{0}")]
    TooLarge(String),
    /// No usable GPU, driver or NVRTC, or arguments on the wrong device.
    #[error("{0}")]
    Device(String),
    /// A CUDA driver call or kernel launch failed; the message carries the CUDA error name.
    #[error("CUDA error: {0}")]
    Cuda(String),
    /// NVRTC failed to compile a kernel; the message carries the compiler log.
    #[error("NVRTC error: {0}")]
    Nvrtc(String),
    /// A bug in inv_conv (a Rust panic caught at the binding boundary).
    #[error("inv_conv internal error ({0}); please report it")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;
