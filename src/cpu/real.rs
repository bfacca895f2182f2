//! The element types the CPU backend is generic over.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Mul, Neg, Sub, SubAssign};

/// `f32` or `f64`: arithmetic plus a strided GEMM (`matrixmultiply`, which picks AVX/FMA
/// kernels at run time, so a portable wheel still runs fast).
pub trait Real:
    Copy
    + Send
    + Sync
    + Debug
    + PartialEq
    + From<u8>
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    /// The `matrixmultiply` routine [`Real::gemm`] calls (`sgemm` or `dgemm`).
    const GEMM: Gemm<Self>;

    /// `C = alpha · A · B + beta · C` with A m×k, B k×n, C m×n and arbitrary strides.
    ///
    /// # Safety
    /// The pointers and strides must describe valid, non-aliasing (for C) matrices.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        (Self::GEMM)(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
}

/// `matrixmultiply::{sgemm, dgemm}`: m, k, n, alpha, A and its row/column strides, B and its
/// strides, beta, C and its strides.
pub type Gemm<T> = unsafe fn(
    usize,
    usize,
    usize,
    T,
    *const T,
    isize,
    isize,
    *const T,
    isize,
    isize,
    T,
    *mut T,
    isize,
    isize,
);

macro_rules! impl_real {
    ($t:ty, $gemm:path) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const GEMM: Gemm<Self> = $gemm;
        }
    };
}

impl_real!(f32, matrixmultiply::sgemm);
impl_real!(f64, matrixmultiply::dgemm);
