//! The benchmark workloads of ../shared/anchors (seed, rosenbrock, logreg),
//! and `mlp` and `layernorm` (`scripts/more_anchors.py` times them in JAX
//! and PyTorch), with
//! anchors.py's protocol: data already on the device, warm-up runs (two,
//! and more until half a second has passed: see `WARM_UP_S`), then the
//! median of 20 runs, each finished before the clock stops.
//!
//! cargo run --release --example bench -- [--workload seed,rosenbrock,logreg,mlp,layernorm]
//!     [--sizes 20,24,28] [--backend gpu|cpu|reference] [--json] [--reps 20]
//!     [--chunk 1024] [--deriving-chunk 16384] [--chunks-per-task 128]
//!     [--tape-only] [--kernels] [--max-storage-binding BYTES] [--max-storage-buffers N]
//!     [--no-subgroups] [--no-device-fences]
//!     [--compile unrolled,wide,stencil,second_order]
//!
//! `cpu` is the f32 fast path (`--chunk`, `--deriving-chunk`, `--chunks-per-task` and
//! `--tape-only`, no native kernels, set its `CpuOptions`, for tuning);
//! `reference` the f64 interpreter. `--max-storage-binding` and
//! `--max-storage-buffers` plan the GPU programs for smaller limits than the
//! adapter's (the windows a device with small bindings needs);
//! `--no-subgroups` plans them without subgroup operations (as for an adapter
//! without them), `--no-device-fences` folds a reduction's chunks in a second
//! dispatch (as on a device without device-scope fences). `--kernels` adds each GPU kernel's own
//! time (timestamps; the median of `--reps` timed runs after the others)
//! and bandwidth.
//!
//! Like logreg, these two read a batch X of n / 1024 rows of 1024 features
//! (n = 2^k elements, `--sizes`). `mlp` is one SGD step (lr 0.1) of a
//! network of two layers, 1024 inputs, 128 hidden (relu) and 10 classes
//! (softmax cross-entropy): matrix products, 6·B·(1024·128 + 128·10)
//! flops, more than memory traffic. `layernorm` is one SGD step (lr 1e-4)
//! of a layer norm's scale γ under a tanh, L = Σ tanh(γ ⊙ (x − μ)/√(σ² +
//! 1e-5)) row by row: transcendental functions, two per element.
//!
//! `--compile` times `compile` instead, for graphs of many nodes (the
//! median of `--reps`; `--sizes` is then log2 of their steps or tensors,
//! 8,10,12 unless given): `unrolled`, 2^k steps of y ← sin(0.999·y) +
//! 0.001 on 1024 elements and the gradient of Σy (a loop unrolled, as
//! when differentiating through a simulation); `wide`, 2^k parameter
//! tensors of 64 elements, Σ_i Σ sin(p_i)·p_i and its 2^k gradients (a
//! model of many small tensors); `stencil`, 2^k steps of a three-point
//! stencil along the rows of a 16x64 state and the gradient (a value read
//! at shifted indices each step); `second_order`, 2^k steps of y ←
//! x·(0.01·Σ sin y) + 0.5·y, the loss plus its gradient's squared norm,
//! and the gradient of that (a reduction a step, two reverse passes). The
//! table also gives one run's time after the compile.
//!
//! One JSON line per result (with --json), then a table for people; "submit"
//! is the part of a run spent in `step`: submitting, then encoding the next
//! run's commands while the GPU works. Bytes
//! moved come from the program's own accounting of what its kernels read and
//! write; the floor is the fewest bytes the workload must move.

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use std::time::Instant;
use wgrad::{CpuOptions, Device, GpuOptions, Graph, Program, Var};

const D: usize = 1024; // logreg features; B = n / D rows
/// The mlp's hidden units and classes (its inputs are `D` features).
const MLP: [usize; 2] = [128, 10];
const LR: f64 = 1e-4;
/// Seconds of warm-up runs (at least two runs).
const WARM_UP_S: f64 = 0.5;

