//! The CPU fast path (f32, fused, threaded) against the f64 reference.

mod common;
use common::*;
use wgrad::{CpuOptions, Device, Graph, Optimizer, Var};

#[test]
fn every_op_and_its_gradients_match_the_reference() {
    every_case_matches_reference(&Device::cpu_f32());
}

#[test]
fn every_op_matches_the_reference_in_tiny_chunks() {
    // Chunk and task boundaries inside every row, run, pad and reduction.
    every_case_matches_reference(&Device::cpu_f32_with(in_chunks(5, 3)));
}

#[test]
fn large_fused_workloads_match_the_reference_and_repeat_bit_for_bit() {
    let n = 300_001;
    let g = Graph::new();
    let (x, y, z) = (g.input("x", [n]), g.input("y", [n]), g.input("z", [n]));
    let f = ((x + y) * y.max(z)).sum() + (x.slice(0, 1, n) * y.slice(0, 0, n - 1)).tanh().sum();
    let outputs = with_gradients(f, &[x, y, z]);
    let mut r = rng(13);
    let data: Vec<(String, Vec<f64>)> = ["x", "y", "z"]
        .iter()
        .map(|name| (name.to_string(), sample(&mut r, n, Domain::Any)))
        .collect();
    check_against_reference(&Device::cpu_f32(), &g, &outputs, &data, 1e-3, "fused 300k");
    let data = as_f32(&data);
    let mut p = g.compile(&Device::cpu_f32(), &outputs).unwrap();
    let first = p.run(&view(&data)).unwrap();
    assert_eq!(first, p.run(&view(&data)).unwrap(), "a rerun changed bits");
}

#[test]
fn matrix_products_by_blocks_match_the_reference() {
    // Each product, its sine's sum and the gradients of that: the product
    // and both its gradients run by blocks (`gemm.rs`), with sizes past
    // the register tile's, the packed blocks' and the tasks' edges.
    type Product = for<'g> fn(&[Var<'g>]) -> Var<'g>;
    let cases: [(&str, &[&[usize]], Product); 8] = [
        ("k past a block", &[&[7, 300], &[300, 35]], |v| {
            v[0].matmul(v[1])
        }),
        ("n and m past a block", &[&[130, 5], &[5, 300]], |v| {
            v[0].matmul(v[1])
        }),
        ("batched, broadcast", &[&[3, 1, 9, 40], &[2, 40, 33]], |v| {
            v[0].matmul(v[1])
        }),
        ("a transpose", &[&[40, 9], &[40, 11]], |v| {
            v[0].transpose().matmul(v[1])
        }),
        ("a slice", &[&[9, 50], &[40, 6]], |v| {
            v[0].slice(1, 5, 45).matmul(v[1])
        }),
        ("a computed factor", &[&[20, 30], &[30, 20]], |v| {
            (v[0] * 2.0).tanh().matmul(v[1] + v[0].transpose())
        }),
        ("permuted batches", &[&[40, 3, 9], &[3, 40, 4]], |v| {
            v[0].permute(&[1, 2, 0]).matmul(v[1])
        }),
        // Recorded as its product of broadcasts: the batch axis comes last.
        ("a batch axis last", &[&[6, 40, 1, 3], &[40, 7, 3]], |v| {
            (v[0] * v[1]).sum_axes(&[1], true)
        }),
    ];
    let mut r = rng(21);
    for (what, shapes, product) in cases {
        let g = Graph::new();
        let names = ["a", "b"];
        let vars: Vec<Var> = (names.iter().zip(shapes))
            .map(|(n, s)| g.input(n, s.to_vec()))
            .collect();
        let c = product(&vars);
        let mut outputs = vec![c];
        outputs.extend(with_gradients(c.sin().sum(), &vars));
        let data: Vec<(String, Vec<f64>)> = (names.iter().zip(shapes))
            .map(|(n, s)| {
                (
                    n.to_string(),
                    sample(&mut r, s.iter().product(), Domain::Any),
                )
            })
            .collect();
        check_against_reference(&Device::cpu_f32(), &g, &outputs, &data, 1e-4, what);
    }
}

