//! Bindings of the CUDA backend: raw device addresses and a stream handle in, errors out.
//! `python/inv_conv/_cuda.py` does everything torch-specific (validation, allocation with
//! torch's allocator, the current stream) and calls these.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::{detached, parse_order};
use crate::cuda::{self, Dtype, Target};
use crate::geometry::Problem;

fn problem(
    shape: (usize, usize, usize, usize),
    kernel: (usize, usize),
    order: &str,
) -> PyResult<Problem> {
    let order = parse_order(order)?;
    let (b, c, h, w) = shape;
    Ok(Problem::new(
        "input",
        &[b, c, h, w],
        &[c, c, kernel.0, kernel.1],
        order,
    )?)
}

fn dtype(name: &str) -> PyResult<Dtype> {
    Ok(name.parse::<Dtype>()?)
}

/// Sets the NVRTC library path to try first (the Python layer finds torch's).
#[pyfunction]
#[pyo3(signature = (path=None))]
fn cuda_set_nvrtc_path(path: Option<String>) {
    cuda::nvrtc::set_library_hint(path);
}

/// None when the driver, a GPU and NVRTC are all usable; otherwise what is missing.
#[pyfunction]
fn cuda_unavailable_reason() -> Option<String> {
    if let Err(e) = cuda::driver() {
        return Some(e.to_string());
    }
    match cuda::device_count() {
        Ok(0) => return Some("the CUDA driver sees no GPU".into()),
        Err(e) => return Some(e.to_string()),
        Ok(_) => {}
    }
    cuda::nvrtc::library().err().map(|e| e.to_string())
}

/// Compiles (at first use) and describes the kernels on `device`: arch, SM count, shared
/// memory, NVRTC, compile and load milliseconds.
#[pyfunction]
fn cuda_device_info<'py>(py: Python<'py>, device: usize) -> PyResult<Bound<'py, PyDict>> {
    let d = detached(py, || cuda::device(device))?;
    let out = PyDict::new(py);
    out.set_item("device", d.ordinal)?;
    out.set_item("arch", d.arch.clone())?;
    out.set_item("sm_count", d.sm_count)?;
    out.set_item("max_shared_memory", d.max_smem)?;
    out.set_item("nvrtc_path", d.nvrtc_path.clone())?;
    out.set_item("nvrtc_version", d.nvrtc_version)?;
    out.set_item("compile_ms", d.compile_ms)?;
    out.set_item("load_ms", d.load_ms)?;
    Ok(out)
}

/// Elements of coefficient scratch the four image ops need.
#[pyfunction]
fn cuda_prep_len(channels: usize, kernel_h: usize, kernel_w: usize) -> PyResult<usize> {
    let p = problem((1, channels, 1, 1), (kernel_h, kernel_w), "TL")?;
    Ok(cuda::prep_len(&p))
}

/// Elements of scratch weight_grad needs for this problem on `device`.
#[pyfunction]
fn cuda_weight_grad_scratch_len(
    py: Python<'_>,
    device: usize,
    dtype_name: &str,
    shape: (usize, usize, usize, usize),
    kernel: (usize, usize),
    order: &str,
) -> PyResult<usize> {
    let p = problem(shape, kernel, order)?;
    let dt = dtype(dtype_name)?;
    detached(py, || cuda::weight_grad_scratch_len(&p, dt, device))
}

/// The problem, dtype and launch target of a binding's leading arguments, in the order the
/// bindings have always checked them (problem, then dtype).
fn launch(
    device: usize,
    stream: u64,
    dtype_name: &str,
    shape: (usize, usize, usize, usize),
    kernel: (usize, usize),
    order: &str,
) -> PyResult<(Problem, Dtype, Target)> {
    let p = problem(shape, kernel, order)?;
    let dt = dtype(dtype_name)?;
    Ok((p, dt, Target { device, stream }))
}

