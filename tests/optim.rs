//! Optimizers: the textbook formulas by hand, GPU against CPU over several
//! steps, convergence on a convex problem, and a small network's training
//! on every device against the reference.

mod common;
use common::*;
use wgrad::{Device, GpuOptions, Graph, Optimizer, Program};

const W0: [f32; 4] = [1.0, -2.0, 0.5, 3.0];
const T: [f32; 4] = [0.0, 1.0, 0.5, -1.0];

/// L(w) = Σ (w − t)², one program that steps with `opt` and reports the loss.
fn quadratic(device: &Device, opt: Optimizer) -> Program {
    let g = Graph::new();
    let w = g.param("w", [4]);
    let t = g.input("t", [4]);
    let loss = (w - t).square().sum();
    let updates = opt.minimize(loss, &[w]);
    let mut p = g.compile_with_updates(device, &[loss], &updates).unwrap();
    p.set_param("w", &W0).unwrap();
    p
}

fn step(p: &mut Program) {
    p.run(&[("t", &T)]).unwrap();
}

/// The textbook updates, by hand in f64, for `steps` steps.
fn by_hand(opt: Optimizer, steps: usize) -> Vec<f64> {
    let mut w: Vec<f64> = W0.iter().map(|&x| x as f64).collect();
    let t: Vec<f64> = T.iter().map(|&x| x as f64).collect();
    let (mut m, mut v) = (vec![0.0; 4], vec![0.0; 4]);
    for k in 1..=steps {
        for i in 0..4 {
            let g = 2.0 * (w[i] - t[i]);
            match opt {
                Optimizer::Sgd { lr } => w[i] -= lr * g,
                Optimizer::Momentum { lr, mu } => {
                    m[i] = mu * m[i] + g;
                    w[i] -= lr * m[i];
                }
                Optimizer::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                } => {
                    m[i] = beta1 * m[i] + (1.0 - beta1) * g;
                    v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
                    let mh = m[i] / (1.0 - beta1.powi(k as i32));
                    let vh = v[i] / (1.0 - beta2.powi(k as i32));
                    w[i] -= lr * mh / (vh.sqrt() + eps);
                }
            }
        }
    }
    w
}

fn optimizers() -> [Optimizer; 3] {
    [
        Optimizer::Sgd { lr: 0.1 },
        Optimizer::Momentum { lr: 0.05, mu: 0.9 },
        Optimizer::adam(0.1),
    ]
}

#[test]
fn updates_follow_the_textbook_formulas_on_the_cpu() {
    for opt in optimizers() {
        let mut p = quadratic(&Device::cpu(), opt);
        for _ in 0..3 {
            step(&mut p);
        }
        let want = by_hand(opt, 3);
        let got = p.param("w").unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{opt:?}: {got:?} vs {want:?}");
        }
    }
}

#[test]
fn several_gpu_steps_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    for opt in optimizers() {
        let mut on_gpu = quadratic(&gpu, opt);
        let mut on_cpu = quadratic(&Device::cpu(), opt);
        for _ in 0..7 {
            on_gpu.step(&[("t", &T)]).unwrap();
            step(&mut on_cpu);
        }
        let (g, c) = (on_gpu.param("w").unwrap(), on_cpu.param("w").unwrap());
        let (d, i) = worst_diff(&g, &c);
        // Adam's 1 − β₂ᵗ cancels: f32 rounding is amplified ~100x there.
        assert!(d < 1e-4, "{opt:?}: w[{i}] {} vs {}", g[i], c[i]);
    }
}

