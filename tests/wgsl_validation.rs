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
fn row_and_column_folds_by_subgroups_of_one_size_or_of_many() {
    // A logistic-regression step's pass over X, planned for an adapter of
    // subgroups of 32 lanes (constants in the kernel) and for one of 8 to
    // 64 (the built-ins): both valid, each with its own sizes, and the
    // vector v read once per lane element, before the loop over rows.
    let g = Graph::new();
    // Rows of 256: at most 32 elements for each lane of 8.
    let x = g.param("X", [64, 256]);
    let t = g.param("t", [64, 1]);
    let v = g.param("v", [256, 1]);
    let loss = x.matmul(v).logistic_loss(t);
    let dv = g.grad(loss, &[v])[0];
    for (sizes, sg_size) in [((32, 32), "32u"), ((8, 64), "subgroup_size")] {
        let limits = wgrad::GpuLimits {
            subgroup_sizes: Some(sizes),
            ..Default::default()
        };
        let kernels = g.wgsl_for(&[loss, dv], &limits).unwrap();
        let pass = kernels
            .iter()
            .find(|k| k.contains("subgroupAdd"))
            .unwrap_or_else(|| panic!("{sizes:?}: no subgroup kernel"));
        assert!(
            pass.contains(&format!("let sg_size: u32 = {sg_size};")),
            "{sizes:?}"
        );
        let rows = pass.find("for (var first").expect("a loop over rows");
        // v is the only parameter read at an index taken modulo a row.
        assert!(
            !pass[rows..].contains("% 256u"),
            "{sizes:?}: v read in the row loop:\n{pass}"
        );
    }
}
