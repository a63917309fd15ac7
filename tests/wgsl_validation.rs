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
