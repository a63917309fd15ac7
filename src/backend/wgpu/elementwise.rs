//! Element-wise kernels (`shaders/elementwise.wgsl`, and
//! `elementwise_vec.wgsl` over vec4s), split where they would bind more
//! buffers than a kernel may.

use super::codegen::{fill, Block, Emitter, Layout, Problem};
use super::device::GpuLimits;
use super::plan::{BufId, BufSpec, KernelSpec};
use super::schedule::{
    direct_loads, dispatch_count, emit_targets, fits, ids, Ctx, Fit, Target, WORKGROUP,
};
use super::windows::{fewest_bindings, in_windows, window_label, windows, Cut};
use crate::error::Result;
use crate::graph::{Node, NodeId};
use crate::ops::Op;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::fmt::Write as _;
use std::ops::Range;

pub(super) const ELEMENTWISE: &str = include_str!("../../../shaders/elementwise.wgsl");

pub(super) const ELEMENTWISE_VEC: &str = include_str!("../../../shaders/elementwise_vec.wgsl");

/// Element-wise kernels over f32s (where no tensor moves as vec4s: see
/// `vector_kernel`) take this many elements per thread at once, their loads
/// in flight together. On an H100, 4 rather than 1 made the Rosenbrock
/// step's kernel 18% faster at 2^24 elements (0.0556 ms against 0.0678) and
/// 15% at 2^20. Reductions over f32s take one (`shaders/reduce.wgsl`).
pub(super) const UNROLL: usize = 4;

pub(super) fn elementwise_kernels(
    ctx: Ctx,
    buffers: &[BufSpec],
    extent: usize,
    targets: &[Target],
) -> Result<Fit> {
    let Ctx {
        nodes,
        loads: stored,
        limits,
        chunk,
    } = ctx;
    let layout = Layout { buffers, chunk };
    let label = format!("elementwise[{extent}] -> {:?}", ids(targets));
    // Windows are ranges of elements (power-of-two long, so a tensor read in
    // order reaches as few parts as can be) or, where the columns are cut
    // too, blocks of rows by columns of the targets' last axis (a tensor
    // read out of order, a transpose, reaches few of its parts from a block).
    let row_len = nodes[targets[0].node.index()]
        .shape
        .0
        .last()
        .copied()
        .unwrap_or(1)
        .max(1);
    let rows = extent / row_len;
    // A window: a range of elements, or a block of rows by columns.
    let kernel = |k: usize, n: usize, window: (&Range<usize>, Option<&Range<usize>>)| {
        let mut e = Emitter::new(nodes, stored, layout, 2);
        let (range, block) = match window {
            (range, None) => {
                if !range.is_empty() {
                    e.set_range("idx", range.start, range.end - 1);
                }
                (range.clone(), None)
            }
            (rows, Some(cols)) => {
                if !rows.is_empty() && !cols.is_empty() {
                    let block = Block {
                        rows: (rows.start, rows.end - 1),
                        cols: (cols.start, cols.end - 1),
                        row_len,
                    };
                    e.set_block("idx", block);
                }
                (0..rows.len() * cols.len(), Some((rows, cols)))
            }
        };
        // A window of elements in vec4s, where some tensor moves as vec4s.
        let flat = block.is_none();
        if flat && range.start % 4 == 0 && !range.is_empty() {
            let window = (&range, window_label(&label, k, n), limits);
            if let Some(built) = vector_kernel(nodes, stored, layout, targets, window) {
                return built;
            }
        }
        emit_targets(&mut e, stored, targets, "idx");
        // A block maps its threads' `t` to their indices.
        let block = block.map_or(String::new(), |(rows, cols)| {
            format!(
                "const BLOCK_ROW: u32 = {}u;\nconst BLOCK_COL: u32 = {}u;\n\
                 const BLOCK_WIDTH: u32 = {}u;\nconst BLOCK_STRIDE: u32 = {row_len}u;",
                rows.start,
                cols.start,
                cols.len()
            )
        });
        let copy = |u: usize, checked: bool| {
            let at = format!("first + {}u", u * WORKGROUP);
            let (t, idx) = if flat {
                ("idx", format!("let idx = {at};"))
            } else {
                let idx = "let idx = (BLOCK_ROW + t / BLOCK_WIDTH) * BLOCK_STRIDE \
                           + BLOCK_COL + t % BLOCK_WIDTH;";
                ("t", format!("let t = {at};\n{idx}"))
            };
            let body = if checked {
                format!("if ({t} < END) {{\n{}\n}}", e.body)
            } else {
                e.body.clone()
            };
            format!("{{\n{idx}\n{body}\n}}\n")
        };
        let wgsl = fill(
            ELEMENTWISE,
            &[
                ("BINDINGS", &e.declarations()),
                ("BLOCK", &block),
                ("START", &range.start.to_string()),
                ("END", &range.end.to_string()),
                ("UNROLL", &UNROLL.to_string()),
                (
                    "UNROLLED",
                    &(0..UNROLL).map(|u| copy(u, false)).collect::<String>(),
                ),
                (
                    "CHECKED",
                    &(0..UNROLL).map(|u| copy(u, true)).collect::<String>(),
                ),
            ],
        );
        let spec = KernelSpec {
            label: window_label(&label, k, n),
            wgsl,
            bindings: e.bindings(),
            reads: e.loaded(),
            workgroups: dispatch_count(range.len(), WORKGROUP * UNROLL, limits),
        };
        (spec, e.problem)
    };
    let floor = fewest_bindings(
        stored,
        &own_index_reads(nodes, stored, &[], targets),
        targets,
    );
    if targets.len() > 1 && floor > limits.max_storage_buffers as usize {
        return split(ctx, buffers, extent, targets);
    }
    let cut = in_windows(limits, true, None, |cuts, col_cuts| {
        let (kernels, problems): (Vec<_>, Vec<_>) = if col_cuts == 1 {
            let ranges = windows(extent, cuts);
            ranges
                .iter()
                .enumerate()
                .map(|(k, range)| kernel(k, ranges.len(), (range, None)))
                .unzip()
        } else {
            let (row_windows, col_windows) = (windows(rows, cuts), windows(row_len, col_cuts));
            let n = row_windows.len() * col_windows.len();
            row_windows
                .iter()
                .flat_map(|r| col_windows.iter().map(move |c| (r, Some(c))))
                .enumerate()
                .map(|(k, window)| kernel(k, n, window))
                .unzip()
        };
        Ok(Cut {
            kernels,
            problem: problems[0],
        })
    })?;
    match fits(
        cut.problem,
        cut.widest(),
        nodes,
        stored,
        &ids(targets),
        limits,
    )? {
        Some(Fit::Split) => split(ctx, buffers, extent, targets),
        Some(other) => Ok(other),
        None => Ok(Fit::Kernels(cut.kernels)),
    }
}

