//! The op contract, in one place: orders, padding, the anchor tap, the mask, and the
//! validation of shapes. Backends receive a validated [`Problem`] and the tap table it
//! produces; they never re-derive any of these rules.
//!
//! Conventions. Input `x` is (B, C, H, W), weight `w` is (C, C, KH, KW) in torch's conv layout
//! (out, in, kh, kw). For an order, the forward map is
//! `y = conv2d(pad(x, PAD[order]), ŵ)`; with `top`/`left` the top and left padding, tap
//! `(i, j)` of output pixel `(h, w)` reads input pixel `(h + i − top, w + j − left)`. We call
//! `(di, dj) = (i − top, j − left)` the tap's offset; the anchor tap is the one with offset
//! `(0, 0)`. Every other offset points "back" towards the order's starting corner, which is what
//! makes the map triangular.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Where the wavefront starts: the corner whose pixels depend on nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Order {
    /// Top-left: pads (left KW−1, right 0, top KH−1, bottom 0).
    TL,
    /// Top-right: pads (0, KW−1, KH−1, 0).
    TR,
    /// Bottom-left: pads (KW−1, 0, 0, KH−1).
    BL,
    /// Bottom-right: pads (0, KW−1, 0, KH−1).
    BR,
}

impl Order {
    pub const ALL: [Order; 4] = [Order::TL, Order::TR, Order::BL, Order::BR];

    /// Padding above the image (the order starts at the top).
    pub fn pads_top(self) -> bool {
        matches!(self, Order::TL | Order::TR)
    }

    /// Padding left of the image (the order starts at the left).
    pub fn pads_left(self) -> bool {
        matches!(self, Order::TL | Order::BL)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Order::TL => "TL",
            Order::TR => "TR",
            Order::BL => "BL",
            Order::BR => "BR",
        }
    }

    /// Small integer code shared with the CUDA kernels (0..4 in the order of [`Order::ALL`]).
    pub fn code(self) -> u32 {
        match self {
            Order::TL => 0,
            Order::TR => 1,
            Order::BL => 2,
            Order::BR => 3,
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Order {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "TL" => Ok(Order::TL),
            "TR" => Ok(Order::TR),
            "BL" => Ok(Order::BL),
            "BR" => Ok(Order::BR),
            _ => Err(Error::Order(s.to_string())),
        }
    }
}

/// One tap of the kernel: its position in the weight and the pixel offset it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tap {
    /// Row of the tap in the weight, 0..KH.
    pub i: usize,
    /// Column of the tap in the weight, 0..KW.
    pub j: usize,
    /// Row offset of the input pixel read, relative to the output pixel.
    pub di: isize,
    /// Column offset of the input pixel read, relative to the output pixel.
    pub dj: isize,
}

impl Tap {
    pub fn is_anchor(&self) -> bool {
        self.di == 0 && self.dj == 0
    }
}

/// A validated problem: every dimension is at least 1 and the weight matches the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Problem {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub order: Order,
}

fn shape_str(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("({})", parts.join(", "))
}

impl Problem {
    /// Validates an input of shape `input_shape` (B, C, H, W) against a weight of shape
    /// (C, C, KH, KW). `input_name` is the argument's name in the caller's API, used in errors.
    pub fn new(
        input_name: &str,
        input_shape: &[usize],
        weight_shape: &[usize],
        order: Order,
    ) -> Result<Problem> {
        if input_shape.len() != 4 {
            return Err(Error::Shape(format!(
                "{input_name} must be a 4-D tensor (B, C, H, W); got {}-D with shape {}",
                input_shape.len(),
                shape_str(input_shape)
            )));
        }
        let kernel = Self::kernel_size("weight", weight_shape)?;
        if input_shape.contains(&0) {
            return Err(Error::Shape(format!(
                "{input_name} must have every dimension >= 1 (B, C, H, W); got shape {}",
                shape_str(input_shape)
            )));
        }
        let elements = |shape: &[usize]| shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if elements(input_shape).is_none() || elements(weight_shape).is_none() {
            return Err(Error::TooLarge(format!(
                "{input_name} shape {} with weight shape {} has more elements than this machine can address",
                shape_str(input_shape),
                shape_str(weight_shape)
            )));
        }
        if input_shape[1] != weight_shape[0] {
            return Err(Error::Shape(format!(
                "{input_name} has {} channels but weight expects {} (weight shape {}, {input_name} shape {})",
                input_shape[1],
                weight_shape[0],
                shape_str(weight_shape),
                shape_str(input_shape)
            )));
        }
        Ok(Problem {
            batch: input_shape[0],
            channels: input_shape[1],
            height: input_shape[2],
            width: input_shape[3],
            kernel_h: kernel.0,
            kernel_w: kernel.1,
            order,
        })
    }

