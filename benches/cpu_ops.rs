//! Criterion benchmarks of every CPU op at the two shapes (float32):
//! (B=16, C=12, 32×32, k=3) and (B=4, C=48, 64×64, k=3). `cargo bench`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use inv_conv::{cpu, Order, Problem};

fn inputs(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    // A cheap deterministic pseudo-random fill; values in [-scale, scale].
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn bench_ops(c: &mut Criterion) {
    let shapes = [
        ("B16_C12_32x32_k3", [16, 12, 32, 32], 3),
        ("B4_C48_64x64_k3", [4, 48, 64, 64], 3),
    ];
    let mut group = c.benchmark_group("cpu");
    group.sample_size(20);
    for (label, shape, k) in shapes {
        let ch = shape[1];
        let p = Problem::new("x", &shape, &[ch, ch, k, k], Order::TL).unwrap();
        let x = inputs(p.image_len(), 1, 1.0);
        let g = inputs(p.image_len(), 2, 1.0);
        let w = inputs(p.weight_len(), 3, 0.05);
        let mut out = vec![0.0f32; p.image_len()];
        let mut wout = vec![0.0f32; p.weight_len()];
        group.bench_function(BenchmarkId::new("forward", label), |b| {
            b.iter(|| cpu::forward(&p, &x, &w, &mut out).unwrap())
        });
        group.bench_function(BenchmarkId::new("inverse", label), |b| {
            b.iter(|| cpu::inverse(&p, &x, &w, &mut out).unwrap())
        });
        group.bench_function(BenchmarkId::new("dy_inverse_adjoint", label), |b| {
            b.iter(|| cpu::inverse_adjoint(&p, &g, &w, &mut out).unwrap())
        });
        group.bench_function(BenchmarkId::new("forward_adjoint", label), |b| {
            b.iter(|| cpu::forward_adjoint(&p, &g, &w, &mut out).unwrap())
        });
        group.bench_function(BenchmarkId::new("dw_weight_grad", label), |b| {
            b.iter(|| cpu::weight_grad(&p, &x, &g, &mut wout).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_ops);
criterion_main!(benches);