/// The element-wise kernels of each half of `targets`.
pub(super) fn split(
    ctx: Ctx,
    buffers: &[BufSpec],
    extent: usize,
    targets: &[Target],
) -> Result<Fit> {
    let (a, b) = targets.split_at(targets.len() / 2);
    let mut out = Vec::new();
    for half in [a, b] {
        match elementwise_kernels(ctx, buffers, extent, half)? {
            Fit::Kernels(ks) => out.extend(ks),
            other => return Ok(other),
        }
    }
    Ok(Fit::Kernels(out))
}

/// The nodes `values` and `targets` read at their own flat index (through
/// element-wise ops and reshapes) from buffers: the tensors a kernel over
/// vec4s can load as vec4s. Not a target computed by the same kernel (its
/// buffer holds the value from before).
pub(super) fn own_index_reads(
    nodes: &[Node],
    stored: &HashMap<NodeId, BufId>,
    values: &[NodeId],
    targets: &[Target],
) -> Vec<NodeId> {
    let computed = |t: &Target| stored.get(&t.node) == Some(&t.buf);
    let mut from = values.to_vec();
    for t in targets {
        let node = &nodes[t.node.index()];
        let elementwise = matches!(
            node.op,
            Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Reshape
        );
        if !computed(t) {
            from.push(t.node);
        } else if elementwise {
            from.extend(&node.inputs);
        }
    }
    let here: HashSet<NodeId> = targets
        .iter()
        .filter(|t| computed(t))
        .map(|t| t.node)
        .collect();
    let mut direct = direct_loads(&from, nodes, stored);
    direct.retain(|n| !here.contains(n));
    direct
}

