//! Special values, constants and empty tensors: every backend gives the
//! f64 reference's answer, but for the differences the README documents
//! ("Special values"): subnormal numbers (which a GPU may flush to zero)
//! and the sign of a zero.

mod common;
use common::*;
use wgrad::{Device, Graph, Var};

/// Every backend: the reference first, then the fast path (also in chunks
/// of 3) and the GPU.
fn backends() -> Vec<Device> {
    let mut out = vec![
        Device::cpu(),
        Device::cpu_f32(),
        Device::cpu_f32_with(in_chunks(3, 2)),
    ];
    out.extend(gpu());
    out
}

/// Whether an f32 backend's `got` is the reference's `want`, as the README
/// documents: NaN for NaN, the same infinity, and else within `tol` of
/// `max(1, |want|)` (so a zero of either sign for a zero, and a subnormal
/// result, which a GPU may flush to zero, within 2^-126 of it).
fn same(got: f32, want: f32, tol: f32) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= tol * want.abs().max(1.0)
}

/// `outputs` on every backend against the reference, element by element.
fn check(g: &Graph, outputs: &[Var], feeds: &[(&str, &[f32])], inputs: &[Vec<f32>], what: &str) {
    let mut results = Vec::new();
    for device in backends() {
        let mut p = g
            .compile(&device, outputs)
            .unwrap_or_else(|e| panic!("{what} on {}: {e}", device.describe()));
        results.push((device.describe(), p.run(feeds).unwrap()));
    }
    let (_, want) = &results[0];
    for (name, got) in &results[1..] {
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            for i in 0..w.len() {
                let at: Vec<f32> = inputs.iter().map(|v| v[i % v.len()]).collect();
                assert!(
                    same(g[i], w[i], 1e-5),
                    "{what}, output {k}, at {at:?}, on {name}: {} against the reference's {}",
                    g[i],
                    w[i]
                );
            }
        }
    }
}

/// Special values and ordinary ones; no subnormals (a GPU may flush them).
const SPECIALS: [f32; 15] = [
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    -0.5,
    2.0,
    -2.0,
    20.0,
    -20.0,
    100.0,
    -100.0,
];

type Unary = for<'g> fn(Var<'g>) -> Var<'g>;

/// Every unary op of the table, and the binary ops against a constant.
fn unary_ops() -> Vec<(&'static str, Unary)> {
    vec![
        ("neg", |x| -x),
        ("abs", |x| x.abs()),
        ("sign", |x| x.sign()),
        ("exp", |x| x.exp()),
        ("log", |x| x.log()),
        ("sqrt", |x| x.sqrt()),
        ("rsqrt", |x| x.rsqrt()),
        ("recip", |x| x.recip()),
        ("square", |x| x.square()),
        ("sin", |x| x.sin()),
        ("cos", |x| x.cos()),
        ("tanh", |x| x.tanh()),
        ("sigmoid", |x| x.sigmoid()),
        ("relu", |x| x.relu()),
        ("softplus", |x| x.softplus()),
        ("powf(2)", |x| x.powf(2.0)),
        ("powf(3)", |x| x.powf(3.0)),
        ("powf(0.5)", |x| x.powf(0.5)),
        ("powf(-1)", |x| x.powf(-1.0)),
        ("powf(-1.5)", |x| x.powf(-1.5)),
        ("powf(0)", |x| x.powf(0.0)),
        ("detach", |x| x.detach()),
        ("x / 0", |x| x / 0.0),
        ("x / -0", |x| x / -0.0),
        ("0 / x", |x| 0.0 / x),
        ("x * 0", |x| x * 0.0),
        ("-0 * x", |x| -0.0 * x),
        #[allow(clippy::eq_op)] // the point: compilers fold it to 0
        ("x - x", |x| x - x),
        ("x * inf", |x| x * f64::INFINITY),
        ("1^x", |x| x.graph().constant(1.0).pow(x)),
        ("(-2)^x", |x| x.graph().constant(-2.0).pow(x)),
        ("0^x", |x| x.graph().constant(0.0).pow(x)),
        ("x > 0", |x| x.gt(0.0)),
        ("x == x", |x| x.eq(x)),
        ("select(x, 1, 2)", |x| x.select(1.0, 2.0)),
        ("max(x, 0.5)", |x| x.max(0.5)),
        ("min(x, nan)", |x| x.min(f64::NAN)),
    ]
}

#[test]
fn unary_ops_of_special_values_and_their_gradients() {
    for (name, op) in unary_ops() {
        let g = Graph::new();
        let x = g.input("x", [SPECIALS.len()]);
        let y = op(x);
        let dy = g.grad((y * 1.5).sum(), &[x])[0];
        let feeds: &[(&str, &[f32])] = &[("x", &SPECIALS)];
        check(&g, &[y, dy], feeds, &[SPECIALS.to_vec()], name);
    }
}

