//! The lecture slide wgrad began from, on the CPU reference or the GPU:
//! f = (x+y)·max(y,z) at (1, 2, 0), and PyTorch's q = x+y, f = q·z at (4, −3, 5).
//! Then the same f at 2^20 random points at once, checked against the CPU.
//!
//! cargo run --release --example backprop_slide -- --backend cpu|gpu

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use wgrad::{Device, Graph};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let backend = match args.iter().position(|a| a == "--backend") {
        Some(k) => args.get(k + 1).map(String::as_str).unwrap_or("gpu"),
        None => "gpu",
    };
    let device = match backend {
        "cpu" => Device::cpu(),
        "gpu" => Device::gpu()?,
        other => bail!("unknown backend `{other}` (cpu or gpu)"),
    };
    println!("device: {}", device.describe());

    // f = (x + y) · max(y, z) at (1, 2, 0).
    let g = Graph::new();
    let (x, y, z) = (g.input("x", []), g.input("y", []), g.input("z", []));
    let a = x + y;
    let b = y.max(z);
    let f = a * b;
    let d = g.grad(f, &[x, y, z]);
    let mut prog = g.compile(&device, &[a, b, f, d[0], d[1], d[2]])?;
    let out = prog.run(&[("x", &[1.0]), ("y", &[2.0]), ("z", &[0.0])])?;
    println!("a = {}, b = {}, f = {}", out[0][0], out[1][0], out[2][0]);
    println!("df/dx = {}", out[3][0]);
    println!("df/dy = {}", out[4][0]);
    println!("df/dz = {}", out[5][0]);

    // PyTorch's example: q = x + y, f = q · z at (4, −3, 5).
    let g2 = Graph::new();
    let (x2, y2, z2) = (g2.input("x", []), g2.input("y", []), g2.input("z", []));
    let f2 = (x2 + y2) * z2;
    let d2 = g2.grad(f2, &[x2, y2, z2]);
    let mut prog2 = g2.compile(&device, &d2)?;
    let out2 = prog2.run(&[("x", &[4.0]), ("y", &[-3.0]), ("z", &[5.0])])?;
    println!("x.grad = {}", out2[0][0]);
    println!("y.grad = {}", out2[1][0]);
    println!("z.grad = {}", out2[2][0]);

    // The same f at 2^20 points at once: f summed, so its gradient is per point.
    let n = 1 << 20;
    let gb = Graph::new();
    let (xs, ys, zs) = (gb.input("x", [n]), gb.input("y", [n]), gb.input("z", [n]));
    let fs = ((xs + ys) * ys.max(zs)).sum();
    let ds = gb.grad(fs, &[xs, ys, zs]);
    let outputs = [fs, ds[0], ds[1], ds[2]];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut data = || {
        (0..n)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect::<Vec<_>>()
    };
    let (xv, yv, zv) = (data(), data(), data());
    let feeds: [(&str, &[f32]); 3] = [("x", &xv), ("y", &yv), ("z", &zv)];
    let got = gb.compile(&device, &outputs)?.run(&feeds)?;
    let reference = gb.compile(&Device::cpu(), &outputs)?.run(&feeds)?;
    let mut worst = 0.0f64;
    for (g, r) in got.iter().zip(&reference) {
        for (a, b) in g.iter().zip(r) {
            worst = worst.max(((a - b).abs() / b.abs().max(1.0)) as f64);
        }
    }
    println!(
        "2^20 points: sum f = {} ({} on the CPU reference); largest relative difference from the CPU reference: {worst:.2e}",
        got[0][0], reference[0][0]
    );
    Ok(())
}
