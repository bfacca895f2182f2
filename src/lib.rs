//! # inv_conv
//!
//! Exact invertible masked k×k convolutions for normalizing flows (Inverse-Flow, Nagar & Varma,
//! AISTATS 2025; FInC Flow). The crate is organised as:
//!
//! - [`geometry`]: the op contract — orders, padding, anchor tap, mask, shape validation.
//! - [`cpu`]: the rayon backend, generic over `f32`/`f64`.
//! - `cuda` (feature `cuda`): NVRTC-compiled kernels launched through `cudarc` on a borrowed stream.
//! - `python` (feature `python`): thin PyO3 bindings, the extension module `inv_conv._native`.
//!
//! The core has no Python and no CUDA in it: `cargo test` runs anywhere.

pub mod cpu;
pub mod error;
pub mod geometry;

#[cfg(feature = "cuda")]
pub mod cuda;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
pub use geometry::{Order, Problem, Tap};
