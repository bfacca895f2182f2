//! PyO3 bindings, the extension module `inv_conv._native`. Argument conversion, GIL release and
//! error mapping only: the maths is in `cpu`/`cuda`, the contract in `geometry`.
//!
//! The CPU ops take numpy arrays (float32 or float64, any strides) and an optional `out` array
//! to write into; the torch layer calls their twins on raw addresses instead (`cpu_raw`).

mod cpu_raw;
#[cfg(feature = "cuda")]
mod cuda;
mod error;

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use numpy::{Element, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::cpu::{self, Real};
use crate::error::Error;
use crate::geometry::{Order, Problem};

use error::CudaError;

/// Runs `work` without the GIL and turns a panic (a bug, never expected) into
/// [`Error::Internal`] instead of letting PyO3 raise `PanicException`.
pub(crate) fn detached<R: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> crate::Result<R> + Send,
) -> PyResult<R> {
    let result = py
        .detach(|| catch_unwind(AssertUnwindSafe(work)))
        .unwrap_or_else(|_| Err(Error::Internal("a Rust panic".into())));
    Ok(result?)
}

pub(crate) fn parse_order(order: &str) -> PyResult<Order> {
    Ok(order.parse::<Order>()?)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32,
    F64,
}

fn describe(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The dtype of a numpy array argument, or a TypeError naming the argument.
fn dtype_of(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<Dtype> {
    // A type check only (no borrow of the data: the op borrows it once, later).
    if obj.cast::<PyArrayDyn<f32>>().is_ok() {
        return Ok(Dtype::F32);
    }
    if obj.cast::<PyArrayDyn<f64>>().is_ok() {
        return Ok(Dtype::F64);
    }
    let given = match obj.getattr("dtype") {
        Ok(dt) => format!("dtype {}", dt.str()?),
        Err(_) => format!("an object of type {}", describe(obj)),
    };
    Err(Error::Dtype(format!(
        "{name} must be a numpy array of dtype float32 or float64; got {given}"
    ))
    .into())
}

fn same_dtype(names: [&str; 2], objs: [&Bound<'_, PyAny>; 2]) -> PyResult<Dtype> {
    let a = dtype_of(names[0], objs[0])?;
    let b = dtype_of(names[1], objs[1])?;
    if a != b {
        let n = |d| {
            if d == Dtype::F32 {
                "float32"
            } else {
                "float64"
            }
        };
        return Err(Error::Dtype(format!(
            "{} and {} must have the same dtype; got {} and {}",
            names[0],
            names[1],
            n(a),
            n(b)
        ))
        .into());
    }
    Ok(a)
}

/// The data of a numpy array argument as one contiguous slice: borrowed when the array is
/// C-contiguous, else a copy (non-contiguous inputs are accepted).
fn contiguous<'a, T: Real + Element>(arr: &'a PyReadonlyArrayDyn<'_, T>) -> Cow<'a, [T]> {
    // `as_slice` also accepts Fortran order, whose element order is not the one we index by.
    match arr.as_slice() {
        Ok(s) if arr.is_c_contiguous() => Cow::Borrowed(s),
        _ => Cow::Owned(arr.as_array().iter().copied().collect()),
    }
}

/// The output array: the argument `name` if given (checked: dtype, shape, C-contiguous,
/// writeable), else new.
fn output<'py, T: Real + Element>(
    py: Python<'py>,
    name: &str,
    out: Option<&Bound<'py, PyAny>>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let Some(out) = out else {
        // Through numpy's own `empty`, so that an allocation it cannot make is its MemoryError
        // (the numpy crate's constructors panic on a null array instead).
        let dtype = numpy::dtype::<T>(py);
        let arr = py
            .import("numpy")?
            .call_method1("empty", (shape.to_vec(), dtype))?;
        return Ok(arr.cast_into::<PyArrayDyn<T>>()?);
    };
    let arr = out.cast::<PyArrayDyn<T>>().map_err(|_| {
        Error::Dtype(format!(
            "{name} must be a numpy array of dtype {}; got {}",
            std::any::type_name::<T>(),
            describe(out)
        ))
    })?;
    if arr.shape() != shape {
        return Err(Error::Shape(format!(
            "{name} must have shape {shape:?}; got {:?}",
            arr.shape()
        ))
        .into());
    }
    if !arr.is_c_contiguous() {
        return Err(not_contiguous(name).into());
    }
    Ok(arr.clone())
}

fn not_contiguous(name: &str) -> Error {
    Error::Argument(format!("{name} must be C-contiguous"))
}

fn writeable<'py, T: Real + Element>(
    arr: &Bound<'py, PyArrayDyn<T>>,
    name: &str,
) -> PyResult<numpy::PyReadwriteArrayDyn<'py, T>> {
    Ok(arr
        .try_readwrite()
        .map_err(|e| Error::Argument(format!("{name} is not writeable: {e}")))?)
}

