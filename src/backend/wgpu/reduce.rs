//! Reductions (`shaders/reduce.wgsl`): a first pass folding chunks of each
//! output (with riders written on the way), and where there is more than
//! one chunk, a second pass or the dispatch's last workgroups folding
//! them (`reduce_last.wgsl`), then the epilogue.

use super::codegen::{fill, strided_expr, Emitter, Layout, MAX_ELEMENTS};
use super::device::GpuLimits;
use super::elementwise::{lane_targets, own_index_reads, vec_holes, vectorized};
use super::plan::{BufId, BufKind, BufSpec, KernelSpec};
use super::schedule::{
    dispatch_count, emit_targets, fits, ids, reads, too_large, Ctx, Fit, Target, TREE, WORKGROUP,
};
use super::windows::{fewest_bindings, in_windows, results_buffer, window_label, windows, Cut};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::{f32_literal, Op, ReduceOp};
use crate::shape::StridedMap;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::ops::Range;

pub(super) const REDUCE: &str = include_str!("../../../shaders/reduce.wgsl");

pub(super) const REDUCE_SHORT: &str = include_str!("../../../shaders/reduce_short.wgsl");

pub(super) const REDUCE_FOLD: &str = include_str!("../../../shaders/reduce_fold.wgsl");

pub(super) const REDUCE_FOLD_VEC: &str = include_str!("../../../shaders/reduce_fold_vec.wgsl");

pub(super) const REDUCE_LAST: &str = include_str!("../../../shaders/reduce_last.wgsl");

/// A reduction splits each output into chunks of about this many elements
/// when it has too few outputs to fill the device, into at most
/// `MAX_CHUNKS`. On an H100 the seed workload's sum ran 5% faster at 2^24
/// elements and 1% at 2^28 in 4096 chunks than in 1024 (0.147 against
/// 0.155 ms, 2.270 against 2.295), its second pass 0.004 ms slower.
pub(super) const CHUNK_TARGET: usize = 4096;

pub(super) const MAX_CHUNKS: usize = 4096;

/// At most this many where the dispatch folds its chunks itself (see
/// `shaders/reduce_last.wgsl`, whose fold costs the same for any count):
/// on an H100 the seed workload's pass over 2^28 elements took 2.266 ms in
/// 4096 chunks, 2.246 in 16384 and 2.199 in 65535 (the most workgroups of
/// one dispatch dimension there).
pub(super) const MAX_CHUNKS_FOLDED_HERE: usize = 65535;

/// Outputs beyond this fill the device without chunking.
pub(super) const ENOUGH_OUTPUTS: usize = 512;

/// Outputs folding at most this many elements each take a thread each
/// (`shaders/reduce_short.wgsl`), not a workgroup.
pub(super) const SHORT_REDUCE: usize = 64;

