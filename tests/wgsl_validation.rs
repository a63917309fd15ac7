//! Every op's kernels, forward and backward, pass naga's validation — no GPU needed.

mod common;
use common::*;
use wgrad::Graph;

#[test]
fn every_op_generates_valid_wgsl() {
    for c in cases() {
        let g = Graph::new();
        let (vars, y, loss) = record(&g, &c);
        let mut outputs = vec![y, loss];
        outputs.extend(g.grad(loss, &vars));
        let kernels = g
            .wgsl(&outputs)
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert!(!kernels.is_empty(), "{}: no kernels", c.name);
    }
}

#[test]
fn large_reductions_generate_valid_two_pass_wgsl() {
    let g = Graph::new();
    let x = g.input("x", [1 << 20]);
    let s = x.sum();
    let k = g.wgsl(&[s]).unwrap();
    assert_eq!(k.len(), 2, "a long sum folds chunks, then the chunks");
}

#[test]
fn matmul_and_both_its_gradients_use_the_tiled_kernel() {
    let g = Graph::new();
    let a = g.input("a", [2, 8, 5]);
    let b = g.input("b", [5, 6]);
    let loss = a.matmul(b).sin().sum();
    let grads = g.grad(loss, &[a, b]);
    let kernels = g.wgsl(&[loss, grads[0], grads[1]]).unwrap();
    let tiled = kernels.iter().filter(|k| k.contains("tile_a")).count();
    assert_eq!(
        tiled,
        3,
        "forward, d/da and d/db are matrix products:\n{g:?}\n{}",
        kernels.join("\n-----\n")
    );
}

#[test]
fn a_product_of_two_matrices_of_2_14_squared_plans_for_webgpus_default_limits() {
    // 1 GiB each, 8 parts of 128 MiB: no window of rows alone or of k alone
    // fits 8 bindings, windows of both do, each adding its sums to the
    // earlier windows'. (A buffer of each window's partials, folded by a
    // second pass, fitted in no window, and planning gave up.)
    let g = Graph::new();
    let a = g.input("a", [1 << 14, 1 << 14]);
    let b = g.input("b", [1 << 14, 1 << 14]);
    let kernels = g.wgsl(&[a.matmul(b)]).expect("planned and validated");
    assert!(kernels.len() >= 16, "{} windows", kernels.len());
}
