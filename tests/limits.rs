//! Programs planned under forced small limits still match the CPU reference,
//! so the paths for devices with few bindings or workgroups run in CI.

mod common;
use common::*;
use wgrad::{Device, Error, GpuOptions, Graph};

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
    every_case_matches_reference(&dev);
    // A sum of twelve sums reads twelve buffers: it is cut into pieces that fit.
    let g = Graph::new();
    let xs: Vec<_> = (0..12).map(|i| g.input(&format!("x{i}"), [50])).collect();
    let total = xs
        .iter()
        .map(|x| (*x * *x).sum())
        .reduce(|a, b| a + b)
        .unwrap();
    let mut outputs = vec![total];
    outputs.extend(g.grad(total, &xs));
    let mut r = rng(18);
    let data: Vec<(String, Vec<f64>)> = (0..12)
        .map(|i| (format!("x{i}"), sample(&mut r, 50, Domain::Any)))
        .collect();
    check_against_reference(&dev, &g, &outputs, &data, 1e-3, "chain of sums");
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
    let outputs = with_gradients(f, &[x, y]);
    let mut r = rng(8);
    let data = [
        ("x".into(), sample(&mut r, n, Domain::Any)),
        ("y".into(), sample(&mut r, n, Domain::Any)),
    ];
    check_against_reference(&dev, &g, &outputs, &data, 1e-3, "grid-stride");
}

#[test]
fn tensors_larger_than_one_binding_are_split() {
    // 64 KiB bindings: every tensor over 16,384 elements spans several.
    let Some(dev) = small_gpu(GpuOptions {
        max_storage_binding: Some(64 << 10),
        ..Default::default()
    }) else {
        return;
    };
    let mut r = rng(9);
    let n = 100_003;
    let g = Graph::new();
    let (x, y, z) = (g.input("x", [n]), g.input("y", [n]), g.input("z", [n]));
    let f = ((x + y) * y.max(z)).sum();
    let m = g.input("m", [300, 200]);
    let b = g.input("b", [200, 90]);
    let mm = (m.tanh().matmul(b) * 0.1).sin().sum()
        + m.max_axes(&[0], false).sum()
        + m.logsumexp_axes(&[1], false).sum();
    let mut outputs = vec![f, mm];
    outputs.extend(g.grad(f + mm, &[x, y, z, m, b]));
    let data = as_f32(&[
        ("x".into(), sample(&mut r, n, Domain::Any)),
        ("y".into(), sample(&mut r, n, Domain::Any)),
        ("z".into(), sample(&mut r, n, Domain::Any)),
        ("m".into(), sample(&mut r, 300 * 200, Domain::Any)),
        ("b".into(), sample(&mut r, 200 * 90, Domain::Any)),
    ]);
    let mut p = g.compile(&dev, &outputs).unwrap();
    let split = p
        .kernels_wgsl()
        .iter()
        .filter(|k| k.contains("fn ld_t"))
        .count();
    assert!(
        split >= 2,
        "tensors over one binding are read through their parts"
    );
    let got = p.run(&view(&data)).unwrap();
    let want = g
        .compile(&Device::cpu(), &outputs)
        .unwrap()
        .run(&view(&data))
        .unwrap();
    assert_close("split bindings", &got, &want, 1e-3);
}

#[test]
fn parameters_larger_than_one_binding_update_in_place() {
    let Some(dev) = small_gpu(GpuOptions {
        max_storage_binding: Some(64 << 10),
        ..Default::default()
    }) else {
        return;
    };
    let n = 70_001;
    let g = Graph::new();
    let w = g.param("w", [n]);
    let loss = rosenbrock(w);
    let updates = wgrad::Optimizer::adam(1e-2).minimize(loss, &[w]);
    steps_match_reference(&dev, &g, loss, &updates, &start(10, n), 5);
}