struct Args {
    workloads: Vec<String>,
    /// The graphs whose compile is timed (`--compile`), if any.
    compile: Vec<String>,
    sizes: Option<Vec<u32>>,
    backend: String,
    json: bool,
    reps: usize,
    cpu: CpuOptions,
    gpu: GpuOptions,
    kernels: bool,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        workloads: vec!["seed".into(), "rosenbrock".into(), "logreg".into()],
        compile: Vec::new(),
        sizes: None,
        backend: "gpu".into(),
        json: false,
        reps: 20,
        cpu: CpuOptions::default(),
        gpu: GpuOptions::default(),
        kernels: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--workload" => a.workloads = value()?.split(',').map(str::to_string).collect(),
            "--sizes" => {
                a.sizes = Some(
                    value()?
                        .split(',')
                        .map(|s| s.trim().parse())
                        .collect::<Result<_, _>>()?,
                )
            }
            "--compile" => a.compile = value()?.split(',').map(str::to_string).collect(),
            "--backend" => a.backend = value()?,
            "--reps" => a.reps = value()?.parse()?,
            "--chunk" => a.cpu.chunk = value()?.parse()?,
            "--deriving-chunk" => a.cpu.deriving_chunk = value()?.parse()?,
            "--chunks-per-task" => a.cpu.chunks_per_task = value()?.parse()?,
            "--tape-only" => a.cpu.native = false,
            "--max-storage-binding" => a.gpu.max_storage_binding = Some(value()?.parse()?),
            "--max-storage-buffers" => a.gpu.max_storage_buffers = Some(value()?.parse()?),
            "--json" => a.json = true,
            "--kernels" => a.kernels = true,
            "--no-subgroups" => a.gpu.no_subgroups = true,
            "--no-device-fences" => a.gpu.no_device_fences = true,
            "--bench" => {} // passed by `cargo bench`-style runners
            "--help" | "-h" => {
                // The module comment's usage lines.
                let usage = include_str!("bench.rs").lines().skip(5).take(5);
                usage.for_each(|l| println!("{}", l.trim_start_matches("//! ")));
                std::process::exit(0);
            }
            other => bail!("unknown flag `{other}`"),
        }
    }
    Ok(a)
}

/// Bytes per element the workload must move at the least (anchors README).
fn floor_bytes_per_element(workload: &str) -> f64 {
    match workload {
        "seed" => 24.0,
        "rosenbrock" => 8.0,
        _ => 4.0,
    }
}

/// Build a workload's program with its data set on the device.
fn build(workload: &str, n: usize, device: &Device) -> Result<Program> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut normal =
        |k: usize| -> Vec<f32> { (0..k).map(|_| rng.random_range(-2.0f32..2.0)).collect() };
    let g = Graph::new();
    let prog = match workload {
        "seed" => {
            // Inputs that stay on the device are parameters that are never updated.
            let (x, y, z) = (g.param("x", [n]), g.param("y", [n]), g.param("z", [n]));
            let f = ((x + y) * y.max(z)).sum();
            let d = g.grad(f, &[x, y, z]);
            let mut p = g.compile(device, &[f, d[0], d[1], d[2]])?;
            for name in ["x", "y", "z"] {
                p.set_param(name, &normal(n))?;
            }
            p
        }
        "rosenbrock" => {
            let w = g.param("w", [n]);
            let (a, b) = (w.slice(0, 0, n - 1), w.slice(0, 1, n));
            let r = (100.0 * (b - a.square()).square() + (1.0 - a).square()).sum();
            let dw = g.grad(r, &[w])[0];
            let mut p = g.compile_with_updates(device, &[], &[(w, w - LR * dw)])?;
            p.set_param("w", &normal(n))?;
            p
        }
        "logreg" => {
            let rows = n / D;
            let x = g.param("X", [rows, D]);
            let t = g.param("t", [rows, 1]);
            let v = g.param("v", [D, 1]);
            let loss = x.matmul(v).logistic_loss(t);
            let dv = g.grad(loss, &[v])[0];
            let mut p = g.compile_with_updates(device, &[], &[(v, v - 0.1 * dv)])?;
            p.set_param("X", &normal(n))?;
            let signs: Vec<f32> = normal(rows).iter().map(|x| x.signum()).collect();
            p.set_param("t", &signs)?;
            p.set_param("v", &vec![0.0; D])?;
            p
        }
        "mlp" => {
            let ([hidden, classes], rows) = (MLP, n / D);
            let x = g.param("x", [rows, D]);
            let t = g.param("t", [rows, classes]);
            let w1 = g.param("w1", [D, hidden]);
            let b1 = g.param("b1", [hidden]);
            let w2 = g.param("w2", [hidden, classes]);
            let b2 = g.param("b2", [classes]);
            let h = (x.matmul(w1) + b1).relu();
            let loss = (h.matmul(w2) + b2).cross_entropy(t);
            let params = [w1, b1, w2, b2];
            let updates = wgrad::Optimizer::Sgd { lr: 0.1 }.minimize(loss, &params);
            let mut p = g.compile_with_updates(device, &[], &updates)?;
            p.set_param("x", &normal(n))?;
            let one_hot: Vec<f32> = (0..rows * classes)
                .map(|i| f32::from(i % classes == (i / classes) % classes))
                .collect();
            p.set_param("t", &one_hot)?;
            for (name, len) in [("w1", D * hidden), ("w2", hidden * classes)] {
                let w: Vec<f32> = normal(len).iter().map(|v| v * 0.05).collect();
                p.set_param(name, &w)?;
            }
            p.set_param("b1", &vec![0.0; hidden])?;
            p.set_param("b2", &vec![0.0; classes])?;
            p
        }
        "layernorm" => {
            let x = g.param("x", [n / D, D]);
            let gamma = g.param("gamma", [D]);
            let centred = x - x.mean_axes(&[-1], true);
            let var = centred.square().mean_axes(&[-1], true);
            let loss = (centred * (var + 1e-5).rsqrt() * gamma).tanh().sum();
            let dg = g.grad(loss, &[gamma])[0];
            let mut p = g.compile_with_updates(device, &[], &[(gamma, gamma - LR * dg)])?;
            p.set_param("x", &normal(n))?;
            p.set_param("gamma", &vec![1.0; D])?;
            p
        }
        other => bail!("unknown workload `{other}` (seed, rosenbrock, logreg, mlp or layernorm)"),
    };
    Ok(prog)
}

