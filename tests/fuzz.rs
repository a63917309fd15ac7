//! A seeded fuzzer of the recording API: random sequences of ops through
//! the `try_` functions, with random and invalid arguments (shapes that do
//! not broadcast, axes out of range, pads and broadcasts too large to
//! count, operands of another graph, empty axes and zero-size tensors),
//! derivatives of what was built (gradients, gradients of gradients,
//! Jacobian-vector products), compiled and run on every backend. Nothing
//! may panic; an error must be one a user can act on (never a planner
//! bug, `Error::Plan`, or a shader naga refuses); and every backend must
//! agree with the f64 reference.
//!
//! CI runs 120 cases. `WGRAD_FUZZ_CASES=N` runs N from `WGRAD_FUZZ_SEED`
//! (default 0); a failure names its seed. `WGRAD_FUZZ_GPU=0` leaves the
//! GPU out (many more cases an hour).

mod common;
use common::*;
use rand::Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};
use wgrad::{Device, Error, GpuOptions, Graph, Var};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Fuzz<'g, R: Rng> {
    g: &'g Graph,
    /// A graph whose nodes are never valid operands here.
    foreign: Var<'g>,
    r: R,
    pool: Vec<Var<'g>>,
    inputs: Vec<Var<'g>>,
}

impl<'g, R: Rng> Fuzz<'g, R> {
    /// A dimension: mostly small, sometimes 0, rarely vast.
    fn dim(&mut self) -> usize {
        match self.r.random_range(0..40) {
            0..=3 => 0,
            4 => 1 << self.r.random_range(30..63),
            _ => self.r.random_range(1..=4),
        }
    }

    fn shape(&mut self) -> Vec<usize> {
        let rank = self.r.random_range(0..=4);
        (0..rank).map(|_| self.dim()).collect()
    }

    fn axis(&mut self, rank: usize) -> isize {
        let r = rank as i64;
        self.r.random_range(-r - 1..=r) as isize
    }

    fn axes(&mut self, rank: usize) -> Vec<isize> {
        let n = self.r.random_range(0..=rank.min(3) + 1);
        (0..n).map(|_| self.axis(rank)).collect()
    }

