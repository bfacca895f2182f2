//! Bindings of the CPU ops on raw addresses: the torch layer's hot path. Turning each tensor
//! into a numpy array and borrowing it costs more host time than a small problem's arithmetic,
//! so `python/inv_conv/_dispatch.py` passes the addresses of tensors it has checked — on the
//! CPU, float32/float64 of the dtype named, C-contiguous, no lazy negation, alive for the call,
//! outputs freshly allocated — with every tensor's shape. The shapes are checked here by the
//! ops' one contract ([`Problem`]), so a buffer is never read past the length its shape gives.

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::{detached, parse_order, Dtype, ImageKernel};
use crate::cpu::{self, Real};
use crate::error::Error;
use crate::geometry::Problem;

fn dtype_named(name: &str) -> PyResult<Dtype> {
    match name {
        "float32" => Ok(Dtype::F32),
        "float64" => Ok(Dtype::F64),
        _ => Err(Error::Dtype(format!("the CPU ops take float32 or float64; got {name}")).into()),
    }
}

/// A shape (a torch.Size), read by index: extracting a `Vec` would create a Python iterator
/// (a garbage-collected object) per call.
fn dims(shape: &Bound<'_, PyTuple>) -> PyResult<Vec<usize>> {
    shape.iter().map(|d| d.extract::<usize>()).collect()
}

fn check_addr<T>(name: &str, addr: usize) -> PyResult<()> {
    if addr == 0 || addr % std::mem::align_of::<T>() != 0 {
        return Err(Error::Internal(format!("{name} has an unusable address {addr:#x}")).into());
    }
    Ok(())
}

/// The `len` elements at `addr`.
///
/// Safety: the module's contract: `addr` holds `len` live elements of `T` for the call.
unsafe fn slice<'a, T>(name: &str, addr: usize, len: usize) -> PyResult<&'a [T]> {
    check_addr::<T>(name, addr)?;
    Ok(std::slice::from_raw_parts(addr as *const T, len))
}

/// As [`slice`], writeable.
///
/// Safety: as [`slice`], and nothing else refers to these elements during the call.
unsafe fn slice_mut<'a, T>(name: &str, addr: usize, len: usize) -> PyResult<&'a mut [T]> {
    check_addr::<T>(name, addr)?;
    Ok(std::slice::from_raw_parts_mut(addr as *mut T, len))
}

fn image_typed<T: Real>(
    py: Python<'_>,
    kernel: ImageKernel<T>,
    p: &Problem,
    (input, weight, out): (usize, usize, usize),
) -> PyResult<()> {
    let (n, n_w) = (p.image_len(), p.weight_len());
    // Safety: the module's contract, with the lengths from the checked shapes.
    let (input, weight, out) = unsafe {
        (
            slice::<T>("input", input, n)?,
            slice::<T>("weight", weight, n_w)?,
            slice_mut::<T>("out", out, n)?,
        )
    };
    detached(py, || kernel(p, input, weight, out))
}

macro_rules! cpu_image_binding {
    ($name:ident, $input:literal, $kernel:path, $doc:literal) => {
        #[doc = $doc]
        #[pyfunction]
        fn $name(
            py: Python<'_>,
            dtype: &str,
            shape: &Bound<'_, PyTuple>,
            weight_shape: &Bound<'_, PyTuple>,
            order: &str,
            addrs: (usize, usize, usize),
        ) -> PyResult<()> {
            let (shape, weight_shape) = (dims(shape)?, dims(weight_shape)?);
            let p = Problem::new($input, &shape, &weight_shape, parse_order(order)?)?;
            match dtype_named(dtype)? {
                Dtype::F32 => image_typed::<f32>(py, $kernel, &p, addrs),
                Dtype::F64 => image_typed::<f64>(py, $kernel, &p, addrs),
            }
        }
    };
}

cpu_image_binding!(
    cpu_forward,
    "x",
    cpu::forward,
    "y = A x into `out`: addresses (x, weight, out)."
);
cpu_image_binding!(
    cpu_inverse,
    "y",
    cpu::inverse,
    "x = A⁻¹ y into `out`: addresses (y, weight, out)."
);
cpu_image_binding!(
    cpu_forward_adjoint,
    "grad",
    cpu::forward_adjoint,
    "Aᵀ grad into `out`: addresses (grad, weight, out)."
);
cpu_image_binding!(
    cpu_inverse_adjoint,
    "grad",
    cpu::inverse_adjoint,
    "A⁻ᵀ grad into `out`: addresses (grad, weight, out)."
);