/// One reduction: pass 1 folds chunks of each output (with the operand's
/// element-wise producers fused in, and `riders` written on the way); when
/// there is more than one chunk, pass 2 folds the chunks. Where the
/// tensors take more bindings than one dispatch may have, pass 1 is cut
/// into windows of its outputs, or of each fold (whose results are then
/// partials too, folded by pass 2 in order).
pub(super) fn reduction(
    ctx: Ctx,
    target: Target,
    riders: &[Target],
    epilogue: &[Target],
    buffers: &mut Vec<BufSpec>,
) -> Result<Fit> {
    let Ctx {
        nodes,
        loads: stored,
        limits,
        chunk: binding_chunk,
    } = ctx;
    let node = &nodes[target.node.index()];
    let Op::Reduce { op, axes } = &node.op else {
        unreachable!("a reduction target")
    };
    let operand = node.inputs[0];
    let in_shape = &nodes[operand.index()].shape;
    let outs = node.shape.numel();
    // Its kernels index the operand's elements (even one never stored, a
    // broadcast constant, say).
    if in_shape.numel() >= MAX_ELEMENTS {
        return Err(too_large(&nodes[operand.index()]));
    }
    let len: usize = axes.iter().map(|&a| in_shape.0[a]).product();
    let (base_map, offset_map) = StridedMap::reduction(in_shape, axes);
    // Folds of whole vec4s (consecutive elements from a multiple of 4) can
    // move the tensors read at their own index as vec4s.
    let whole_vec4s = {
        let (base, offset) = (base_map.simplified(), offset_map.simplified());
        let strides = |m: &StridedMap| -> Vec<usize> {
            let axes = m.out_dims.iter().zip(&m.src_strides);
            axes.filter(|(&d, _)| d != 1).map(|(_, &s)| s).collect()
        };
        offset.offset == 0
            && strides(&offset).iter().all(|&s| s == 1)
            && strides(&offset).len() <= 1
            && base.offset % 4 == 0
            && strides(&base).iter().all(|s| s % 4 == 0)
    };
    // Riders that cannot fit go their own way before any code is written:
    // each level tries them with every reduction. Each rider writes its
    // own buffer, so more riders than bindings cannot fit.
    let max = limits.max_storage_buffers as usize;
    if riders.len() > max {
        return Ok(Fit::Split);
    }
    let reads = own_index_reads(nodes, stored, &[operand], riders);
    let label = format!("{}[{len}] -> %{}", op.name(), target.node.index());
    let planned = buffers.len();
    // Where the last cut built leaves each output's results: the buffer,
    // how many partials per output (1: the results themselves), and
    // whether its kernel folds them too (`reduce_last.wgsl`).
    let mut partials = (target.buf, 1, false);
    let floor = fewest_bindings(stored, &reads, riders);
    if !riders.is_empty() && floor > max {
        return Ok(Fit::Split);
    }
    // Every cut's first pass computes the operand and the riders at each
    // element, so binds every buffer they load, and one for its results
    // (a cut of the folds moves the epilogue, whose buffers differ).
    let mut memo = HashMap::default();
    let mut loaded = |id: NodeId| match stored.get(&id) {
        Some(&b) => vec![b],
        None => self::reads(id, nodes, stored, &mut memo)
            .iter()
            .map(|n| stored[n])
            .collect(),
    };
    let mut bound: HashSet<BufId> = loaded(operand).into_iter().collect();
    for r in riders {
        bound.extend(loaded(r.node));
        bound.insert(r.buf);
    }
    let floor = floor.max(bound.len() + 1);
    let cut = in_windows(limits, true, Some(floor), |slot_cuts, fold_cuts| {
        let folds = windows(len, fold_cuts);
        let fold_len = folds[0].len();
        // One output's chunks in one dispatch: where the device has
        // device-scope fences, the dispatch folds them itself.
        let fold_here = limits.device_fences && outs == 1 && slot_cuts == 1 && fold_cuts == 1;
        let most = if fold_here {
            MAX_CHUNKS_FOLDED_HERE
        } else {
            MAX_CHUNKS
        };
        let groups = if fold_len <= CHUNK_TARGET || outs >= ENOUGH_OUTPUTS {
            1
        } else {
            fold_len.div_ceil(CHUNK_TARGET).min(most)
        };
        let slot_windows = windows(outs * groups, slot_cuts);
        let count = groups * folds.len();
        let dst = results_buffer(buffers, planned, target, outs, count);
        let here = (fold_here && count > 1).then(|| {
            let blocks = count.div_ceil(WORKGROUP);
            for numel in [blocks, blocks + 1] {
                buffers.push(BufSpec {
                    numel,
                    kind: BufKind::Temp,
                });
            }
            FoldedHere {
                blocks,
                block_results: buffers.len() - 2,
                counters: buffers.len() - 1,
            }
        });
        partials = (dst, count, here.is_some());
        let layout = Layout {
            buffers,
            chunk: binding_chunk,
        };
        let tail = if count == 1 { epilogue } else { &[] };
        let n = slot_windows.len() * folds.len();
        let mut problem = None;
        let mut kernels = Vec::new();
        for (s, slots) in slot_windows.iter().enumerate() {
            for (f, fold) in folds.iter().enumerate() {
                let bounds = (!slots.is_empty() && !fold.is_empty()).then(|| {
                    let (b0, b1) =
                        base_map.source_range(slots.start / groups, (slots.end - 1) / groups);
                    let (f0, f1) = offset_map.source_range(fold.start, fold.end - 1);
                    (b0 + f0, b1 + f1)
                });
                let new_emitter = || {
                    let mut e = Emitter::new(nodes, stored, layout, 3);
                    if let Some((lo, hi)) = bounds {
                        e.set_range("idx", lo, hi);
                        e.set_range("q", lo / 4, hi / 4);
                        e.set_range("slot", slots.start, slots.end - 1);
                    }
                    e
                };
                // Output o's partials: its chunks of fold window 0, then of window 1, …
                let at = if folds.len() == 1 {
                    "slot".to_string()
                } else {
                    format!(
                        "(slot / {groups}u) * {count}u + {}u + slot % {groups}u",
                        f * groups
                    )
                };
                let store_total = |e: &mut Emitter| {
                    if folds.len() > 1 && !slots.is_empty() {
                        let (first, last) = (slots.start / groups, (slots.end - 1) / groups);
                        let skip = f * groups;
                        e.set_range(&at, first * count + skip, last * count + skip + groups - 1);
                    }
                    let store = e.store_statement(dst, &at, "total");
                    let epilogue_body = emit_epilogue(e, stored, target.node, tail);
                    format!("{store}\n{epilogue_body}")
                };
                // The LAST hole, and what it declares (after the bindings).
                let last = |e: &mut Emitter| match here {
                    Some(h) => (
                        last_fold(e, stored, *op, dst, count, h, target, epilogue),
                        "var<workgroup> is_last: u32;\n",
                    ),
                    None => (String::new(), ""),
                };
                let label = window_label(&label, s * folds.len() + f, n);
                let space = ReduceSpace {
                    slots: slots.clone(),
                    groups,
                    len,
                    fold: fold.clone(),
                };
                let vector = (whole_vec4s
                    && !space.short()
                    && fold.start % 4 == 0
                    && bounds.is_some())
                .then(|| {
                    vectorized(layout, stored, &reads, riders, |ins, outs| {
                        let mut e = new_emitter();
                        let valid = |j: usize| format!("4u * r4 + {j}u < FOLD_END");
                        let mut holes = vec_holes(&mut e, ins, outs, &valid, &mut |e, j| {
                            let value = e.value(operand, "idx");
                            let sets = lane_targets(e, stored, riders, outs, j);
                            format!("acc = combine(acc, {value});\n{sets}")
                        });
                        let store = store_total(&mut e);
                        let (last, flag) = last(&mut e);
                        holes.extend([
                            ("BINDINGS", e.declarations() + flag),
                            ("BASE", strided_expr(&base_map, "o")),
                            ("STORE", store),
                            ("LAST", last),
                        ]);
                        let kernel = reduce_kernel(true, *op, &label, &space, &holes, &e, limits);
                        let two_views = e.written_through_two_views();
                        ((kernel, e.problem), two_views)
                    })
                })
                .flatten();
                let (kernel, found) = vector.unwrap_or_else(|| {
                    let mut e = new_emitter();
                    let value = e.value(operand, "idx");
                    emit_targets(&mut e, stored, riders, "idx");
                    let body = e.take_body();
                    let store = store_total(&mut e);
                    let (last, flag) = last(&mut e);
                    let holes = [
                        ("BINDINGS", e.declarations() + flag),
                        ("BASE", strided_expr(&base_map, "o")),
                        ("OFFSET", strided_expr(&offset_map, "r")),
                        ("BODY", body),
                        ("VALUE", value),
                        ("STORE", store),
                        ("LAST", last),
                    ];
                    let kernel = reduce_kernel(false, *op, &label, &space, &holes, &e, limits);
                    (kernel, e.problem)
                });
                problem = problem.or(found);
                kernels.push(kernel);
            }
        }
        Ok(Cut { kernels, problem })
    })?;
    let (dst, count, folded) = partials;
    let mut all = vec![target.node];
    all.extend(ids(riders));
    if count == 1 || folded {
        all.extend(ids(epilogue));
    }
    if let Some(fit) = fits(cut.problem, cut.widest(), nodes, stored, &all, limits)? {
        buffers.truncate(planned);
        return Ok(fit);
    }
    if count == 1 || folded {
        return Ok(Fit::Kernels(cut.kernels));
    }
    // Pass 2: fold the partials of each output, in order.
    let partials = Partials {
        buf: dst,
        groups: count,
        output_stride: count,
        stride: 1,
    };
    let pass2 = fold_partials(
        ctx,
        buffers,
        *op,
        &format!("{label} (pass 2)"),
        &partials,
        target,
        epilogue,
    )?;
    Ok(followed_by(cut.kernels, pass2))
}