/// `steps` logistic-regression steps (X of `rows` x `d`) on `dev` and on
/// the CPU reference, their losses and the final `v` compared; returns
/// whether the GPU ran each step as one pass over X.
fn logreg_steps_match_cpu(dev: Device, rows: usize, d: usize, seed: u64, steps: usize) -> bool {
    let g = Graph::new();
    let x = g.input("x", [rows, d]);
    let t = g.input("t", [rows, 1]);
    let v = g.param("v", [d, 1]);
    let loss = x.matmul(v).logistic_loss(t);
    let dv = g.grad(loss, &[v])[0];
    let mut r = rng(seed);
    let data = as_f32(&[
        ("x".into(), sample(&mut r, rows * d, Domain::Any)),
        ("t".into(), sample(&mut r, rows, Domain::Any)),
    ]);
    let v0: Vec<f32> = sample(&mut r, d, Domain::Any)
        .iter()
        .map(|&a| a as f32)
        .collect();
    let mut fused = false;
    let mut results = Vec::new();
    for device in [dev, Device::cpu()] {
        let mut p = g
            .compile_with_updates(&device, &[loss], &[(v, v - 0.1 * dv)])
            .unwrap();
        if device.is_gpu() {
            fused = p.kernels_wgsl().iter().any(|k| k.contains("ROW_LEN"));
        }
        p.set_param("v", &v0).unwrap();
        let mut out = Vec::new();
        for _ in 0..steps {
            out.push(p.run(&view(&data)).unwrap().remove(0));
        }
        out.push(p.param("v").unwrap());
        results.push(out);
    }
    assert_close(
        &format!("logreg {rows}x{d}: losses, then v"),
        &results[0],
        &results[1],
        1e-4,
    );
    fused
}

#[test]
fn a_row_and_column_reduction_too_wide_to_fuse_run_apart() {
    // Four bindings cannot hold X, v, t, z and the partials: no fusion, same result.
    let Some(dev) = small_gpu(GpuOptions {
        max_storage_buffers: Some(4),
        ..Default::default()
    }) else {
        return;
    };
    assert!(!logreg_steps_match_cpu(dev, 64, 48, 16, 1), "not fused");
}

#[test]
fn a_fused_row_and_column_reduction_under_small_limits_matches_the_cpu() {
    // X of 300 x 200 in 64 KiB bindings is 4 parts; with 3 workgroups each
    // takes several of the 10 groups of rows; with six bindings per kernel,
    // X's four and the five other buffers do not fit one kernel, but a
    // window of X's rows does. All still fuse into one pass over X.
    let limits = [
        GpuOptions {
            max_storage_binding: Some(64 << 10),
            ..Default::default()
        },
        GpuOptions {
            max_workgroups: Some(3),
            ..Default::default()
        },
        GpuOptions {
            max_storage_binding: Some(64 << 10),
            max_storage_buffers: Some(6),
            ..Default::default()
        },
    ];
    for options in limits {
        let Some(dev) = small_gpu(options.clone()) else {
            return;
        };
        let fused = logreg_steps_match_cpu(dev, 300, 200, 17, 2);
        assert!(fused, "{options:?}: the step is one pass over X");
    }
}

/// 64 KiB bindings (16,384 floats) and four storage buffers per kernel:
/// tensors of several parts cannot all be bound at once.
fn tiny_bindings() -> Option<Device> {
    small_gpu(GpuOptions {
        max_storage_binding: Some(64 << 10),
        max_storage_buffers: Some(4),
        ..Default::default()
    })
}