#[test]
fn a_convex_problem_converges() {
    // Least squares with a well-conditioned random matrix: the minimum is 0.
    let (rows, cols) = (64, 16);
    let mut r = rng(21);
    let a_data: Vec<f32> = sample(&mut r, rows * cols, Domain::Any)
        .iter()
        .map(|&v| v as f32 / 4.0)
        .collect();
    let x_true: Vec<f64> = sample(&mut r, cols, Domain::Any);
    let b_data: Vec<f32> = (0..rows)
        .map(|i| {
            (0..cols)
                .map(|j| a_data[i * cols + j] as f64 * x_true[j])
                .sum::<f64>() as f32
        })
        .collect();
    let mut devices = vec![Device::cpu()];
    devices.extend(gpu());
    for device in &devices {
        for opt in [
            Optimizer::Momentum { lr: 0.5, mu: 0.9 },
            Optimizer::adam(0.05),
        ] {
            let g = Graph::new();
            let a = g.input("a", [rows, cols]);
            let b = g.input("b", [rows, 1]);
            let x = g.param("x", [cols, 1]);
            let loss = (a.matmul(x) - b).square().mean();
            let updates = opt.minimize(loss, &[x]);
            let mut p = g.compile_with_updates(device, &[loss], &updates).unwrap();
            p.set_param("x", &[0.0; 16]).unwrap();
            let feeds: [(&str, &[f32]); 2] = [("a", &a_data), ("b", &b_data)];
            let first = p.run(&feeds).unwrap()[0][0];
            for _ in 0..400 {
                p.step(&feeds).unwrap();
            }
            let last = p.run(&feeds).unwrap()[0][0];
            assert!(
                last < 1e-6 * first.max(1.0),
                "{opt:?} on {}: loss {first} -> {last}",
                device.describe()
            );
        }
    }
}

/// Five SGD steps of a network of two layers (matrix products, biases,
/// relu, softmax cross-entropy) over a batch, on `device`: the loss before
/// each step, and the four parameters after them.
fn train_two_layers(device: &Device) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let (batch, inputs, hidden, classes) = (64, 50, 32, 10);
    let g = Graph::new();
    let x = g.input("x", [batch, inputs]);
    let t = g.input("t", [batch, classes]);
    let params = [
        ("w1", g.param("w1", [inputs, hidden])),
        ("b1", g.param("b1", [hidden])),
        ("w2", g.param("w2", [hidden, classes])),
        ("b2", g.param("b2", [classes])),
    ];
    let [w1, b1, w2, b2] = params.map(|p| p.1);
    let h = (x.matmul(w1) + b1).relu();
    let loss = (h.matmul(w2) + b2).cross_entropy(t);
    let updates = Optimizer::Sgd { lr: 0.5 }.minimize(loss, &[w1, b1, w2, b2]);
    let mut r = rng(22);
    let xs: Vec<f32> = start(23, batch * inputs);
    let ts: Vec<f32> = (0..batch * classes)
        .map(|i| f32::from(i % classes == (i / classes) * 7 % classes))
        .collect();
    let mut p = g.compile_with_updates(device, &[loss], &updates).unwrap();
    for (name, w) in &params {
        let values = sample(&mut r, w.numel(), Domain::Any);
        p.set_param(
            name,
            &values.iter().map(|&v| v as f32 * 0.2).collect::<Vec<_>>(),
        )
        .unwrap();
    }
    let feeds = [("x", xs.as_slice()), ("t", ts.as_slice())];
    let losses = (0..5).map(|_| p.run(&feeds).unwrap().remove(0)).collect();
    let trained = params.iter().map(|(n, _)| p.param(n).unwrap()).collect();
    (losses, trained)
}

#[test]
fn a_two_layer_network_trains_as_the_reference_does_on_every_device() {
    let (losses, trained) = train_two_layers(&Device::cpu());
    assert!(losses[4][0] < losses[0][0], "the loss falls");
    // On the GPU also planned for WebGPU's default 8 bindings per kernel
    // (the weight gradients' fused operands read more: one is stored),
    // and for bindings of 16 KiB as well (tensors in several parts).
    let narrow = |binding: Option<u64>| {
        gpu().map(|_| {
            Device::gpu_with(&GpuOptions {
                max_storage_binding: binding,
                max_storage_buffers: Some(8),
                ..GpuOptions::default()
            })
            .unwrap()
        })
    };
    let gpus = [gpu(), narrow(None), narrow(Some(1 << 14))];
    for device in std::iter::once(Device::cpu_f32()).chain(gpus.into_iter().flatten()) {
        let (got_losses, got) = train_two_layers(&device);
        let what = device.describe();
        assert_close(&format!("{what}: losses"), &got_losses, &losses, 1e-4);
        assert_close(&format!("{what}: parameters"), &got, &trained, 1e-4);
    }
}