/// `first`, then the kernels of `rest`; or what `rest` asks for instead.
pub(super) fn followed_by(first: Vec<KernelSpec>, rest: Fit) -> Fit {
    match rest {
        Fit::Kernels(k) => Fit::Kernels(first.into_iter().chain(k).collect()),
        other => other,
    }
}

/// A reduction's chunk results: output `o`'s `groups` partials, element `r`
/// at `o * output_stride + r * stride`.
#[derive(Clone, Copy)]
pub(super) struct Partials {
    pub(super) buf: BufId,
    pub(super) groups: usize,
    pub(super) output_stride: usize,
    pub(super) stride: usize,
}

/// The last pass of a chunked reduction: fold each output's partials in
/// order, store it, and run the reduction's epilogue.
pub(super) fn fold_partials(
    ctx: Ctx,
    buffers: &[BufSpec],
    op: ReduceOp,
    label: &str,
    partials: &Partials,
    target: Target,
    epilogue: &[Target],
) -> Result<Fit> {
    let layout = Layout {
        buffers,
        chunk: ctx.chunk,
    };
    let outs = ctx.nodes[target.node.index()].shape.numel();
    let Partials {
        buf,
        groups,
        output_stride,
        stride,
    } = *partials;
    let cut = in_windows(ctx.limits, false, None, |n, _| {
        let slot_windows = windows(outs, n);
        let mut problem = None;
        let mut kernels = Vec::new();
        for (k, slots) in slot_windows.iter().enumerate() {
            let mut e = Emitter::new(ctx.nodes, ctx.loads, layout, 3);
            if !slots.is_empty() {
                let (first, last) = (slots.start, slots.end - 1);
                let most = last * output_stride + (groups - 1) * stride;
                e.set_range("idx", first * output_stride, most);
                e.set_range("slot", first, last);
            }
            let value = e.load(buf, "idx");
            let store = e.store_statement(target.buf, "slot", "total");
            let tail = emit_epilogue(&mut e, ctx.loads, target.node, epilogue);
            problem = problem.or(e.problem);
            let space = ReduceSpace {
                slots: slots.clone(),
                groups: 1,
                len: groups,
                fold: 0..groups,
            };
            let holes = [
                ("BINDINGS", e.declarations()),
                ("BASE", format!("o * {output_stride}u")),
                ("OFFSET", format!("r * {stride}u")),
                ("BODY", String::new()),
                ("VALUE", value),
                ("STORE", format!("{store}\n{tail}")),
                ("LAST", String::new()),
            ];
            kernels.push(reduce_kernel(
                false,
                op,
                &window_label(label, k, slot_windows.len()),
                &space,
                &holes,
                &e,
                ctx.limits,
            ));
        }
        Ok(Cut { kernels, problem })
    })?;
    let mut all = vec![target.node];
    all.extend(ids(epilogue));
    match fits(
        cut.problem,
        cut.widest(),
        ctx.nodes,
        ctx.loads,
        &all,
        ctx.limits,
    )? {
        Some(fit) => Ok(fit),
        None => Ok(Fit::Kernels(cut.kernels)),
    }
}

