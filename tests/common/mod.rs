//! Shared by the integration tests: the GPU (or a skip), random data, the
//! table of op cases, and comparisons against the CPU reference.
#![allow(dead_code)] // each test binary uses part of this

use rand::{Rng, SeedableRng};
use wgrad::{CpuOptions, Device, Graph, Var};

/// The GPU, or `None` (the caller skips) when there is none, unless
/// `WGRAD_REQUIRE_GPU=1`, when a missing adapter fails the test.
pub fn gpu() -> Option<Device> {
    match Device::gpu() {
        Ok(d) => Some(d),
        Err(e) if std::env::var("WGRAD_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("WGRAD_REQUIRE_GPU=1 but no GPU adapter: {e}")
        }
        Err(e) => {
            eprintln!("skipping: no GPU adapter ({e}); set WGRAD_REQUIRE_GPU=1 to fail instead");
            None
        }
    }
}

/// The fast path's options for chunks of `chunk` elements in every pass
/// (deriving ones too), `chunks_per_task` to a task.
pub fn in_chunks(chunk: usize, chunks_per_task: usize) -> CpuOptions {
    CpuOptions {
        chunk,
        deriving_chunk: chunk,
        chunks_per_task,
        ..CpuOptions::default()
    }
}

pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Where an op's operands are drawn from.
#[derive(Clone, Copy, Debug)]
pub enum Domain {
    /// Uniform in [-2, 2], at least 0.05 from 0.
    Any,
    /// Uniform in [0.5, 2].
    Positive,
}

pub fn sample(rng: &mut impl Rng, n: usize, d: Domain) -> Vec<f64> {
    (0..n)
        .map(|_| match d {
            Domain::Any => {
                let m: f64 = rng.random_range(0.05..2.0);
                if rng.random_bool(0.5) {
                    m
                } else {
                    -m
                }
            }
            Domain::Positive => rng.random_range(0.5..2.0),
        })
        // f32-representable, so the CPU and GPU see the same inputs.
        .map(|x: f64| x as f32 as f64)
        .collect()
}

/// One op (or helper) under test: named operands with shapes and domains,
/// and the function of them.
pub struct Case {
    pub name: &'static str,
    pub inputs: Vec<(&'static str, Vec<usize>, Domain)>,
    pub build: for<'g> fn(&[Var<'g>]) -> Var<'g>,
    /// Reductions and matmul are compared at the looser tolerance.
    pub reduces: bool,
}

fn case(
    name: &'static str,
    inputs: &[(&'static str, &[usize], Domain)],
    reduces: bool,
    build: for<'g> fn(&[Var<'g>]) -> Var<'g>,
) -> Case {
    Case {
        name,
        inputs: inputs
            .iter()
            .map(|(n, s, d)| (*n, s.to_vec(), *d))
            .collect(),
        build,
        reduces,
    }
}

