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
    let dw = g.grad(common::rosenbrock(w), &[w])[0];
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

/// L(v) = mean softplus(−t ⊙ (X v)); one step v ← v − 0.1·∇L.
fn logreg<'g>(
    g: &'g Graph,
    rows: usize,
    d: usize,
) -> (wgrad::Var<'g>, Vec<(wgrad::Var<'g>, wgrad::Var<'g>)>) {
    let x = g.param("X", [rows, d]);
    let t = g.param("t", [rows, 1]);
    let v = g.param("v", [d, 1]);
    let loss = x.matmul(v).logistic_loss(t);
    let dv = g.grad(loss, &[v])[0];
    (loss, vec![(v, v - 0.1 * dv)])
}

#[test]
fn a_logreg_step_reads_x_once_in_two_dispatches() {
    let Some(gpu) = common::gpu() else { return };
    let (rows, d) = (1024, 1024);
    let g = Graph::new();
    let (_, updates) = logreg(&g, rows, d);
    let s = g.compile_with_updates(&gpu, &[], &updates).unwrap().stats();
    assert!(s.dispatches <= 2, "{s:?}");
    assert!(
        per_element(s, rows * d) <= 4.5,
        "{} bytes/element",
        per_element(s, rows * d)
    );
}

#[test]
fn windows_keep_the_byte_bounds_on_a_device_with_small_bindings() {
    // WebGPU's default limits (128 MiB bindings, 8 storage buffers per
    // kernel) at 2^28 elements, scaled to 2^18: tensors of eight parts, of
    // which no kernel can bind all. The windows each kernel is cut into
    // reach at most a few elements of their neighbours' parts, so the
    // traffic stays at the floor; logreg still reads X once.
    let Some(_) = common::gpu() else { return };
    let gpu = Device::gpu_with(&wgrad::GpuOptions {
        max_storage_binding: Some(128 << 10),
        max_storage_buffers: Some(8),
        ..Default::default()
    })
    .unwrap();
    let n = 1 << 18;
    let bounds = [
        ("seed", seed_stats(&gpu, n), 24.5),
        ("rosenbrock", rosenbrock_stats(&gpu, n), 8.5),
    ];
    for (what, s, most) in bounds {
        assert!(s.dispatches > 2, "{what}: cut into windows: {s:?}");
        assert!(
            per_element(s, n) <= most,
            "{what}: {} bytes/element",
            per_element(s, n)
        );
    }
    let g = Graph::new();
    let (_, updates) = logreg(&g, n / 1024, 1024);
    let p = g.compile_with_updates(&gpu, &[], &updates).unwrap();
    let s = p.stats();
    assert!(
        per_element(s, n) <= 4.5,
        "logreg: {} bytes/element",
        per_element(s, n)
    );
    let fused = p
        .kernels_wgsl()
        .iter()
        .filter(|k| k.contains("ROW_LEN"))
        .count();
    assert!(
        fused >= 2,
        "logreg: windows of one fused pass over X: {s:?}"
    );
}

#[test]
fn fused_logreg_steps_match_the_cpu() {
    let Some(gpu) = common::gpu() else { return };
    use common::*;
    // Row lengths below, at and above one workgroup; row counts that do not
    // divide into the groups.
    for (rows, d) in [(300, 200), (77, 256), (1000, 700)] {
        let g = Graph::new();
        let (loss, updates) = logreg(&g, rows, d);
        let mut r = rng(rows as u64);
        let xs: Vec<f32> = sample(&mut r, rows * d, Domain::Any)
            .iter()
            .map(|&x| x as f32 * 0.1)
            .collect();
        let ts: Vec<f32> = sample(&mut r, rows, Domain::Any)
            .iter()
            .map(|&x| x.signum() as f32)
            .collect();
        let mut results = Vec::new();
        for device in [gpu.clone(), Device::cpu()] {
            let mut p = g.compile_with_updates(&device, &[loss], &updates).unwrap();
            p.set_param("X", &xs).unwrap();
            p.set_param("t", &ts).unwrap();
            p.set_param("v", &vec![0.1; d]).unwrap();
            let mut losses = Vec::new();
            for _ in 0..3 {
                losses.push(p.run(&[]).unwrap().remove(0));
            }
            losses.push(p.param("v").unwrap());
            results.push(losses);
        }
        assert_close(
            &format!("logreg {rows}x{d}"),
            &results[0],
            &results[1],
            1e-4,
        );
    }
}