#[test]
fn second_derivatives_through_products_match_the_reference() {
    // The gradient of a function of a gradient: products of products'
    // gradients, each run by blocks.
    let g = Graph::new();
    let (a, b) = (g.input("a", [12, 30]), g.input("b", [30, 9]));
    let f = a.matmul(b).tanh().sum();
    let da = g.grad(f, &[a])[0];
    let outputs = with_gradients((da * da).sum(), &[a, b]);
    let mut r = rng(24);
    let data = vec![
        ("a".to_string(), sample(&mut r, 12 * 30, Domain::Any)),
        ("b".to_string(), sample(&mut r, 30 * 9, Domain::Any)),
    ];
    check_against_reference(
        &Device::cpu_f32(),
        &g,
        &outputs,
        &data,
        1e-3,
        "second order",
    );
}

#[test]
fn optimizer_steps_match_the_reference() {
    let n = 5000;
    let g = Graph::new();
    let w = g.param("w", [n]);
    let loss = rosenbrock(w);
    let updates = Optimizer::adam(1e-2).minimize(loss, &[w]);
    steps_match_reference(&Device::cpu_f32(), &g, loss, &updates, &start(14, n), 5);
}

#[test]
fn long_sums_keep_their_digits() {
    // 2^22 terms of 0.1: an f32 running sum drifts by ~1e-2 relative here.
    // Along rows (one output) and down columns (a run along the outputs),
    // in tasks of the default size and in one task holding every row.
    let (rows, cols) = (1 << 16, 64);
    let g = Graph::new();
    let x = g.input("x", [rows, cols]);
    let (all, columns) = (x.sum(), x.sum_axes(&[0], false));
    let data = vec![0.1f32; rows * cols];
    let run = |device: &Device, out| -> Vec<f32> {
        let mut p = g.compile(device, &[out]).unwrap();
        p.run(&[("x", &data)]).unwrap().remove(0)
    };
    let one_task = Device::cpu_f32_with(in_chunks(1024, rows * cols / 1024));
    for device in [Device::cpu_f32(), one_task] {
        for out in [all, columns] {
            let (got, want) = (run(&device, out), run(&Device::cpu(), out));
            for (g, w) in got.iter().zip(&want) {
                assert!(((g - w) / w).abs() < 1e-6, "{g} vs {w}");
            }
        }
    }
}

#[test]
fn logistic_regression_with_fused_row_and_column_passes_matches_the_reference() {
    // The gradient's column sums run task by task right after the row sums
    // they read (a fused step); tasks hold whole rows.
    let small = |chunk| Device::cpu_f32_with(in_chunks(chunk, 3));
    // Chunks of 5 end inside rows of 7; chunks of 28 hold 4 whole rows, so
    // `w` along the rows is read in place once and each row's weight in
    // the column sums is one value for its row.
    let cases = [
        (Device::cpu_f32(), 300, 257),
        (small(5), 40, 7),
        (small(28), 40, 7),
    ];
    for (device, rows, d) in cases {
        let g = Graph::new();
        let x = g.input("x", [rows, d]);
        let t = g.input("t", [rows, 1]);
        let w = g.input("w", [d, 1]);
        let loss = x.matmul(w).logistic_loss(t);
        let dw = g.grad(loss, &[w])[0];
        let mut r = rng(15);
        let mut data: Vec<(String, Vec<f64>)> = [("x", rows * d), ("w", d)]
            .iter()
            .map(|&(name, n)| (name.to_string(), sample(&mut r, n, Domain::Any)))
            .collect();
        let signs = sample(&mut r, rows, Domain::Any)
            .iter()
            .map(|v| v.signum())
            .collect();
        data.push(("t".to_string(), signs));
        check_against_reference(&device, &g, &[loss, dw], &data, 1e-4, "logreg");
    }
}