    /// An operand: mostly from the pool, sometimes of another graph.
    fn pick(&mut self) -> Var<'g> {
        if self.r.random_range(0..50) == 0 {
            return self.foreign;
        }
        let k = self.r.random_range(0..self.pool.len());
        self.pool[k]
    }

    /// One op with random arguments; its result joins the pool where it
    /// is recorded, and an error must say something.
    fn step(&mut self) {
        let a = self.pick();
        let s = a.shape();
        let rank = s.rank();
        let made: wgrad::Result<Var<'g>> = match self.r.random_range(0..30) {
            0 => {
                let shape = self.shape();
                let name = format!("x{}", self.inputs.len());
                let v = self.g.try_input(&name, shape);
                if let Ok(v) = v {
                    self.inputs.push(v);
                }
                v
            }
            1 => Ok(self.g.constant(self.r.random_range(-3.0..3.0))),
            2 => Ok(match self.r.random_range(0..8) {
                0 => a.tanh(),
                1 => a.sigmoid(),
                2 => a.sin(),
                3 => -a,
                4 => a.softplus(),
                5 => a.abs(),
                6 => a.relu(),
                _ => a.exp(),
            }),
            3 => Ok(match self.r.random_range(0..5) {
                0 => (a.square() + 1.0).log(),
                1 => (a.square() + 0.5).sqrt(),
                2 => (a.square() + 1.0).recip(),
                3 => a.cos(),
                _ => a.powf(2.0),
            }),
            4..=8 => {
                let b = self.pick();
                match self.r.random_range(0..8) {
                    0 => a.try_add(b),
                    1 => a.try_sub(b),
                    2 => a.try_mul(b),
                    3 => a.try_div(b.square() + 1.0),
                    4 => a.try_max(b),
                    5 => a.try_min(b),
                    6 => a.try_gt(b),
                    _ => a.try_add(2.5),
                }
            }
            9 => {
                let (b, c) = (self.pick(), self.pick());
                a.try_select(b, c)
            }
            10 => {
                let mut d = self.shape();
                if self.r.random_bool(0.5) {
                    d.extend(&s.0);
                }
                a.try_broadcast_to(d)
            }
            11 => {
                let d = if self.r.random_bool(0.6) && s.numel() > 0 {
                    let n = s.numel();
                    let k = (1..=n.min(16))
                        .rev()
                        .find(|&k| n.is_multiple_of(k))
                        .unwrap_or(1);
                    vec![n / k, k]
                } else {
                    self.shape()
                };
                a.try_reshape(d)
            }
            12 => {
                let mut perm: Vec<usize> = (0..rank).collect();
                for k in (1..rank).rev() {
                    perm.swap(k, self.r.random_range(0..=k));
                }
                if self.r.random_range(0..5) == 0 {
                    perm.push(0);
                }
                a.try_permute(&perm)
            }
            13 => a.try_transpose(),
            14 => {
                let ax = self.axis(rank);
                let (start, len) = (self.r.random_range(0..=3), self.r.random_range(0..=3));
                a.try_slice(ax, start, start + len)
            }
            15 => {
                let ax = self.axis(rank);
                let big = |f: &mut Self| match f.r.random_range(0..20) {
                    0 => usize::MAX - f.r.random_range(0..3),
                    1 => 1 << f.r.random_range(40..63),
                    _ => f.r.random_range(0..=2),
                };
                let (before, after) = (big(self), big(self));
                a.try_pad(ax, before, after)
            }
            16 => {
                let n = self.r.random_range(0..=3);
                let parts: Vec<Var<'g>> = (0..n).map(|_| self.pick()).collect();
                let ax = self.axis(rank);
                Var::try_concat(&parts, ax)
            }
            17..=21 => {
                let axes = self.axes(rank);
                let keep = self.r.random_bool(0.5);
                match self.r.random_range(0..5) {
                    0 => a.try_sum_axes(&axes, keep),
                    1 => a.try_mean_axes(&axes, keep),
                    2 => a.try_max_axes(&axes, keep),
                    3 => a.try_min_axes(&axes, keep),
                    _ => a.try_logsumexp_axes(&axes, keep),
                }
            }
            22 | 23 => {
                let b = self.pick();
                // A matrix-vector product as often as a random one.
                let b = if self.r.random_bool(0.5) && rank >= 2 {
                    a.try_mean_axes(&[-2], true)
                        .and_then(|v| v.try_transpose())
                        .unwrap_or(b)
                } else {
                    b
                };
                a.try_matmul(b)
            }
            24 => a.try_softmax(self.axis(rank)),
            25 => a.try_log_softmax(self.axis(rank)),
            26 => {
                let b = self.pick();
                a.try_cross_entropy(b)
            }
            27 => {
                let b = self.pick();
                a.try_mse(b)
            }
            _ => {
                // A chain of row, then column, then row reductions.
                let z = a.try_sum_axes(&[-1], true);
                let c = z.and_then(|z| a.try_mul(z)?.try_sum_axes(&[0], true));
                c.and_then(|c| a.try_mul(c)?.try_sum_axes(&[-1], false))
            }
        };
        match made {
            Ok(v) => self.pool.push(v),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

/// The inputs' data of a case, by name.
type Data = Vec<(String, Vec<f32>)>;
/// A run's outputs.
type Outputs = Vec<Vec<f32>>;

/// The outputs of case `seed` recorded in `g`, with the inputs' data
/// (`None` where they are too large to feed).
fn case<'g>(g: &'g Graph, foreign: Var<'g>, seed: u64) -> (Vec<Var<'g>>, Option<Data>, usize) {
    let mut f = Fuzz {
        g,
        foreign,
        r: rng(seed),
        pool: Vec::new(),
        inputs: Vec::new(),
    };
    let x = g.input("x", [3, 4]);
    f.inputs.push(x);
    f.pool.push(x);
    let steps = f.r.random_range(1..=14);
    for _ in 0..steps {
        f.step();
    }
    // Outputs: a few values, then derivatives of a loss built from them,
    // second derivatives from `second` on.
    let mut outputs: Vec<Var<'g>> = (0..f.r.random_range(1..=3)).map(|_| f.pick()).collect();
    let mut second = usize::MAX;
    let loss = f.pick().try_sum_axes(&[], false).map(|v| v.sum());
    if let Ok(loss) = loss {
        let wrt = f.inputs.clone();
        let kind = f.r.random_range(0..4);
        let grads = g.try_grad(loss, &wrt);
        if let Ok(grads) = grads {
            outputs.push(loss);
            second = outputs.len() + if kind == 0 { grads.len() } else { 0 };
            match kind {
                0 => outputs.extend(&grads),
                1 => {
                    // A gradient penalty: its gradients are second order.
                    let penalty = grads.iter().fold(loss, |acc, d| acc + d.square().sum());
                    if let Ok(d2) = g.try_grad(penalty, &wrt) {
                        outputs.extend(d2);
                    }
                }
                2 => {
                    // A Hessian-vector product along the inputs themselves.
                    let hv = g.try_jvp(grads[0], &wrt, &wrt);
                    outputs.extend(hv);
                }
                _ => {}
            }
        }
    }
    // A value of another graph is never an output (only its own leaves
    // are fed), and it may come before the derivatives.
    let foreign_values = outputs
        .iter()
        .filter(|v| !std::ptr::eq(v.graph(), g))
        .count();
    let second = second.saturating_sub(foreign_values);
    let outputs: Vec<Var<'g>> = outputs
        .into_iter()
        .filter(|v| std::ptr::eq(v.graph(), g))
        .collect();
    // Inputs too large to feed are only compiled (and must be refused).
    let total: usize = f
        .inputs
        .iter()
        .map(|v| v.numel())
        .fold(0, usize::saturating_add);
    if total > 1 << 20 {
        return (outputs, None, second);
    }
    let mut r = rng(seed ^ 0xf00d);
    let data = f
        .inputs
        .iter()
        .map(|v| {
            let name = match &g.nodes()[v.id().index()].op {
                wgrad::ops::Op::Input(n) => n.clone(),
                _ => unreachable!("inputs"),
            };
            let data = sample(&mut r, v.numel(), Domain::Any);
            (name, data.iter().map(|&x| x as f32).collect())
        })
        .collect();
    (outputs, Some(data), second)
}

