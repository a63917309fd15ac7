//! The dispatch and byte bounds of the benchmark workloads, from each
//! program's own accounting, on whatever adapter runs the tests.

mod common;
use wgrad::{Device, Graph, Stats};

fn per_element(s: Stats, n: usize) -> f64 {
    (s.bytes_read + s.bytes_written) as f64 / n as f64
}

fn seed_stats(device: &Device, n: usize) -> Stats {
    let g = Graph::new();
    let (x, y, z) = (g.param("x", [n]), g.param("y", [n]), g.param("z", [n]));
    let f = ((x + y) * y.max(z)).sum();
    let d = g.grad(f, &[x, y, z]);
    g.compile(device, &[f, d[0], d[1], d[2]]).unwrap().stats()
}

fn rosenbrock_stats(device: &Device, n: usize) -> Stats {
    let g = Graph::new();
    let w = g.param("w", [n]);
    let (a, b) = (w.slice(0, 0, n - 1), w.slice(0, 1, n));
    let r = (100.0 * (b - a.square()).square() + (1.0 - a).square()).sum();
    let dw = g.grad(r, &[w])[0];
    g.compile_with_updates(device, &[], &[(w, w - 1e-4 * dw)])
        .unwrap()
        .stats()
}

#[test]
fn seed_is_two_dispatches_at_the_byte_floor() {
    let Some(gpu) = common::gpu() else { return };
    for n in [1 << 12, 1 << 20] {
        let s = seed_stats(&gpu, n);
        assert!(s.dispatches <= 2, "n = {n}: {s:?}");
        assert!(
            per_element(s, n) <= 24.5,
            "n = {n}: {} bytes/element",
            per_element(s, n)
        );
    }
}

#[test]
fn a_rosenbrock_step_is_one_pass_at_the_byte_floor() {
    let Some(gpu) = common::gpu() else { return };
    let n = 1 << 20;
    let s = rosenbrock_stats(&gpu, n);
    assert!(s.dispatches <= 2, "{s:?}");
    assert!(
        per_element(s, n) <= 8.5,
        "{} bytes/element",
        per_element(s, n)
    );
}
