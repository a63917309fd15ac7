//! Graphs as deep as an unrolled loop, recurrences that read their state
//! twice a step, stencils and rolls that read it at shifted indices,
//! second-order chains of reductions, and graphs of hundreds of parameter
//! tensors compile in time about linear in their size (quadratic at
//! worst), within a test thread's stack (2 MiB), and match the f64
//! reference.

mod common;
use common::*;
use wgrad::{Device, GpuOptions, Graph, Var};

/// `steps` steps of y ← sin(0.999·y) + 0.001 from x (three ops a step), as
/// a simulation differentiated through its time steps records it; the
/// loss Σy and its gradient.
fn unrolled(g: &Graph, n: usize, steps: usize) -> Vec<Var<'_>> {
    let x = g.input("x", [n]);
    let mut y = x;
    for _ in 0..steps {
        y = (y * 0.999).sin() + 0.001;
    }
    with_gradients(y.sum(), &[x])
}

/// `steps` steps of y ← 0.5·√(y·y + 1) + 0.25·y: each step reads y three
/// times, so a walk down the expression that does not remember where it
/// has been takes 3^steps visits.
fn recurrence(g: &Graph, n: usize, steps: usize) -> Vec<Var<'_>> {
    let x = g.input("x", [n]);
    let mut y = x;
    for _ in 0..steps {
        y = (y * y + 1.0).sqrt() * 0.5 + y * 0.25;
    }
    with_gradients(y.sum(), &[x])
}

fn data(n: usize) -> Vec<(String, Vec<f64>)> {
    vec![("x".into(), sample(&mut rng(31), n, Domain::Any))]
}

#[test]
fn a_loop_unrolled_to_100000_ops_matches_the_reference_on_the_cpu_fast_path() {
    let g = Graph::new();
    let outputs = unrolled(&g, 100, 33_334);
    check_against_reference(
        &Device::cpu_f32(),
        &g,
        &outputs,
        &data(100),
        1e-3,
        "unrolled",
    );
}

#[test]
fn a_loop_unrolled_to_3000_ops_matches_the_reference_on_the_gpu() {
    let Some(gpu) = gpu() else { return };
    let g = Graph::new();
    let outputs = unrolled(&g, 1000, 1000);
    let kernels = check_against_reference(&gpu, &g, &outputs, &data(1000), 1e-3, "unrolled");
    // Fused whole, it would be one kernel of ~10^4 lines.
    assert!(kernels.len() > 4, "{} kernels", kernels.len());
}

#[test]
fn a_recurrence_reading_its_state_three_times_a_step_compiles_on_every_device() {
    let mut devices = vec![Device::cpu(), Device::cpu_f32()];
    devices.extend(gpu());
    for device in &devices {
        let g = Graph::new();
        let outputs = recurrence(&g, 1000, 60);
        let what = format!("recurrence on {}", device.describe());
        check_against_reference(device, &g, &outputs, &data(1000), 1e-4, &what);
    }
}

#[test]
fn two_hundred_parameter_tensors_compile_for_a_device_of_eight_bindings() {
    // Σ_i Σ sin(p_i)·p_i and its 200 gradients: no kernel can take them
    // all, and the loss reads 200 sums. Planning tried every way of cutting
    // into windows for every group of targets, and planned again per
    // stored piece of the loss: 200 s for 100 tensors before.
    let mut devices = vec![Device::cpu_f32()];
    if gpu().is_some() {
        let eight = GpuOptions {
            max_storage_buffers: Some(8),
            ..Default::default()
        };
        devices.push(Device::gpu_with(&eight).expect("the adapter just opened"));
    }
    let k = 200;
    for device in &devices {
        let g = Graph::new();
        let ps: Vec<Var> = (0..k).map(|i| g.input(&format!("p{i}"), [64])).collect();
        let loss = ps
            .iter()
            .map(|p| (p.sin() * *p).sum())
            .reduce(|a, b| a + b)
            .unwrap();
        let outputs = with_gradients(loss, &ps);
        let mut r = rng(32);
        let data: Vec<(String, Vec<f64>)> = (0..k)
            .map(|i| (format!("p{i}"), sample(&mut r, 64, Domain::Any)))
            .collect();
        let what = format!("{k} tensors on {}", device.describe());
        check_against_reference(device, &g, &outputs, &data, 1e-4, &what);
    }
}

/// `steps` steps of a stencil along the last axis of x ([rows, 8]):
/// y ← (y shifted right + y shifted left)·0.5 + y·0.25, zeros shifted in
/// (`roll`: y ← y rotated by one·0.9 + y·0.1); the loss Σy·w, and its
/// gradient. Each step reads y at three sets of indices: recomputing
/// takes 3^steps copies of the first steps.
fn shifts<'g>(g: &'g Graph, steps: usize, roll: bool) -> Vec<Var<'g>> {
    let x = g.input("x", [4, 8]);
    let mut y = x;
    for _ in 0..steps {
        y = if roll {
            Var::concat(&[y.slice(1, 7, 8), y.slice(1, 0, 7)], 1) * 0.9 + y * 0.1
        } else {
            (y.pad(1, 1, 0).slice(1, 0, 8) + y.pad(1, 0, 1).slice(1, 1, 9)) * 0.5 + y * 0.25
        };
    }
    let w = g.input("w", [4, 8]);
    with_gradients((y * w).sum(), &[x])
}

#[test]
fn stencils_and_rolls_of_100_steps_compile_on_every_device() {
    let mut devices = vec![Device::cpu_f32(), Device::cpu_f32_with(in_chunks(5, 2))];
    devices.extend(gpu());
    let mut r = rng(33);
    let data = vec![
        ("x".to_string(), sample(&mut r, 32, Domain::Any)),
        ("w".to_string(), sample(&mut r, 32, Domain::Any)),
    ];
    for roll in [false, true] {
        for device in &devices {
            let g = Graph::new();
            let outputs = shifts(&g, 100, roll);
            let what = format!("roll {roll} on {}", device.describe());
            check_against_reference(device, &g, &outputs, &data, 1e-4, &what);
        }
    }
}

#[test]
fn a_second_order_chain_of_reductions_compiles_on_the_cpu_fast_path() {
    // y ← x·(0.01·Σ sin y) + 0.5·y, 300 steps; the loss L = Σy plus the
    // squared norm of its gradient, and the gradient of that: a reduction a
    // step, each read by the next, through two reverse passes.
    let g = Graph::new();
    let x = g.input("x", [16]);
    let mut y = x;
    for _ in 0..300 {
        y = x * (y.sin().sum() * 0.01) + y * 0.5;
    }
    let f = y.sum();
    let penalty = f + g.grad(f, &[x])[0].square().sum();
    let outputs = with_gradients(penalty, &[x]);
    let data = vec![("x".to_string(), sample(&mut rng(34), 16, Domain::Any))];
    check_against_reference(
        &Device::cpu_f32(),
        &g,
        &outputs,
        &data,
        1e-3,
        "second order",
    );
}
