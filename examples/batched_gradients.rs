//! Batched gradients: functions of several variables differentiated at 10^7
//! points at once on the GPU, checked against the CPU reference on a sample.
//!
//! cargo run --release --example batched_gradients -- [--points N] [--backend gpu|cpu]
//!
//! Summing f over the points makes d(Σf)/dx_i = ∂f/∂x (x_i): one reverse pass
//! gives the gradient at every point.

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use std::time::Instant;
use wgrad::{Device, Graph, Var};

/// A function of three variables, each a batch of points.
type Function = for<'g> fn(Var<'g>, Var<'g>, Var<'g>) -> Var<'g>;

fn main() -> Result<()> {
    let mut points = 10_000_000usize;
    let mut backend = "gpu".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--points" => {
                points = it
                    .next()
                    .context("--points needs a value")?
                    .parse::<f64>()? as usize
            }
            "--backend" => backend = it.next().context("--backend needs a value")?,
            other => bail!("unknown flag `{other}`"),
        }
    }
    let device = match backend.as_str() {
        "gpu" => Device::gpu()?,
        "cpu" => Device::cpu(),
        other => bail!("unknown backend `{other}`"),
    };
    println!("device: {}", device.describe());
    let functions: [(&str, Function); 2] = [
        ("the slide's f = (x+y)·max(y,z)", |x, y, z| {
            (x + y) * y.max(z)
        }),
        ("g = sin(x·y) + exp(−z²)·x / (1 + y²)", |x, y, z| {
            (x * y).sin() + (-z.square()).exp() * x / (1.0 + y.square())
        }),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut data = || {
        (0..points)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect::<Vec<f32>>()
    };
    let (xs, ys, zs) = (data(), data(), data());
    for (name, f) in functions {
        let g = Graph::new();
        let (x, y, z) = (
            g.input("x", [points]),
            g.input("y", [points]),
            g.input("z", [points]),
        );
        let total = f(x, y, z).sum();
        let grads = g.grad(total, &[x, y, z]);
        let mut prog = g.compile(&device, &grads)?;
        let feeds: [(&str, &[f32]); 3] = [("x", &xs), ("y", &ys), ("z", &zs)];
        prog.run(&feeds)?; // warm-up
        let t = Instant::now();
        let out = prog.run(&feeds)?;
        let secs = t.elapsed().as_secs_f64();

        // The CPU reference (f64) on a sample of the points.
        let sample: Vec<usize> = (0..1000).map(|k| k * (points / 1000)).collect();
        let pick = |v: &[f32]| sample.iter().map(|&i| v[i]).collect::<Vec<f32>>();
        let (sx, sy, sz) = (pick(&xs), pick(&ys), pick(&zs));
        let gs = Graph::new();
        let (a, b, c) = (
            gs.input("x", [sample.len()]),
            gs.input("y", [sample.len()]),
            gs.input("z", [sample.len()]),
        );
        let ds = gs.grad(f(a, b, c).sum(), &[a, b, c]);
        let reference =
            gs.compile(&Device::cpu(), &ds)?
                .run(&[("x", &sx), ("y", &sy), ("z", &sz)])?;
        let mut worst = 0.0f64;
        for (k, r) in reference.iter().enumerate() {
            for (j, &i) in sample.iter().enumerate() {
                let (got, want) = (out[k][i] as f64, r[j] as f64);
                worst = worst.max((got - want).abs() / want.abs().max(1.0));
            }
        }
        println!("{name}");
        println!(
            "  {points} points: gradients in {:.2} ms including upload and read-back ({:.3e} points/s)",
            secs * 1e3,
            points as f64 / secs
        );
        println!(
            "  at the point 0: ∇ = ({}, {}, {})",
            out[0][0], out[1][0], out[2][0]
        );
        println!(
            "  largest relative difference from the CPU reference on 1000 points: {worst:.2e}"
        );
        if worst > 1e-4 {
            bail!("the GPU disagrees with the CPU reference");
        }
    }
    Ok(())
}
