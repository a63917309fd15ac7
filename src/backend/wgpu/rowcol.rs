//! A row reduction and a column reduction of its tensor in one pass over
//! it (`shaders/rowcol.wgsl`, or `rowcol_subgroup.wgsl` with subgroup
//! operations), then a pass folding the columns' partials.

use super::codegen::{fill, strided_expr, Emitter, Layout, MAX_ELEMENTS};
use super::plan::{BufId, BufKind, BufSpec, KernelSpec};
use super::reduce::{emit_epilogue, fold_partials, followed_by, Partials};
use super::schedule::{
    at_own_index, direct_loads, dispatch_count, fits, ids, reaches, reads, too_large, Ctx, Fit,
    Target, TREE, WORKGROUP,
};
use super::windows::{in_windows, window_label, windows, Cut};
use crate::error::Result;
use crate::graph::{Node, NodeId};
use crate::ops::{f32_literal, Op, ReduceOp};
use crate::shape::{Shape, StridedMap};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::fmt::Write as _;

pub(super) const ROWCOL: &str = include_str!("../../../shaders/rowcol.wgsl");

pub(super) const ROWCOL_SUBGROUP: &str = include_str!("../../../shaders/rowcol_subgroup.wgsl");

/// Row-then-column fusion takes rows in blocks of about this many elements
/// per thread (each thread has a row's length / 256 elements of each row),
/// at most `MAX_ROWS_AT_ONCE` rows: a block's loads are in flight together
/// and its rows' trees share one set of barriers.
pub(super) const ROW_LOADS: usize = 32;

pub(super) const MAX_ROWS_AT_ONCE: usize = 8;

/// Row-then-column fusion keeps a row's columns in registers, this many per thread at most.
pub(super) const MAX_COLS_PER_THREAD: usize = 16;

/// With subgroup operations, each lane keeps this many of a row's columns
/// (and as many loaded elements) in registers at most.
pub(super) const MAX_COLS_PER_LANE: usize = 32;

/// Whether reduction `r2`'s operand is `r1`'s operand's shape, reduced over
/// the complementary axes, and reads `r1` only through a broadcast of one
/// value per row (so a row's result can be used as soon as it is folded),
/// reading nothing else that is not yet computed.
pub(super) fn rowcol_pair(
    nodes: &[Node],
    loads: &HashMap<NodeId, BufId>,
    level: &HashMap<NodeId, usize>,
    memo: &mut HashMap<NodeId, Vec<NodeId>>,
    r1: NodeId,
    r2: NodeId,
) -> bool {
    let (n1, n2) = (&nodes[r1.index()], &nodes[r2.index()]);
    let (Op::Reduce { axes: a1, .. }, Op::Reduce { axes: a2, .. }) = (&n1.op, &n2.op) else {
        return false;
    };
    let (o1, o2) = (n1.inputs[0], n2.inputs[0]);
    let shape = &nodes[o1.index()].shape;
    if *shape != nodes[o2.index()].shape {
        return false;
    }
    let complementary = (0..shape.rank())
        .all(|k| (a1.contains(&k) != a2.contains(&k)) || (shape.0[k] == 1 && !a1.contains(&k)));
    let row_len: usize = a1.iter().map(|&k| shape.0[k]).product();
    if !complementary || row_len.div_ceil(WORKGROUP) > MAX_COLS_PER_THREAD {
        return false;
    }
    let l1 = level[&r1];
    let others_ready = reads(o2, nodes, loads, memo)
        .iter()
        .all(|d| *d == r1 || level.get(d).is_none_or(|&l| l < l1));
    others_ready && reaches(o2, r1, nodes, loads) && per_row(o2, r1, &n1.shape, nodes, loads)
}

/// Whether every path from `id` to the row reduction `r1` (kept-dims shape
/// `rows`) passes a broadcast of a `rows`-shaped value over the rows'
/// elements, below which `r1` is read only at its own index.
pub(super) fn per_row(
    id: NodeId,
    r1: NodeId,
    rows: &Shape,
    nodes: &[Node],
    loads: &HashMap<NodeId, BufId>,
) -> bool {
    per_row_memo(id, r1, rows, (nodes, loads), &mut HashMap::default())
}

