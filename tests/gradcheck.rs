//! Every op's gradient against central finite differences, in f64 on the CPU
//! reference; then reductions and broadcasting over random shapes.

mod common;
use common::*;
use rand::Rng;
use wgrad::{gradcheck, Graph, Var};

const TOL: f64 = 1e-6;

#[test]
fn every_op_matches_finite_differences() {
    let mut failures = Vec::new();
    for (k, c) in cases().iter().enumerate() {
        if c.name == "detach" {
            continue; // stops the gradient on purpose: see `detach_stops_the_gradient`
        }
        let g = Graph::new();
        let (vars, y, loss) = record(&g, c);
        let data = feeds(c, y.numel(), k as u64);
        let r = gradcheck(&g, loss, &vars, &view(&data), 1e-6).unwrap();
        if r.worst_error > TOL {
            failures.push(format!("{}: {r:?}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "gradients off:\n{}",
        failures.join("\n")
    );
}

/// Random shapes of rank 1 to 4 with size-1 dimensions; each case a
/// `(shape, variant)` for the caller's seeds.
fn random_shape(r: &mut impl rand::Rng) -> Vec<usize> {
    let rank = r.random_range(1..=4);
    (0..rank).map(|_| r.random_range(1..=3)).collect()
}

#[test]
fn reductions_over_every_axis_set_match_finite_differences() {
    let mut r = rng(11);
    for trial in 0..6 {
        let shape = random_shape(&mut r);
        let rank = shape.len();
        for mask in 1..(1u32 << rank) {
            let axes: Vec<isize> = (0..rank as isize)
                .filter(|k| mask & (1 << k) != 0)
                .collect();
            for op in 0..5 {
                for keepdims in [false, true] {
                    let g = Graph::new();
                    let x = g.input("x", shape.as_slice());
                    let y = match op {
                        0 => x.sum_axes(&axes, keepdims),
                        1 => x.mean_axes(&axes, keepdims),
                        2 => x.max_axes(&axes, keepdims),
                        3 => x.min_axes(&axes, keepdims),
                        _ => x.logsumexp_axes(&axes, keepdims),
                    };
                    let w = g.input("w", y.shape());
                    let loss = (y * w).sum();
                    let xs = sample(&mut r, x.numel(), Domain::Any);
                    let ws = sample(&mut r, w.numel(), Domain::Any);
                    let res = gradcheck(&g, loss, &[x], &[("x", &xs), ("w", &ws)], 1e-6).unwrap();
                    assert!(
                        res.worst_error <= TOL,
                        "trial {trial}: op {op} over {axes:?} of {shape:?} (keepdims {keepdims}): {res:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn broadcasting_on_either_side_matches_finite_differences() {
    let mut r = rng(12);
    for trial in 0..40 {
        let full = random_shape(&mut r);
        // The other operand: a suffix of the shape with some dims set to 1.
        let drop = r.random_range(0..=full.len());
        let small: Vec<usize> = full[drop..]
            .iter()
            .map(|&d| if r.random_bool(0.5) { 1 } else { d })
            .collect();
        let (sa, sb) = if r.random_bool(0.5) {
            (full.clone(), small)
        } else {
            (small, full.clone())
        };
        let g = Graph::new();
        let a = g.input("a", sa.as_slice());
        let b = g.input("b", sb.as_slice());
        let y: Var = match trial % 4 {
            0 => a * b,
            1 => a - b,
            2 => a / (b.square() + 1.0),
            _ => a.max(b) + a.min(b) * b,
        };
        let w = g.input("w", y.shape());
        let loss = (y * w).sum();
        let (xa, xb, xw) = (
            sample(&mut r, a.numel(), Domain::Any),
            sample(&mut r, b.numel(), Domain::Any),
            sample(&mut r, w.numel(), Domain::Any),
        );
        let res = gradcheck(
            &g,
            loss,
            &[a, b],
            &[("a", &xa), ("b", &xb), ("w", &xw)],
            1e-6,
        )
        .unwrap();
        assert!(
            res.worst_error <= TOL,
            "trial {trial}: {sa:?} with {sb:?}: {res:?}"
        );
    }
}

#[test]
fn second_derivatives_match_finite_differences() {
    // grad of (Σ ∇loss · w2), checked against finite differences of the first gradient.
    let wanted = [
        "mul_bcast",
        "div",
        "exp",
        "log",
        "tanh",
        "sigmoid",
        "matmul",
        "sum_axis1_keep",
        "max_axis1",
        "max",
    ];
    let all = cases();
    for name in wanted {
        let c = all.iter().find(|c| c.name == name).expect("case exists");
        let g = Graph::new();
        let (vars, y, loss) = record(&g, c);
        let grads = g.grad(loss, &vars);
        let mut loss2 = g.constant(0.0);
        for (k, gr) in grads.iter().enumerate() {
            let w2 = g.input(&format!("w2_{k}"), gr.shape());
            loss2 = loss2 + (*gr * w2).sum();
        }
        let mut data = feeds(c, y.numel(), 99);
        let mut r = rng(5);
        for (k, v) in vars.iter().enumerate() {
            data.push((format!("w2_{k}"), sample(&mut r, v.numel(), Domain::Any)));
        }
        let res = gradcheck(&g, loss2, &vars, &view(&data), 1e-6).unwrap();
        assert!(
            res.worst_error <= 1e-5,
            "{name}: second derivative off: {res:?}"
        );
    }
}

#[test]
fn max_splits_the_gradient_at_ties() {
    // d/dx max(x, y) at x = y is 1/2, as in PyTorch and JAX.
    let g = Graph::new();
    let (x, y) = (g.input("x", []), g.input("y", []));
    let d = g.grad(x.max(y), &[x, y]);
    let out = g.eval_f64(&d, &[("x", &[3.0]), ("y", &[3.0])]).unwrap();
    assert_eq!(out, vec![vec![0.5], vec![0.5]]);
    // A max over axes splits between the tied maxima: [1, 3, 3] → [0, 1/2, 1/2].
    let v = g.input("v", [3]);
    let dv = g.grad(v.max_all(), &[v]);
    let out = g.eval_f64(&dv, &[("v", &[1.0, 3.0, 3.0])]).unwrap();
    assert_eq!(out, vec![vec![0.0, 0.5, 0.5]]);
}

#[test]
fn detach_stops_the_gradient() {
    // d/dx (detach(x) · x) = x: only the second factor is differentiated.
    let g = Graph::new();
    let x = g.input("x", [2]);
    let d = g.grad((x.detach() * x).sum(), &[x]);
    let out = g.eval_f64(&d, &[("x", &[1.5, -2.0])]).unwrap();
    assert_eq!(out, vec![vec![1.5, -2.0]]);
}

/// `y` at `data` with every variable `vars[k]` moved by `h · tangents[k]`.
fn moved(
    g: &Graph,
    y: Var,
    data: &[(String, Vec<f64>)],
    tangents: &[(String, Vec<f64>)],
    h: f64,
) -> Vec<f64> {
    let shifted: Vec<(String, Vec<f64>)> = (data.iter())
        .map(
            |(n, d)| match tangents.iter().find(|(t, _)| *t == format!("t_{n}")) {
                Some((_, v)) => (n.clone(), d.iter().zip(v).map(|(x, v)| x + h * v).collect()),
                None => (n.clone(), d.clone()),
            },
        )
        .collect();
    g.eval_f64(&[y], &view(&shifted)).unwrap().remove(0)
}

#[test]
fn every_ops_jvp_matches_finite_differences() {
    // J·v of each op's output (any shape) along random tangents of all its
    // operands at once, against (y(x + hv) − y(x − hv)) / 2h.
    let mut failures = Vec::new();
    for (k, c) in cases().iter().enumerate() {
        if c.name == "detach" {
            continue; // no derivative on purpose
        }
        let g = Graph::new();
        let (vars, y, _) = record(&g, c);
        let tangents: Vec<Var> = (c.inputs.iter())
            .map(|(n, s, _)| g.input(&format!("t_{n}"), s.as_slice()))
            .collect();
        let jv = g.jvp(y, &vars, &tangents);
        let data = feeds(c, y.numel(), k as u64);
        let mut r = rng(100 + k as u64);
        let tv: Vec<(String, Vec<f64>)> = (c.inputs.iter())
            .map(|(n, s, _)| {
                (
                    format!("t_{n}"),
                    sample(&mut r, s.iter().product(), Domain::Any),
                )
            })
            .collect();
        let all = [data.clone(), tv.clone()].concat();
        let analytic = g.eval_f64(&[jv], &view(&all)).unwrap().remove(0);
        let h = 1e-6;
        let (up, down) = (moved(&g, y, &data, &tv, h), moved(&g, y, &data, &tv, -h));
        for (e, a) in analytic.iter().enumerate() {
            let numeric = (up[e] - down[e]) / (2.0 * h);
            let err = (a - numeric).abs() / numeric.abs().max(1.0);
            if err > 1e-5 || err.is_nan() {
                failures.push(format!("{}[{e}]: jvp {a} vs {numeric}", c.name));
                break;
            }
        }
    }
    assert!(failures.is_empty(), "jvps off:\n{}", failures.join("\n"));
}

#[test]
fn forward_over_reverse_gives_the_hessian_vector_product() {
    // H·v two ways: the jvp of the gradient, and the gradient of ∇f·v;
    // the same numbers in f64, and on every device against the reference.
    let g = Graph::new();
    let (x, v) = (g.input("x", [3, 5]), g.input("v", [3, 5]));
    let f = (x.sin().matmul(x.transpose()).tanh()).sum() + x.square().logsumexp();
    let grad = g.grad(f, &[x])[0];
    let forward = g.jvp(grad, &[x], &[v]);
    let reverse = g.grad((grad * v).sum(), &[x])[0];
    let mut r = rng(7);
    let data = vec![
        ("x".to_string(), sample(&mut r, 15, Domain::Any)),
        ("v".to_string(), sample(&mut r, 15, Domain::Any)),
    ];
    let out = g.eval_f64(&[forward, reverse], &view(&data)).unwrap();
    for (a, b) in out[0].iter().zip(&out[1]) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
    }
    let devices = [wgrad::Device::cpu_f32()].into_iter().chain(gpu());
    for device in devices {
        check_against_reference(&device, &g, &[forward], &data, 1e-4, "hvp");
    }
}

#[test]
fn jvp_refuses_tangents_of_other_shapes() {
    let g = Graph::new();
    let x = g.input("x", [3]);
    let err = g.try_jvp(x.sin(), &[x], &[g.input("v", [4])]).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("jvp") && text.contains("[3]") && text.contains("[4]"),
        "{text}"
    );
    assert!(
        text.contains("gradcheck.rs"),
        "names the caller's line: {text}"
    );
    let err = g.try_jvp(x.sin(), &[x], &[]).unwrap_err().to_string();
    assert!(err.contains("one tangent per variable"), "{err}");
}
