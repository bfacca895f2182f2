//! The one mapping from the crate's [`Error`] kinds to Python exceptions. Bindings return
//! `Error` values and let `?` convert them here; none builds an exception by hand.

use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::PyErr;

use crate::error::Error;

create_exception!(
    inv_conv,
    CudaError,
    PyRuntimeError,
    "A GPU, CUDA driver or NVRTC problem: missing, failed to compile, or failed to launch."
);

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        let msg = e.to_string();
        match e {
            // A problem too large is a bad argument value whichever backend finds it.
            Error::Shape(_) | Error::Argument(_) | Error::Order(_) | Error::TooLarge(_) => {
                PyValueError::new_err(msg)
            }
            Error::Dtype(_) => PyTypeError::new_err(msg),
            Error::Device(_) | Error::Cuda(_) | Error::Nvrtc(_) => CudaError::new_err(msg),
            Error::Internal(_) => PyRuntimeError::new_err(msg),
        }
    }
}