/// `per_row`, each node's answer once (as `at_own_index_memo`).
pub(super) fn per_row_memo(
    id: NodeId,
    r1: NodeId,
    rows: &Shape,
    ctx: (&[Node], &HashMap<NodeId, BufId>),
    memo: &mut HashMap<NodeId, bool>,
) -> bool {
    let (nodes, loads) = ctx;
    if id == r1 {
        return false;
    }
    if loads.contains_key(&id) {
        return true;
    }
    if let Some(&known) = memo.get(&id) {
        return known;
    }
    let node = &nodes[id.index()];
    let answer = match node.op {
        Op::Const(_) => true,
        Op::Unary(_) | Op::Binary(_) | Op::Select => node
            .inputs
            .iter()
            .all(|&j| per_row_memo(j, r1, rows, ctx, memo)),
        Op::Broadcast => {
            let input = &nodes[node.inputs[0].index()].shape;
            let mut padded = vec![1; node.shape.rank() - input.rank()];
            padded.extend(&input.0);
            let one_per_row = padded == rows.0;
            !reaches(node.inputs[0], r1, nodes, loads)
                || (one_per_row && at_own_index(node.inputs[0], r1, nodes, loads))
        }
        _ => !node.inputs.iter().any(|&j| reaches(j, r1, nodes, loads)),
    };
    memo.insert(id, answer);
    answer
}

/// The straight-line folds of `shaders/rowcol.wgsl`: a block of
/// `rows_at_once` rows, each thread `cols` elements of each row.
pub(super) struct RowColFolds {
    pub(super) cols: usize,
    pub(super) rows_at_once: usize,
    pub(super) row_len: usize,
    /// WGSL: a row's first source index, in `slot`.
    pub(super) slot: String,
    /// WGSL: the source offset of row element `r`.
    pub(super) offset: String,
}

impl RowColFolds {
    /// Row `b` of the block: `inner` with `slot`, the row's index, clamped
    /// to the last row.
    pub(super) fn row(&self, b: usize, inner: &str) -> String {
        format!("{{\nlet slot = min(block + {b}u, last - 1u);\n{inner}}}\n")
    }

    /// Inside row `b`, element `k` of the thread folded into `acc`: its
    /// source index `idx`, clamped to a valid neighbour, and `keep`, whether
    /// it needed no clamping (the select leaves the rest out).
    pub(super) fn fold(
        &self,
        op: ReduceOp,
        b: usize,
        k: usize,
        acc: &str,
        body: &str,
        value: &str,
    ) -> String {
        let first = k * WORKGROUP;
        let (col, keep) = if first + WORKGROUP <= self.row_len {
            (
                format!("let r = lid + {first}u;"),
                format!("let keep = block + {b}u < last;"),
            )
        } else {
            (
                format!("let r = min(lid + {first}u, ROW_LEN - 1u);"),
                format!("let keep = block + {b}u < last && lid + {first}u < ROW_LEN;"),
            )
        };
        let idx = format!("let idx: u32 = {} + {};", self.slot, self.offset);
        let identity = f32_literal(op.identity());
        let combine = op.wgsl(acc, &format!("select({identity}, {value}, keep)"));
        format!("{{\n{col}\n{keep}\n{idx}\n{body}\n{acc} = {combine};\n}}\n")
    }

    pub(super) fn rows(&self, op: ReduceOp, body: &str, value: &str) -> String {
        let identity = f32_literal(op.identity());
        (0..self.rows_at_once)
            .map(|b| {
                let acc = format!("acc{b}");
                let folds: String = (0..self.cols)
                    .map(|k| self.fold(op, b, k, &acc, body, value))
                    .collect();
                format!("var {acc}: f32 = {identity};\n{}", self.row(b, &folds))
            })
            .collect()
    }

    pub(super) fn accs(&self) -> String {
        let accs: Vec<String> = (0..self.rows_at_once).map(|b| format!("acc{b}")).collect();
        accs.join(", ")
    }