/// Found by the random-graph test (seed 7798): a column reduction fused with
/// the row reduction it needs runs a level early, so its epilogue must not
/// read another reduction of the row reduction's level.
#[test]
fn a_fused_column_reduction_waits_for_what_its_epilogue_reads() {
    let Some(gpu) = common::gpu() else { return };
    use common::*;
    let g = Graph::new();
    let a = g.input("a", [3, 4]);
    let b = g.input("b", [5]);
    let rows = a.sum_axes(&[1], true); // level 1, recorded first
    let least = b.min_all(); // level 1 too
    let cols = (rows.broadcast_to([3, 4]) / (a.square() + 1.0)).sum_axes(&[0], false);
    let y = cols.max(least);
    let mut r = rng(15);
    let data = as_f32(&[
        ("a".into(), sample(&mut r, 12, Domain::Any)),
        ("b".into(), sample(&mut r, 5, Domain::Any)),
    ]);
    let got = g.compile(&gpu, &[y]).unwrap().run(&view(&data)).unwrap();
    let want = g
        .compile(&Device::cpu(), &[y])
        .unwrap()
        .run(&view(&data))
        .unwrap();
    assert_close("epilogue after a fused column reduction", &got, &want, 1e-4);
}

#[test]
fn row_and_column_sums_over_many_short_rows_match_the_cpu() {
    // 37,000 rows of 3: each workgroup of the fused kernel takes 37 rows,
    // which its blocks of 8 do not divide, and its column sums add one
    // weighted row after another with nothing to average an error away.
    let Some(gpu) = common::gpu() else { return };
    use common::*;
    let (rows, d) = (37_000, 3);
    let g = Graph::new();
    let x = g.input("x", [rows, d]);
    let z = x.sum_axes(&[1], true);
    let c = (x * z.tanh()).sum_axes(&[0], false);
    let mut r = rng(23);
    let data = [("x".to_string(), sample(&mut r, rows * d, Domain::Any))];
    check_against_reference(&gpu, &g, &[z, c], &data, 1e-3, "37,000 rows of 3");
}

#[test]
fn long_sums_and_maxima_with_a_partial_last_tile_match_the_cpu() {
    let Some(gpu) = common::gpu() else { return };
    use common::*;
    // One chunk per output, and many chunks (the workgroups sweep the
    // tensor in interleaved tiles); both lengths end in a partial tile,
    // which holds the maximum.
    for n in [3_001usize, 1_000_003] {
        let g = Graph::new();
        let x = g.input("x", [n]);
        let y = x.square() + 1.0;
        let outputs = [y.sum(), y.max_all(), (y * 3.0).sum()];
        let mut xs: Vec<f32> = sample(&mut rng(n as u64), n, Domain::Any)
            .iter()
            .map(|&v| v as f32)
            .collect();
        xs[n - 2] = 50.0;
        let data = [("x", xs.as_slice())];
        let got = g.compile(&gpu, &outputs).unwrap().run(&data).unwrap();
        let want = g
            .compile(&Device::cpu(), &outputs)
            .unwrap()
            .run(&data)
            .unwrap();
        assert_close(&format!("n = {n}"), &got, &want, 1e-5);
    }
}

#[test]
fn rows_folded_by_subgroups_and_by_workgroup_trees_match_the_cpu() {
    // A row fold and a column fold that uses it, in one pass: by subgroup
    // operations where the adapter has them, by workgroup trees where it
    // has not (or they are turned off). Row lengths that no subgroup size
    // divides, one lane's worth, and many; sums, maxima and minima.
    let Some(gpu) = common::gpu() else { return };
    use common::*;
    let trees = Device::gpu_with(&wgrad::GpuOptions {
        no_subgroups: true,
        ..Default::default()
    })
    .unwrap();
    let has_subgroups = gpu.describe().contains("subgroups");
    for (rows, d) in [(300, 200), (1000, 3), (77, 256), (4099, 33)] {
        let g = Graph::new();
        let x = g.input("x", [rows, d]);
        let w = g.input("w", [d]);
        let z = (x * w.broadcast_to([rows, d])).sum_axes(&[1], true);
        let top = x.max_axes(&[1], true);
        let low = x.min_axes(&[1], true);
        let outputs = [
            z,
            (x * z.tanh()).sum_axes(&[0], false),
            (x - top).exp().max_axes(&[0], false),
            (x * low).min_axes(&[0], false),
        ];
        let mut r = rng((rows * d) as u64);
        let data = [
            ("x".to_string(), sample(&mut r, rows * d, Domain::Any)),
            ("w".to_string(), sample(&mut r, d, Domain::Any)),
        ];
        for (device, subgroups) in [(&gpu, has_subgroups), (&trees, false)] {
            let what = format!("{rows}x{d} on {}", device.describe());
            let kernels = check_against_reference(device, &g, &outputs, &data, 1e-3, &what);
            for op in ["subgroupAdd", "subgroupMax", "subgroupMin"] {
                let used = kernels.iter().any(|k| k.contains(op));
                assert_eq!(used, subgroups, "{what}: {op} used: {used}");
            }
        }
    }
}