/// A `--compile` graph of 2^`logk` steps or tensors: its outputs, and its
/// parameters.
fn record_large<'g>(g: &'g Graph, graph: &str, logk: u32) -> Result<(Vec<Var<'g>>, Vec<Var<'g>>)> {
    let k = 1usize << logk;
    let (loss, wrt) = match graph {
        "unrolled" => {
            let x = g.param("x", [1024]);
            let mut y = x;
            for _ in 0..k {
                y = (y * 0.999).sin() + 0.001;
            }
            (y.sum(), vec![x])
        }
        "wide" => {
            let ps: Vec<Var> = (0..k).map(|i| g.param(&format!("p{i}"), [64])).collect();
            let terms = ps.iter().map(|p| (p.sin() * *p).sum());
            (terms.reduce(|a, b| a + b).expect("k >= 1"), ps)
        }
        "stencil" => {
            // Each step reads the state at three shifted sets of indices.
            let x = g.param("x", [16, 64]);
            let mut y = x;
            for _ in 0..k {
                let right = y.pad(1, 1, 0).slice(1, 0, 64);
                let left = y.pad(1, 0, 1).slice(1, 1, 65);
                y = (right + left) * 0.5 + y * 0.25;
            }
            (y.sum(), vec![x])
        }
        "second_order" => {
            // A reduction a step, each read by the next; the loss plus the
            // squared norm of its gradient, differentiated again.
            let x = g.param("x", [16]);
            let mut y = x;
            for _ in 0..k {
                y = x * (y.sin().sum() * 0.01) + y * 0.5;
            }
            let f = y.sum();
            let penalty = f + g.grad(f, &[x])[0].square().sum();
            (penalty, vec![x])
        }
        other => bail!("unknown graph `{other}` (unrolled, wide, stencil or second_order)"),
    };
    let mut outputs = vec![loss];
    outputs.extend(g.grad(loss, &wrt));
    Ok((outputs, wrt))
}

