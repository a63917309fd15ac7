//! Programs planned under forced small limits still match the CPU reference,
//! so the paths for devices with few bindings or workgroups run in CI.

mod common;
use common::*;
use wgrad::{Device, GpuOptions, Graph};

fn small_gpu(options: GpuOptions) -> Option<Device> {
    gpu()?; // skip (or fail under WGRAD_REQUIRE_GPU) as usual
    Some(Device::gpu_with(&options).expect("the adapter just opened"))
}

#[test]
fn few_storage_bindings_per_kernel() {
    let Some(dev) = small_gpu(GpuOptions {
        max_storage_buffers: Some(4),
        ..Default::default()
    }) else {
        return;
    };
    for (k, c) in cases().iter().enumerate() {
        let g = Graph::new();
        let (vars, y, loss) = record(&g, c);
        let mut outputs = vec![y, loss];
        outputs.extend(g.grad(loss, &vars));
        let data = as_f32(&feeds(c, y.numel(), k as u64));
        let mut p = g.compile(&dev, &outputs).unwrap();
        let got = p.run(&view(&data)).unwrap();
        let want = g
            .compile(&Device::cpu(), &outputs)
            .unwrap()
            .run(&view(&data))
            .unwrap();
        assert_close(c.name, &got, &want, 1e-3);
    }
}

#[test]
fn few_workgroups_per_dispatch() {
    // 3 workgroups of 256 threads cover 100,000 elements by grid-stride loops.
    let Some(dev) = small_gpu(GpuOptions {
        max_workgroups: Some(3),
        ..Default::default()
    }) else {
        return;
    };
    let n = 100_000;
    let g = Graph::new();
    let (x, y) = (g.input("x", [n]), g.input("y", [250, n / 250]));
    let f = (x.reshape([250, n / 250]) * y.exp()).sum() + y.max_axes(&[1], false).sum();
    let mut outputs = vec![f];
    outputs.extend(g.grad(f, &[x, y]));
    let mut r = rng(8);
    let data = as_f32(&[
        ("x".into(), sample(&mut r, n, Domain::Any)),
        ("y".into(), sample(&mut r, n, Domain::Any)),
    ]);
    let got = g
        .compile(&dev, &outputs)
        .unwrap()
        .run(&view(&data))
        .unwrap();
    let want = g
        .compile(&Device::cpu(), &outputs)
        .unwrap()
        .run(&view(&data))
        .unwrap();
    assert_close("grid-stride", &got, &want, 1e-3);
}