#[test]
fn row_then_column_steps_reading_each_others_rows_match_the_reference() {
    // Two tensors over the same rows, of different widths (so two passes):
    // each column sum weighs its rows by row sums. Where one column pass
    // reads the other tensor's row sums, its step must run second; where
    // both do, one step runs as two passes.
    let tiny = Device::cpu_f32_with(in_chunks(5, 3));
    for (device, rows, d1, d2) in [(Device::cpu_f32(), 300, 257, 130), (tiny, 40, 7, 5)] {
        for both in [false, true] {
            let g = Graph::new();
            let (x1, x2) = (g.input("x1", [rows, d1]), g.input("x2", [rows, d2]));
            let (v1, v2) = (g.input("v1", [1, d1]), g.input("v2", [1, d2]));
            let z1 = (x1 * v1).sum_axes(&[1], true);
            let z2 = (x2 * v2).sum_axes(&[1], true);
            let w1 = if both { z1 * z2 } else { z1.tanh() };
            let (t1, t2) = (x1 * w1, x2 * (z1 + z2));
            let (c1, c2) = (t1.sum_axes(&[0], false), t2.sum_axes(&[0], false));
            // Terms of either sign, up to ~200 in size, summed down 300
            // rows: results far smaller than their terms.
            let scales = [
                t1.abs().sum_axes(&[0], false),
                t2.abs().sum_axes(&[0], false),
            ];
            let mut r = rng(19);
            let data: Vec<(String, Vec<f64>)> =
                [("x1", rows * d1), ("x2", rows * d2), ("v1", d1), ("v2", d2)]
                    .iter()
                    .map(|&(name, n)| (name.to_string(), sample(&mut r, n, Domain::Any)))
                    .collect();
            let what = "two row+column steps";
            check_sums_against_reference(&device, &g, &[c1, c2], &scales, &data, 1e-6, what);
        }
    }
}

#[test]
fn negations_folded_into_their_neighbours_keep_their_signs() {
    // The fast path rewrites x + (-y), x - (-y), (-y) + x and -(s·y) for a
    // uniform s without the negation; each sign must survive.
    let n = 1000;
    let g = Graph::new();
    let (x, y, s) = (g.input("x", [n]), g.input("y", [n]), g.input("s", [1]));
    let s = s.broadcast_to([n]);
    let terms = [x + -y, x - -y, -y + x, -(s * y), -(y * s), -(y * 2.0) + x];
    let outputs: Vec<_> = terms.iter().map(|t| t.tanh()).collect();
    let mut r = rng(20);
    let data: Vec<(String, Vec<f64>)> = [("x", n), ("y", n), ("s", 1)]
        .iter()
        .map(|&(name, k)| (name.to_string(), sample(&mut r, k, Domain::Any)))
        .collect();
    check_against_reference(&Device::cpu_f32(), &g, &outputs, &data, 1e-5, "negations");
}

#[test]
fn constants_fold_at_plan_time_to_the_bits_the_tape_computes() {
    // 0.1 · 0.3 in f32 (0.030000001) is not 0.1 · 0.3 in f64 rounded to
    // f32 (0.03): folded once per program, it must still be the former.
    let g = Graph::new();
    let x = g.input("x", [5]);
    let c = g.constant(0.1) * g.constant(0.3);
    // (sqrt: correctly rounded in f32, as the tape computes it.)
    let d = (g.constant(0.7) / g.constant(0.1) - g.constant(0.3)).sqrt();
    let y = x * c + d;
    let xs = [1.0f32, -2.0, 3.5, 0.25, 7.0];
    let got = g
        .compile(&Device::cpu_f32(), &[y])
        .unwrap()
        .run(&[("x", &xs)])
        .unwrap();
    let (c32, d32) = (0.1f32 * 0.3f32, (0.7f32 / 0.1f32 - 0.3f32).sqrt());
    let want: Vec<f32> = xs.iter().map(|&v| v * c32 + d32).collect();
    assert_eq!(got[0], want);
}

