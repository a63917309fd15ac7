//! Bad input gets a clear error that names the user's line, the input and
//! both shapes; nothing panics inside wgpu.

mod common;
use wgrad::{Device, Error, Graph};

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
