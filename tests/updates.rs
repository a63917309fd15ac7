//! Parameters and in-place updates: what a gradient-descent step is made of.

mod common;
use common::*;
use wgrad::{Device, Graph};

/// One SGD step on L(w) = Σ (w − t)², by hand: w' = w − lr·2(w − t).
fn sgd_step_on(device: &Device) {
    let g = Graph::new();
    let w = g.param("w", [3]);
    let t = g.input("t", [3]);
    let loss = (w - t).square().sum();
    let dw = g.grad(loss, &[w])[0];
    let lr = 0.1;
    let mut p = g
        .compile_with_updates(device, &[loss], &[(w, w - lr * dw)])
        .unwrap();
    let (w0, t0) = ([1.0f32, -2.0, 0.5], [0.0f32, 1.0, 0.5]);
    p.set_param("w", &w0).unwrap();
    let out = p.run(&[("t", &t0)]).unwrap();
    // The loss is of the parameters before the step.
    let want_loss: f32 = w0.iter().zip(&t0).map(|(a, b)| (a - b) * (a - b)).sum();
    assert_eq!(out[0][0], want_loss);
    let want: Vec<f32> = w0
        .iter()
        .zip(&t0)
        .map(|(a, b)| a - 0.1 * 2.0 * (a - b))
        .collect();
    let got = p.param("w").unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-6, "{got:?} vs {want:?}");
    }
}

#[test]
fn an_sgd_step_matches_the_formula_on_the_cpu() {
    sgd_step_on(&Device::cpu());
}

#[test]
fn an_sgd_step_matches_the_formula_on_the_gpu() {
    if let Some(d) = gpu() {
        sgd_step_on(&d);
    }
}

#[test]
fn many_steps_on_the_gpu_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    // Rosenbrock in 1000 dimensions: shifted slices, fused into the update.
    let n = 1000;
    let g = Graph::new();
    let w = g.param("w", [n]);
    let loss = rosenbrock(w);
    let dw = g.grad(loss, &[w])[0];
    steps_match_reference(&gpu, &g, loss, &[(w, w - 1e-4 * dw)], &start(2, n), 9);
}

/// Updates that copy: a parameter set from an input, and one value feeding two parameters.
fn copies_on(device: &Device) {
    let g = Graph::new();
    let (a, b, c) = (g.param("a", [3]), g.param("b", [3]), g.param("c", [3]));
    let x = g.input("x", [3]);
    let v = a * 2.0 + 1.0;
    let mut p = g
        .compile_with_updates(device, &[v], &[(a, v), (b, v), (c, x)])
        .unwrap();
    p.set_param("a", &[1.0, 2.0, 3.0]).unwrap();
    let out = p.run(&[("x", &[7.0, 8.0, 9.0])]).unwrap();
    assert_eq!(out, vec![vec![3.0, 5.0, 7.0]]);
    assert_eq!(p.param("a").unwrap(), [3.0, 5.0, 7.0]);
    assert_eq!(p.param("b").unwrap(), [3.0, 5.0, 7.0]);
    assert_eq!(p.param("c").unwrap(), [7.0, 8.0, 9.0]);
    // The next run reads the updated `a`.
    let out = p.run(&[("x", &[0.0; 3])]).unwrap();
    assert_eq!(out, vec![vec![7.0, 11.0, 15.0]]);
}

#[test]
fn updates_that_copy_on_every_device() {
    copies_on(&Device::cpu());
    copies_on(&Device::cpu_f32());
    if let Some(d) = gpu() {
        copies_on(&d);
    }
}

/// `update` applies the same updates as `step`, bit for bit, and skips only
/// what no update reads: a loss is skipped, but not when an update reads it.
/// `kernel_times` is a step too, timing one entry per kernel.
fn updates_alone_match_full_steps_on(device: &Device) {
    let n = 1000;
    let g = Graph::new();
    let w = g.param("w", [n]);
    let loss = rosenbrock(w);
    let mut updates = wgrad::Optimizer::adam(1e-2).minimize(loss, &[w]);
    // A second parameter, of another size (so its sum is a pass of its
    // own), whose update reads that sum.
    let u = g.param("u", [n / 2]);
    let u_loss = u.square().sum();
    updates.push((u, u - 1e-4 * u_loss * u));
    let mut programs: Vec<_> = (0..3)
        .map(|_| {
            let mut p = g.compile_with_updates(device, &[loss], &updates).unwrap();
            p.set_param("w", &start(21, n)).unwrap();
            p.set_param("u", &start(22, n / 2)).unwrap();
            p
        })
        .collect();
    for _ in 0..5 {
        programs[0].step(&[]).unwrap();
        programs[1].update(&[]).unwrap();
        let times = programs[2].kernel_times(&[]).unwrap();
        let kernels = if device.is_gpu() {
            programs[2].stats().dispatches
        } else {
            0
        };
        assert_eq!(times.len(), kernels);
        assert!(times.iter().all(|k| k.ms.is_finite() && k.ms >= 0.0));
        // Unwritten timestamps would read back as zeros.
        let total: f64 = times.iter().map(|k| k.ms).sum();
        assert!(kernels == 0 || total > 0.0, "{times:?}");
    }
    for name in ["w", "u"] {
        let a = programs[0].param(name).unwrap();
        for (k, b) in programs.iter().enumerate().skip(1) {
            let b = b.param(name).unwrap();
            assert_eq!(a, b, "{name}, program {k}, on {}", device.describe());
        }
    }
    let (a, b) = (programs[0].run(&[]), programs[1].run(&[]));
    assert_eq!(a.unwrap(), b.unwrap(), "the loss after the steps");
}

#[test]
fn updates_alone_match_full_steps_on_every_device() {
    updates_alone_match_full_steps_on(&Device::cpu());
    updates_alone_match_full_steps_on(&Device::cpu_f32());
    if let Some(gpu) = gpu() {
        updates_alone_match_full_steps_on(&gpu);
    }
}
