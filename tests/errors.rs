//! Bad input gets a clear error that names the user's line, the input and
//! both shapes; nothing panics inside wgpu.

mod common;
use wgrad::{CpuOptions, Device, Error, GpuOptions, Graph};

#[test]
fn shape_errors_name_the_callers_line_and_both_shapes() {
    let g = Graph::new();
    let a = g.input("a", [2, 3]);
    let b = g.input("b", [4]);
    let line = line!() + 1;
    let err = a.try_add(b).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("tests/errors.rs:{line}")), "{msg}");
    assert!(msg.contains("[2, 3]") && msg.contains("[4]"), "{msg}");
    assert!(matches!(err, Error::Shape { op: "add", .. }));

    // The panicking form says the same, from the operator's line.
    let line = line!() + 1;
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a * b)).unwrap_err();
    let text = panic.downcast_ref::<String>().expect("a formatted message");
    assert!(text.contains(&format!("tests/errors.rs:{line}")), "{text}");
    assert!(text.contains("[2, 3]") && text.contains("[4]"), "{text}");

    let err = a.try_matmul(g.input("m", [2, 5])).unwrap_err().to_string();
    assert!(
        err.contains("inner dimensions") && err.contains("[2, 5]"),
        "{err}"
    );
    let err = a.try_reshape([7]).unwrap_err().to_string();
    assert!(err.contains("[2, 3]") && err.contains("[7]"), "{err}");
    assert!(a.try_slice(1, 2, 9).is_err());
    for bad in [&[2isize][..], &[0, 0], &[-3]] {
        assert!(a.try_sum_axes(bad, false).is_err(), "{bad:?}");
        assert!(a.try_max_axes(bad, true).is_err(), "{bad:?}");
        assert!(a.try_min_axes(bad, false).is_err(), "{bad:?}");
        assert!(a.try_mean_axes(bad, true).is_err(), "{bad:?}");
        assert!(a.try_logsumexp_axes(bad, false).is_err(), "{bad:?}");
    }
    assert!(b.try_transpose().is_err());
    assert!(a.try_permute(&[0, 0]).is_err());
    assert!(g.try_input("a", [1]).is_err(), "names are unique");
}

#[test]
fn grad_of_a_non_scalar_is_an_error() {
    let g = Graph::new();
    let a = g.input("a", [3]);
    let err = g.try_grad(a.exp(), &[a]).unwrap_err().to_string();
    assert!(err.contains("scalar") && err.contains("[3]"), "{err}");
}

fn run_errors_on(device: &Device) {
    let g = Graph::new();
    let (x, y) = (g.input("x", [3]), g.input("y", [3]));
    let f = (x * y).sum();
    let mut p = g.compile(device, &[f]).unwrap();
    let err = p.run(&[("x", &[1.0, 2.0, 3.0])]).unwrap_err();
    assert!(
        matches!(&err, Error::MissingInput { name, .. } if name == "y"),
        "{err}"
    );
    let err = p
        .run(&[("x", &[1.0; 3]), ("y", &[1.0; 3]), ("q", &[1.0])])
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownInput { name, .. } if name == "q"),
        "{err}"
    );
    let err = p.run(&[("x", &[1.0; 3]), ("y", &[1.0; 2])]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`y`") && msg.contains("[3]") && msg.contains('2'),
        "{msg}"
    );
    // The program is unharmed: a good run still works.
    let out = p.run(&[("x", &[1.0, 2.0, 3.0]), ("y", &[1.0; 3])]).unwrap();
    assert_eq!(out, vec![vec![6.0]]);

    let g = Graph::new();
    let w = g.param("w", [2]);
    let mut p = g.compile(device, &[w.sum()]).unwrap();
    assert!(matches!(p.run(&[]).unwrap_err(), Error::UnsetParam { .. }));
    assert!(matches!(
        p.set_param("v", &[1.0; 2]).unwrap_err(),
        Error::UnknownParam { .. }
    ));
    assert!(matches!(
        p.set_param("w", &[1.0; 3]).unwrap_err(),
        Error::WrongLength { .. }
    ));
}