#[test]
fn tensors_needing_more_bindings_than_a_kernel_has_run_in_windows() {
    let Some(dev) = tiny_bindings() else {
        return;
    };
    let part = 16_384;
    let mut r = rng(17);
    // The lecture slide's function on 100,003 elements (seven parts of each
    // tensor): value and gradients.
    let n = 100_003;
    let g = Graph::new();
    let (x, y, z) = (g.input("x", [n]), g.input("y", [n]), g.input("z", [n]));
    let f = ((x + y) * y.max(z)).sum();
    let outputs = with_gradients(f, &[x, y, z]);
    let data: Vec<(String, Vec<f64>)> = ["x", "y", "z"]
        .iter()
        .map(|s| (s.to_string(), sample(&mut r, n, Domain::Any)))
        .collect();
    let kernels = check_against_reference(&dev, &g, &outputs, &data, 1e-3, "slide, in windows");
    assert!(windows(&kernels, &WINDOW_STARTS) >= 2);
    // Rows of a matrix of four parts (row sums, windows of rows), its
    // columns (column sums, windows of each column's fold), and a slice.
    let g = Graph::new();
    let m = g.input("m", [300, 4 * part / 300 + 1]);
    let cols = m.shape().dims()[1];
    let f = m.exp().sum_axes(&[1], false).sin().sum()
        + (m * m).sum_axes(&[0], false).sqrt().sum()
        + m.slice(1, 1, cols).max_axes(&[0, 1], false);
    let outputs = with_gradients(f, &[m]);
    let data = [("m".into(), sample(&mut r, 300 * cols, Domain::Any))];
    check_against_reference(&dev, &g, &outputs, &data, 1e-3, "rows and columns");
    // A vector of two parts broadcast over rows of a matrix of seven:
    // windows of the matrix cross rows, so they reach all of the vector.
    let g = Graph::new();
    let (a, v) = (g.input("a", [5, 20_000]), g.input("v", [20_000]));
    let f = (a * v).tanh().sum();
    let outputs = with_gradients(f, &[a, v]);
    let data = [
        ("a".into(), sample(&mut r, 100_000, Domain::Any)),
        ("v".into(), sample(&mut r, 20_000, Domain::Any)),
    ];
    check_against_reference(&dev, &g, &outputs, &data, 1e-3, "a broadcast vector");
    // A batch of inputs (four parts) times a small matrix: the product and
    // the inputs' gradient in windows of rows, the matrix's gradient (a sum
    // over the batch) in windows of the sum, whose partials are folded.
    let g = Graph::new();
    let (x, w) = (g.input("x", [600, 100]), g.input("w", [100, 20]));
    let f = x.matmul(w).tanh().sum();
    let outputs = with_gradients(f, &[x, w]);
    let data = [
        ("x".into(), sample(&mut r, 60_000, Domain::Any)),
        ("w".into(), sample(&mut r, 2_000, Domain::Any)),
    ];
    let kernels =
        check_against_reference(&dev, &g, &outputs, &data, 1e-3, "a batch times a matrix");
    assert!(windows(&kernels, &["FIRST_TILE"]) >= 1, "windows of rows");
    assert!(windows(&kernels, &["K_START"]) >= 1, "windows of the sum");
    // A gradient step on a parameter of seven parts, in place.
    let g = Graph::new();
    let w = g.param("w", [n]);
    let loss = rosenbrock(w);
    let dw = g.grad(loss, &[w])[0];
    steps_match_reference(&dev, &g, loss, &[(w, w - 1e-4 * dw)], &start(11, n), 3);
    // And a logistic regression whose X is four parts: the row product and
    // the column accumulation run apart, each in windows.
    assert!(!logreg_steps_match_cpu(dev, 300, 200, 19, 2), "not fused");
}

#[test]
fn a_transpose_larger_than_the_bindings_runs_in_blocks() {
    // A 256 x 256 matrix in 64 KiB bindings is four parts of 64 rows. Every
    // range of the transpose's elements reaches all four, which with the
    // other tensors' parts is more than four bindings; a block of 64 rows
    // by 64 columns reaches one part of each tensor.
    let Some(dev) = tiny_bindings() else {
        return;
    };
    let g = Graph::new();
    let (m, w) = (g.input("m", [256, 256]), g.input("w", [256, 256]));
    let f = (m.transpose() * w).tanh().sum() + m.transpose().sum_axes(&[1], false).sin().sum();
    let outputs = with_gradients(f, &[m, w]);
    let mut r = rng(31);
    let data = [
        ("m".into(), sample(&mut r, 65_536, Domain::Any)),
        ("w".into(), sample(&mut r, 65_536, Domain::Any)),
    ];
    let kernels = check_against_reference(&dev, &g, &outputs, &data, 1e-3, "a transpose in blocks");
    assert!(windows(&kernels, &["BLOCK_COL"]) >= 1, "blocks of columns");
}

