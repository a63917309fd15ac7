//! Chains of dependent reductions, as second-order methods of
//! matrix-vector models record them, against the f64 reference on every
//! backend: the row sums X·w, the column sums Xᵀz of a row sum z, the row
//! sums of X against those column sums, and a gradient penalty
//! L = Σ tanh(X·w) + ‖∂/∂w Σ tanh(X·w)‖² with its gradients.

mod common;
use common::*;
use wgrad::{Device, GpuOptions, Graph, Var};

/// Every device the chains run on, for X of `numel` elements: the fast
/// path (also in chunks that cut rows), and the GPU as opened and under
/// forced limits (no subgroups, no device fences, bindings of a quarter of
/// X, 4 bindings per kernel).
fn devices(numel: usize) -> Vec<(String, Device)> {
    let quarter = (numel as u64).div_ceil(4) * 4;
    let mut out = vec![
        ("fast path".to_string(), Device::cpu_f32()),
        (
            "fast path in chunks of 5".to_string(),
            Device::cpu_f32_with(in_chunks(5, 2)),
        ),
    ];
    if let Some(gpu) = gpu() {
        out.push(("gpu".into(), gpu));
        let forced = [
            (
                "gpu without subgroups",
                GpuOptions {
                    no_subgroups: true,
                    ..Default::default()
                },
            ),
            (
                "gpu without device fences",
                GpuOptions {
                    no_device_fences: true,
                    ..Default::default()
                },
            ),
            (
                "gpu with bindings of a quarter of X",
                GpuOptions {
                    max_storage_binding: Some(quarter),
                    ..Default::default()
                },
            ),
            (
                "gpu with 4 bindings per kernel",
                GpuOptions {
                    max_storage_buffers: Some(4),
                    ..Default::default()
                },
            ),
        ];
        for (name, options) in forced {
            out.push((name.into(), Device::gpu_with(&options).unwrap()));
        }
    }
    out
}

fn data(m: usize, n: usize, seed: u64) -> Vec<(String, Vec<f64>)> {
    let mut r = rng(seed);
    vec![
        ("x".into(), sample(&mut r, m * n, Domain::Any)),
        ("w".into(), sample(&mut r, n, Domain::Any)),
    ]
}

/// The sums compared against the sums of their terms' magnitudes, which
/// bound their f32 roundings (terms cancel in X·w).
fn check(g: &Graph, outputs: &[Var], scales: &[Var], m: usize, n: usize, what: &str) {
    for (name, device) in devices(m * n) {
        let what = format!("{what} at {m}x{n} on the {name}");
        check_sums_against_reference(
            &device,
            g,
            outputs,
            scales,
            &data(m, n, (m * n) as u64),
            1e-4,
            &what,
        );
    }
}

#[test]
fn row_then_column_then_row_sums() {
    for (m, n) in [(6, 4), (64, 32), (1000, 300)] {
        let g = Graph::new();
        let (x, w) = (g.input("x", [m, n]), g.input("w", [n]));
        let z = (x * w).sum_axes(&[1], false);
        let c = (x * z.reshape([m, 1])).sum_axes(&[0], false);
        let z2 = (x * c).sum_axes(&[1], false);
        // |X|·|w|, |X|ᵀ(|X|·|w|), |X|·that: the terms' magnitudes.
        let (ax, aw) = (x.abs(), w.abs());
        let sz = (ax * aw).sum_axes(&[1], false);
        let sc = (ax * sz.reshape([m, 1])).sum_axes(&[0], false);
        let sz2 = (ax * sc).sum_axes(&[1], false);
        check(&g, &[z, c, z2], &[sz, sc, sz2], m, n, "X·w, Xᵀz, X·c");
    }
}

#[test]
fn a_gradient_penalty_and_its_gradients() {
    for (m, n) in [(6, 4), (64, 32), (1000, 300)] {
        let g = Graph::new();
        let (x, w) = (g.input("x", [m, n]), g.input("w", [n]));
        let f = (x * w).sum_axes(&[1], false).tanh().sum();
        let dw = g.grad(f, &[w])[0];
        let loss = f + dw.square().sum();
        let d = g.grad(loss, &[x, w]);
        // Bounds on each output's terms, from |X| and |w| (tanh' ≤ 1,
        // |tanh''| ≤ 0.77 < 1): products of the same shapes.
        let (ax, aw) = (x.abs(), w.abs());
        let rows = (ax * aw).sum_axes(&[1], true);
        let cols = (ax * rows).sum_axes(&[0], false);
        let scale_loss = (m as f64) + cols.square().sum();
        let scale_dx = (rows + 1.0) * (cols + 1.0) * (cols.sum() + 1.0);
        let scale_dw = (ax * rows * (cols.sum() + 1.0) + ax).sum_axes(&[0], false) + cols;
        check(
            &g,
            &[loss, d[0], d[1]],
            &[scale_loss, scale_dx, scale_dw],
            m,
            n,
            "the gradient penalty",
        );
    }
}
