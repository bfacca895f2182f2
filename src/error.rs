//! Errors of the core. Each kind maps to one Python exception class in `python/` (see
//! `python::error`): shapes and orders → ValueError, dtypes → TypeError, device problems →
//! `inv_conv.CudaError`.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// A tensor has the wrong number of dimensions, a zero-sized dimension, or does not match
    /// the other arguments. The message names the argument, what was expected and what was given.
    #[error("{0}")]
    Shape(String),
    /// An argument has a dtype the op does not take.
    #[error("{0}")]
    Dtype(String),
    /// An unknown order string.
    #[error("order must be one of 'TL', 'TR', 'BL', 'BR'; got {0:?}")]
    Order(String),
    /// No usable GPU, driver or NVRTC, or arguments on the wrong device.
    #[error("{0}")]
    Device(String),
    /// A CUDA driver call or kernel launch failed; the message carries the CUDA error name.
    #[error("CUDA error: {0}")]
    Cuda(String),
    /// NVRTC failed to compile a kernel; the message carries the compiler log.
    #[error("NVRTC error: {0}")]
    Nvrtc(String),
}

pub type Result<T> = std::result::Result<T, Error>;
