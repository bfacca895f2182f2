//! Rust-core tests of the CPU backend against an independent naive oracle (direct loops over
//! the contract's definition), in float64, all orders, odd and non-square shapes.

use inv_conv::cpu;
use inv_conv::{Order, Problem};

/// xorshift64*: fresh pseudo-random inputs without a dependency.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (v >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| self.next() * scale).collect()
    }
    /// An image of `p`, values in [-1, 1).
    fn image(&mut self, p: &Problem) -> Vec<f64> {
        self.vec(p.image_len(), 1.0)
    }
    /// A weight of `p`, values in [-scale, scale).
    fn weight(&mut self, p: &Problem, scale: f64) -> Vec<f64> {
        self.vec(p.weight_len(), scale)
    }
}

/// y = conv2d(pad(x), ŵ) written straight from the definition: padding, anchor and mask by hand.
fn naive_forward(p: &Problem, x: &[f64], w: &[f64]) -> Vec<f64> {
    let (b, c, h, wd, kh, kw) = (
        p.batch, p.channels, p.height, p.width, p.kernel_h, p.kernel_w,
    );
    let top = if matches!(p.order, Order::TL | Order::TR) {
        kh - 1
    } else {
        0
    };
    let left = if matches!(p.order, Order::TL | Order::BL) {
        kw - 1
    } else {
        0
    };
    let (ai, aj) = (top, left);
    let mut y = vec![0.0; b * c * h * wd];
    for bi in 0..b {
        for co in 0..c {
            for r in 0..h {
                for s in 0..wd {
                    let mut acc = 0.0;
                    for ci in 0..c {
                        for i in 0..kh {
                            for j in 0..kw {
                                let (rr, ss) = (
                                    r as isize + i as isize - top as isize,
                                    s as isize + j as isize - left as isize,
                                );
                                if rr < 0 || ss < 0 || rr >= h as isize || ss >= wd as isize {
                                    continue;
                                }
                                let wv = if (i, j) == (ai, aj) {
                                    if ci == co {
                                        1.0
                                    } else if ci > co {
                                        0.0
                                    } else {
                                        w[((co * c + ci) * kh + i) * kw + j]
                                    }
                                } else {
                                    w[((co * c + ci) * kh + i) * kw + j]
                                };
                                acc += wv * x[((bi * c + ci) * h + rr as usize) * wd + ss as usize];
                            }
                        }
                    }
                    y[((bi * c + co) * h + r) * wd + s] = acc;
                }
            }
        }
    }
    y
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

const SHAPES: &[(usize, usize, usize, usize, usize, usize)] = &[
    // (B, C, H, W, KH, KW)
    (2, 3, 5, 7, 3, 3),
    (1, 1, 4, 3, 3, 3),
    (3, 5, 6, 4, 2, 3),
    (2, 4, 3, 5, 1, 1),
    (1, 2, 7, 2, 5, 2),
    (4, 6, 1, 9, 3, 2),
];

fn problems() -> impl Iterator<Item = Problem> {
    SHAPES.iter().flat_map(|&(b, c, h, w, kh, kw)| {
        Order::ALL
            .into_iter()
            .map(move |o| Problem::new("x", &[b, c, h, w], &[c, c, kh, kw], o).unwrap())
    })
}

/// Runs `check` on every problem in turn, with one generator seeded with `seed` for all.
fn for_each_problem(seed: u64, mut check: impl FnMut(&Problem, &mut Rng)) {
    let mut rng = Rng::new(seed);
    for p in problems() {
        check(&p, &mut rng);
    }
}

type Op<T> = fn(&Problem, &[T], &[T], &mut [T]) -> inv_conv::Result<()>;

/// `op` applied to `input` with weight `w`, into a new buffer filled with `fill` beforehand.
fn apply<T: Copy>(op: Op<T>, p: &Problem, input: &[T], w: &[T], fill: T) -> Vec<T> {
    let mut out = vec![fill; p.image_len()];
    op(p, input, w, &mut out).unwrap();
    out
}

/// `|reference − value| < tol · (1 + |reference|)`, failing with `what`.
#[track_caller]
fn assert_close(reference: f64, value: f64, tol: f64, what: std::fmt::Arguments) {
    assert!(
        (reference - value).abs() < tol * (1.0 + reference.abs()),
        "{what}"
    );
}

#[test]
fn forward_matches_naive_definition() {
    for_each_problem(1, |p, rng| {
        let (x, w) = (rng.image(p), rng.weight(p, 1.0));
        let y = apply(cpu::forward, p, &x, &w, f64::NAN);
        assert!(max_abs_diff(&y, &naive_forward(p, &x, &w)) < 1e-12, "{p:?}");
    });
}

#[test]
fn inverse_round_trips_and_f32_agrees() {
    for_each_problem(2, |p, rng| {
        let (y, w) = (rng.image(p), rng.weight(p, 0.3));
        let x = apply(cpu::inverse, p, &y, &w, f64::NAN);
        let back = naive_forward(p, &x, &w);
        assert!(
            max_abs_diff(&back, &y) < 1e-9,
            "{p:?}: {}",
            max_abs_diff(&back, &y)
        );

        let (y32, w32): (Vec<f32>, Vec<f32>) = (
            y.iter().map(|&v| v as f32).collect(),
            w.iter().map(|&v| v as f32).collect(),
        );
        let x32 = apply(cpu::inverse, p, &y32, &w32, f32::NAN);
        let x32: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
        let scale = x.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        assert!(max_abs_diff(&x32, &x) < 1e-4 * scale, "{p:?}");
    });
}

#[test]
fn adjoints_satisfy_the_inner_product_identity() {
    for_each_problem(3, |p, rng| {
        let w = rng.weight(p, 0.3);
        let (x, y, g) = (rng.image(p), rng.image(p), rng.image(p));
        let ax = apply(cpu::forward, p, &x, &w, 0.0);
        let atg = apply(cpu::forward_adjoint, p, &g, &w, 0.0);
        let (l, r) = (dot(&g, &ax), dot(&atg, &x));
        assert_close(l, r, 1e-10, format_args!("{p:?}: <g,Ax>={l} <Aᵀg,x>={r}"));

        let ainv_y = apply(cpu::inverse, p, &y, &w, 0.0);
        let ainv_t_g = apply(cpu::inverse_adjoint, p, &g, &w, 0.0);
        let (l, r) = (dot(&g, &ainv_y), dot(&ainv_t_g, &y));
        assert_close(l, r, 1e-9, format_args!("{p:?}: <g,A⁻¹y>={l} <A⁻ᵀg,y>={r}"));
    });
}

/// The inverse's weight-gradient −Σ u·pad(x) against central finite differences of
/// L(w) = ⟨g, A(w)⁻¹ y⟩, entry by entry (masked entries must have zero gradient).
#[test]
fn inverse_weight_gradient_matches_finite_differences() {
    for_each_problem(4, |p, rng| {
        if p.image_len() > 200 {
            return;
        }
        let w = rng.weight(p, 0.3);
        let (y, g) = (rng.image(p), rng.image(p));
        let loss = |w: &[f64]| dot(&g, &apply(cpu::inverse, p, &y, w, 0.0));
        let x = apply(cpu::inverse, p, &y, &w, 0.0);
        let u = apply(cpu::inverse_adjoint, p, &g, &w, 0.0);
        let mut grad = vec![f64::NAN; p.weight_len()];
        cpu::weight_grad(p, &x, &u, &mut grad).unwrap();
        let eps = 1e-6;
        for k in 0..p.weight_len() {
            let (mut wp, mut wm) = (w.clone(), w.clone());
            wp[k] += eps;
            wm[k] -= eps;
            let fd = (loss(&wp) - loss(&wm)) / (2.0 * eps);
            let analytic = -grad[k];
            assert_close(
                fd,
                analytic,
                1e-5,
                format_args!("{p:?} entry {k}: fd {fd} vs {analytic}"),
            );
        }
    });
}

/// The forward map's weight-gradient: the map is linear in w, so ⟨grad, δw⟩ = ⟨g, A(δw) x⟩ − ⟨g, A(0) x⟩ exactly.
#[test]
fn forward_weight_gradient_is_the_directional_derivative() {
    for_each_problem(5, |p, rng| {
        let (x, g) = (rng.image(p), rng.image(p));
        let dw = rng.weight(p, 1.0);
        let mut grad = vec![0.0; p.weight_len()];
        cpu::weight_grad(p, &x, &g, &mut grad).unwrap();
        let zero = vec![0.0; p.weight_len()];
        let lhs = dot(&grad, &dw);
        let rhs = dot(&g, &naive_forward(p, &x, &dw)) - dot(&g, &naive_forward(p, &x, &zero));
        assert_close(rhs, lhs, 1e-10, format_args!("{p:?}"));
    });
}

#[test]
fn masked_entries_are_ignored_whatever_they_hold() {
    for_each_problem(6, |p, rng| {
        let x = rng.image(p);
        let w = rng.weight(p, 0.3);
        let mut poisoned = w.clone();
        let (ai, aj) = p.anchor();
        for co in 0..p.channels {
            for ci in co..p.channels {
                poisoned[((co * p.channels + ci) * p.kernel_h + ai) * p.kernel_w + aj] = f64::NAN;
            }
        }
        for op in [
            cpu::forward::<f64>,
            cpu::inverse::<f64>,
            cpu::forward_adjoint::<f64>,
            cpu::inverse_adjoint::<f64>,
        ] {
            let (a, b) = (apply(op, p, &x, &w, 0.0), apply(op, p, &x, &poisoned, 0.0));
            assert_eq!(a, b, "{p:?}");
        }
    });
}

#[test]
fn wrong_buffer_lengths_are_errors_not_panics() {
    let p = Problem::new("x", &[1, 2, 3, 3], &[2, 2, 3, 3], Order::TL).unwrap();
    let mut out = vec![0.0f64; 18];
    assert!(cpu::forward(&p, &[0.0; 17], &[0.0; 36], &mut out).is_err());
    assert!(cpu::inverse(&p, &[0.0; 18], &[0.0; 35], &mut out).is_err());
    assert!(cpu::weight_grad(&p, &[0.0; 18], &[0.0; 18], &mut out).is_err());
}
