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
