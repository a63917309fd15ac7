//! The main job: gradient descent on a large parameter vector, on the GPU
//! if there is one (a real one, else lavapipe), else the CPU fast path
//! (`--backend cpu`; `reference` is the f64 interpreter).
//!
//! cargo run --release --example gradient_descent -- [--problem rosenbrock|logreg|mlp]
//!     [--backend auto|gpu|cpu|reference] [--n N] [--steps K] [--lr LR]
//!     [--optimizer sgd|momentum|adam] [--every M] [--plot PATH]
//!
//! `logreg` and `mlp` take `--n` as the elements of their data X (rows of
//! 1024 and 784 features); `mlp` is a network of two layers (784-128-10,
//! relu, softmax cross-entropy) classifying points around 10 centres.
//!
//! One step is one submit: the gradient and the optimizer's update are fused
//! into a few kernels, parameters and optimizer state never leave the device,
//! and the loss is computed and read back only every M steps (the steps
//! between are `Program::update`, which skips the loss).

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use rand::{Rng, SeedableRng};
use std::time::Instant;
use wgrad::{Device, Graph, Optimizer, Var};

/// Values to set, by parameter name.
type Data = Vec<(&'static str, Vec<f32>)>;

struct Args {
    problem: String,
    backend: String,
    n: usize,
    steps: usize,
    lr: Option<f64>,
    optimizer: String,
    every: usize,
    plot: String,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        problem: "rosenbrock".into(),
        backend: "auto".into(),
        n: 1 << 20,
        steps: 300,
        lr: None,
        optimizer: "adam".into(),
        every: 10,
        plot: "gradient_descent_loss.png".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--problem" => a.problem = value()?,
            "--backend" => a.backend = value()?,
            "--n" => a.n = parse_count(&value()?)?,
            "--steps" => a.steps = value()?.parse()?,
            "--lr" => a.lr = Some(value()?.parse()?),
            "--optimizer" => a.optimizer = value()?,
            "--every" => a.every = value()?.parse::<usize>()?.max(1),
            "--plot" => a.plot = value()?,
            "-h" | "--help" => {
                println!(
                    "{}",
                    include_str!("gradient_descent.rs")
                        .lines()
                        .take(8)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag `{other}` (see --help)"),
        }
    }
    Ok(a)
}

/// "1048576", "2^20" or "1e6".
fn parse_count(s: &str) -> Result<usize> {
    if let Some(e) = s.strip_prefix("2^") {
        return Ok(1usize << e.parse::<u32>()?);
    }
    Ok(s.parse::<f64>()? as usize)
}

fn main() -> Result<()> {
    env_logger::init();
    let args = parse()?;
    let device = match args.backend.as_str() {
        "gpu" => Device::gpu()?,
        "cpu" => Device::cpu_f32(),
        "reference" => Device::cpu(),
        "auto" => Device::auto(),
        other => bail!("unknown backend `{other}` (auto, gpu, cpu or reference)"),
    };
    let kind = match &device {
        Device::Gpu(ctx) if ctx.is_software() => "a software GPU, as asked",
        Device::Gpu(_) => "GPU",
        Device::CpuF32(_) if args.backend == "auto" => {
            "no hardware GPU was found; the CPU fast path beats a software GPU"
        }
        Device::CpuF32(_) => "the CPU fast path",
        Device::Cpu => "the f64 CPU reference",
    };
    println!("device: {} ({kind})", device.describe());

    let g = Graph::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let n = args.n;
    // The problem: its loss, its parameters, and the data to set.
    let (loss, params, data): (Var, Vec<Var>, Data) = match args.problem.as_str() {
        "rosenbrock" => {
            // R(w) = Σ_{i<n−1} 100(w_{i+1} − w_i²)² + (1 − w_i)², from the classic (−1.2, 1, …).
            let w = g.param("w", [n]);
            let (a, b) = (w.slice(0, 0, n - 1), w.slice(0, 1, n));
            let loss = (100.0 * (b - a.square()).square() + (1.0 - a).square()).sum();
            let w0 = (0..n)
                .map(|i| if i % 2 == 0 { -1.2 } else { 1.0 })
                .collect();
            (loss, vec![w], vec![("w", w0)])
        }
        "logreg" => {
            // L(v) = mean softplus(−t ⊙ (X v)), X ∈ R^{B×1024}, labels from a
            // hidden v* with 5% flipped. X and t are parameters that are never
            // updated: set once, they stay on the device.
            let d = 1024;
            let rows = (n / d).max(1);
            let x = g.param("X", [rows, d]);
            let t = g.param("t", [rows, 1]);
            let v = g.param("v", [d, 1]);
            let loss = x.matmul(v).logistic_loss(t);
            let xs: Vec<f32> = (0..rows * d)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let truth: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let ts = (0..rows)
                .map(|r| {
                    let z: f32 = (0..d).map(|k| xs[r * d + k] * truth[k]).sum();
                    let flip = rng.random_bool(0.05);
                    if (z > 0.0) != flip {
                        1.0
                    } else {
                        -1.0
                    }
                })
                .collect();
            (
                loss,
                vec![v],
                vec![("X", xs), ("t", ts), ("v", vec![0.0; d])],
            )
        }
        "mlp" => {
            // Points around 10 random centres in 784 dimensions, a class
            // each, and one-hot targets: data set once on the device.
            let (inputs, hidden, classes) = (784, 128, 10);
            let rows = (n / inputs).max(1);
            let x = g.param("X", [rows, inputs]);
            let t = g.param("t", [rows, classes]);
            let (w1, b1) = (g.param("w1", [inputs, hidden]), g.param("b1", [hidden]));
            let (w2, b2) = (g.param("w2", [hidden, classes]), g.param("b2", [classes]));
            let h = (x.matmul(w1) + b1).relu();
            let loss = (h.matmul(w2) + b2).cross_entropy(t);
            let mut uniform = |len: usize, scale: f32| -> Vec<f32> {
                (0..len)
                    .map(|_| scale * rng.random_range(-1.0f32..1.0))
                    .collect()
            };
            let centres = uniform(classes * inputs, 0.1);
            let noise = uniform(rows * inputs, 1.0);
            let xs = (0..rows * inputs)
                .map(|i| centres[(i / inputs) % classes * inputs + i % inputs] + noise[i])
                .collect();
            let ts = (0..rows * classes)
                .map(|i| f32::from(i % classes == (i / classes) % classes))
                .collect();
            let data = vec![
                ("X", xs),
                ("t", ts),
                ("w1", uniform(inputs * hidden, 0.05)),
                ("b1", vec![0.0; hidden]),
                ("w2", uniform(hidden * classes, 0.05)),
                ("b2", vec![0.0; classes]),
            ];
            (loss, vec![w1, b1, w2, b2], data)
        }
        other => bail!("unknown problem `{other}` (rosenbrock, logreg or mlp)"),
    };
    let default_lr = |adam: f64, other: f64| {
        args.lr.unwrap_or(if args.optimizer == "adam" {
            adam
        } else {
            other
        })
    };
    let (adam_lr, other_lr) = match args.problem.as_str() {
        "rosenbrock" => (1e-2, 1e-4),
        "mlp" => (1e-3, 0.1),
        _ => (1e-2, 0.5),
    };
    let lr = default_lr(adam_lr, other_lr);
    let opt = match args.optimizer.as_str() {
        "sgd" => Optimizer::Sgd { lr },
        "momentum" => Optimizer::Momentum { lr, mu: 0.9 },
        "adam" => Optimizer::adam(lr),
        other => bail!("unknown optimizer `{other}` (sgd, momentum or adam)"),
    };
    let updates = opt.minimize(loss, &params);
    let t0 = Instant::now();
    let mut prog = g.compile_with_updates(&device, &[loss], &updates)?;
    for (name, values) in &data {
        prog.set_param(name, values)?;
    }
    let stats = prog.stats();
    let kernels = if device.is_gpu() {
        format!(
            ": {} dispatches and {:.1} MB moved per step",
            stats.dispatches,
            (stats.bytes_read + stats.bytes_written) as f64 / 1e6
        )
    } else {
        String::new()
    };
    println!(
        "{} with {} parameters, {opt:?}; compiled in {:.2?}{kernels}",
        args.problem,
        params.iter().map(|p| p.numel()).sum::<usize>(),
        t0.elapsed(),
    );

    let bar = ProgressBar::new(args.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {per_sec}  loss {msg}")
            .expect("a valid template"),
    );
    let mut curve: Vec<(usize, f64)> = Vec::new();
    let start = Instant::now();
    for step in 0..args.steps {
        if step % args.every == 0 {
            let l = prog.run(&[])?[0][0] as f64;
            curve.push((step, l));
            bar.set_message(format!("{l:.6e}"));
        } else {
            prog.update(&[])?; // the loss is not computed
        }
        bar.inc(1);
    }
    let final_loss = prog.run(&[])?[0][0] as f64; // the loss after the last step (one more run)
    let elapsed = start.elapsed();
    curve.push((args.steps, final_loss));
    bar.finish();

    plot(
        &args.plot,
        &curve,
        &format!("{} on {}", args.problem, device.describe()),
    )?;
    let first = curve.first().map_or(f64::NAN, |c| c.1);
    println!("device:        {}", device.describe());
    println!(
        "loss:          {first:.6e} -> {final_loss:.6e} after {} steps",
        args.steps
    );
    println!(
        "time per step: {:.3} ms ({:.1} steps/s, loss read every {} steps)",
        elapsed.as_secs_f64() * 1e3 / (args.steps + 1) as f64,
        (args.steps + 1) as f64 / elapsed.as_secs_f64(),
        args.every
    );
    println!(
        "loss curve:    {}",
        std::fs::canonicalize(&args.plot)?.display()
    );
    if final_loss.is_nan() || final_loss >= first {
        bail!("the loss did not fall");
    }
    Ok(())
}

/// The loss against the step, log-scaled, as a PNG.
fn plot(path: &str, curve: &[(usize, f64)], title: &str) -> Result<()> {
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        epaint_default_fonts::UBUNTU_LIGHT,
    )
    .map_err(|_| anyhow::anyhow!("the bundled font is invalid"))?;
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let positive: Vec<(usize, f64)> = curve.iter().copied().filter(|c| c.1 > 0.0).collect();
    let lo = positive.iter().map(|c| c.1).fold(f64::INFINITY, f64::min);
    let hi = positive.iter().map(|c| c.1).fold(0.0, f64::max);
    let last = curve.last().map_or(1, |c| c.0.max(1));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0..last, (lo * 0.9..hi * 1.1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .y_label_formatter(&|y| format!("{y:.1e}"))
        .draw()?;
    chart.draw_series(LineSeries::new(positive, &BLUE))?;
    root.present()?;
    Ok(())
}