fn weight_grad_typed<T: Real>(
    py: Python<'_>,
    p: &Problem,
    (x, grad, out): (usize, usize, usize),
) -> PyResult<()> {
    let (n, n_w) = (p.image_len(), p.weight_len());
    // Safety: the module's contract, with the lengths from the checked shapes.
    let (x, grad, out) = unsafe {
        (
            slice::<T>("x", x, n)?,
            slice::<T>("grad", grad, n)?,
            slice_mut::<T>("out", out, n_w)?,
        )
    };
    detached(py, || cpu::weight_grad(p, x, grad, out))
}

/// Σ grad · pad(x) per tap (masked) into `out` (C, C, KH, KW): addresses (x, grad, out).
#[pyfunction]
fn cpu_weight_grad(
    py: Python<'_>,
    dtype: &str,
    x_shape: &Bound<'_, PyTuple>,
    grad_shape: &Bound<'_, PyTuple>,
    kernel: (usize, usize),
    order: &str,
    addrs: (usize, usize, usize),
) -> PyResult<()> {
    let (x_shape, grad_shape) = (dims(x_shape)?, dims(grad_shape)?);
    let c = x_shape.get(1).copied().unwrap_or(0);
    let p = Problem::new(
        "x",
        &x_shape,
        &[c, c, kernel.0, kernel.1],
        parse_order(order)?,
    )?;
    p.expect_image("grad", &grad_shape)?;
    match dtype_named(dtype)? {
        Dtype::F32 => weight_grad_typed::<f32>(py, &p, addrs),
        Dtype::F64 => weight_grad_typed::<f64>(py, &p, addrs),
    }
}

fn inverse_backward_typed<T: Real>(
    py: Python<'_>,
    p: &Problem,
    (x, grad, weight, u, grad_w): (usize, usize, usize, usize, usize),
) -> PyResult<()> {
    let (n, n_w) = (p.image_len(), p.weight_len());
    // Safety: the module's contract, with the lengths from the checked shapes.
    let (x, grad, weight, u, grad_w) = unsafe {
        (
            slice::<T>("x", x, n)?,
            slice::<T>("grad", grad, n)?,
            slice::<T>("weight", weight, n_w)?,
            slice_mut::<T>("u", u, n)?,
            slice_mut::<T>("grad_w", grad_w, n_w)?,
        )
    };
    detached(py, || cpu::inverse_backward(p, x, grad, weight, u, grad_w))
}

/// The inverse's backward: u = A⁻ᵀ grad and grad_w = −Σ u·pad(x) (masked), with x the
/// inverse's output: addresses (x, grad, weight, u, grad_w).
#[pyfunction]
fn cpu_inverse_backward(
    py: Python<'_>,
    dtype: &str,
    x_shape: &Bound<'_, PyTuple>,
    grad_shape: &Bound<'_, PyTuple>,
    weight_shape: &Bound<'_, PyTuple>,
    order: &str,
    addrs: (usize, usize, usize, usize, usize),
) -> PyResult<()> {
    let (x_shape, grad_shape) = (dims(x_shape)?, dims(grad_shape)?);
    let p = Problem::new("x", &x_shape, &dims(weight_shape)?, parse_order(order)?)?;
    p.expect_image("grad", &grad_shape)?;
    match dtype_named(dtype)? {
        Dtype::F32 => inverse_backward_typed::<f32>(py, &p, addrs),
        Dtype::F64 => inverse_backward_typed::<f64>(py, &p, addrs),
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cpu_forward, m)?)?;
    m.add_function(wrap_pyfunction!(cpu_inverse, m)?)?;
    m.add_function(wrap_pyfunction!(cpu_forward_adjoint, m)?)?;
    m.add_function(wrap_pyfunction!(cpu_inverse_adjoint, m)?)?;
    m.add_function(wrap_pyfunction!(cpu_weight_grad, m)?)?;
    m.add_function(wrap_pyfunction!(cpu_inverse_backward, m)?)?;
    Ok(())
}