#[test]
fn run_errors_on_the_cpu() {
    run_errors_on(&Device::cpu());
}

#[test]
fn run_errors_on_the_gpu() {
    if let Some(d) = common::gpu() {
        run_errors_on(&d);
    }
}

#[test]
fn compiling_another_graphs_node_is_an_error() {
    let (g, h) = (Graph::new(), Graph::new());
    let _ = g.input("a", [2]);
    let b = h.input("b", [2]).exp();
    let err = g
        .compile(&Device::cpu(), &[b])
        .err()
        .expect("an error")
        .to_string();
    assert!(err.contains("another graph"), "{err}");
    assert!(g.eval_f64(&[b], &[]).is_err());
    assert!(g.wgsl(&[b]).is_err());
    assert!(g.try_grad(b.sum(), &[b]).is_err());
}

#[test]
fn a_tensor_too_large_to_index_is_refused_before_any_allocation() {
    // 2^31 elements would overflow the kernels' 32-bit indices.
    let g = Graph::new();
    let x = g.input("x", [1 << 16, 1 << 15]);
    let y = (x * 2.0).sum();
    let err = g.wgsl(&[y]).unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err}");
    assert!(err.to_string().contains("2^31"), "{err}");
    if let Some(gpu) = common::gpu() {
        let err = g.compile(&gpu, &[y]).err().expect("refused");
        assert!(matches!(err, Error::TooLarge(_)), "{err}");
    }
}

/// The message of `r`'s error, which must contain each of `words`.
fn says<T>(r: wgrad::Result<T>, words: &[&str]) -> Error {
    let Err(err) = r else {
        panic!("an error was expected")
    };
    let msg = err.to_string();
    for w in words {
        assert!(msg.contains(w), "`{w}` not in: {msg}");
    }
    err
}

#[test]
fn operands_of_another_graph_are_errors_not_panics() {
    let (g, h) = (Graph::new(), Graph::new());
    let (a, m) = (g.input("a", [2, 2]), g.input("m", [2, 2]));
    let b = h.input("b", [2, 2]);
    let (r, line) = (a.try_add(b), line!());
    says(r, &["another graph", &format!("errors.rs:{line}")]);
    says(a.try_matmul(b), &["another graph"]);
    says(b.try_matmul(a), &["another graph"]);
    says(m.try_select(a, b), &["another graph"]);
    says(m.try_select(b, 1.0), &["another graph"]);
    says(wgrad::Var::try_concat(&[a, b], 0), &["another graph"]);
    says(a.try_cross_entropy(b), &["another graph"]);
    says(a.try_mse(b), &["another graph"]);
    says(a.try_logistic_loss(b), &["another graph"]);
    says(
        wgrad::Optimizer::adam(0.1).try_updates(&[g.param("w", [2])], &[b]),
        &["another graph"],
    );
}

#[test]
fn helpers_of_a_scalar_or_an_empty_axis_are_errors() {
    let g = Graph::new();
    let s = g.input("s", []);
    let (r, line) = (s.try_softmax(-1), line!());
    says(r, &["axis -1", &format!("errors.rs:{line}")]);
    says(s.try_log_softmax(0), &["axis 0"]);
    says(s.try_cross_entropy(s), &["axis -1"]);
    let x = g.input("x", [3, 4]);
    says(
        x.try_cross_entropy(g.input("t", [3, 5])),
        &["[3, 4]", "[3, 5]"],
    );
    // A max, min or logsumexp over no elements has no value; a sum is 0
    // and a mean NaN (tests/edge_cases.rs).
    let e = g.input("e", [3, 0]);
    says(e.try_max_axes(&[1], false), &["no elements", "[3, 0]"]);
    says(e.try_min_axes(&[1, 0], true), &["no elements"]);
    says(e.try_logsumexp_axes(&[-1], false), &["no elements"]);
    says(e.try_softmax(1), &["no elements"]);
    assert!(e.try_sum_axes(&[1], false).is_ok());
    assert!(e.try_mean_axes(&[1], false).is_ok());
    // Over an axis of no outputs, nothing is computed: no error.
    assert!(e.try_max_axes(&[0], false).is_ok());
}

