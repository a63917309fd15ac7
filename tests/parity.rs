//! The GPU against the CPU reference: every op's value and gradients, long
//! reductions, and bit-identical repeated runs.

mod common;
use common::*;
use wgrad::Graph;

#[test]
fn every_op_and_its_gradients_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    every_case_matches_reference(&gpu);
}

#[test]
fn a_sum_of_2_pow_20_terms_matches_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let n = 1 << 20;
    let g = Graph::new();
    let (x, y, z) = (g.input("x", [n]), g.input("y", [n]), g.input("z", [n]));
    let f = ((x + y) * y.max(z)).sum();
    let outputs = with_gradients(f, &[x, y, z]);
    let mut r = rng(3);
    let data: Vec<(String, Vec<f64>)> = ["x", "y", "z"]
        .iter()
        .map(|n| (n.to_string(), sample(&mut r, 1 << 20, Domain::Any)))
        .collect();
    check_against_reference(&gpu, &g, &outputs, &data, 1e-3, "seed 2^20");
    // Wide reductions over one axis of a matrix, both ways.
    let g = Graph::new();
    let m = g.input("m", [1024, 1024]);
    let outputs = [
        m.sum_axes(&[0], false),
        m.max_axes(&[1], false),
        m.logsumexp(),
    ];
    let data = vec![("m".to_string(), sample(&mut r, 1 << 20, Domain::Any))];
    check_against_reference(&gpu, &g, &outputs, &data, 1e-3, "matrix reductions");
}

#[test]
fn the_same_run_twice_gives_identical_bits() {
    let Some(gpu) = gpu() else { return };
    let n = 300_000;
    let g = Graph::new();
    let (x, y) = (g.input("x", [n]), g.input("y", [n]));
    let f = (x.sin() * y + x.square()).sum() + (x * y).max_all();
    let outputs = with_gradients(f, &[x, y]);
    let mut r = rng(4);
    let (xs, ys) = (
        sample(&mut r, n, Domain::Any),
        sample(&mut r, n, Domain::Any),
    );
    let data = as_f32(&[("x".into(), xs), ("y".into(), ys)]);
    let mut p = g.compile(&gpu, &outputs).unwrap();
    let first = p.run(&view(&data)).unwrap();
    for _ in 0..3 {
        let again = p.run(&view(&data)).unwrap();
        let same = first
            .iter()
            .zip(&again)
            .all(|(a, b)| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert!(same, "a rerun changed bits");
    }
    // A freshly compiled program gives the same bits too.
    let fresh = g
        .compile(&gpu, &outputs)
        .unwrap()
        .run(&view(&data))
        .unwrap();
    assert_eq!(first, fresh);
}