/// Every op of the table, and the helpers built from them, each with
/// shapes that exercise broadcasting and size-1 dimensions.
pub fn cases() -> Vec<Case> {
    use Domain::*;
    let a = |d| [("a", &[3usize, 4][..], d)];
    let ab = |sa: &'static [usize], sb: &'static [usize], da, db| [("a", sa, da), ("b", sb, db)];
    vec![
        case("neg", &a(Any), false, |v| -v[0]),
        case("abs", &a(Any), false, |v| v[0].abs()),
        case("sign", &a(Any), false, |v| v[0].sign() * v[0]),
        case("exp", &a(Any), false, |v| v[0].exp()),
        case("log", &a(Positive), false, |v| v[0].log()),
        case("sqrt", &a(Positive), false, |v| v[0].sqrt()),
        case("rsqrt", &a(Positive), false, |v| v[0].rsqrt()),
        case("recip", &a(Any), false, |v| v[0].recip()),
        case("square", &a(Any), false, |v| v[0].square()),
        case("sin", &a(Any), false, |v| v[0].sin()),
        case("cos", &a(Any), false, |v| v[0].cos()),
        case("tanh", &a(Any), false, |v| v[0].tanh()),
        case("sigmoid", &a(Any), false, |v| v[0].sigmoid()),
        case("relu", &a(Any), false, |v| v[0].relu()),
        case("softplus", &a(Any), false, |v| v[0].softplus()),
        case("powf_int", &a(Any), false, |v| v[0].powf(3.0)),
        case("powf_frac", &a(Positive), false, |v| v[0].powf(-1.5)),
        case("detach", &a(Any), false, |v| v[0].detach() * v[0]),
        case("add_bcast", &ab(&[3, 4], &[4], Any, Any), false, |v| {
            v[0] + v[1]
        }),
        case("sub_bcast", &ab(&[3, 1], &[1, 4], Any, Any), false, |v| {
            v[0] - v[1]
        }),
        case(
            "mul_bcast",
            &ab(&[2, 3, 4], &[3, 1], Any, Any),
            false,
            |v| v[0] * v[1],
        ),
        case("div", &ab(&[3, 4], &[3, 4], Any, Positive), false, |v| {
            v[0] / v[1]
        }),
        case(
            "div_scalar_lhs",
            &ab(&[], &[2, 3], Any, Positive),
            false,
            |v| v[0] / v[1],
        ),
        case("max", &ab(&[3, 4], &[4], Any, Any), false, |v| {
            v[0].max(v[1])
        }),
        case("min", &ab(&[1, 4], &[3, 1], Any, Any), false, |v| {
            v[0].min(v[1])
        }),
        case("pow", &ab(&[3, 4], &[4], Positive, Any), false, |v| {
            v[0].pow(v[1])
        }),
        case("lt", &ab(&[3, 4], &[4], Any, Any), false, |v| {
            v[0].lt(v[1]) * v[0]
        }),
        case("le", &ab(&[3, 4], &[3, 4], Any, Any), false, |v| {
            v[0].le(v[1]) * v[1]
        }),
        case("gt", &ab(&[3, 4], &[4], Any, Any), false, |v| {
            v[0].gt(v[1]) * v[0]
        }),
        case("ge", &ab(&[3, 4], &[3, 4], Any, Any), false, |v| {
            v[0].ge(v[1]) * v[1]
        }),
        case("eq", &ab(&[3, 4], &[3, 4], Any, Any), false, |v| {
            v[0].eq(v[0]) * v[1]
        }),
        case("select", &ab(&[3, 4], &[4], Any, Any), false, |v| {
            v[0].gt(v[1]).select(v[0] * 2.0, v[1].exp())
        }),
        case("sum_all", &[("a", &[2, 3, 4], Any)], true, |v| v[0].sum()),
        case("sum_axis0", &[("a", &[2, 3, 4], Any)], true, |v| {
            v[0].sum_axes(&[0], false)
        }),
        case("sum_axis1_keep", &[("a", &[2, 3, 4], Any)], true, |v| {
            v[0].sum_axes(&[1], true)
        }),
        case("sum_axes02", &[("a", &[2, 3, 4], Any)], true, |v| {
            v[0].sum_axes(&[0, -1], false)
        }),
        case("sum_size1", &[("a", &[3, 1, 2], Any)], true, |v| {
            v[0].sum_axes(&[1], false)
        }),
        case("mean_axis2", &[("a", &[2, 3, 4], Any)], true, |v| {
            v[0].mean_axes(&[2], true)
        }),
        case("mean_all", &[("a", &[2, 3, 4], Any)], true, |v| v[0].mean()),
        case("max_axis1", &[("a", &[2, 3, 4], Any)], true, |v| {
            v[0].max_axes(&[1], false)
        }),
        case("max_all", &[("a", &[2, 3, 4], Any)], true, |v| {
            v[0].max_all()
        }),
        case("min_axes01", &[("a", &[2, 3, 4], Any)], true, |v| {
            v[0].min_axes(&[0, 1], true)
        }),
        case("logsumexp_axis1", &[("a", &[2, 3, 4], Any)], true, |v| {
            v[0].logsumexp_axes(&[1], false)
        }),
        case("logsumexp_all", &[("a", &[2, 3, 4], Any)], true, |v| {
            v[0].logsumexp()
        }),
        case("reshape", &[("a", &[2, 3, 4], Any)], false, |v| {
            v[0].reshape([4, 6]) * v[0].reshape([4, 6]).sin()
        }),
        case("permute", &[("a", &[2, 3, 4], Any)], false, |v| {
            v[0].permute(&[2, 0, 1])
        }),
        case("transpose", &[("a", &[2, 3, 4], Any)], false, |v| {
            v[0].transpose()
        }),
        case("slice", &[("a", &[2, 5, 3], Any)], false, |v| {
            v[0].slice(1, 1, 4)
        }),
        case("pad", &[("a", &[2, 3, 2], Any)], false, |v| {
            v[0].pad(-1, 2, 1).exp()
        }),
        case("concat", &ab(&[2, 3], &[2, 2], Any, Any), false, |v| {
            Var::concat(&[v[0], v[1].exp(), v[0]], 1)
        }),
        case("broadcast_to", &[("a", &[3, 1], Any)], false, |v| {
            v[0].broadcast_to([2, 3, 4])
        }),
        case("matmul", &ab(&[3, 4], &[4, 5], Any, Any), true, |v| {
            v[0].matmul(v[1])
        }),
        case(
            "matmul_batched",
            &ab(&[2, 3, 4], &[4, 2], Any, Any),
            true,
            |v| v[0].matmul(v[1]),
        ),
        case(
            "matmul_bcast",
            &ab(&[2, 1, 3, 4], &[3, 4, 2], Any, Any),
            true,
            |v| v[0].matmul(v[1]),
        ),
        case("mse", &ab(&[3, 4], &[3, 4], Any, Any), true, |v| {
            v[0].mse(v[1])
        }),
        case("softmax", &a(Any), true, |v| v[0].softmax(-1)),
        case("log_softmax", &a(Any), true, |v| v[0].log_softmax(0)),
        case(
            "cross_entropy",
            &ab(&[3, 4], &[3, 4], Any, Positive),
            true,
            |v| v[0].cross_entropy(v[1].softmax(-1)),
        ),
        case("logistic_loss", &ab(&[6], &[6], Any, Any), true, |v| {
            v[0].logistic_loss(v[1].sign())
        }),
    ]
}