#[test]
fn shapes_too_large_to_count_are_errors() {
    let g = Graph::new();
    let (r, line) = (g.try_input("x", [1 << 32, 1 << 32]), line!());
    says(r, &["more than", &format!("errors.rs:{line}")]);
    says(g.try_param("p", [1 << 62, 4]), &["more than"]);
    says(g.try_state("s", [usize::MAX, 2]), &["more than"]);
    let x = g.input("x", [2, 3]);
    says(x.try_pad(0, usize::MAX, 1), &["overflow"]);
    says(x.try_pad(1, 1 << 62, 0), &["more than"]);
    says(x.try_broadcast_to([1 << 40, 1 << 40, 2, 3]), &["more than"]);
    says(x.try_reshape([1 << 32, 1 << 32, 6]), &["more than"]);
    // Empty, but its other axes' product would overflow (in its strides).
    says(g.try_input("e", [0, 1 << 42, 1 << 40]), &["empty axes"]);
    // Broadcasting two large vectors against each other.
    let (u, v) = (g.input("u", [1 << 40, 1]), g.input("v", [1 << 40]));
    says(u.try_mul(v), &["more than"]);
    // The largest shape allowed is still refused as memory, with its bytes.
    let big = g.input("big", [1 << 59]);
    let err = says(g.compile(&Device::cpu(), &[big.sum()]), &["bytes"]);
    assert!(
        matches!(err, Error::OutOfMemory { needed, .. } if needed >= 8 << 59),
        "{err}"
    );
    let err = says(g.compile(&Device::cpu_f32(), &[big.exp()]), &["bytes"]);
    assert!(matches!(err, Error::OutOfMemory { needed, .. } if needed >= 4 << 59));
}

#[test]
fn device_options_no_plan_can_keep_are_errors() {
    let g = Graph::new();
    let x = g.input("x", [10]);
    let y = x.exp().sum();
    for bad in [
        CpuOptions {
            chunk: 0,
            ..CpuOptions::default()
        },
        CpuOptions {
            chunk: 1 << 40,
            ..CpuOptions::default()
        },
        CpuOptions {
            deriving_chunk: 0,
            ..CpuOptions::default()
        },
        CpuOptions {
            chunks_per_task: 0,
            ..CpuOptions::default()
        },
        CpuOptions {
            chunks_per_task: usize::MAX,
            ..CpuOptions::default()
        },
    ] {
        let err = says(g.compile(&Device::cpu_f32_with(bad), &[y]), &["options"]);
        assert!(matches!(err, Error::Options(_)), "{bad:?}: {err}");
    }
    for bad in [
        GpuOptions {
            max_workgroups: Some(0),
            ..Default::default()
        },
        GpuOptions {
            max_storage_buffers: Some(1),
            ..Default::default()
        },
    ] {
        let err = says(Device::gpu_with(&bad), &["options"]);
        assert!(matches!(err, Error::Options(_)), "{bad:?}: {err}");
    }
}

#[test]
fn a_feed_given_twice_is_an_error() {
    let g = Graph::new();
    let x = g.input("x", [2]);
    for device in [Device::cpu(), Device::cpu_f32()] {
        let mut p = g.compile(&device, &[x.sum()]).unwrap();
        let err = says(
            p.run(&[("x", &[1.0, 2.0]), ("x", &[3.0, 4.0])]),
            &["`x`", "twice"],
        );
        assert!(matches!(err, Error::DuplicateInput { .. }));
        assert_eq!(p.run(&[("x", &[1.0, 2.0])]).unwrap(), vec![vec![3.0]]);
    }
    says(
        g.eval_f64(&[x], &[("x", &[1.0, 2.0]), ("x", &[1.0, 2.0])]),
        &["twice"],
    );
}