#[test]
fn every_unary_op_of_a_constant_compiles_and_matches() {
    // Folded at plan time as the reference computes it; non-finite
    // results (log of a negative, 1/0) included, and negative constants
    // that an op prefixes (`-(-1.5)`).
    for c in [-1.5, -0.0, 0.0, 0.5, 2.0, -20.0] {
        for (name, op) in unary_ops() {
            let g = Graph::new();
            let x = g.input("x", [2]);
            let k = op(g.constant(c));
            let y = x * k + k;
            let outputs = [k, y, y.sum(), g.grad(y.sum(), &[x])[0]];
            let what = format!("{name} of the constant {c}");
            check(
                &g,
                &outputs,
                &[("x", &[1.0, -3.0])],
                &[vec![1.0, -3.0]],
                &what,
            );
        }
    }
}

#[test]
fn binary_ops_of_every_pair_of_special_values_and_their_gradients() {
    type Binary = for<'g> fn(Var<'g>, Var<'g>) -> Var<'g>;
    let ops: Vec<(&str, Binary)> = vec![
        ("add", |a, b| a + b),
        ("sub", |a, b| a - b),
        ("mul", |a, b| a * b),
        ("div", |a, b| a / b),
        ("max", |a, b| a.max(b)),
        ("min", |a, b| a.min(b)),
        ("pow", |a, b| a.pow(b)),
        ("lt", |a, b| a.lt(b)),
        ("le", |a, b| a.le(b)),
        ("eq", |a, b| a.eq(b)),
        ("select", |a, b| a.select(b, a)),
    ];
    let n = SPECIALS.len();
    let a: Vec<f32> = (0..n * n).map(|i| SPECIALS[i / n]).collect();
    let b: Vec<f32> = (0..n * n).map(|i| SPECIALS[i % n]).collect();
    for (name, op) in ops {
        let g = Graph::new();
        let (x, y) = (g.input("a", [n * n]), g.input("b", [n * n]));
        let z = op(x, y);
        let d = g.grad((z * 1.5).sum(), &[x, y]);
        let feeds: &[(&str, &[f32])] = &[("a", &a), ("b", &b)];
        check(&g, &[z, d[0], d[1]], feeds, &[a.clone(), b.clone()], name);
    }
}

#[test]
fn reductions_of_special_values() {
    // NaN loses to a number in max and min (IEEE maxNum, as the
    // element-wise ops), and wins in a sum.
    let rows: [[f32; 4]; 6] = [
        [f32::NAN, 1.0, -2.0, 0.5],
        [f32::NAN; 4],
        [f32::INFINITY, 1.0, f32::NEG_INFINITY, 0.0],
        [f32::INFINITY, 1.0, 2.0, 3.0],
        [-0.0, 0.0, -0.0, 0.0],
        [1.0, 1.0, 1.0, 1.0],
    ];
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    let g = Graph::new();
    let x = g.input("x", [6, 4]);
    let mut outputs = Vec::new();
    for axes in [&[1isize][..], &[0], &[0, 1]] {
        outputs.extend([
            x.sum_axes(axes, false),
            x.mean_axes(axes, false),
            x.max_axes(axes, false),
            x.min_axes(axes, false),
            x.logsumexp_axes(axes, false),
        ]);
    }
    let loss = outputs.iter().fold(g.constant(0.0), |acc, v| acc + v.sum());
    outputs.push(g.grad(loss, &[x])[0]);
    check(
        &g,
        &outputs,
        &[("x", &data)],
        std::slice::from_ref(&data),
        "reductions",
    );
}

#[test]
fn empty_tensors_and_axes() {
    // A sum over no elements is 0, a mean NaN (0 / 0); a max, min or
    // logsumexp over none is an error when recorded (tests/errors.rs).
    let g = Graph::new();
    let (x, y) = (g.input("x", [0, 3]), g.input("y", [2, 0]));
    let w = g.input("w", [3, 2]);
    let outputs = [
        x.sum(),
        x.mean(),
        x.sum_axes(&[0], false),
        x.mean_axes(&[0], true),
        x.max_axes(&[1], false),
        x.exp().sum_axes(&[1], false),
        y.matmul(x),
        x.matmul(w),
        x.matmul(w).sum(),
        w.matmul(y).sin(),
        x.pad(0, 1, 2),
        Var::concat(&[x, x.exp()], 0),
        Var::concat(&[w.transpose(), x], 0).sum_axes(&[0], false),
        (x.sum_axes(&[0], true) * w.transpose()).sum(),
        x.transpose().reshape([1, 0, 3]),
    ];
    let loss = outputs.iter().fold(g.constant(0.0), |acc, v| acc + v.sum());
    let mut all = outputs.to_vec();
    all.extend(g.grad(loss, &[x, y, w]));
    let wd: Vec<f32> = (0..6).map(|i| i as f32 - 2.5).collect();
    let feeds: &[(&str, &[f32])] = &[("x", &[]), ("y", &[]), ("w", &wd)];
    check(&g, &all, feeds, std::slice::from_ref(&wd), "empty tensors");
}