#[test]
fn an_op_whose_reads_exceed_the_bindings_is_refused_naming_its_line() {
    // Two bindings per kernel cannot hold an addition's two operands and
    // its result, however it is cut.
    let Some(dev) = small_gpu(GpuOptions {
        max_storage_buffers: Some(2),
        ..Default::default()
    }) else {
        return;
    };
    let g = Graph::new();
    let (x, y) = (g.input("x", [100, 3]), g.input("y", [100, 3]));
    let line = line!() + 1;
    let sum = x + y;
    let err = g.compile(&dev, &[sum]).err().expect("refused");
    assert!(matches!(err, Error::TooLarge(_)), "{err}");
    let message = err.to_string();
    assert!(message.contains("binds at most 2"), "{message}");
    assert!(message.contains(&format!("limits.rs:{line}")), "{message}");
    assert!(message.contains("[100, 3]"), "{message}");
}

#[test]
fn a_program_larger_than_memory_is_refused_before_it_allocates() {
    // 2^40 floats (4 TiB) on the CPU backends; on a GPU, 256 tensors of 2^29
    // floats (512 GiB), each small enough to index. More than any machine
    // this runs on has: the error comes before any buffer is touched.
    let g = Graph::new();
    let w = g.param("w", [1 << 20, 1 << 20]);
    for device in [Device::cpu(), Device::cpu_f32()] {
        let err = g.compile(&device, &[(w * w).sum()]).err().expect("refused");
        assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
    }
    let Some(gpu) = gpu() else {
        return;
    };
    let g = Graph::new();
    let loss = (0..256)
        .map(|i| g.param(&format!("w{i}"), [1 << 29]).sum())
        .reduce(|a, b| a + b)
        .unwrap();
    let err = g.compile(&gpu, &[loss]).err().expect("refused");
    assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
}

#[test]
fn a_matrix_product_of_more_than_2_pow_32_terms_indexes_its_operands() {
    // 4112 x 256 times 256 x 4096: more than 2^32 products (rows from 4096
    // on index past 2^32 in the product), though no tensor has more than
    // 2^24 elements. Sampled outputs against f64 dot products.
    let Some(dev) = gpu() else {
        return;
    };
    let (m, k, n) = (4112, 256, 4096);
    let g = Graph::new();
    let (a, b) = (g.input("a", [m, k]), g.input("b", [k, n]));
    let mut r = rng(29);
    let (xa, xb) = (
        sample(&mut r, m * k, Domain::Any),
        sample(&mut r, k * n, Domain::Any),
    );
    let data = as_f32(&[("a".into(), xa), ("b".into(), xb)]);
    let got = g
        .compile(&dev, &[a.matmul(b)])
        .unwrap()
        .run(&view(&data))
        .unwrap()
        .remove(0);
    let (fa, fb) = (&data[0].1, &data[1].1);
    for (i, j) in [(0, 0), (4111, 4095), (4096, 17), (4100, 4000), (1500, 2500)] {
        let want: f64 = (0..k)
            .map(|t| fa[i * k + t] as f64 * fb[t * n + j] as f64)
            .sum();
        let have = got[i * n + j] as f64;
        assert!(
            (have - want).abs() <= 1e-3 * want.abs().max(1.0),
            "out[{i}][{j}] = {have}, want {want}"
        );
    }
}

#[test]
fn a_value_too_large_for_32_bit_indices_is_refused_naming_its_line() {
    // An outer product of two vectors of 2^16, summed: no tensor is stored
    // larger than 2^16 elements, but the product's 2^32 indices would wrap.
    let Some(dev) = gpu() else {
        return;
    };
    let g = Graph::new();
    let (x, y) = (g.input("x", [1 << 16, 1]), g.input("y", [1, 1 << 16]));
    let line = line!() + 1;
    let outer = x * y;
    let err = g.compile(&dev, &[outer.sum()]).err().expect("refused");
    assert!(matches!(err, Error::TooLarge(_)), "{err}");
    let message = err.to_string();
    assert!(message.contains(&format!("limits.rs:{line}")), "{message}");
    assert!(message.contains("[65536, 65536]"), "{message}");
}