/// A case recorded into `g`: its operands, its output, and a scalar loss
/// `Σ y·w` with `w` a random weight input (so every element's gradient differs).
pub fn record<'g>(g: &'g Graph, c: &Case) -> (Vec<Var<'g>>, Var<'g>, Var<'g>) {
    let vars: Vec<Var> = c
        .inputs
        .iter()
        .map(|(n, s, _)| g.input(n, s.as_slice()))
        .collect();
    let y = (c.build)(&vars);
    let w = g.input("w", y.shape());
    let loss = (y * w).sum();
    (vars, y, loss)
}

/// Random data for a case's operands and weights, by name.
pub fn feeds(c: &Case, y_numel: usize, seed: u64) -> Vec<(String, Vec<f64>)> {
    let mut r = rng(seed);
    let mut out: Vec<(String, Vec<f64>)> = c
        .inputs
        .iter()
        .map(|(n, s, d)| (n.to_string(), sample(&mut r, s.iter().product(), *d)))
        .collect();
    out.push(("w".into(), sample(&mut r, y_numel, Domain::Any)));
    out
}

/// The worst relative difference `|got - want| / max(1, |want|)`, and where.
pub fn worst_diff(got: &[f32], want: &[f32]) -> (f64, usize) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let mut worst = (0.0, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g as f64, w as f64);
        // NaN for NaN, and the same infinity, agree.
        let d = if (g.is_nan() && w.is_nan()) || g == w {
            0.0
        } else {
            (g - w).abs() / w.abs().max(1.0)
        };
        if d > worst.0 || d.is_nan() {
            worst = (d, i);
        }
    }
    worst
}

/// Assert that every output of a GPU run matches the CPU reference.
pub fn assert_close(what: &str, got: &[Vec<f32>], want: &[Vec<f32>], tol: f64) {
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let (d, i) = worst_diff(g, w);
        assert!(
            d <= tol,
            "{what}: output {k} differs at element {i}: gpu {} vs cpu {} (relative {d:.2e} > {tol:.0e})",
            g[i],
            w[i]
        );
    }
}