/// A `#[pyfunction]` that launches work: its parameters start with `py, device, stream,
/// dtype_name, shape, kernel` (named by the caller, typed here), then the binding's own.
macro_rules! launch_binding {
    (
        $(#[$attr:meta])*
        fn $name:ident(
            $py:ident, $device:ident, $stream:ident, $dtype_name:ident, $shape:ident, $kernel:ident;
            $($arg:ident: $ty:ty),* $(,)?
        ) -> $ret:ty $body:block
    ) => {
        #[pyfunction]
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        fn $name(
            $py: Python<'_>,
            $device: usize,
            $stream: u64,
            $dtype_name: &str,
            $shape: (usize, usize, usize, usize),
            $kernel: (usize, usize),
            $($arg: $ty),*
        ) -> PyResult<$ret> $body
    };
}

/// The four image ops: one binding each, the same arguments; `$launcher` serves a direction
/// and its adjoint.
macro_rules! image_binding {
    ($name:ident, $launcher:path, adjoint = $adjoint:expr, $doc:literal) => {
        launch_binding! {
            #[doc = $doc]
            fn $name(
                py, device, stream, dtype_name, shape, kernel;
                order: &str, input: u64, weight: u64, out: u64, prep: u64, prep_len: usize,
            ) -> () {
                let (p, dt, t) = launch(device, stream, dtype_name, shape, kernel, order)?;
                detached(py, || $launcher(&p, dt, t, input, weight, out, prep, prep_len, $adjoint))
            }
        }
    };
}

image_binding!(
    cuda_forward,
    cuda::conv,
    adjoint = false,
    "y = A x on the GPU (addresses of contiguous tensors)."
);
image_binding!(
    cuda_forward_adjoint,
    cuda::conv,
    adjoint = true,
    "Aᵀ g on the GPU."
);
image_binding!(
    cuda_inverse,
    cuda::solve,
    adjoint = false,
    "x = A⁻¹ y on the GPU."
);
image_binding!(
    cuda_inverse_adjoint,
    cuda::solve,
    adjoint = true,
    "A⁻ᵀ g on the GPU."
);

launch_binding! {
    /// Σ g·pad(x), masked, into `out` (C, C, KH, KW); `scratch` of cuda_weight_grad_scratch_len.
    /// `negate` writes −Σ instead (exactly the negation).
    #[pyo3(signature = (device, stream, dtype_name, shape, kernel, order, x, grad, out, scratch, scratch_len, negate=false))]
    fn cuda_weight_grad(
        py, device, stream, dtype_name, shape, kernel;
        order: &str, x: u64, grad: u64, out: u64, scratch: u64, scratch_len: usize,
        negate: bool,
    ) -> () {
        let (p, dt, t) = launch(device, stream, dtype_name, shape, kernel, order)?;
        detached(py, || cuda::weight_grad(&p, dt, t, x, grad, out, scratch, scratch_len, negate))
    }
}

launch_binding! {
    /// The inverse's backward in one call: u = A⁻ᵀ grad into `u`, then −Σ u·pad(x) (masked) into
    /// `grad_w` (C, C, KH, KW). `prep` of cuda_prep_len, `scratch` of
    /// cuda_weight_grad_scratch_len elements.
    fn cuda_inverse_backward(
        py, device, stream, dtype_name, shape, kernel;
        order: &str,
        buffers: (u64, u64, u64, u64, u64),
        prep: u64,
        prep_len: usize,
        scratch: u64,
        scratch_len: usize,
    ) -> () {
        let (p, dt, t) = launch(device, stream, dtype_name, shape, kernel, order)?;
        let (x, grad, weight, u, grad_w) = buffers;
        detached(py, || {
            cuda::inverse_backward(
                &p, dt, t, x, grad, weight, u, grad_w, prep, prep_len, scratch, scratch_len,
            )
        })
    }
}

/// Parsed orders, and the problem, dtype and target of the first (a chain's layers differ only
/// in their order).
fn chain_launch(
    device: usize,
    stream: u64,
    dtype_name: &str,
    shape: (usize, usize, usize, usize),
    kernel: (usize, usize),
    orders: &[String],
) -> PyResult<(Vec<crate::geometry::Order>, Problem, Dtype, Target)> {
    let orders = orders
        .iter()
        .map(|o| parse_order(o))
        .collect::<PyResult<Vec<_>>>()?;
    let first = orders.first().map_or("TL", |o| o.as_str());
    let (p, dt, t) = launch(device, stream, dtype_name, shape, kernel, first)?;
    Ok((orders, p, dt, t))
}

launch_binding! {
    /// The inverses of `orders` (weights at `weights`) applied in sequence, `input` → `outs[0]`
    /// → … → `outs[last]`, a one-launch solve per layer (`adjoint`: the transposed inverses).
    /// False (nothing launched) where the one-launch solve does not apply: the caller then
    /// solves layer by layer.
    fn cuda_solve_chain(
        py, device, stream, dtype_name, shape, kernel;
        orders: Vec<String>, input: u64, weights: Vec<u64>, outs: Vec<u64>, adjoint: bool,
    ) -> bool {
        let (orders, p, dt, t) = chain_launch(device, stream, dtype_name, shape, kernel, &orders)?;
        detached(py, || cuda::solve_chain(&p, &orders, dt, t, input, &weights, &outs, adjoint))
    }
}

launch_binding! {
    /// The backward of a chain of inverses (`cuda::inverse_chain_backward`): `xs` the chain's
    /// outputs, `grad` ∂/∂(last output); writes `us[l]` (∂/∂(layer l's input)) and the stacked
    /// weight-gradients `grad_w` (L, C, C, KH, KW). `scratch` of L × cuda_weight_grad_scratch_len
    /// elements. False (nothing launched) where the one-launch solve does not apply.
    fn cuda_inverse_chain_backward(
        py, device, stream, dtype_name, shape, kernel;
        orders: Vec<String>, xs: Vec<u64>, grad: u64, weights: Vec<u64>, us: Vec<u64>,
        grad_w: u64, scratch: u64, scratch_len: usize,
    ) -> bool {
        let (orders, p, dt, t) = chain_launch(device, stream, dtype_name, shape, kernel, &orders)?;
        detached(py, || {
            cuda::inverse_chain_backward(
                &p, &orders, dt, t, &xs, grad, &weights, &us, grad_w, scratch, scratch_len,
            )
        })
    }
}

/// A chain's coupling end as Python passes it: (h, (batch, channel, pixel) strides of h,
/// split, offset, log_offset).
type CouplingArg = (u64, (i64, i64, i64), usize, f64, f64);

launch_binding! {
    /// The masked convolutions of `orders` (weights at `weights`, same shape) applied in sequence,
    /// `input` → `out`, one launch. False (nothing launched) when an image does not fit in shared
    /// memory: the caller then runs the layers one by one. `coupling` = (h, (batch, channel,
    /// pixel) strides of h, split, offset, log_offset) and `actnorm` = (log_scale, bias): the
    /// chain's ends (`cuda::ChainEnds`).
    fn cuda_conv_chain(
        py, device, stream, dtype_name, shape, kernel;
        orders: Vec<String>, input: u64, weights: Vec<u64>, out: u64,
        coupling: Option<CouplingArg>, actnorm: Option<(u64, u64)>,
    ) -> bool {
        let ends = cuda::ChainEnds {
            coupling: coupling.map(|(h, strides, split, offset, log_offset)| cuda::CouplingEnd {
                h,
                strides,
                split,
                offset,
                log_offset,
            }),
            actnorm,
        };
        let (orders, p, dt, t) = chain_launch(device, stream, dtype_name, shape, kernel, &orders)?;
        detached(py, || cuda::conv_chain(&p, &orders, dt, t, input, &weights, out, &ends))
    }
}

/// Compiles every kernel with NVRTC for `arch` (no driver or GPU needed): a syntax error in a
/// .cu file fails here. Returns {compile_ms, cubin_bytes, nvrtc_path, nvrtc_version, log}.
#[pyfunction]
#[pyo3(signature = (arch="sm_90"))]
fn compile_kernels_check<'py>(py: Python<'py>, arch: &str) -> PyResult<Bound<'py, PyDict>> {
    let arch = arch.to_string();
    let r = detached(py, move || cuda::compile_check(&arch))?;
    let out = PyDict::new(py);
    out.set_item("compile_ms", r.millis)?;
    out.set_item("cubin_bytes", r.cubin_bytes)?;
    out.set_item("nvrtc_path", r.nvrtc_path)?;
    out.set_item("nvrtc_version", r.nvrtc_version)?;
    out.set_item("log", r.log)?;
    Ok(out)
}

/// The kernel entry points the backend launches and their parameter types (one letter each:
/// p pointer, i int, l long long), for the test that checks them against kernels/*.cu.
#[pyfunction]
fn cuda_entry_points() -> Vec<(&'static str, &'static str)> {
    cuda::entry_points().to_vec()
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CUDA_CHAIN_MAX_LAYERS", cuda::limits::CHAIN_MAX_LAYERS)?;
    m.add_function(wrap_pyfunction!(cuda_entry_points, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_set_nvrtc_path, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_unavailable_reason, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_device_info, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_prep_len, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_weight_grad_scratch_len, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_forward, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_forward_adjoint, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_inverse, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_inverse_adjoint, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_weight_grad, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_inverse_backward, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_conv_chain, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_solve_chain, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_inverse_chain_backward, m)?)?;
    m.add_function(wrap_pyfunction!(compile_kernels_check, m)?)?;
    Ok(())
}
