//! Random well-shaped graphs, GPU against the CPU reference on the value and
//! every gradient: element-wise, layout and reduction ops, matrix products
//! and matrix-vector products, chains of dependent row and column
//! reductions, empty axes, and second-order outputs (the gradients of a
//! gradient penalty, Hessian-vector products).
//!
//! CI runs 300 cases. `WGRAD_PROPTEST_CASES=N` runs N, and
//! `WGRAD_PROPTEST_SEED=S` starts at seed S; a failing case prints its seed
//! and its graph, so `WGRAD_PROPTEST_SEED=S WGRAD_PROPTEST_CASES=1` replays it.

mod common;
use common::*;
use rand::Rng;
use wgrad::{CpuOptions, Device, Error, GpuOptions, Graph, Var};

const DEPTH: usize = 6;

/// The inputs' data of a case, by name.
type Data = Vec<(String, Vec<f32>)>;
/// Keep tensors small: every dimension at most this, rank at most 6.
const MAX_DIM: usize = 4;
const MAX_RANK: usize = 6;

struct Gen<'g, R: Rng> {
    g: &'g Graph,
    r: R,
    inputs: Vec<Var<'g>>,
}

impl<'g, R: Rng> Gen<'g, R> {
    /// A shape of rank 0 to 3; one graph in ten or so has an empty axis.
    fn shape(&mut self) -> Vec<usize> {
        let rank = self.r.random_range(0..=3);
        (0..rank)
            .map(|_| match self.r.random_range(0..30) {
                0 => 0,
                _ => self.r.random_range(1..=MAX_DIM),
            })
            .collect()
    }