/// Runs `work` on `out`'s data without the GIL and returns `out`.
fn compute_into<'py, T: Real + Element>(
    py: Python<'py>,
    out: Bound<'py, PyArrayDyn<T>>,
    work: impl FnOnce(&mut [T]) -> crate::Result<()> + Send,
) -> PyResult<Bound<'py, PyAny>> {
    {
        let mut rw = writeable(&out, "out")?;
        let out_slice = rw.as_slice_mut().map_err(|_| not_contiguous("out"))?;
        detached(py, || work(out_slice))?;
    }
    Ok(out.into_any())
}

type ImageKernel<T> = fn(&Problem, &[T], &[T], &mut [T]) -> crate::Result<()>;

fn image_op<'py, T: Real + Element>(
    py: Python<'py>,
    kernel: ImageKernel<T>,
    input_name: &str,
    input: &Bound<'py, PyAny>,
    weight: &Bound<'py, PyAny>,
    order: Order,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let input: PyReadonlyArrayDyn<'py, T> = input.extract()?;
    let weight: PyReadonlyArrayDyn<'py, T> = weight.extract()?;
    let in_shape = input.shape().to_vec();
    let problem = Problem::new(input_name, &in_shape, weight.shape(), order)?;
    let (in_data, w_data) = (contiguous(&input), contiguous(&weight));
    let out = output::<T>(py, "out", out, &in_shape)?;
    compute_into(py, out, |o| kernel(&problem, &in_data, &w_data, o))
}

macro_rules! image_binding {
    ($name:ident, $input:literal, $kernel:path, $doc:literal) => {
        #[doc = $doc]
        #[pyfunction]
        #[pyo3(signature = (input, weight, order = "TL", out = None))]
        fn $name<'py>(
            py: Python<'py>,
            input: &Bound<'py, PyAny>,
            weight: &Bound<'py, PyAny>,
            order: &str,
            out: Option<&Bound<'py, PyAny>>,
        ) -> PyResult<Bound<'py, PyAny>> {
            let order = parse_order(order)?;
            match same_dtype([$input, "weight"], [input, weight])? {
                Dtype::F32 => image_op::<f32>(py, $kernel, $input, input, weight, order, out),
                Dtype::F64 => image_op::<f64>(py, $kernel, $input, input, weight, order, out),
            }
        }
    };
}

image_binding!(
    forward,
    "x",
    cpu::forward,
    "Sampling direction on the CPU: y = conv2d(pad(x, PAD[order]), ŵ)."
);
image_binding!(
    inverse,
    "y",
    cpu::inverse,
    "Density direction on the CPU: x = A⁻¹ y by wavefront substitution."
);
image_binding!(
    forward_adjoint,
    "grad",
    cpu::forward_adjoint,
    "Aᵀ grad on the CPU: the forward op's input-gradient."
);
image_binding!(
    inverse_adjoint,
    "grad",
    cpu::inverse_adjoint,
    "A⁻ᵀ grad on the CPU: the inverse's input-gradient (the reference's `dy`)."
);

fn weight_grad_typed<'py, T: Real + Element>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    grad: &Bound<'py, PyAny>,
    order: Order,
    kernel_size: (usize, usize),
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let x: PyReadonlyArrayDyn<'py, T> = x.extract()?;
    let grad: PyReadonlyArrayDyn<'py, T> = grad.extract()?;
    let c = x.shape().get(1).copied().unwrap_or(0);
    let w_shape = [c, c, kernel_size.0, kernel_size.1];
    let problem = Problem::new("x", x.shape(), &w_shape, order)?;
    problem.expect_image("grad", grad.shape())?;
    let (x_data, g_data) = (contiguous(&x), contiguous(&grad));
    let out = output::<T>(py, "out", out, &w_shape)?;
    compute_into(py, out, |o| cpu::weight_grad(&problem, &x_data, &g_data, o))
}

