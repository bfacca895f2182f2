//! Bindings of the CUDA backend. (Filled in by the CUDA issue.)

use pyo3::prelude::*;

pub(crate) fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