    fn expr(&mut self, depth: usize) -> Var<'g> {
        if depth == 0 || self.r.random_bool(0.15) {
            let k = self.r.random_range(0..self.inputs.len());
            return self.inputs[k];
        }
        let a = self.expr(depth - 1);
        match self.r.random_range(0..12) {
            0 | 1 => self.unary(a),
            2..=4 => {
                let b = self.expr(depth - 1);
                self.binary(a, b)
            }
            5 | 6 => self.reduce(a),
            7 | 8 => self.layout(a),
            9 => self.matmul(a),
            10 => self.matvec(a),
            _ => self.chain(a),
        }
    }

    /// `a` ([..., m, k]) times a vector of k: a matrix-vector product,
    /// the vector made from `a` itself (its mean over the rows).
    fn matvec(&mut self, a: Var<'g>) -> Var<'g> {
        if a.shape().rank() < 2 {
            return a;
        }
        let v = a.mean_axes(&[-2], true).transpose().sin();
        a.matmul(v)
    }

    /// Dependent reductions of one tensor, as second-order methods of a
    /// matrix-vector model record them: row sums z = a·1, column sums
    /// c = aᵀ·sin(z/4), row sums again a·c. (A tanh of such sums would
    /// saturate, and its gradient 1 − tanh² keep few digits in f32.)
    fn chain(&mut self, a: Var<'g>) -> Var<'g> {
        if a.shape().rank() < 2 {
            return a;
        }
        let z = a.sum_axes(&[-1], true);
        let c = (a * (z * 0.25).sin()).sum_axes(&[-2], true);
        (a * c).sum_axes(&[-1], self.r.random_bool(0.5))
    }

    /// Unary ops composed so that every value stays in a safe domain.
    fn unary(&mut self, a: Var<'g>) -> Var<'g> {
        match self.r.random_range(0..11) {
            0 => a.tanh(),
            1 => a.sigmoid(),
            2 => a.sin(),
            3 => a.cos(),
            4 => -a,
            5 => a.softplus(),
            6 => a.tanh().square(),
            7 => a.tanh().exp(),
            8 => (a.sigmoid() + 0.5).log(),
            9 => (a.softplus() + 0.1).sqrt(),
            _ => a.relu() + a.abs() * 0.5,
        }
    }

    fn binary(&mut self, a: Var<'g>, b: Var<'g>) -> Var<'g> {
        // Make the operands broadcast: a reduction to a scalar always does.
        let b = if wgrad::Shape::broadcast(&a.shape(), &b.shape()).is_some() {
            b
        } else {
            b.mean()
        };
        let (a, b) = if self.r.random_bool(0.5) {
            (a, b)
        } else {
            (b, a)
        };
        match self.r.random_range(0..7) {
            0 => a + b,
            1 => a - b,
            2 => a * b,
            3 => a / (b.square() + 1.0),
            4 => a.max(b),
            5 => a.min(b),
            _ => (a.abs() + 0.5).pow(b.tanh()),
        }
    }

    fn reduce(&mut self, a: Var<'g>) -> Var<'g> {
        let rank = a.shape().rank();
        if rank == 0 {
            return a;
        }
        let axes: Vec<isize> = (0..rank as isize)
            .filter(|_| self.r.random_bool(0.5))
            .collect();
        let axes = if axes.is_empty() { vec![0] } else { axes };
        let keep = self.r.random_bool(0.5);
        // A max, min or logsumexp over an empty axis is refused: a sum then.
        let folded = match self.r.random_range(0..5) {
            0 => a.try_sum_axes(&axes, keep),
            1 => a.try_mean_axes(&axes, keep),
            2 => a.try_max_axes(&axes, keep),
            3 => a.try_min_axes(&axes, keep),
            _ => a.try_logsumexp_axes(&axes, keep),
        };
        folded.unwrap_or_else(|_| a.sum_axes(&axes, keep))
    }

    fn layout(&mut self, a: Var<'g>) -> Var<'g> {
        let s = a.shape();
        let rank = s.rank();
        match self.r.random_range(0..6) {
            0 if rank >= 2 => {
                let mut perm: Vec<usize> = (0..rank).collect();
                for k in (1..rank).rev() {
                    perm.swap(k, self.r.random_range(0..=k));
                }
                a.permute(&perm)
            }
            1 if rank < MAX_RANK => {
                // Split or add a unit dimension, or flatten.
                if self.r.random_bool(0.5) {
                    a.reshape([s.numel()])
                } else {
                    let mut d = s.0.clone();
                    d.insert(self.r.random_range(0..=rank), 1);
                    a.reshape(d)
                }
            }
            2 if rank >= 1 && s.0.iter().all(|&d| d > 0) => {
                let ax = self.r.random_range(0..rank);
                let n = s.0[ax];
                let start = self.r.random_range(0..n);
                let end = self.r.random_range(start + 1..=n);
                a.slice(ax as isize, start, end)
            }
            3 if rank >= 1 => {
                let ax = self.r.random_range(0..rank);
                let (before, after) = (self.r.random_range(0..=2), self.r.random_range(0..=2));
                a.pad(ax as isize, before, after)
            }
            4 if rank >= 1 => {
                let ax = self.r.random_range(0..rank) as isize;
                Var::concat(&[a, a.sin()], ax)
            }
            _ if rank < MAX_RANK => {
                let mut d = vec![self.r.random_range(1..=3)];
                d.extend(&s.0);
                a.broadcast_to(d)
            }
            _ => a,
        }
    }

    fn matmul(&mut self, a: Var<'g>) -> Var<'g> {
        if a.shape().rank() >= 2 {
            // [..., m, k] @ [..., k, m]: the same tensor twice, so gradients add up.
            a.matmul(a.transpose().tanh())
        } else {
            a
        }
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_graphs_match_the_cpu_on_values_and_gradients() {
    let Some(gpu) = gpu() else { return };
    let cases = env("WGRAD_PROPTEST_CASES", 300);
    let first = env("WGRAD_PROPTEST_SEED", 0);
    for seed in first..first + cases {
        check(&gpu, seed);
    }
}

#[test]
fn random_graphs_in_windows_match_the_cpu() {
    // Bindings of 16 floats (the smallest the planner makes) and 6 per
    // kernel: most values span several parts, and one graph in six or so
    // has kernels that must be cut into windows (of elements, outputs,
    // folds, tiles or rows), each binding what its bounds say it can reach.
    // A graph that reads a large value out of order beyond the bindings
    // may be refused, with `TooLarge`; most must run, and match.
    let Some(_) = gpu() else { return };
    let tiny = Device::gpu_with(&GpuOptions {
        max_storage_binding: Some(64),
        max_storage_buffers: Some(6),
        ..Default::default()
    })
    .unwrap();
    let cases = env("WGRAD_PROPTEST_CASES", 300) as usize;
    let first = env("WGRAD_PROPTEST_SEED", 0);
    let ran: Vec<Vec<String>> = (first..first + cases as u64)
        .filter_map(|seed| compare(&tiny, seed, true))
        .collect();
    let windowed = ran
        .iter()
        .filter(|kernels| windows(kernels, &WINDOW_STARTS) > 0)
        .count();
    assert!(ran.len() * 10 >= cases * 9, "{} of {cases} ran", ran.len());
    assert!(windowed * 10 >= cases, "{windowed} of {cases} in windows");
}

#[test]
fn random_graphs_on_the_cpu_fast_path_match_the_reference() {
    let cases = env("WGRAD_PROPTEST_CASES", 300);
    let first = env("WGRAD_PROPTEST_SEED", 0);
    // Chunks of 3 elements and tasks of 2 chunks put chunk and task
    // boundaries inside rows, broadcasts, pads and reductions; chunks of
    // 12 hold whole rows of every length up to 4 (so broadcast vectors
    // and per-row values are held compactly).
    let small = |chunk| Device::cpu_f32_with(in_chunks(chunk, 2));
    let (tiny, rows) = (small(3), small(12));
    for seed in first..first + cases {
        check(&Device::cpu_f32(), seed);
        check(&tiny, seed);
        check(&rows, seed);
    }
}

#[test]
fn native_kernels_compute_the_tapes_bits() {
    // The fast path's native kernels replace runs of its tape's
    // instructions: the same f32 operations, so the same bits, NaNs and
    // signed zeros included; in chunks of 1024, of 3 (kernels over a
    // few elements, and inputs holding one value, where the tape runs) and
    // of 12 (whole rows: compact inputs written out for a kernel).
    let cases = env("WGRAD_PROPTEST_CASES", 300);
    let first = env("WGRAD_PROPTEST_SEED", 0);
    for chunk in [1024, 3, 12] {
        let options = CpuOptions {
            native: true,
            ..in_chunks(chunk, 2)
        };
        let tape = CpuOptions {
            native: false,
            ..options
        };
        for seed in first..first + cases {
            let g = Graph::new();
            let (outputs, data, _) = case(&g, seed);
            let run = |options| {
                let mut p = g.compile(&Device::cpu_f32_with(options), &outputs).unwrap();
                p.run(&view(&data)).unwrap()
            };
            let (native, tape) = (run(options), run(tape));
            for (k, (a, b)) in native.iter().zip(&tape).enumerate() {
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(
                    bits(a) == bits(b),
                    "output {k} differs: seed {seed}, chunk {chunk}\n{a:?}\n{b:?}\n{g:?}"
                );
            }
        }
    }
}

/// The graph of `seed` on `device` against the f64 reference.
fn check(device: &Device, seed: u64) {
    compare(device, seed, false);
}

/// The graph of `seed` on `device` against the f64 reference: its kernels
/// (on a GPU), or `None` where `may_refuse` and `device` refuses it as too
/// large for its limits.
fn compare(device: &Device, seed: u64, may_refuse: bool) -> Option<Vec<String>> {
    let g = Graph::new();
    let (outputs, data, second) = case(&g, seed);
    let feeds = view(&data);
    let replay = || {
        format!(
            "{}: seed {seed} (WGRAD_PROPTEST_SEED={seed} WGRAD_PROPTEST_CASES=1); graph:\n{g:?}",
            device.describe()
        )
    };
    let run = g.compile(device, &outputs).and_then(|mut p| {
        let got = p.run(&feeds)?;
        Ok((got, p.kernels_wgsl()))
    });
    let (got, kernels) = match run {
        Ok(run) => run,
        Err(Error::TooLarge(_)) if may_refuse => return None,
        Err(e) => panic!("{e}\n{}", replay()),
    };
    let want = g
        .compile(&Device::cpu(), &outputs)
        .unwrap()
        .run(&feeds)
        .unwrap();
    let wobble = wobble(&g, &outputs, &data, &want);
    for (k, ((a, b), w)) in got.iter().zip(&want).zip(&wobble).enumerate() {
        let tol = tolerance(k, second);
        if let Some(i) = (0..a.len()).find(|&i| !agrees(a[i], b[i], w[i], tol)) {
            panic!(
                "output {k} element {i}: {} against the reference's {} (which moves {} \
                 for inputs moved by 1e-6)\n{}",
                a[i],
                b[i],
                w[i],
                replay()
            );
        }
    }
    Some(kernels)
}

/// The random graph of `seed` in `g`: its outputs (a value, a loss and
/// the loss's gradients, or second derivatives), its inputs' data, and the
/// index of the first second derivative among the outputs (their count
/// where there is none).
fn case<'g>(g: &'g Graph, seed: u64) -> (Vec<Var<'g>>, Data, usize) {
    let mut gen = Gen {
        g,
        r: rng(seed),
        inputs: Vec::new(),
    };
    let count = gen.r.random_range(1..=3);
    for k in 0..count {
        let shape = gen.shape();
        let v = gen.g.input(&format!("x{k}"), shape.as_slice());
        gen.inputs.push(v);
    }
    let depth = gen.r.random_range(1..=DEPTH);
    let y = gen.expr(depth);
    let w = g.input("w", y.shape());
    let loss = (y * w).sum();
    let inputs = gen.inputs.clone();
    let mut outputs = vec![y, loss];
    let grads = g.grad(loss, &inputs);
    // The gradients, or (one graph in six each) those of a gradient
    // penalty, second order, or a Hessian-vector product along w-like
    // tangents: forward over reverse.
    let first_order = outputs.len();
    let kind = gen.r.random_range(0..6);
    match kind {
        0 => {
            let penalty = grads.iter().fold(loss, |acc, d| acc + d.square().sum());
            outputs.extend(g.grad(penalty, &inputs));
        }
        1 => {
            let tangents: Vec<Var> = inputs.iter().map(|x| x.cos()).collect();
            outputs.push(g.jvp(grads[0], &inputs, &tangents));
        }
        _ => outputs.extend(grads),
    }
    // Where the outputs from here on are second derivatives.
    let second = if kind < 2 { first_order } else { outputs.len() };
    let mut r = rng(seed ^ 0x5eed);
    let mut data: Vec<(String, Vec<f64>)> = inputs
        .iter()
        .enumerate()
        .map(|(k, v)| (format!("x{k}"), sample(&mut r, v.numel(), Domain::Any)))
        .collect();
    data.push(("w".into(), sample(&mut r, w.numel(), Domain::Any)));
    (outputs, as_f32(&data), second)
}