    /// Each row's result, stored by the first thread (`store` in `slot`
    /// and `total`).
    pub(super) fn stores(&self, store: &str) -> String {
        (0..self.rows_at_once)
            .map(|b| {
                format!(
                    "if (lid == 0u && block + {b}u < last) {{\nlet slot = block + {b}u;\nlet total = totals[{b}];\n{store}\n}}\n"
                )
            })
            .collect()
    }

    /// The column folds of each row: `per_row` once (the row's result in
    /// `total`), then each element's `body`.
    pub(super) fn columns(&self, op: ReduceOp, per_row: &str, body: &str, value: &str) -> String {
        (0..self.rows_at_once)
            .map(|b| {
                let folds: String = (0..self.cols)
                    .map(|k| self.fold(op, b, k, &format!("col{k}"), body, value))
                    .collect();
                self.row(b, &format!("let total = totals[{b}];\n{per_row}\n{folds}"))
            })
            .collect()
    }

    pub(super) fn declare_cols(&self, op: ReduceOp) -> String {
        let identity = f32_literal(op.identity());
        (0..self.cols)
            .map(|k| format!("var col{k}: f32 = {identity};\n"))
            .collect()
    }

    /// Each column accumulator stored (`store` in `col` and `value`).
    pub(super) fn store_partials(&self, store: &str) -> String {
        (0..self.cols)
            .map(|k| {
                let first = k * WORKGROUP;
                format!(
                    "{{\nlet col = lid + {first}u;\nlet value = col{k};\nif (col < ROW_LEN) {{\n{store}\n}}\n}}\n"
                )
            })
            .collect()
    }
}

/// The folds of `shaders/rowcol_subgroup.wgsl`: lane `lane` of a subgroup
/// takes the row elements lane + j·sg_size, j < `cols`.
///
/// Tried and dropped: reading a broadcast that is the same in every row
/// (logreg's v) once per lane element before the rows, not in every row
/// from the cache, took `cols` more registers per lane, and logreg's pass
/// over X went from 0.387 to 0.436 ms at 2^28 on an H100. Making the
/// subgroup size a constant (NVIDIA has only 32) changed nothing there.
pub(super) struct LaneFolds {
    pub(super) cols: usize,
    /// How many subgroups a workgroup has at most (of the smallest size).
    pub(super) max_subgroups: usize,
    /// WGSL: a row's first source index, in `slot`.
    pub(super) slot: String,
    /// The source offset of a row element.
    pub(super) offset: StridedMap,
    /// The nodes, and their buffers, that both operands read at their own
    /// index: loaded once per element, for both folds.
    pub(super) shared: Vec<(NodeId, BufId)>,
}

impl LaneFolds {
    /// The row's fold: each lane's elements into `acc`, then the
    /// subgroup's fold of `acc` into `total`. Loads the shared nodes.
    pub(super) fn row(&self, e: &mut Emitter, o: NodeId, op: ReduceOp) -> String {
        let mut s = format!("var acc: f32 = {};\n", f32_literal(op.identity()));
        for j in 0..self.cols {
            let idx = format!("idx{j}");
            if let Some((lo, hi)) = e.range_of("idx") {
                e.set_range(&idx, lo, hi);
            }
            let offset = strided_expr(&self.offset, &format!("r{j}"));
            let _ = write!(
                s,
                "let keep{j} = row_kept && lane + {j}u * sg_size < ROW_LEN;\n\
                 let r{j} = min(lane + {j}u * sg_size, ROW_LEN - 1u);\n\
                 let {idx}: u32 = {} + {offset};\n",
                self.slot
            );
            for &(n, _) in &self.shared {
                let x = e.load_stored(n, &idx);
                let _ = writeln!(s, "let x{j}_{}: f32 = {x};", n.index());
            }
            s += &self.fold(e, j, o, op, "acc");
        }
        s + &format!("let total = {}(acc);\n", op.subgroup_wgsl())
    }