#[test]
fn optimizers_refuse_what_they_cannot_update() {
    use wgrad::Optimizer;
    let g = Graph::new();
    let w = g.param("w", [3]);
    let loss = w.square().sum();
    let adam = Optimizer::adam(0.1);
    assert!(adam.try_minimize(loss, &[w]).is_ok());
    // Applied twice to the same parameter: its state's names are taken.
    let (r, line) = (adam.try_minimize(loss, &[w]), line!());
    says(r, &["w.adam_step", &format!("errors.rs:{line}")]);
    let momentum = Optimizer::Momentum { lr: 0.1, mu: 0.9 };
    let v = g.param("v", [3]);
    let _clash = g.input("v.velocity", [3]);
    says(momentum.try_minimize((v * w).sum(), &[v]), &["v.velocity"]);
    let sgd = Optimizer::Sgd { lr: 0.1 };
    says(sgd.try_minimize(w.square(), &[w]), &["scalar", "[3]"]);
    says(sgd.try_minimize(loss, &[w, w]), &["`w` is given twice"]);
    says(sgd.try_minimize(loss, &[w.exp()]), &["only parameters"]);
    says(sgd.try_updates(&[w], &[]), &["one gradient per parameter"]);
    says(sgd.try_updates(&[w], &[g.input("g", [4])]), &["[3]", "[4]"]);
}

#[test]
fn gradcheck_refuses_an_unfed_variable_or_a_bad_step() {
    let g = Graph::new();
    let (x, y) = (g.input("x", [2]), g.input("y", [2]));
    let loss = (x * y).sum();
    let feeds: &[(&str, &[f64])] = &[("x", &[1.0, 2.0]), ("y", &[3.0, 4.0])];
    assert!(wgrad::gradcheck(&g, loss, &[x], feeds, 1e-6).is_ok());
    for h in [0.0, -1e-6, f64::NAN, f64::INFINITY] {
        says(wgrad::gradcheck(&g, loss, &[x], feeds, h), &["step"]);
    }
    let err = says(
        wgrad::gradcheck(&g, loss, &[x], &feeds[1..], 1e-6),
        &["`x`"],
    );
    assert!(matches!(err, Error::MissingInput { .. }));
    says(
        wgrad::gradcheck(&g, loss, &[x.exp()], feeds, 1e-6),
        &["only inputs and parameters"],
    );
}

#[test]
fn cross_entropy_averages_over_examples_of_any_rank() {
    // One example of 1-D logits, and the same rows as a batch: the mean
    // over examples of -Σ t·log softmax, by hand.
    let rows = [[1.0f64, 2.0, 0.5], [0.0, -1.0, 3.0]];
    let targets = [[0.0f64, 1.0, 0.0], [0.2, 0.3, 0.5]];
    let by_hand = |r: &[f64; 3], t: &[f64; 3]| {
        let lse = r.iter().map(|x| x.exp()).sum::<f64>().ln();
        -r.iter().zip(t).map(|(x, t)| t * (x - lse)).sum::<f64>()
    };
    let g = Graph::new();
    let (one, target) = (g.input("one", [3]), g.input("target", [3]));
    let (batch, targets_in) = (g.input("batch", [2, 3]), g.input("targets", [2, 3]));
    let batch3 = batch.reshape([1, 2, 3]);
    let outputs = [
        one.cross_entropy(target),
        batch.cross_entropy(targets_in),
        batch3.cross_entropy(targets_in.reshape([1, 2, 3])),
    ];
    let flat = |a: &[[f64; 3]; 2]| a.iter().flatten().copied().collect::<Vec<f64>>();
    let (b, t) = (flat(&rows), flat(&targets));
    let feeds: &[(&str, &[f64])] = &[
        ("one", &rows[0]),
        ("target", &targets[0]),
        ("batch", &b),
        ("targets", &t),
    ];
    let got = g.eval_f64(&outputs, feeds).unwrap();
    let mean = (by_hand(&rows[0], &targets[0]) + by_hand(&rows[1], &targets[1])) / 2.0;
    assert!(
        (got[0][0] - by_hand(&rows[0], &targets[0])).abs() < 1e-12,
        "{got:?}"
    );
    assert!((got[1][0] - mean).abs() < 1e-12, "{got:?}");
    assert!((got[2][0] - mean).abs() < 1e-12, "{got:?}");
}
