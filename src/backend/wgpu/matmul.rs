//! Matrix products in tiles (`shaders/matmul.wgsl`).

use super::codegen::{fill, strided_expr, Emitter, Layout};
use super::plan::{BufSpec, KernelSpec};
use super::schedule::{dispatch_count, fits, reads, Ctx, Fit, Target};
use super::windows::{in_windows, window_label, windows, Cut};
use crate::backend::MatmulForm;
use crate::error::Result;
use crate::graph::NodeId;
use crate::shape::StridedMap;
use rustc_hash::FxHashMap as HashMap;

pub(super) const MATMUL: &str = include_str!("../../../shaders/matmul.wgsl");

/// A matrix product in tiles (`shaders/matmul.wgsl`). Where its tensors
/// take more bindings than one dispatch may have, it is cut into windows
/// of the output's rows of tiles (a batch of inputs times a small matrix),
/// of the sum's k (a gradient summed over the batch: each window adds its
/// sums to the earlier windows', in order), or both.
pub(super) fn matmul_kernel(
    ctx: Ctx,
    buffers: &[BufSpec],
    target: Target,
    f: &MatmulForm,
) -> Result<Fit> {
    let Ctx {
        nodes,
        loads,
        limits,
        chunk,
    } = ctx;
    // The operands are indexed in the broadcasts' inputs, each with its own
    // stride for every axis of the product (0 where it is broadcast): the
    // product itself, which may well have 2^32 elements, is never indexed.
    let operand = |v: NodeId| {
        let input = nodes[v.index()].inputs[0];
        let map = StridedMap::broadcast(&nodes[input.index()].shape, &f.shape);
        (input, map.src_strides)
    };
    let ((a_in, sa), (b_in, sb)) = (operand(f.p), operand(f.q));
    let out_strides = nodes[target.node.index()].shape.strides();
    let over = |axes: &[usize], st: &[usize]| StridedMap {
        out_dims: axes.iter().map(|&x| f.shape.0[x]).collect(),
        src_strides: axes.iter().map(|&x| st[x]).collect(),
        offset: 0,
    };
    let batch_map = |st: &[usize]| over(&f.batch, st);
    let k_map = |st: &[usize]| over(&f.ks, st);
    let (m, n, k) = (f.shape.0[f.m], f.shape.0[f.n], f.depth);
    let batch: usize = f.batch.iter().map(|&x| f.shape.0[x]).product();
    let (tiles_m, tiles_n) = (m.div_ceil(16), n.div_ceil(16));
    let base = |st: &[usize]| strided_expr(&batch_map(st), "batch");
    let label = format!("matmul[{batch}x{m}x{k}x{n}] -> %{}", target.node.index());
    // Windows of k add their products to what the windows before them
    // (dispatched first) left in the target, in order of k: no partials.
    // A buffer of each window's partials, folded by a second pass, made
    // that pass read a part of every window's partials for each window
    // of outputs: a product of two 2^14-square matrices did not fit
    // WebGPU's default 8 bindings, in any window.
    let dst = target.buf;
    let cut = in_windows(limits, true, None, |row_cuts, k_cuts| {
        // Rows of tiles over all batches, `tiles_m` per batch.
        let row_windows = windows(batch * tiles_m, row_cuts);
        let k_windows = windows(k, k_cuts);
        let count = k_windows.len();
        let layout = Layout { buffers, chunk };
        let n_windows = row_windows.len() * count;
        let mut problem = None;
        let mut kernels = Vec::new();
        for (s, rows) in row_windows.iter().enumerate() {
            for (w, ks) in k_windows.iter().enumerate() {
                let mut e = Emitter::new(nodes, loads, layout, 4);
                let out_index = format!(
                    "{} + row * {}u + col * {}u",
                    base(&out_strides),
                    out_strides[f.m],
                    out_strides[f.n]
                );
                // Bounds on the window's batches, rows and k (each tile's
                // rows, all columns), in the product's index space.
                let bounds = (!rows.is_empty() && !ks.is_empty()).then(|| {
                    let batches = (rows.start / tiles_m, (rows.end - 1) / tiles_m);
                    let (r0, r1) = if batches.0 == batches.1 {
                        let last = ((rows.end - 1) % tiles_m) * 16 + 15;
                        ((rows.start % tiles_m) * 16, last.min(m - 1))
                    } else {
                        (0, m - 1)
                    };
                    let at = |st: &[usize]| batch_map(st).source_range(batches.0, batches.1);
                    let terms = |st: &[usize]| k_map(st).source_range(ks.start, ks.end - 1);
                    let ((a0, a1), (ka0, ka1)) = (at(&sa), terms(&sa));
                    let ((b0, b1), (kb0, kb1)) = (at(&sb), terms(&sb));
                    let (o0, o1) = at(&out_strides);
                    let a = (a0 + r0 * sa[f.m] + ka0, a1 + r1 * sa[f.m] + ka1);
                    let b = (b0 + kb0, b1 + kb1 + (n - 1) * sb[f.n]);
                    let out = (
                        o0 + r0 * out_strides[f.m],
                        o1 + r1 * out_strides[f.m] + (n - 1) * out_strides[f.n],
                    );
                    (a, b, out)
                });
                if let Some((a, ..)) = bounds {
                    e.set_range("idx", a.0, a.1);
                }
                let a_value = e.value(a_in, "idx");
                let a_body = e.take_body();
                if let Some((_, b, out)) = bounds {
                    e.set_range("idx", b.0, b.1);
                    e.set_range(&out_index, out.0, out.1);
                }
                let b_value = e.value(b_in, "idx");
                let b_body = e.take_body();
                let sum = if w == 0 {
                    "acc".to_string()
                } else {
                    format!("{} + acc", e.load(dst, &out_index))
                };
                let store = e.store_statement(dst, &out_index, &sum);
                problem = problem.or(e.problem);
                let wgsl = fill(
                    MATMUL,
                    &[
                        ("BINDINGS", &e.declarations()),
                        ("M", &m.to_string()),
                        ("N", &n.to_string()),
                        ("FIRST_TILE", &(rows.start * tiles_n).to_string()),
                        ("END_TILE", &(rows.end * tiles_n).to_string()),
                        ("K_START", &ks.start.to_string()),
                        ("K_END", &ks.end.to_string()),
                        ("A_BATCH", &base(&sa)),
                        ("B_BATCH", &base(&sb)),
                        (
                            "A_OFFSET",
                            &format!("row * {}u + {}", sa[f.m], strided_expr(&k_map(&sa), "ka")),
                        ),
                        (
                            "B_OFFSET",
                            &format!("{} + col * {}u", strided_expr(&k_map(&sb), "kb"), sb[f.n]),
                        ),
                        ("A_BODY", &a_body),
                        ("A_VALUE", &a_value),
                        ("B_BODY", &b_body),
                        ("B_VALUE", &b_value),
                        ("STORE", &store),
                    ],
                );
                kernels.push(KernelSpec {
                    label: window_label(&label, s * count + w, n_windows),
                    wgsl,
                    bindings: e.bindings(),
                    reads: e.loaded(),
                    workgroups: dispatch_count(rows.len() * tiles_n, 1, limits),
                });
            }
        }
        Ok(Cut { kernels, problem })
    })?;
    if cut.problem.is_none() && cut.widest() > limits.max_storage_buffers as usize {
        // The operands' expressions read more buffers than a kernel binds
        // (a network's weight gradient fuses a layer's activations and the
        // softmax's gradient): store the operand that reads the most, which
        // the kernel then loads. `fits` would store the product of the
        // broadcasts, which this kernel never reads.
        let mut memo = HashMap::default();
        let widest = [a_in, b_in]
            .into_iter()
            .filter(|x| !loads.contains_key(x))
            .max_by_key(|&x| reads(x, nodes, loads, &mut memo).len());
        if let Some(x) = widest {
            return Ok(Fit::Store(vec![x]));
        }
    }
    if let Some(fit) = fits(
        cut.problem,
        cut.widest(),
        nodes,
        loads,
        &[target.node],
        limits,
    )? {
        return Ok(fit);
    }
    Ok(Fit::Kernels(cut.kernels))
}