/// Where a reduction's dispatch folds its own chunks (`reduce_last.wgsl`):
/// `blocks` blocks of WORKGROUP chunks, their results in `block_results`,
/// their counters (and one of the blocks done) in `counters`.
#[derive(Clone, Copy)]
pub(super) struct FoldedHere {
    pub(super) blocks: usize,
    pub(super) block_results: BufId,
    pub(super) counters: BufId,
}

/// The LAST hole of `shaders/reduce.wgsl` for one output's `count` chunk
/// results in `dst`, folded in the same dispatch (`reduce_last.wgsl`):
/// stores the reduction and runs its epilogue.
#[allow(clippy::too_many_arguments)]
pub(super) fn last_fold(
    e: &mut Emitter,
    stored: &HashMap<NodeId, BufId>,
    op: ReduceOp,
    dst: BufId,
    count: usize,
    here: FoldedHere,
    target: Target,
    epilogue: &[Target],
) -> String {
    let blocks = here.blocks;
    e.set_range("c", 0, count - 1);
    e.set_range("blk", 0, blocks - 1);
    e.set_range("b", 0, blocks - 1);
    let partial = e.load(dst, "c");
    let count_block = e.counter(here.counters, "blk");
    let count_all = e.counter(here.counters, &format!("{blocks}u"));
    let block_store = e.store_statement(here.block_results, "blk", "total");
    let block_partial = e.load(here.block_results, "b");
    // The output's index (`slot` in the snippet, as in a second pass).
    e.set_range("slot", 0, 0);
    let store = e.store_statement(target.buf, "slot", "total");
    let tail = emit_epilogue(e, stored, target.node, epilogue);
    fill(
        REDUCE_LAST,
        &[
            ("COUNT_ALL", &count_all),
            ("COUNT", &count_block),
            ("IDENTITY", &f32_literal(op.identity())),
            ("PARTIAL", &partial),
            ("BLOCK_STORE", &block_store),
            ("BLOCK_PARTIAL", &block_partial),
            ("BLOCKS", &blocks.to_string()),
            ("FINAL", &format!("{store}\n{tail}")),
        ],
    )
}

