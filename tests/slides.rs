//! The two slides wgrad began from, against hand-derived numbers, on both backends.

mod common;
use wgrad::{Device, Graph};

fn slides_on(device: &Device) {
    // f = (x + y) · max(y, z) at (1, 2, 0): a = 3, b = 2, f = 6;
    // df/dx = b = 2, df/dy = b + a·[y > z] = 2 + 3 = 5, df/dz = a·[z > y] = 0.
    let g = Graph::new();
    let (x, y, z) = (g.input("x", []), g.input("y", []), g.input("z", []));
    let f = (x + y) * y.max(z);
    let d = g.grad(f, &[x, y, z]);
    let mut p = g.compile(device, &[f, d[0], d[1], d[2]]).unwrap();
    let out = p
        .run(&[("x", &[1.0]), ("y", &[2.0]), ("z", &[0.0])])
        .unwrap();
    assert_eq!(out, vec![vec![6.0], vec![2.0], vec![5.0], vec![0.0]]);

    // q = x + y, f = q · z at (4, −3, 5): df/dx = df/dy = z = 5, df/dz = q = 1.
    let g = Graph::new();
    let (x, y, z) = (g.input("x", []), g.input("y", []), g.input("z", []));
    let f = (x + y) * z;
    let d = g.grad(f, &[x, y, z]);
    let mut p = g.compile(device, &d).unwrap();
    let out = p
        .run(&[("x", &[4.0]), ("y", &[-3.0]), ("z", &[5.0])])
        .unwrap();
    assert_eq!(out, vec![vec![5.0], vec![5.0], vec![1.0]]);
}

#[test]
fn slides_on_the_cpu() {
    slides_on(&Device::cpu());
}

#[test]
fn slides_on_the_gpu() {
    if let Some(d) = common::gpu() {
        slides_on(&d);
    }
}

/// With `WGRAD_REQUIRE_GPU=1` a missing adapter fails the GPU tests; without
/// it they skip. Runs this test binary's GPU test again with no adapter to
/// be found (`WGPU_ADAPTER_NAME` naming none).
#[test]
fn a_missing_adapter_fails_only_when_a_gpu_is_required() {
    let exe = std::env::current_exe().expect("the test binary");
    let run = |require: &str| {
        std::process::Command::new(&exe)
            .args(["--exact", "slides_on_the_gpu", "--test-threads", "1"])
            .env("WGPU_ADAPTER_NAME", "no adapter is called this")
            .env("WGRAD_REQUIRE_GPU", require)
            .output()
            .expect("the test binary runs")
    };
    let required = run("1");
    assert!(
        !required.status.success(),
        "a missing adapter must fail under WGRAD_REQUIRE_GPU=1"
    );
    let text =
        String::from_utf8_lossy(&required.stdout) + String::from_utf8_lossy(&required.stderr);
    assert!(
        text.contains("no GPU adapter found"),
        "the failure says why: {text}"
    );
    assert!(
        run("0").status.success(),
        "without the requirement the GPU test skips"
    );
}