    /// Lane element `j` of `o` folded into `acc`, the shared nodes read from
    /// their registers.
    pub(super) fn fold(
        &self,
        e: &mut Emitter,
        j: usize,
        o: NodeId,
        op: ReduceOp,
        acc: &str,
    ) -> String {
        for &(n, _) in &self.shared {
            e.preset(n, "idx", &format!("x{j}_{}", n.index()));
        }
        let value = e.value(o, "idx");
        let body = e.take_body();
        let identity = f32_literal(op.identity());
        let combine = op.wgsl(acc, &format!("select({identity}, {value}, keep{j})"));
        format!("{{\nlet idx = idx{j};\n{body}{acc} = {combine};\n}}\n")
    }

    /// `per_row` once (the row's result in `total`), then each lane
    /// element's column fold.
    pub(super) fn columns(
        &self,
        e: &mut Emitter,
        o: NodeId,
        op: ReduceOp,
        per_row: &str,
    ) -> String {
        let folds: String = (0..self.cols)
            .map(|j| self.fold(e, j, o, op, &format!("col{j}")))
            .collect();
        format!("{per_row}{folds}")
    }

    pub(super) fn declare_cols(&self, op: ReduceOp) -> String {
        let identity = f32_literal(op.identity());
        (0..self.cols)
            .map(|j| format!("var col{j}: f32 = {identity};\n"))
            .collect()
    }

    /// Subgroup `s`'s columns folded into `scratch` (the first's stored).
    pub(super) fn scratch(&self, op: ReduceOp) -> String {
        (0..self.cols)
            .map(|j| {
                format!(
                    "{{\nlet c = lane + {j}u * sg_size;\nif (c < ROW_LEN) {{\nif (s == 0u) {{\nscratch[c] = col{j};\n}} else {{\nscratch[c] = {};\n}}\n}}\n}}\n",
                    op.wgsl("scratch[c]", &format!("col{j}"))
                )
            })
            .collect()
    }
}

/// The broadcasts over `shape` of one value per row (of the row
/// reduction's kept-dims shape `rows`) that `id` reads at its own index,
/// through element-wise ops: each is one value over a row, at the row's
/// index in the broadcast's operand.
pub(super) fn row_broadcasts(
    id: NodeId,
    shape: &Shape,
    rows: &Shape,
    nodes: &[Node],
    loads: &HashMap<NodeId, BufId>,
    out: &mut Vec<NodeId>,
) {
    let mut seen = HashSet::default();
    // As in `direct_loads`: inputs pushed last first.
    let mut stack = vec![id];
    while let Some(n) = stack.pop() {
        if loads.contains_key(&n) || !seen.insert(n) {
            continue;
        }
        let node = &nodes[n.index()];
        match node.op {
            Op::Unary(_) | Op::Binary(_) | Op::Select => stack.extend(node.inputs.iter().rev()),
            Op::Broadcast if node.shape == *shape => {
                let input = &nodes[node.inputs[0].index()].shape;
                let mut padded = vec![1; shape.rank() - input.rank()];
                padded.extend(&input.0);
                if padded == rows.0 {
                    out.push(n);
                }
            }
            _ => {}
        }
    }
}