/// The iteration space of one reduction dispatch: the slots it folds
/// (`groups` chunks of each output), out of folds of `len` elements, the
/// elements `fold` of each.
pub(super) struct ReduceSpace {
    pub(super) slots: Range<usize>,
    pub(super) groups: usize,
    pub(super) len: usize,
    pub(super) fold: Range<usize>,
}

impl ReduceSpace {
    /// Whole folds of a few elements: a thread each (reduce_short.wgsl).
    pub(super) fn short(&self) -> bool {
        self.groups == 1 && self.len <= SHORT_REDUCE && self.fold == (0..self.len)
    }
}

/// One reduction dispatch over `space`: `shaders/reduce.wgsl` folding
/// vec4s where `vec` (`reduce_fold_vec.wgsl`), else f32s
/// (`reduce_fold.wgsl`), or `reduce_short.wgsl` (whole folds of a few
/// elements, a thread each); `holes` are what the emitter wrote (BINDINGS,
/// BASE, STORE, and OFFSET, BODY and VALUE or the vec4 holes) with `e`,
/// which says what the kernel binds and loads.
pub(super) fn reduce_kernel(
    vec: bool,
    op: ReduceOp,
    label: &str,
    space: &ReduceSpace,
    holes: &[(&str, String)],
    e: &Emitter,
    limits: &GpuLimits,
) -> KernelSpec {
    let ReduceSpace {
        slots,
        groups,
        len,
        fold,
    } = space;
    let short = !vec && space.short();
    let template = if short {
        REDUCE_SHORT.to_string()
    } else {
        REDUCE.replace("{{FOLD}}", if vec { REDUCE_FOLD_VEC } else { REDUCE_FOLD })
    };
    let space_holes = [
        ("FIRST_SLOT", slots.start.to_string()),
        ("END_SLOT", slots.end.to_string()),
        ("GROUPS", groups.to_string()),
        ("REDUCE_LEN", len.to_string()),
        ("FOLD_START", fold.start.to_string()),
        ("FOLD_END", fold.end.to_string()),
        ("IDENTITY", f32_literal(op.identity())),
        ("TREE", TREE.to_string()),
        ("TREE_N", "1".to_string()),
        ("TREE_COMBINE", op.wgsl("scratch[k]", "scratch[k + s]")),
        ("COMBINE", op.wgsl("acc", "x")),
    ];
    let all: Vec<(&str, &str)> = holes
        .iter()
        .chain(&space_holes)
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let wgsl = fill(&template, &all);
    let per_group = if short { WORKGROUP } else { 1 };
    KernelSpec {
        label: label.to_string(),
        wgsl,
        bindings: e.bindings(),
        reads: e.loaded(),
        workgroups: dispatch_count(slots.len(), per_group, limits),
    }
}

/// The epilogue of a reduction's last pass: `targets` at index `slot`, where
/// the reduction's own value is the tree's `total`.
pub(super) fn emit_epilogue(
    e: &mut Emitter,
    stored: &HashMap<NodeId, BufId>,
    reduction: NodeId,
    targets: &[Target],
) -> String {
    e.preset(reduction, "slot", "total");
    emit_targets(e, stored, targets, "slot");
    e.take_body()
}