/// Weight-gradient on the CPU: Σ grad · pad(x) per tap, zero at the masked anchor entries.
/// The inverse's weight-gradient (the reference's `dw`) is its negation with x = inverse(y) and
/// grad = inverse_adjoint(g).
#[pyfunction]
#[pyo3(signature = (x, grad, order = "TL", kernel_size = (3, 3), out = None))]
fn weight_grad<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    grad: &Bound<'py, PyAny>,
    order: &str,
    kernel_size: (usize, usize),
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let order = parse_order(order)?;
    if kernel_size.0 == 0 || kernel_size.1 == 0 {
        return Err(Error::Argument(format!(
            "kernel_size must be >= 1 in both dimensions; got {kernel_size:?}"
        ))
        .into());
    }
    match same_dtype(["x", "grad"], [x, grad])? {
        Dtype::F32 => weight_grad_typed::<f32>(py, x, grad, order, kernel_size, out),
        Dtype::F64 => weight_grad_typed::<f64>(py, x, grad, order, kernel_size, out),
    }
}

fn inverse_backward_typed<'py, T: Real + Element>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    grad: &Bound<'py, PyAny>,
    weight: &Bound<'py, PyAny>,
    order: Order,
    outs: [Option<&Bound<'py, PyAny>>; 2],
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let x: PyReadonlyArrayDyn<'py, T> = x.extract()?;
    let grad: PyReadonlyArrayDyn<'py, T> = grad.extract()?;
    let weight: PyReadonlyArrayDyn<'py, T> = weight.extract()?;
    let problem = Problem::new("x", x.shape(), weight.shape(), order)?;
    problem.expect_image("grad", grad.shape())?;
    let (x_data, g_data, w_data) = (contiguous(&x), contiguous(&grad), contiguous(&weight));
    let u = output::<T>(py, "u", outs[0], x.shape())?;
    let grad_w = output::<T>(py, "grad_w", outs[1], weight.shape())?;
    {
        let (mut u_rw, mut w_rw) = (writeable(&u, "u")?, writeable(&grad_w, "grad_w")?);
        let u_slice = u_rw.as_slice_mut().map_err(|_| not_contiguous("u"))?;
        let w_slice = w_rw.as_slice_mut().map_err(|_| not_contiguous("grad_w"))?;
        detached(py, || {
            cpu::inverse_backward(&problem, &x_data, &g_data, &w_data, u_slice, w_slice)
        })?;
    }
    Ok((u.into_any(), grad_w.into_any()))
}

/// The inverse's backward on the CPU in one call: `u = A⁻ᵀ grad` and `grad_w = −Σ u·pad(x)`
/// (masked), where `x` is the inverse's output. Returns `(u, grad_w)`, written into `u` and
/// `grad_w` when given.
#[pyfunction]
#[pyo3(signature = (x, grad, weight, order = "TL", u = None, grad_w = None))]
fn inverse_backward<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    grad: &Bound<'py, PyAny>,
    weight: &Bound<'py, PyAny>,
    order: &str,
    u: Option<&Bound<'py, PyAny>>,
    grad_w: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let order = parse_order(order)?;
    same_dtype(["grad", "weight"], [grad, weight])?;
    match same_dtype(["x", "weight"], [x, weight])? {
        Dtype::F32 => inverse_backward_typed::<f32>(py, x, grad, weight, order, [u, grad_w]),
        Dtype::F64 => inverse_backward_typed::<f64>(py, x, grad, weight, order, [u, grad_w]),
    }
}

/// Validates shapes the way every op does, without computing anything: raises ValueError naming
/// `input_name` or `weight`. Returns (KH, KW). Used by the torch layer before dispatch and by the
/// fake (meta) implementations.
#[pyfunction]
#[pyo3(signature = (input_name, input_shape, weight_shape, order = "TL"))]
fn check_problem(
    input_name: &str,
    input_shape: Vec<usize>,
    weight_shape: Vec<usize>,
    order: &str,
) -> PyResult<(usize, usize)> {
    let order = parse_order(order)?;
    let p = Problem::new(input_name, &input_shape, &weight_shape, order)?;
    Ok((p.kernel_h, p.kernel_w))
}

/// Whether the extension was built with the CUDA backend.
#[pyfunction]
fn built_with_cuda() -> bool {
    cfg!(feature = "cuda")
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CudaError", m.py().get_type::<CudaError>())?;
    m.add_function(wrap_pyfunction!(forward, m)?)?;
    m.add_function(wrap_pyfunction!(inverse, m)?)?;
    m.add_function(wrap_pyfunction!(forward_adjoint, m)?)?;
    m.add_function(wrap_pyfunction!(inverse_adjoint, m)?)?;
    m.add_function(wrap_pyfunction!(weight_grad, m)?)?;
    m.add_function(wrap_pyfunction!(inverse_backward, m)?)?;
    m.add_function(wrap_pyfunction!(check_problem, m)?)?;
    m.add_function(wrap_pyfunction!(built_with_cuda, m)?)?;
    cpu_raw::register(m)?;
    #[cfg(feature = "cuda")]
    cuda::register(m)?;
    Ok(())
}