/// The fused kernel of a row reduction `r1` and a column reduction `r2`
/// (see `shaders/rowcol.wgsl`), then the pass folding `r2`'s partials.
pub(super) fn rowcol(
    ctx: Ctx,
    r1: Target,
    r2: Target,
    epilogue1: &[Target],
    epilogue2: &[Target],
    buffers: &mut Vec<BufSpec>,
) -> Result<Fit> {
    let Ctx {
        nodes,
        loads,
        limits,
        chunk,
    } = ctx;
    let (n1, n2) = (&nodes[r1.node.index()], &nodes[r2.node.index()]);
    let (Op::Reduce { op: op1, axes }, Op::Reduce { op: op2, .. }) = (&n1.op, &n2.op) else {
        unreachable!("two reductions")
    };
    let (o1, o2) = (n1.inputs[0], n2.inputs[0]);
    let shape = &nodes[o1.index()].shape;
    if shape.numel() >= MAX_ELEMENTS {
        return Err(too_large(&nodes[o1.index()]));
    }
    let rows = n1.shape.numel();
    let row_len: usize = axes.iter().map(|&k| shape.0[k]).product();
    // Enough rows per workgroup that its fold of the columns at the end
    // costs little next to its rows, few enough groups to fill the device,
    // and at most ~1024 groups: the fold of the partials reads each
    // column's at a row's stride (a 32-byte sector for each 4-byte value).
    // On an H100, logreg's pass over X (rows of 1024) and the fold of its
    // partials took 0.048 + 0.0105 ms at 2^24 elements in groups of 32
    // rows, 0.040 + 0.009 in groups of 64; at 2^28, 0.387 + 0.014 in groups
    // of 256 rows, 0.394 + 0.009 in groups of 1024.
    let rows_per_group = rows.div_ceil(256).clamp(32, 256).max(rows.div_ceil(1024));
    let (base, offset) = StridedMap::reduction(shape, axes);
    let label = format!(
        "rows+columns[{rows}x{row_len}] -> %{}, %{}",
        r1.node.index(),
        r2.node.index()
    );
    let folds = RowColFolds {
        cols: row_len.div_ceil(WORKGROUP),
        rows_at_once: (ROW_LOADS / row_len.div_ceil(WORKGROUP)).clamp(1, MAX_ROWS_AT_ONCE),
        row_len,
        slot: strided_expr(&base, "slot"),
        offset: strided_expr(&offset, "r"),
    };
    // With subgroup operations, a subgroup folds a row without barriers,
    // where each lane's share of a row fits its registers.
    let lanes = limits
        .min_subgroup_size
        .map(|size| size as usize)
        .filter(|&size| row_len.div_ceil(size) <= MAX_COLS_PER_LANE && size <= WORKGROUP)
        .map(|size| {
            let mut shared = Vec::new();
            let (in1, in2) = (
                direct_loads(&[o1], nodes, loads),
                direct_loads(&[o2], nodes, loads),
            );
            for n in in1 {
                if in2.contains(&n) {
                    shared.push((n, loads[&n]));
                }
            }
            LaneFolds {
                cols: row_len.div_ceil(size),
                max_subgroups: WORKGROUP / size,
                slot: folds.slot.clone(),
                offset: offset.clone(),
                shared,
            }
        });
    let planned = buffers.len();
    // The buffer of column partials the last cut built, and how many groups
    // (of all its windows together) wrote them.
    let mut partials = (0, 0);
    let cut = in_windows(limits, false, None, |n, _| {
        let row_windows = windows(rows, n);
        // Every window has as many groups as the first (the largest) needs.
        let groups = row_windows[0].len().div_ceil(rows_per_group);
        let all_groups = groups * row_windows.len();
        buffers.truncate(planned);
        buffers.push(BufSpec {
            numel: all_groups * row_len,
            kind: BufKind::Temp,
        });
        let partial = buffers.len() - 1;
        partials = (partial, all_groups);
        let layout = Layout { buffers, chunk };
        let mut problem = None;
        let mut kernels = Vec::new();
        for (k, window) in row_windows.iter().enumerate() {
            let mut e = Emitter::new(nodes, loads, layout, 4);
            let at = format!("({}u + group) * ROW_LEN + col", k * groups);
            if !window.is_empty() {
                let (b0, b1) = base.source_range(window.start, window.end - 1);
                let (f0, f1) = offset.source_range(0, row_len - 1);
                e.set_range("idx", b0 + f0, b1 + f1);
                e.set_range("slot", window.start, window.end - 1);
                let first = k * groups * row_len;
                e.set_range(&at, first, first + groups * row_len - 1);
            }
            let row = match &lanes {
                Some(l) => l.row(&mut e, o1, *op1),
                None => {
                    let value1 = e.value(o1, "idx");
                    let body1 = e.take_body();
                    folds.rows(*op1, &body1, &value1)
                }
            };
            let store1 = e.store_statement(r1.buf, "slot", "total");
            let tail1 = emit_epilogue(&mut e, loads, r1.node, epilogue1);
            e.substitute(r1.node, "total");
            // What the column operand reads one value per row of is computed
            // once per row (a logistic-regression step's g(z): an exp and a
            // division per row, not per element).
            let mut hoisted = Vec::new();
            row_broadcasts(o2, shape, &n1.shape, nodes, loads, &mut hoisted);
            for h in hoisted {
                let v = e.value(nodes[h.index()].inputs[0], "slot");
                e.substitute(h, &v);
            }
            let per_row = e.take_body();
            let columns = match &lanes {
                Some(l) => l.columns(&mut e, o2, *op2, &per_row),
                None => {
                    let value2 = e.value(o2, "idx");
                    let body2 = e.take_body();
                    folds.columns(*op2, &per_row, &body2, &value2)
                }
            };
            let store_partial = e.store_statement(partial, &at, "value");
            problem = problem.or(e.problem);
            let (start, end) = (window.start.to_string(), window.end.to_string());
            let row_len_text = row_len.to_string();
            let groups_text = groups.to_string();
            let common = [
                ("BINDINGS", e.declarations()),
                ("ROW_START", start),
                ("ROW_END", end),
                ("ROW_LEN", row_len_text),
                ("GROUPS", groups_text),
                ("COLUMN_FOLDS", columns),
            ];
            let stores = format!("{store1}\n{tail1}");
            let specific = match &lanes {
                Some(l) => [
                    ("MAX_SUBGROUPS", l.max_subgroups.to_string()),
                    ("COLS", l.declare_cols(*op2)),
                    ("ROW", row),
                    ("SCRATCH", l.scratch(*op2)),
                    ("STORES", stores),
                    ("STORE_PARTIALS", store_partial),
                ]
                .to_vec(),
                None => [
                    ("TREE", TREE.to_string()),
                    ("TREE_N", folds.rows_at_once.to_string()),
                    ("TREE_COMBINE", op1.wgsl("scratch[k]", "scratch[k + s]")),
                    ("COLS", folds.declare_cols(*op2)),
                    ("ROW_FOLDS", row),
                    ("ACCS", folds.accs()),
                    ("STORES", folds.stores(&stores)),
                    ("STORE_PARTIALS", folds.store_partials(&store_partial)),
                ]
                .to_vec(),
            };
            let holes: Vec<(&str, &str)> = common
                .iter()
                .chain(&specific)
                .map(|(k, v)| (*k, v.as_str()))
                .collect();
            let template = if lanes.is_some() {
                ROWCOL_SUBGROUP
            } else {
                ROWCOL
            };
            let wgsl = fill(template, &holes);
            kernels.push(KernelSpec {
                label: window_label(&label, k, row_windows.len()),
                wgsl,
                bindings: e.bindings(),
                reads: e.loaded(),
                workgroups: dispatch_count(groups, 1, limits),
            });
        }
        Ok(Cut { kernels, problem })
    })?;
    let mut all = vec![r1.node, r2.node];
    all.extend(ids(epilogue1));
    if let Some(fit) = fits(cut.problem, cut.widest(), nodes, loads, &all, limits)? {
        buffers.truncate(planned);
        return Ok(fit);
    }
    let (partial, groups) = partials;
    // Fold the partials of each column, then the column reduction's epilogue,
    // in a second dispatch. Tried and dropped (ninth session, H100): the pass
    // folding its own partials as a reduction does (`reduce_last.wgsl`), the
    // last workgroup of each block of 32 groups, then of the blocks. The pass
    // took 0.46–0.50 ms at 2^28 against 0.388 + 0.014 in two dispatches, and
    // lost partials there: several threads stored them, and a storage
    // barrier did not order their stores before one thread's count.
    let partials = Partials {
        buf: partial,
        groups,
        output_stride: 1,
        stride: row_len,
    };
    let second = fold_partials(
        ctx,
        buffers,
        *op2,
        &format!("{label} (columns)"),
        &partials,
        r2,
        epilogue2,
    )?;
    Ok(followed_by(cut.kernels, second))
}