/// f32 views of named f64 data, for `Program::run`.
pub fn as_f32(data: &[(String, Vec<f64>)]) -> Vec<(String, Vec<f32>)> {
    data.iter()
        .map(|(n, d)| (n.clone(), d.iter().map(|&x| x as f32).collect()))
        .collect()
}

pub fn view<T>(data: &[(String, Vec<T>)]) -> Vec<(&str, &[T])> {
    data.iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect()
}

/// `outputs` run on `device`, and `outputs` then `extra` on the f64
/// reference, with `data`.
fn run_on_both(
    device: &Device,
    g: &Graph,
    outputs: &[Var],
    extra: &[Var],
    data: &[(String, Vec<f64>)],
    what: &str,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<String>) {
    let data = as_f32(data);
    let feeds = view(&data);
    let mut p = g
        .compile(device, outputs)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let got = p.run(&feeds).unwrap();
    let mut reference = g
        .compile(&Device::cpu(), &[outputs, extra].concat())
        .unwrap();
    (got, reference.run(&feeds).unwrap(), p.kernels_wgsl())
}

/// Run `outputs` on `device` and on the f64 reference with `data`, and
/// assert they agree to `tol`; the device program's kernels (WGSL; none
/// on the CPU), for a test to look at what ran.
pub fn check_against_reference(
    device: &Device,
    g: &Graph,
    outputs: &[Var],
    data: &[(String, Vec<f64>)],
    tol: f64,
    what: &str,
) -> Vec<String> {
    let (got, want, kernels) = run_on_both(device, g, outputs, &[], data, what);
    assert_close(what, &got, &want, tol);
    kernels
}