/// How a device handled a case: its outputs, or an error it may give.
enum Outcome {
    Ran(Outputs),
    /// Refused as too large for the machine or the device's limits.
    Refused,
}

/// Compile, and run where there is data; a panic or an error that is a
/// bug fails the test.
fn attempt(
    device: &Device,
    g: &Graph,
    outputs: &[Var],
    data: Option<&Data>,
    what: &str,
) -> Outcome {
    let run = catch_unwind(AssertUnwindSafe(|| {
        let mut p = g.compile(device, outputs)?;
        match data {
            Some(data) => p.run(&view(data)),
            None => Ok(Vec::new()),
        }
    }));
    match run {
        Ok(Ok(out)) => Outcome::Ran(out),
        Ok(Err(Error::TooLarge(_) | Error::OutOfMemory { .. })) => Outcome::Refused,
        Ok(Err(e)) => panic!("{what}: {e}\n{g:?}"),
        Err(_) => panic!("{what}: panicked\n{g:?}"),
    }
}

/// The reference's outputs for `data`, and how far each moves for inputs
/// moved by a relative 1e-6 (`common::agrees`); `None` where it refuses
/// the case.
fn reference(
    g: &Graph,
    outputs: &[Var],
    data: Option<&Data>,
    what: &str,
) -> Option<(Outputs, Outputs)> {
    let Outcome::Ran(want) = attempt(&Device::cpu(), g, outputs, data, what) else {
        return None;
    };
    let wobble = match data {
        Some(data) => wobble(g, outputs, data, &want),
        None => Vec::new(),
    };
    Some((want, wobble))
}

#[test]
fn random_op_sequences_never_panic_and_agree_with_the_reference() {
    let cases = env("WGRAD_FUZZ_CASES", 120);
    let first = env("WGRAD_FUZZ_SEED", 0);
    let mut devices = vec![
        ("fast path", Device::cpu_f32()),
        (
            "fast path in chunks of 3",
            Device::cpu_f32_with(in_chunks(3, 2)),
        ),
    ];
    if env("WGRAD_FUZZ_GPU", 1) == 1 {
        if let Some(gpu) = gpu() {
            devices.push(("gpu", gpu));
            let small = GpuOptions {
                max_storage_binding: Some(64),
                max_storage_buffers: Some(6),
                ..Default::default()
            };
            devices.push((
                "gpu with bindings of 16 floats",
                Device::gpu_with(&small).unwrap(),
            ));
        }
    }
    let mut ran = 0;
    for seed in first..first + cases {
        let (g, other) = (Graph::new(), Graph::new());
        let foreign = other.input("elsewhere", [3, 4]);
        let (outputs, data, second) = case(&g, foreign, seed);
        if outputs.is_empty() {
            continue;
        }
        let what = |name: &str| {
            format!("seed {seed} (WGRAD_FUZZ_SEED={seed} WGRAD_FUZZ_CASES=1) on the {name}")
        };
        let data = data.as_ref();
        let Some((want, wobble)) = reference(&g, &outputs, data, &what("reference")) else {
            continue;
        };
        ran += 1;
        for (name, device) in &devices {
            let Outcome::Ran(got) = attempt(device, &g, &outputs, data, &what(name)) else {
                continue;
            };
            for (k, ((a, b), w)) in got.iter().zip(&want).zip(&wobble).enumerate() {
                assert_eq!(a.len(), b.len());
                let tol = tolerance(k, second);
                if let Some(i) = (0..a.len()).find(|&i| !agrees(a[i], b[i], w[i], tol)) {
                    panic!(
                        "{}: output {k} element {i}: {} against the reference's {}\n{g:?}",
                        what(name),
                        a[i],
                        b[i]
                    );
                }
            }
        }
    }
    eprintln!("{ran} of {cases} cases ran on the reference");
}