    /// Validates a weight shape (C, C, KH, KW) on its own and returns (KH, KW).
    pub fn kernel_size(weight_name: &str, weight_shape: &[usize]) -> Result<(usize, usize)> {
        if weight_shape.len() != 4 {
            return Err(Error::Shape(format!(
                "{weight_name} must be a 4-D tensor (C, C, KH, KW); got {}-D with shape {}",
                weight_shape.len(),
                shape_str(weight_shape)
            )));
        }
        if weight_shape.contains(&0) {
            return Err(Error::Shape(format!(
                "{weight_name} must have every dimension >= 1 (C, C, KH, KW); got shape {}",
                shape_str(weight_shape)
            )));
        }
        if weight_shape[0] != weight_shape[1] {
            return Err(Error::Shape(format!(
                "{weight_name} must be square in channels (C, C, KH, KW) because the layer is invertible; \
                 got {} output and {} input channels (shape {})",
                weight_shape[0],
                weight_shape[1],
                shape_str(weight_shape)
            )));
        }
        Ok((weight_shape[2], weight_shape[3]))
    }

    /// Checks that another tensor of the problem (an output or a gradient) has the input's shape.
    pub fn expect_image(&self, name: &str, shape: &[usize]) -> Result<()> {
        let want = self.image_shape();
        if shape != want {
            return Err(Error::Shape(format!(
                "{name} must have shape {} like the input; got {}",
                shape_str(&want),
                shape_str(shape)
            )));
        }
        Ok(())
    }

    pub fn image_shape(&self) -> [usize; 4] {
        [self.batch, self.channels, self.height, self.width]
    }

    pub fn weight_shape(&self) -> [usize; 4] {
        [self.channels, self.channels, self.kernel_h, self.kernel_w]
    }

    pub fn image_len(&self) -> usize {
        self.batch * self.channels * self.height * self.width
    }

    pub fn weight_len(&self) -> usize {
        self.channels * self.channels * self.kernel_h * self.kernel_w
    }

    pub fn pixels(&self) -> usize {
        self.height * self.width
    }

    /// Padding (left, right, top, bottom), as in `torch.nn.functional.pad`.
    pub fn padding(&self) -> (usize, usize, usize, usize) {
        let (kh, kw) = (self.kernel_h - 1, self.kernel_w - 1);
        let (left, right) = if self.order.pads_left() {
            (kw, 0)
        } else {
            (0, kw)
        };
        let (top, bottom) = if self.order.pads_top() {
            (kh, 0)
        } else {
            (0, kh)
        };
        (left, right, top, bottom)
    }

    /// Position (i, j) of the anchor tap in the weight.
    pub fn anchor(&self) -> (usize, usize) {
        let (left, _, top, _) = self.padding();
        (top, left)
    }

    /// All KH·KW taps, in weight order (row-major over (i, j)).
    pub fn taps(&self) -> Vec<Tap> {
        let (left, _, top, _) = self.padding();
        let mut taps = Vec::with_capacity(self.kernel_h * self.kernel_w);
        for i in 0..self.kernel_h {
            for j in 0..self.kernel_w {
                taps.push(Tap {
                    i,
                    j,
                    di: i as isize - top as isize,
                    dj: j as isize - left as isize,
                });
            }
        }
        taps
    }

    /// Whether weight entry (c_out, c_in, i, j) is overridden by the mask: the anchor tap's
    /// diagonal (fixed to 1) and upper triangle (fixed to 0).
    pub fn is_masked(&self, c_out: usize, c_in: usize, i: usize, j: usize) -> bool {
        (i, j) == self.anchor() && c_in >= c_out
    }