/// `f` and its gradients with respect to `wrt`.
pub fn with_gradients<'g>(f: Var<'g>, wrt: &[Var<'g>]) -> Vec<Var<'g>> {
    let mut outputs = vec![f];
    outputs.extend(f.graph().grad(f, wrt));
    outputs
}

/// `check_against_reference` for sums whose terms cancel: output `k`'s
/// difference is measured against `scales[k]`, the sums of its terms'
/// magnitudes (by the reference), not against the result. The f32
/// roundings of the terms and of partial sums scale with the terms: a
/// result far smaller than they are is only known that well.
pub fn check_sums_against_reference(
    device: &Device,
    g: &Graph,
    outputs: &[Var],
    scales: &[Var],
    data: &[(String, Vec<f64>)],
    tol: f64,
    what: &str,
) {
    let (got, mut want, _) = run_on_both(device, g, outputs, scales, data, what);
    let scales = want.split_off(outputs.len());
    for (k, ((g, w), s)) in got.iter().zip(&want).zip(&scales).enumerate() {
        for (i, ((&g, &w), &s)) in g.iter().zip(w).zip(s).enumerate() {
            let d = (g as f64 - w as f64).abs() / (s as f64).max(1.0);
            assert!(
                d <= tol,
                "{what}: output {k} differs at element {i}: {g} vs reference {w} (difference {d:.2e} of the terms' magnitudes {s} > {tol:.0e})"
            );
        }
    }
}

/// R(w) = Σ_{i<n−1} 100(w_{i+1} − w_i²)² + (1 − w_i)², the anchors' Rosenbrock.
pub fn rosenbrock(w: Var<'_>) -> Var<'_> {
    let n = w.numel();
    let (a, b) = (w.slice(0, 0, n - 1), w.slice(0, 1, n));
    (100.0 * (b - a.square()).square() + (1.0 - a).square()).sum()
}

/// `steps` steps of `updates` (of the parameter `w`, from `w0`) on `device`
/// and on the f64 reference: the loss after them (a reduction: 1e-3) and `w`
/// (element-wise: 1e-4) must agree.
pub fn steps_match_reference(
    device: &Device,
    g: &Graph,
    loss: Var,
    updates: &[(Var, Var)],
    w0: &[f32],
    steps: usize,
) {
    let mut results = Vec::new();
    for d in [device.clone(), Device::cpu()] {
        let mut p = g.compile_with_updates(&d, &[loss], updates).unwrap();
        p.set_param("w", w0).unwrap();
        for _ in 0..steps {
            p.step(&[]).unwrap();
        }
        results.push((p.run(&[]).unwrap(), p.param("w").unwrap()));
    }
    let what = device.describe();
    assert_close(&format!("{what}: loss"), &results[0].0, &results[1].0, 1e-3);
    assert_close(
        &format!("{what}: w"),
        &[results[0].1.clone()],
        &[results[1].1.clone()],
        1e-4,
    );
}

/// Random f32 parameter values.
pub fn start(seed: u64, n: usize) -> Vec<f32> {
    sample(&mut rng(seed), n, Domain::Any)
        .iter()
        .map(|&v| v as f32)
        .collect()
}

/// Every case of the op table, its value, loss and gradients, on `device`
/// against the f64 reference (1e-4 element-wise, 1e-3 for reductions).
pub fn every_case_matches_reference(device: &Device) {
    for (k, c) in cases().iter().enumerate() {
        let g = Graph::new();
        let (vars, y, loss) = record(&g, c);
        let mut outputs = vec![y, loss];
        outputs.extend(g.grad(loss, &vars));
        let tol = if c.reduces { 1e-3 } else { 1e-4 };
        check_against_reference(
            device,
            &g,
            &outputs,
            &feeds(c, y.numel(), k as u64),
            tol,
            c.name,
        );
    }
}

/// How many of `kernels` (WGSL) are windows, past the first, of a kernel
/// cut to fit its bindings: they start one of the ranges `starts` (WGSL
/// constants; `WINDOW_STARTS` names them all) past 0.
pub fn windows(kernels: &[String], starts: &[&str]) -> usize {
    kernels
        .iter()
        .filter(|k| {
            k.lines().any(|l| {
                starts.iter().any(|s| l.starts_with(&format!("const {s}:")))
                    && !l.ends_with("= 0u;")
            })
        })
        .count()
}

/// The first element, block row or column, output, fold, tile, term or row
/// of each kind of windowed kernel.
pub const WINDOW_STARTS: [&str; 8] = [
    "START",
    "BLOCK_ROW",
    "BLOCK_COL",
    "FIRST_SLOT",
    "FOLD_START",
    "FIRST_TILE",
    "K_START",
    "ROW_START",
];

/// Whether `got` is the reference's `want` as an f32 backend can give it:
/// NaN for NaN, and a finite value within `tol` of `max(1, |want|)` plus
/// ten times `wobble`, how far the reference moves when the inputs move by
/// a relative 1e-6 (`wobble`: f32 rounds every intermediate value by
/// 6e-8, so a value that depends so strongly on its inputs, as cancelling
/// sums do, is known only that well in f32). Infinite values and values
/// beyond 1e6 are not compared: f32 overflows where f64 does not.
pub fn agrees(got: f32, want: f32, wobble: f32, tol: f64) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    if want.is_infinite() || want.abs() > 1e6 {
        return true;
    }
    let slack = tol * (want.abs() as f64).max(1.0) + 10.0 * (wobble.abs() as f64);
    ((got - want).abs() as f64) <= slack
}

/// The tolerance of output `k` where outputs from `first` on are second
/// derivatives: 1e-3, and 1e-2 for those, which compound f32's roundings
/// (a tanh's 1 − y² near y = ±1 keeps few of its digits, and a second
/// derivative multiplies such factors) where the reference, in f64, does
/// not.
pub fn tolerance(k: usize, first: usize) -> f64 {
    if k < first {
        1e-3
    } else {
        1e-2
    }
}

/// How far each of the reference's outputs `want` (for `data`) moves when
/// every input moves by a relative 1e-6 at random.
pub fn wobble(
    g: &Graph,
    outputs: &[Var],
    data: &[(String, Vec<f32>)],
    want: &[Vec<f32>],
) -> Vec<Vec<f32>> {
    let mut r = rng(7);
    let moved: Vec<(String, Vec<f32>)> = data
        .iter()
        .map(|(n, v)| {
            let v = v.iter().map(|&x| x * (1.0 + r.random_range(-1e-6..1e-6)));
            (n.clone(), v.collect())
        })
        .collect();
    let mut p = g
        .compile(&Device::cpu(), outputs)
        .expect("the reference compiled it");
    let there = p.run(&view(&moved)).expect("the reference ran it");
    want.iter()
        .zip(&there)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x - y).collect())
        .collect()
}