#[test]
fn kernels_over_vec4s_match_the_cpu() {
    // Tensors read or written at a kernel's own index move as vec4s:
    // lengths that end in a partial vec4 (and one shorter than a vec4),
    // neighbours read from a vec4's lanes or (first and last lanes) from
    // memory, row sums of whole vec4s and of rows that are not.
    let Some(gpu) = common::gpu() else { return };
    use common::*;
    for n in [4099usize, 1 << 12, 3] {
        let g = Graph::new();
        let (x, y, z) = (g.input("x", [n]), g.input("y", [n]), g.input("z", [n]));
        let f = ((x + y) * y.max(z)).sum();
        let mut r = rng(n as u64);
        let data: Vec<(String, Vec<f64>)> = ["x", "y", "z"]
            .iter()
            .map(|name| (name.to_string(), sample(&mut r, n, Domain::Positive)))
            .collect();
        let what = format!("seed, n = {n}");
        let kernels =
            check_against_reference(&gpu, &g, &with_gradients(f, &[x, y, z]), &data, 1e-4, &what);
        // (A sum of 3 takes one thread, with no vec4s.)
        assert_eq!(
            kernels.iter().any(|k| k.contains("vec4<f32>")),
            n > 3,
            "{what}"
        );

        let g = Graph::new();
        let w = g.param("w", [n]);
        let loss = rosenbrock(w);
        let dw = g.grad(loss, &[w])[0];
        let updates = [(w, w - 1e-4 * dw)];
        steps_match_reference(&gpu, &g, loss, &updates, &start(n as u64, n), 3);
        let p = g.compile_with_updates(&gpu, &[], &updates).unwrap();
        assert!(
            p.kernels_wgsl().iter().any(|k| k.contains("vec4<f32>")),
            "rosenbrock, n = {n}"
        );
    }
    // A sum whose last vec4 is cut by its end, where the elements past the
    // end are not zeros: x has one more element than the sum takes.
    let n = 4099;
    let g = Graph::new();
    let (x, y) = (g.input("x", [n + 1]), g.input("y", [n]));
    let s = (x.slice(0, 0, n) + y).sum();
    let mut r = rng(5);
    let mut xs = sample(&mut r, n + 1, Domain::Positive);
    xs[n] = 1000.0;
    let data = [
        ("x".to_string(), xs),
        ("y".to_string(), sample(&mut r, n, Domain::Positive)),
    ];
    let kernels = check_against_reference(&gpu, &g, &[s], &data, 1e-4, "a sum cut inside a vec4");
    assert!(kernels.iter().any(|k| k.contains("vec4<f32>")));
    for (rows, d) in [(30, 4100), (30, 4102)] {
        let g = Graph::new();
        let x = g.input("x", [rows, d]);
        let sums = (x * x).sum_axes(&[1], false);
        let data = [(
            "x".to_string(),
            sample(&mut rng(d as u64), rows * d, Domain::Any),
        )];
        check_against_reference(
            &gpu,
            &g,
            &[sums],
            &data,
            1e-4,
            &format!("{rows}x{d} row sums"),
        );
    }
}

#[test]
fn a_sums_chunks_folded_in_its_own_dispatch_match_the_cpu_on_every_run() {
    // Where the device has device-scope fences (Vulkan), a long sum's
    // dispatch folds its own chunks: the workgroups that finish a block of
    // 256 chunks last fold it, the one that finishes the last block folds
    // the blocks and runs what follows the sum element-wise. Elsewhere (or
    // turned off) a second dispatch folds the chunks. Sums of one block, of
    // a block and one chunk, and of five blocks, the last one short; each
    // run on new data (the counters are back at 0 after a run), and the
    // first data again for the same bits.
    let Some(gpu) = common::gpu() else { return };
    use common::*;
    let two = Device::gpu_with(&wgrad::GpuOptions {
        no_device_fences: true,
        ..Default::default()
    })
    .unwrap();
    let fences = matches!(&gpu, Device::Gpu(c) if c.limits().device_fences);
    for n in [1 << 20, (1 << 20) + 3, (1 << 22) + 5] {
        let g = Graph::new();
        let x = g.input("x", [n]);
        let s = (x * x).sum();
        let outputs = [s, (s * 1e-6).tanh(), x.max_all()];
        let mut reference = g.compile(&Device::cpu(), &outputs).unwrap();
        let mut one_pass = g.compile(&gpu, &outputs).unwrap();
        let mut two_pass = g.compile(&two, &outputs).unwrap();
        let (a, b) = (one_pass.stats(), two_pass.stats());
        if fences {
            assert!(a.dispatches < b.dispatches, "n = {n}: {a:?} against {b:?}");
        }
        let mut r = rng(n as u64);
        let data: Vec<Vec<f32>> = (0..2)
            .map(|_| {
                sample(&mut r, n, Domain::Any)
                    .iter()
                    .map(|&v| v as f32)
                    .collect()
            })
            .collect();
        let mut first = Vec::new();
        for (run, x) in [&data[0], &data[1], &data[0]].into_iter().enumerate() {
            let what = format!("n = {n}, run {run}");
            let want = reference.run(&[("x", x)]).unwrap();
            for p in [&mut one_pass, &mut two_pass] {
                let got = p.run(&[("x", x)]).unwrap();
                assert_close(&what, &got, &want, 1e-4);
            }
            let got = one_pass.run(&[("x", x)]).unwrap();
            if run == 0 {
                first = got;
            } else if run == 2 {
                assert_eq!(got, first, "{what}: other bits for the same data");
            }
        }
    }
}