/// A kernel over vec4s, built by `build` from the buffers it loads (`ins`)
/// and stores (`outs`) as vec4s: those of `reads` and of `targets` that are
/// one binding each. `build` returns its kernel and the buffers it binds
/// both as f32s and as vec4s and writes (one dispatch may not write a
/// buffer through one binding and read it through another): those are
/// taken out and the kernel built again. `None` where no tensor is left.
pub(super) fn vectorized<T>(
    layout: Layout,
    stored: &HashMap<NodeId, BufId>,
    reads: &[NodeId],
    targets: &[Target],
    mut build: impl FnMut(&[BufId], &[BufId]) -> (T, Vec<BufId>),
) -> Option<T> {
    let mut excluded: Vec<BufId> = Vec::new();
    loop {
        let pick = |bufs: Vec<BufId>| {
            let mut v: Vec<BufId> = bufs
                .into_iter()
                .filter(|&b| layout.parts(b) == 1 && !excluded.contains(&b))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let ins = pick(reads.iter().map(|n| stored[n]).collect());
        let outs = pick(targets.iter().map(|t| t.buf).collect());
        if ins.is_empty() && outs.is_empty() {
            return None;
        }
        let (kernel, two_views) = build(&ins, &outs);
        if two_views.is_empty() {
            return Some(kernel);
        }
        excluded.extend(two_views);
    }
}

/// The holes of a kernel over vec4s that the element-wise and reduction
/// templates share: vec4 `q` of each buffer of `ins` loaded (LOADS) and of
/// each of `outs` declared (OUTS); the four lanes, element 4q + lane at
/// `idx`, each emitted by `lane` (which returns the lines that set its
/// components of the outputs), written whole (LANES) and for a last vec4
/// that the range cuts, each lane under `valid(lane)` (CHECKED_LANES); the
/// vec4s stored (STORES, CHECKED_STORES).
pub(super) fn vec_holes(
    e: &mut Emitter,
    ins: &[BufId],
    outs: &[BufId],
    valid: &dyn Fn(usize) -> String,
    lane: &mut dyn FnMut(&mut Emitter, usize) -> String,
) -> Vec<(&'static str, String)> {
    let loads: String = ins
        .iter()
        .map(|&b| format!("let xv{b} = {};\n", e.load_vec(b, "q")))
        .collect();
    let declared: String = outs
        .iter()
        .map(|b| format!("var ov{b}: vec4<f32>;\n"))
        .collect();
    let vectors: Vec<(BufId, String)> = ins.iter().map(|&b| (b, format!("xv{b}"))).collect();
    let lanes: Vec<String> = (0..4)
        .map(|j| {
            e.set_vec4_lane(j, &vectors);
            let sets = lane(e, j);
            format!("{}{sets}", e.take_body())
        })
        .collect();
    e.set_vec4_lane(0, &[]);
    let wrap = |j: usize, checked: bool| {
        let body = &lanes[j];
        let body = if checked {
            format!("if ({}) {{\n{body}}}\n", valid(j))
        } else {
            body.clone()
        };
        format!("{{\nlet idx = 4u * q + {j}u;\n{body}}}\n")
    };
    let mut stores = String::new();
    let mut checked_stores = String::new();
    for &b in outs {
        let value = format!("ov{b}");
        stores += &e.store_vec_statement(b, "q", &value, None);
        stores.push('\n');
        for j in 0..4 {
            let st = e.store_vec_statement(b, "q", &value, Some(j));
            let _ = writeln!(checked_stores, "if ({}) {{ {st} }}", valid(j));
        }
    }
    vec![
        ("LOADS", loads),
        ("OUTS", declared),
        ("LANES", (0..4).map(|j| wrap(j, false)).collect()),
        ("CHECKED_LANES", (0..4).map(|j| wrap(j, true)).collect()),
        ("STORES", stores),
        ("CHECKED_STORES", checked_stores),
    ]
}

/// Emit `targets` at `idx` into `e` as `emit_targets` does, but set the
/// components of lane `lane` of the vec4s of `outs` instead of storing
/// them: the lines that do.
pub(super) fn lane_targets(
    e: &mut Emitter,
    stored: &HashMap<NodeId, BufId>,
    targets: &[Target],
    outs: &[BufId],
    lane: usize,
) -> String {
    let mut sets = String::new();
    for t in targets {
        let v = if stored.get(&t.node) == Some(&t.buf) {
            e.compute(t.node, "idx")
        } else {
            e.value(t.node, "idx")
        };
        if outs.contains(&t.buf) {
            let _ = writeln!(sets, "ov{}[{lane}u] = {v};", t.buf);
        } else {
            e.store(t.buf, "idx", &v);
        }
    }
    sets
}

/// The element-wise kernel of `targets` over the elements `range` in
/// vec4s (`shaders/elementwise_vec.wgsl`), labelled `label`, and its
/// problem; `None` where no tensor it reads or writes at its own index is
/// one binding.
pub(super) fn vector_kernel(
    nodes: &[Node],
    stored: &HashMap<NodeId, BufId>,
    layout: Layout,
    targets: &[Target],
    (range, label, limits): (&Range<usize>, String, &GpuLimits),
) -> Option<(KernelSpec, Option<Problem>)> {
    let reads = own_index_reads(nodes, stored, &[], targets);
    vectorized(layout, stored, &reads, targets, |ins, outs| {
        let mut e = Emitter::new(nodes, stored, layout, 3);
        e.set_range("idx", range.start, range.end - 1);
        e.set_range("q", range.start / 4, (range.end - 1) / 4);
        let valid = |j: usize| format!("4u * q + {j}u < END");
        let mut holes = vec_holes(&mut e, ins, outs, &valid, &mut |e, j| {
            lane_targets(e, stored, targets, outs, j)
        });
        holes.extend([
            ("BINDINGS", e.declarations()),
            ("START", range.start.to_string()),
            ("END", range.end.to_string()),
        ]);
        let holes: Vec<(&str, &str)> = holes.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let wgsl = fill(ELEMENTWISE_VEC, &holes);
        let spec = KernelSpec {
            label: label.clone(),
            wgsl,
            bindings: e.bindings(),
            reads: e.loaded(),
            workgroups: dispatch_count(range.len().div_ceil(4), WORKGROUP, limits),
        };
        ((spec, e.problem), e.written_through_two_views())
    })
}