#[test]
fn native_kernels_keep_the_tapes_signed_zeros_and_nans() {
    // Every pair of special values (ties of zeros of either sign, NaNs on
    // either side), through runs of element-wise ops long enough to become
    // native kernels: their bits must be the tape's.
    let special = [
        0.0,
        -0.0,
        f32::NAN,
        1.0,
        -1.0,
        f32::INFINITY,
        -f32::INFINITY,
        1e-40,
    ];
    let pairs = special
        .iter()
        .flat_map(|&a| special.iter().map(move |&b| (a, b)));
    let (a, b): (Vec<f32>, Vec<f32>) = pairs.unzip();
    let n = a.len();
    let g = Graph::new();
    let (x, y) = (g.input("a", [n]), g.input("b", [n]));
    let outputs = [
        x.max(y).min(x) * y,
        x.min(y).max(y) / x,
        (x.lt(y) + x.le(y) * 2.0) * (x.gt(y) + x.ge(y) * 2.0 + x.eq(y) * 4.0),
        -(x.relu().sqrt() - y.abs()),
        x.lt(y).select(x * y, x - y).max(y),
    ];
    let run = |native| {
        let options = CpuOptions {
            native,
            ..CpuOptions::default()
        };
        let mut p = g.compile(&Device::cpu_f32_with(options), &outputs).unwrap();
        p.run(&[("a", &a), ("b", &b)]).unwrap()
    };
    let (native, tape) = (run(true), run(false));
    for (k, (got, want)) in native.iter().zip(&tape).enumerate() {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let (a, b) = (a[i], b[i]);
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "output {k} at a = {a}, b = {b}: {g} vs {w}"
            );
        }
    }
}

#[test]
fn programs_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<wgrad::Program>();
}

#[test]
fn native_kernels_through_pads_compute_the_tapes_bits() {
    // Rosenbrock's gradient pads two shifted terms: in the chunks inside
    // the vector each pad only copies, and one kernel runs through both;
    // in the chunks at its ends the tape pads. Either way, the tape's bits.
    let n = 10_000;
    let g = Graph::new();
    let w = g.input("w", [n]);
    let loss = rosenbrock(w);
    let grad = g.grad(loss, &[w])[0];
    let outputs = [grad, w - grad * 1e-4];
    let data = start(3, n);
    for chunk in [1024, 100] {
        let run = |native| {
            let options = CpuOptions {
                native,
                ..in_chunks(chunk, CpuOptions::default().chunks_per_task)
            };
            let mut p = g.compile(&Device::cpu_f32_with(options), &outputs).unwrap();
            p.run(&[("w", &data)]).unwrap()
        };
        let (native, tape) = (run(true), run(false));
        for (k, (got, want)) in native.iter().zip(&tape).enumerate() {
            let same = got
                .iter()
                .zip(want)
                .all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(
                same,
                "output {k}, chunk {chunk}: the native kernels changed bits"
            );
        }
    }
}

#[test]
fn column_sums_over_many_batches_of_tasks_match_the_reference() {
    // Rows of 2^16: each task (half a row) holds 2^15 column partials, so
    // 160 tasks take two batches of the fast path's partials.
    let (rows, cols) = (80, 1 << 16);
    let g = Graph::new();
    let x = g.input("x", [rows, cols]);
    let outputs = [x.sum_axes(&[0], false), x.max_axes(&[0], false)];
    let data = vec![(
        "x".to_string(),
        sample(&mut rng(21), rows * cols, Domain::Any),
    )];
    check_against_reference(&Device::cpu_f32(), &g, &outputs, &data, 1e-5, "batches");
}