    /// The effective weight ŵ as one C×C matrix per tap, in one buffer: tap `t`'s entry
    /// `(c_out, c_in)` at `(t * C + c_out) * C + c_in`, taps in the order of [`Problem::taps`].
    /// The anchor tap's matrix is made unit lower-triangular; every masked entry of `weight` is
    /// ignored whatever it holds (NaN included).
    pub fn tap_matrices<T: Copy + From<u8>>(&self, weight: &[T]) -> Vec<T> {
        let c = self.channels;
        let (kh, kw) = (self.kernel_h, self.kernel_w);
        let mut out = vec![T::from(0u8); kh * kw * c * c];
        for (t, m) in out.chunks_exact_mut(c * c).enumerate() {
            let (i, j) = (t / kw, t % kw);
            for co in 0..c {
                for ci in 0..c {
                    m[co * c + ci] = if self.is_masked(co, ci, i, j) {
                        T::from(u8::from(ci == co))
                    } else {
                        weight[((co * c + ci) * kh + i) * kw + j]
                    };
                }
            }
        }
        out
    }

    /// Zeroes the masked entries of a weight-shaped gradient (they are constants of the map).
    pub fn mask_gradient<T: Copy + From<u8>>(&self, grad: &mut [T]) {
        let c = self.channels;
        let (kh, kw) = (self.kernel_h, self.kernel_w);
        let (ai, aj) = self.anchor();
        for co in 0..c {
            for ci in 0..c {
                if self.is_masked(co, ci, ai, aj) {
                    grad[((co * c + ci) * kh + ai) * kw + aj] = T::from(0u8);
                }
            }
        }
    }

    /// Which way the wavefront visits rows and columns: `(rows ascending, columns ascending)`.
    /// The inverse starts at the corner that depends on nothing (where the order pads), its
    /// adjoint at the opposite one. Both backends derive their sweeps from this.
    pub fn sweep_ascending(&self, adjoint: bool) -> (bool, bool) {
        (
            self.order.pads_top() != adjoint,
            self.order.pads_left() != adjoint,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_has_zero_offset_and_others_point_back() {
        for order in Order::ALL {
            for (kh, kw) in [(1, 1), (2, 3), (3, 3), (5, 2)] {
                let p = Problem::new("x", &[1, 2, 4, 5], &[2, 2, kh, kw], order).unwrap();
                let taps = p.taps();
                let anchors: Vec<_> = taps.iter().filter(|t| t.is_anchor()).collect();
                assert_eq!(anchors.len(), 1);
                assert_eq!((anchors[0].i, anchors[0].j), p.anchor());
                let (sh, sw): (isize, isize) = (
                    if order.pads_top() { 1 } else { -1 },
                    if order.pads_left() { 1 } else { -1 },
                );
                for t in taps {
                    assert!(t.di * sh <= 0 && t.dj * sw <= 0, "{order} {t:?}");
                }
            }
        }
    }

    #[test]
    fn validation_names_arguments() {
        let e = Problem::new("y", &[1, 3, 4], &[3, 3, 3, 3], Order::TL).unwrap_err();
        assert!(e.to_string().contains("y must be a 4-D"));
        let e = Problem::new("x", &[1, 3, 4, 4], &[3, 2, 3, 3], Order::TL).unwrap_err();
        assert!(e.to_string().contains("square"));
        let e = Problem::new("x", &[1, 4, 4, 4], &[3, 3, 3, 3], Order::TL).unwrap_err();
        assert!(e.to_string().contains("4 channels"));
        let e = Problem::new("x", &[0, 3, 4, 4], &[3, 3, 3, 3], Order::TL).unwrap_err();
        assert!(e.to_string().contains(">= 1"));
        let e =
            Problem::new("x", &[1, 2, 3, 3], &[2, 2, usize::MAX / 2, 4], Order::TL).unwrap_err();
        assert!(matches!(e, Error::TooLarge(_)), "{e:?}");
        assert!(e.to_string().contains("x shape (1, 2, 3, 3)"));
        assert!(e.to_string().contains("more elements than"));
        assert!("XX".parse::<Order>().is_err());
        assert_eq!("br".parse::<Order>().unwrap(), Order::BR);
    }
}