/// `--compile`: the median time of `compile` for each graph and size.
fn compile_times(args: &Args, device: &Device) -> Result<()> {
    let adapter = device.describe();
    let mut table = Vec::new();
    for &logk in args.sizes.as_deref().unwrap_or(&[8, 10, 12]) {
        for graph in &args.compile {
            let g = Graph::new();
            let (outputs, params) = record_large(&g, graph, logk)?;
            let mut times = Vec::new();
            let mut prog = None;
            for _ in 0..args.reps.max(1) {
                let t = Instant::now();
                prog = Some(g.compile(device, &outputs)?);
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let ms = median(times);
            // One run after, to weigh the compile against.
            let mut prog = prog.expect("at least one rep");
            let dispatches = prog.stats().dispatches;
            for p in &params {
                let name = match &g.nodes()[p.id().index()].op {
                    wgrad::ops::Op::Param { name, .. } => name.clone(),
                    _ => unreachable!("parameters"),
                };
                prog.set_param(&name, &vec![0.5; p.numel()])?;
            }
            let t = Instant::now();
            prog.run(&[])?;
            let run_ms = t.elapsed().as_secs_f64() * 1e3;
            if args.json {
                println!(
                    "{{\"graph\": \"{graph}\", \"backend\": \"{}\", \"adapter\": \"{adapter}\", \"log2_k\": {logk}, \"nodes\": {}, \"compile_ms_median\": {ms:.1}, \"run_ms\": {run_ms:.1}, \"dispatches\": {dispatches}}}",
                    args.backend,
                    g.len()
                );
            }
            table.push(format!(
                "| {graph} | 2^{logk} | {} | {ms:.1} | {run_ms:.1} | {dispatches} |",
                g.len()
            ));
        }
    }
    println!("\ndevice: {adapter}");
    println!(
        "| graph | steps or tensors | nodes | compile ms (median) | first run ms | dispatches |"
    );
    println!("|---|---|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    env_logger::init();
    let args = parse()?;
    let device = match args.backend.as_str() {
        "gpu" => Device::gpu_with(&args.gpu)?,
        "cpu" => Device::cpu_f32_with(args.cpu),
        "reference" => Device::cpu(),
        other => bail!("unknown backend `{other}` (gpu, cpu or reference)"),
    };
    if !args.compile.is_empty() {
        return compile_times(&args, &device);
    }
    let adapter = device.describe();
    eprintln!("device: {adapter}");
    let mut table = Vec::new();
    let mut kernel_rows = Vec::new();
    for &logn in args.sizes.as_deref().unwrap_or(&[20, 24]) {
        for w in &args.workloads {
            let n = 1usize << logn;
            let mut prog = match build(w, n, &device) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{w} 2^{logn}: {e}");
                    continue;
                }
            };
            // The time of a run, and of its submission alone.
            let run = |p: &mut Program| -> Result<(f64, f64)> {
                let t = Instant::now();
                p.step(&[])?;
                let submitted = t.elapsed().as_secs_f64() * 1e3;
                p.wait()?;
                Ok((t.elapsed().as_secs_f64() * 1e3, submitted))
            };
            // Two warm-up runs, and more until half a second has passed: a
            // GPU left idle while the data was made on the CPU runs at its
            // idle clock (an H100's SM clock climbs from 345 to 1980 MHz in
            // about 0.3 s of work), where anchors.py times right after
            // device work of its own.
            let warm = Instant::now();
            for k in 0.. {
                if k >= 2 && warm.elapsed().as_secs_f64() >= WARM_UP_S {
                    break;
                }
                run(&mut prog)?;
            }
            let times = (0..args.reps)
                .map(|_| run(&mut prog))
                .collect::<Result<Vec<_>>>()?;
            let submit_ms = median(times.iter().map(|t| t.1).collect());
            let ms = median(times.iter().map(|t| t.0).collect());
            if args.kernels && device.is_gpu() {
                let runs = (0..args.reps)
                    .map(|_| Ok(prog.kernel_times(&[])?))
                    .collect::<Result<Vec<_>>>()?;
                for (i, k) in runs[0].iter().enumerate() {
                    let kms = median(runs.iter().map(|r| r[i].ms).collect());
                    let gbs = k.bytes as f64 / kms / 1e6;
                    if args.json {
                        println!(
                            "{{\"workload\": \"{w}\", \"log2_n\": {logn}, \"kernel\": {i}, \"label\": \"{}\", \"ms_median\": {kms:.4}, \"bytes\": {}}}",
                            k.label, k.bytes
                        );
                    }
                    kernel_rows.push(format!(
                        "| {w} | 2^{logn} | {i} | {kms:.4} | {gbs:.1} | {} |",
                        k.label
                    ));
                }
            }
            let s = prog.stats();
            // Dispatches and bytes moved count GPU kernels' bindings; the
            // CPU backends have neither.
            let counted = device.is_gpu();
            let bytes = s.bytes_read + s.bytes_written;
            let per_elem = bytes as f64 / n as f64;
            let or_null = |v: String| if counted { v } else { "null".into() };
            if args.json {
                println!(
                    "{{\"workload\": \"{w}\", \"backend\": \"{}\", \"adapter\": \"{adapter}\", \"log2_n\": {logn}, \"ms_median\": {ms:.4}, \"submit_ms_median\": {submit_ms:.4}, \"dispatches\": {}, \"bytes_moved\": {}, \"bytes_per_element\": {}, \"floor_bytes_per_element\": {}, \"device_bytes_held\": {}}}",
                    args.backend,
                    or_null(s.dispatches.to_string()),
                    or_null(bytes.to_string()),
                    or_null(format!("{per_elem:.3}")),
                    floor_bytes_per_element(w),
                    s.bytes_held
                );
            }
            let or_dash = |v: String| if counted { v } else { "-".into() };
            table.push(format!(
                "| {w} | 2^{logn} | {ms:.3} | {submit_ms:.3} | {} | {} | {:.0} | {} |",
                or_dash(s.dispatches.to_string()),
                or_dash(format!("{per_elem:.2}")),
                floor_bytes_per_element(w),
                or_dash(format!("{:.1}", bytes as f64 / ms / 1e6))
            ));
        }
    }
    if !kernel_rows.is_empty() {
        println!("\n| workload | n | kernel | ms (median) | GB/s | what |");
        println!("|---|---|---|---|---|---|");
        for row in kernel_rows {
            println!("{row}");
        }
    }
    println!("\ndevice: {adapter}");
    println!(
        "| workload | n | ms (median) | submit ms | dispatches | bytes/element | floor | GB/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
    Ok(())
}
