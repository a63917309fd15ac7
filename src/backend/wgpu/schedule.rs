//! The GPU schedule: which values live in buffers, and which fused kernels
//! compute them, in what order.
//!
//! Written to buffers are: inputs, parameters, reductions, the requested
//! outputs and update values, any node a kernel would otherwise need at
//! too many indices or that reads too many buffers, and nodes that keep
//! expressions at most `MAX_FUSED_DEPTH` deep (`depth_cuts`). Kernels *load* only
//! leaves, reductions and those last nodes: everything else, requested
//! outputs included, is recomputed inside the kernels that use it.
//!
//! A stored node's *level* is one more than the highest level among the
//! loaded nodes its expression reads; kernels run level by level. At each
//! level:
//! - a reduction gets `shaders/reduce.wgsl` (one pass, or two when each
//!   output folds many elements), or `shaders/matmul.wgsl` when it is a
//!   matrix product, or `shaders/rowcol.wgsl` together with a column
//!   reduction of the next level that needs its per-row results;
//! - element-wise targets of the extent of a reduction's operand ride in its
//!   first pass (which visits every operand index exactly once);
//! - element-wise targets that read a reduction only at their own index run
//!   in its last pass, as its epilogue;
//! - the other element-wise targets of one extent share a kernel, split when
//!   it would bind more buffers than the device allows.
//!
//! A buffer larger than one storage binding is split into parts of `chunk`
//! elements (see `codegen::Layout`). A kernel binds only the parts its
//! index range can reach; one whose tensors take more bindings than the
//! device allows is cut into windows of its index range, one dispatch each
//! (`in_windows`).

use super::codegen::{fill, strided_expr, validate, Block, Emitter, Layout, Problem, MAX_ELEMENTS};
use super::device::GpuLimits;
use super::invariant;
use crate::backend::cpu::live_nodes;
use crate::backend::{depth_cuts, matmul_form, MatmulForm};
use crate::error::{Error, Result};
use crate::graph::{Node, NodeId};
use crate::ops::{f32_literal, Op, ReduceOp};
use crate::shape::{Shape, StridedMap};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;

const ELEMENTWISE: &str = include_str!("../../../shaders/elementwise.wgsl");
const ELEMENTWISE_VEC: &str = include_str!("../../../shaders/elementwise_vec.wgsl");
const REDUCE: &str = include_str!("../../../shaders/reduce.wgsl");
const REDUCE_SHORT: &str = include_str!("../../../shaders/reduce_short.wgsl");
const REDUCE_FOLD: &str = include_str!("../../../shaders/reduce_fold.wgsl");
const REDUCE_FOLD_VEC: &str = include_str!("../../../shaders/reduce_fold_vec.wgsl");
const MATMUL: &str = include_str!("../../../shaders/matmul.wgsl");
const ROWCOL: &str = include_str!("../../../shaders/rowcol.wgsl");
const ROWCOL_SUBGROUP: &str = include_str!("../../../shaders/rowcol_subgroup.wgsl");
/// The workgroup tree fold both reduction templates end in.
const TREE: &str = include_str!("../../../shaders/tree.wgsl");
const REDUCE_LAST: &str = include_str!("../../../shaders/reduce_last.wgsl");
/// Row-then-column fusion takes rows in blocks of about this many elements
/// per thread (each thread has a row's length / 256 elements of each row),
/// at most `MAX_ROWS_AT_ONCE` rows: a block's loads are in flight together
/// and its rows' trees share one set of barriers.
const ROW_LOADS: usize = 32;
const MAX_ROWS_AT_ONCE: usize = 8;
/// Row-then-column fusion keeps a row's columns in registers, this many per thread at most.
const MAX_COLS_PER_THREAD: usize = 16;
/// With subgroup operations, each lane keeps this many of a row's columns
/// (and as many loaded elements) in registers at most.
const MAX_COLS_PER_LANE: usize = 32;
const WORKGROUP: usize = 256;
/// Element-wise kernels over f32s (where no tensor moves as vec4s: see
/// `vector_kernel`) take this many elements per thread at once, their loads
/// in flight together. On an H100, 4 rather than 1 made the Rosenbrock
/// step's kernel 18% faster at 2^24 elements (0.0556 ms against 0.0678) and
/// 15% at 2^20. Reductions over f32s take one (`shaders/reduce.wgsl`).
const UNROLL: usize = 4;
/// A reduction splits each output into chunks of about this many elements
/// when it has too few outputs to fill the device, into at most
/// `MAX_CHUNKS`. On an H100 the seed workload's sum ran 5% faster at 2^24
/// elements and 1% at 2^28 in 4096 chunks than in 1024 (0.147 against
/// 0.155 ms, 2.270 against 2.295), its second pass 0.004 ms slower.
const CHUNK_TARGET: usize = 4096;
const MAX_CHUNKS: usize = 4096;
/// At most this many where the dispatch folds its chunks itself (see
/// `shaders/reduce_last.wgsl`, whose fold costs the same for any count):
/// on an H100 the seed workload's pass over 2^28 elements took 2.266 ms in
/// 4096 chunks, 2.246 in 16384 and 2.199 in 65535 (the most workgroups of
/// one dispatch dimension there).
const MAX_CHUNKS_FOLDED_HERE: usize = 65535;
/// Outputs beyond this fill the device without chunking.
const ENOUGH_OUTPUTS: usize = 512;
/// Outputs folding at most this many elements each take a thread each
/// (`shaders/reduce_short.wgsl`), not a workgroup.
const SHORT_REDUCE: usize = 64;
/// A kernel is cut into at most this many windows of its index range.
const MAX_WINDOWS: usize = 1024;
/// A tensor is split into at most this many buffers (each one binding):
/// 2^31 elements (the most a kernel indexes) in WebGPU's default bindings
/// of 128 MiB take 64.
const MAX_PARTS: usize = 1 << 16;

/// A buffer of the program, by index.
pub(crate) type BufId = usize;

/// What a buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BufKind {
    /// The k-th input of the program.
    Input(usize),
    /// The k-th parameter; `next` is the buffer its update is written to
    /// (the two swap after every run).
    Param { index: usize, next: bool },
    /// Computed and used within a run.
    Temp,
}

#[derive(Clone, Debug)]
pub(crate) struct BufSpec {
    pub numel: usize,
    pub kind: BufKind,
}

impl BufSpec {
    /// How many buffers of `chunk` elements hold this one.
    pub fn parts(&self, chunk: usize) -> usize {
        self.numel.div_ceil(chunk).max(1)
    }
}

/// One compute dispatch.
#[derive(Clone, Debug)]
pub(crate) struct KernelSpec {
    pub label: String,
    pub wgsl: String,
    /// Storage bindings, in binding order.
    pub bindings: Vec<Binding>,
    /// The stored nodes whose values it loads.
    pub reads: Vec<NodeId>,
    pub workgroups: u32,
}

/// A part of a buffer bound to a kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Binding {
    pub buf: BufId,
    pub part: usize,
    /// Whether the kernel writes it.
    pub write: bool,
    /// The bytes of the part the kernel can reach: what it reads or writes
    /// at most (a window of a tensor reaches a little of its neighbours' parts).
    pub bytes: u64,
}

/// Everything the program needs to create its buffers and pipelines.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub buffers: Vec<BufSpec>,
    /// Elements per binding; a larger buffer is split into parts of this size.
    pub chunk: usize,
    pub kernels: Vec<KernelSpec>,
    /// Where each stored node's value lives after a run.
    pub stored: HashMap<NodeId, BufId>,
}

impl Plan {
    /// Which kernels a run that computes only the updates dispatches:
    /// walking back from the buffers the updates write, a kernel writing a
    /// needed buffer is needed, and so is every buffer it reads.
    pub fn for_updates(&self) -> Vec<bool> {
        let mut needed: Vec<bool> = self
            .buffers
            .iter()
            .map(|b| matches!(b.kind, BufKind::Param { next: true, .. }))
            .collect();
        let mut keep = vec![false; self.kernels.len()];
        for (k, spec) in self.kernels.iter().enumerate().rev() {
            if spec.bindings.iter().any(|b| b.write && needed[b.buf]) {
                keep[k] = true;
                for b in &spec.bindings {
                    needed[b.buf] |= !b.write;
                }
            }
        }
        keep
    }
}

/// What a program computes: `outputs`, and `updates` (param node, value node).
pub(crate) struct Request<'a> {
    pub nodes: &'a [Node],
    pub outputs: &'a [NodeId],
    pub updates: &'a [(NodeId, NodeId)],
    /// The program's inputs and parameters, in the order their buffers are numbered.
    pub inputs: &'a [NodeId],
    pub params: &'a [NodeId],
}

/// Plan the kernels for `req`, validating every generated shader with naga.
pub(crate) fn plan(req: &Request, limits: &GpuLimits) -> Result<Plan> {
    // Stored from the start: what keeps every kernel's expressions shallow.
    let mut roots: Vec<NodeId> = req.outputs.to_vec();
    roots.extend(req.updates.iter().map(|u| u.1));
    let live = live_nodes(req.nodes, &roots);
    let mut extra_stored = depth_cuts(req.nodes, &live);
    loop {
        match try_plan(req, limits, &live, &extra_stored)? {
            Attempt::Done(plan) => {
                invariant::check(&plan, req.outputs)?;
                // Only the kernels of the final attempt: a graph that needs
                // many values stored plans many times.
                for k in &plan.kernels {
                    validate(&k.wgsl)?;
                }
                return Ok(plan);
            }
            Attempt::Store(ids) => extra_stored.extend(ids),
        }
    }
}

enum Attempt {
    Done(Plan),
    /// Store these nodes and plan again.
    Store(Vec<NodeId>),
}

/// What every kernel of one plan is generated against.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    nodes: &'a [Node],
    /// The stored nodes kernels load, and their buffers.
    loads: &'a HashMap<NodeId, BufId>,
    limits: &'a GpuLimits,
    /// Elements per binding.
    chunk: usize,
}

/// A value a kernel computes and the buffer it goes to.
#[derive(Clone, Copy, Debug)]
struct Target {
    node: NodeId,
    buf: BufId,
}

/// Plan `req`, whose live nodes are `live`, storing the nodes of `extra` too.
fn try_plan(
    req: &Request,
    limits: &GpuLimits,
    live: &[usize],
    extra: &[NodeId],
) -> Result<Attempt> {
    let nodes = req.nodes;
    let extra: HashSet<NodeId> = extra.iter().copied().collect();

    let mut buffers: Vec<BufSpec> = Vec::new();
    let mut new_buf = |numel: usize, kind: BufKind| {
        buffers.push(BufSpec { numel, kind });
        buffers.len() - 1
    };
    let mut stored: HashMap<NodeId, BufId> = HashMap::default();
    for (k, &id) in req.inputs.iter().enumerate() {
        stored.insert(
            id,
            new_buf(nodes[id.index()].shape.numel(), BufKind::Input(k)),
        );
    }
    for (k, &id) in req.params.iter().enumerate() {
        let numel = nodes[id.index()].shape.numel();
        stored.insert(
            id,
            new_buf(
                numel,
                BufKind::Param {
                    index: k,
                    next: false,
                },
            ),
        );
    }
    // Targets: every stored value a kernel must compute.
    let mut targets: Vec<Target> = Vec::new();
    for &(param, value) in req.updates {
        let k = req
            .params
            .iter()
            .position(|&p| p == param)
            .expect("updated param is listed");
        let buf = new_buf(
            nodes[param.index()].shape.numel(),
            BufKind::Param {
                index: k,
                next: true,
            },
        );
        // The update value is written straight into the parameter's next
        // buffer, unless it is a leaf or already has a home: then it is copied.
        if !is_leaf(&nodes[value.index()].op) && !stored.contains_key(&value) {
            stored.insert(value, buf);
        }
        targets.push(Target { node: value, buf });
    }
    let outputs: HashSet<NodeId> = req.outputs.iter().copied().collect();
    let must_store = |id: NodeId| {
        matches!(nodes[id.index()].op, Op::Reduce { .. })
            || outputs.contains(&id)
            || extra.contains(&id)
    };
    for &i in live {
        let id = NodeId(i as u32);
        if must_store(id) && !stored.contains_key(&id) {
            // A reshape of a stored value is that buffer read another way.
            if nodes[i].op == Op::Reshape {
                if let Some(&src) = stored.get(&nodes[i].inputs[0]) {
                    stored.insert(id, src);
                    continue;
                }
            }
            let buf = new_buf(nodes[i].shape.numel(), BufKind::Temp);
            stored.insert(id, buf);
            targets.push(Target { node: id, buf });
        }
    }
    // A value of no elements needs no kernel (and none reads it: it is
    // folded where it is read).
    targets.retain(|t| nodes[t.node.index()].shape.numel() > 0);
    for b in &buffers {
        if b.numel >= MAX_ELEMENTS {
            return Err(Error::TooLarge(format!(
                "a tensor of {} elements exceeds 2^31 elements (32-bit indexing)",
                b.numel
            )));
        }
    }
    // A tensor larger than one binding is split into parts of `chunk`
    // elements, a power of two so that finding the part is a shift.
    let most = (limits.max_storage_binding.min(limits.max_buffer) / 4).max(16);
    let chunk = 1usize << (63 - most.leading_zeros());
    if let Some(b) = buffers.iter().find(|b| b.parts(chunk) > MAX_PARTS) {
        return Err(Error::TooLarge(format!(
            "a tensor of {} elements would take {} buffers of this device's {chunk}-element \
             bindings, more than {MAX_PARTS}",
            b.numel,
            b.parts(chunk)
        )));
    }

    // Kernels load only what cannot be recomputed: leaves, reductions, and
    // nodes stored on purpose. A requested output or update value is written
    // to its buffer, but its consumers recompute it like any element-wise node.
    let loads: HashMap<NodeId, BufId> = stored
        .iter()
        .filter(|(id, _)| {
            let op = &nodes[id.index()].op;
            is_leaf(op) || matches!(op, Op::Reduce { .. }) || extra.contains(id)
        })
        .map(|(&id, &b)| (id, b))
        .collect();

    // Levels: one more than the stored values a target's expression reads.
    let mut level: HashMap<NodeId, usize> = HashMap::default();
    let mut reads_memo: HashMap<NodeId, Vec<NodeId>> = HashMap::default();
    let mut by_level: BTreeMap<usize, Vec<Target>> = BTreeMap::new();
    // Up the arena first, so that each level's walk stops at the stored
    // values just below it (a chain of stored values would recurse as deep
    // as it is long).
    let mut up: Vec<NodeId> = targets.iter().map(|t| t.node).collect();
    up.sort();
    for id in up {
        level_of(id, nodes, &loads, &mut level, &mut reads_memo);
    }
    for t in &targets {
        let l = level_of(t.node, nodes, &loads, &mut level, &mut reads_memo);
        by_level.entry(l).or_default().push(*t);
    }

    // An element-wise target that reads a reduction only at its own index
    // (and nothing else of that level or later) is computed in the
    // reduction's last pass, right where each result is folded: an epilogue.
    let mut epilogues: HashMap<NodeId, Vec<Target>> = HashMap::default();
    let reduction_targets: Vec<Target> = targets
        .iter()
        .copied()
        .filter(|t| matches!(nodes[t.node.index()].op, Op::Reduce { .. }))
        .collect();
    // The reductions a value's expression reads, in the order of
    // `reduction_targets` (the first that fits is taken).
    let rank: HashMap<NodeId, usize> = (reduction_targets.iter().enumerate())
        .map(|(k, r)| (r.node, k))
        .collect();
    let reductions_read = |direct: &[NodeId]| {
        let mut read: Vec<usize> = direct.iter().filter_map(|d| rank.get(d).copied()).collect();
        read.sort();
        read.into_iter().map(|k| reduction_targets[k])
    };
    let mut in_epilogues = HashSet::default();
    for t in &targets {
        let node = &nodes[t.node.index()];
        if matches!(node.op, Op::Reduce { .. }) {
            continue;
        }
        let direct = reads(t.node, nodes, &loads, &mut reads_memo);
        let found = reductions_read(&direct).find(|r| {
            let lr = level[&r.node];
            nodes[r.node.index()].shape.numel() == node.shape.numel()
                && direct
                    .iter()
                    .all(|d| *d == r.node || level.get(d).is_none_or(|&l| l < lr))
                && at_own_index(t.node, r.node, nodes, &loads)
        });
        if let Some(r) = found {
            epilogues.entry(r.node).or_default().push(*t);
            in_epilogues.insert(t.node);
        }
    }
    for group in by_level.values_mut() {
        group.retain(|x| !in_epilogues.contains(&x.node));
    }

    // A column reduction that needs a row reduction of the same tensor is
    // computed with it, in one read of the tensor. A reduction is in one
    // pair at most: one that runs with the reduction before it has no
    // kernel of its own for a third to join (z = Xw, c = Xᵀz, X·c).
    let mut partners: HashMap<NodeId, Target> = HashMap::default();
    let mut paired: HashSet<NodeId> = HashSet::default();
    for r2 in &reduction_targets {
        // A row reduction it needs is one its operand reads.
        let read = reads(r2.node, nodes, &loads, &mut reads_memo);
        for r1 in reductions_read(&read) {
            if level[&r2.node] == level[&r1.node] + 1
                && !paired.contains(&r1.node)
                && !paired.contains(&r2.node)
                && rowcol_pair(nodes, &loads, &level, &mut reads_memo, r1.node, r2.node)
            {
                partners.insert(r1.node, *r2);
                paired.extend([r1.node, r2.node]);
                let l2 = level[&r2.node];
                by_level
                    .get_mut(&l2)
                    .expect("every target has a level")
                    .retain(|x| x.node != r2.node);
                // `r2` now runs with `r1`, a level early: its epilogue may
                // keep only what reads nothing of `r1`'s level.
                let l1 = level[&r1.node];
                if let Some(epilogue) = epilogues.get_mut(&r2.node) {
                    let (keep, late): (Vec<Target>, Vec<Target>) = epilogue.iter().partition(|t| {
                        reads(t.node, nodes, &loads, &mut reads_memo)
                            .iter()
                            .all(|d| *d == r2.node || level.get(d).is_none_or(|&l| l < l1))
                    });
                    *epilogue = keep;
                    for t in late {
                        by_level.entry(level[&t.node]).or_default().push(t);
                    }
                }
                break;
            }
        }
    }

    let ctx = Ctx {
        nodes,
        loads: &loads,
        limits,
        chunk,
    };
    let mut kernels = Vec::new();
    // Values to store, as the kernels that cannot be built without them
    // ask: all of one attempt's (each kernel's is its own), then plan again.
    let mut pending: Vec<NodeId> = Vec::new();
    while let Some((l, group)) = by_level.pop_first() {
        let (reductions, mut elementwise): (Vec<Target>, Vec<Target>) = group
            .into_iter()
            .partition(|t| matches!(nodes[t.node.index()].op, Op::Reduce { .. }));
        for r in reductions {
            let epilogue = epilogues.remove(&r.node).unwrap_or_default();
            let operand = nodes[r.node.index()].inputs[0];
            let extent = nodes[operand.index()].shape.numel();
            // Element-wise targets of the operand's extent ride along in pass 1.
            let (riders, rest): (Vec<Target>, Vec<Target>) = elementwise
                .into_iter()
                .partition(|t| nodes[t.node.index()].shape.numel() == extent);
            elementwise = rest;
            if let Some(&r2) = partners.get(&r.node) {
                let epilogue2 = epilogues.get(&r2.node).cloned().unwrap_or_default();
                match rowcol(ctx, r, r2, &epilogue, &epilogue2, &mut buffers)? {
                    Fit::Kernels(ks) => {
                        kernels.extend(ks);
                        elementwise.extend(riders);
                        epilogues.remove(&r2.node);
                        continue;
                    }
                    Fit::Store(ids) => {
                        pending.extend(ids);
                        continue;
                    }
                    // Too many buffers for one kernel: the two reductions
                    // go their own ways.
                    Fit::Split => by_level.entry(l + 1).or_default().push(r2),
                }
            }
            if let Some(form) = matmul_form(nodes, r.node) {
                // A matrix product has its own iteration space: no riders.
                elementwise.extend(riders);
                by_level.entry(l + 1).or_default().extend(epilogue);
                match matmul_kernel(ctx, &buffers, r, &form)? {
                    Fit::Kernels(ks) => kernels.extend(ks),
                    Fit::Store(ids) => pending.extend(ids),
                    Fit::Split => unreachable!("a lone target is never split"),
                }
                continue;
            }
            // Too many buffers with everything along: first the riders, then
            // the epilogue get kernels of their own.
            let attempts = [
                (riders.clone(), epilogue.clone()),
                (vec![], epilogue.clone()),
                (vec![], vec![]),
            ];
            for (k, (with_riders, with_epilogue)) in attempts.into_iter().enumerate() {
                match reduction(ctx, r, &with_riders, &with_epilogue, &mut buffers)? {
                    Fit::Kernels(ks) => {
                        kernels.extend(ks);
                        if k >= 1 {
                            elementwise.extend(riders.iter().copied());
                        }
                        if k == 2 {
                            by_level
                                .entry(l + 1)
                                .or_default()
                                .extend(epilogue.iter().copied());
                        }
                        break;
                    }
                    Fit::Store(ids) => {
                        pending.extend(ids);
                        break;
                    }
                    Fit::Split if k < 2 => continue,
                    Fit::Split => unreachable!("a lone target is never split"),
                }
            }
        }
        let mut by_extent: BTreeMap<usize, Vec<Target>> = BTreeMap::new();
        for t in elementwise {
            by_extent
                .entry(nodes[t.node.index()].shape.numel())
                .or_default()
                .push(t);
        }
        for (extent, ts) in by_extent {
            match elementwise_kernels(ctx, &buffers, extent, &ts)? {
                Fit::Kernels(ks) => kernels.extend(ks),
                Fit::Store(ids) => pending.extend(ids),
                Fit::Split => unreachable!("elementwise_kernels splits itself"),
            }
        }
    }
    if !pending.is_empty() {
        pending.sort();
        pending.dedup();
        return Ok(Attempt::Store(pending));
    }
    // The partials of reductions in windows are made while planning. There
    // are at most as many as the operand has elements (below 2^31, or
    // refused as a problem), so no plan is known to reach this: a guard.
    if let Some(b) = buffers.iter().find(|b| b.numel >= MAX_ELEMENTS) {
        return Err(Error::TooLarge(format!(
            "the partial results of a reduction in windows would take {} elements, \
             over 2^31 (32-bit indexing): the device's bindings are too small for it",
            b.numel
        )));
    }
    Ok(Attempt::Done(Plan {
        buffers,
        chunk,
        kernels,
        stored,
    }))
}

fn is_leaf(op: &Op) -> bool {
    matches!(op, Op::Input(_) | Op::Param { .. })
}

/// The stored nodes `id`'s expression reads directly (stopping at stored nodes).
fn reads(
    id: NodeId,
    nodes: &[Node],
    stored: &HashMap<NodeId, BufId>,
    memo: &mut HashMap<NodeId, Vec<NodeId>>,
) -> Vec<NodeId> {
    if let Some(r) = memo.get(&id) {
        return r.clone();
    }
    let mut out = Vec::new();
    for &j in &nodes[id.index()].inputs {
        if stored.contains_key(&j) {
            out.push(j);
        } else {
            out.extend(reads(j, nodes, stored, memo));
        }
    }
    out.sort();
    out.dedup();
    memo.insert(id, out.clone());
    out
}

fn level_of(
    id: NodeId,
    nodes: &[Node],
    stored: &HashMap<NodeId, BufId>,
    level: &mut HashMap<NodeId, usize>,
    memo: &mut HashMap<NodeId, Vec<NodeId>>,
) -> usize {
    if is_leaf(&nodes[id.index()].op) {
        return 0;
    }
    if let Some(&l) = level.get(&id) {
        return l;
    }
    let l = 1 + reads(id, nodes, stored, memo)
        .into_iter()
        .map(|j| level_of(j, nodes, stored, level, memo))
        .max()
        .unwrap_or(0);
    level.insert(id, l);
    l
}

fn dispatch_count(items: usize, per_group: usize, limits: &GpuLimits) -> u32 {
    items
        .div_ceil(per_group)
        .clamp(1, limits.max_workgroups as usize) as u32
}

/// Emit `targets` at index `idx` into `e`. A target whose buffer is its
/// node's home is computed from its operands; any other target (an update
/// copying a value that lives elsewhere) loads the value and stores it.
fn emit_targets(e: &mut Emitter, stored: &HashMap<NodeId, BufId>, targets: &[Target], idx: &str) {
    for t in targets {
        let v = if stored.get(&t.node) == Some(&t.buf) {
            e.compute(t.node, idx)
        } else {
            e.value(t.node, idx)
        };
        e.store(t.buf, idx, &v);
    }
}

/// How a group of targets fits into kernels.
enum Fit {
    Kernels(Vec<KernelSpec>),
    /// Store these nodes and plan again (one is needed at too many
    /// indices, or they cut an expression that reads too many buffers for
    /// one kernel).
    Store(Vec<NodeId>),
    /// The targets need more buffers than one kernel may bind: split them.
    Split,
}

/// Whether a finished kernel (emitted with `problem`, taking `bindings`
/// storage bindings) fits the device; if not, what to do about it, or an
/// error where nothing can be done: a value too large for 32-bit indices,
/// or one op whose operands, all stored, take more bindings than a kernel
/// may have.
fn fits(
    problem: Option<Problem>,
    bindings: usize,
    nodes: &[Node],
    stored: &HashMap<NodeId, BufId>,
    targets: &[NodeId],
    limits: &GpuLimits,
) -> Result<Option<Fit>> {
    match problem {
        Some(Problem::TooManyCopies(id)) => return Ok(Some(Fit::Store(vec![id]))),
        Some(Problem::TooLarge(id)) => return Err(too_large(&nodes[id.index()])),
        None => {}
    }
    if bindings <= limits.max_storage_buffers as usize {
        return Ok(None);
    }
    if targets.len() > 1 {
        return Ok(Some(Fit::Split));
    }
    // One value reads too many buffers: store values below it so that no
    // expression within it reads as many values as a kernel binds, all in
    // one plan (a long chain of sums is cut into pieces that fit, not one
    // piece per plan).
    let cuts = width_cuts(
        targets[0],
        nodes,
        stored,
        limits.max_storage_buffers as usize,
    );
    if !cuts.is_empty() {
        return Ok(Some(Fit::Store(cuts)));
    }
    // Its values take too many bindings (a tensor over one binding takes
    // several): store a value below it, following the operands that read
    // the most down to the first whose reads fit a kernel of its own.
    let mut memo = HashMap::default();
    let mut id = targets[0];
    loop {
        let widest = nodes[id.index()]
            .inputs
            .iter()
            .filter(|j| !stored.contains_key(j))
            .max_by_key(|&&j| reads(j, nodes, stored, &mut memo).len());
        match widest {
            None if id == targets[0] => {
                let node = &nodes[id.index()];
                return Err(Error::TooLarge(format!(
                    "the {} of shape {} recorded at {} reads tensors taking {bindings} \
                     storage bindings with its result (a tensor over one binding takes \
                     several, and no window of its elements reads fewer), and a kernel \
                     on this device binds at most {}",
                    node.op.name(),
                    node.shape,
                    node.location,
                    limits.max_storage_buffers
                )));
            }
            None => return Ok(Some(Fit::Store(vec![id]))),
            Some(&j)
                if reads(j, nodes, stored, &mut memo).len()
                    < limits.max_storage_buffers as usize =>
            {
                return Ok(Some(Fit::Store(vec![j])))
            }
            Some(&j) => id = j,
        }
    }
}

/// The error for a value too large for a kernel's 32-bit indices.
fn too_large(node: &Node) -> Error {
    Error::TooLarge(format!(
        "the {} of shape {} recorded at {} has {} elements, and kernels index \
         values with 32 bits (fewer than 2^31 elements)",
        node.op.name(),
        node.shape,
        node.location,
        node.shape.numel()
    ))
}

/// The nodes of `target`'s expression to store so that each of its nodes
/// reads fewer stored values than `max`. Up the expression (inputs before
/// the nodes that read them), a node reading `max` or more has the input
/// that reads the most stored, until it reads fewer; a node all of whose
/// inputs are stored already is stored itself. None where no node reads
/// `max`, or where `target` is such a node.
fn width_cuts(
    target: NodeId,
    nodes: &[Node],
    stored: &HashMap<NodeId, BufId>,
    max: usize,
) -> Vec<NodeId> {
    // The target's expression: what it reads down to stored values (it
    // may be stored itself, for others to read).
    let mut cone = Vec::new();
    let mut stack = vec![target];
    let mut seen = HashSet::default();
    while let Some(n) = stack.pop() {
        if (n == target || !stored.contains_key(&n)) && seen.insert(n) {
            cone.push(n);
            stack.extend(&nodes[n.index()].inputs);
        }
    }
    cone.sort();
    let mut cut: HashSet<NodeId> = HashSet::default();
    // What each node of the cone reads that is stored (or cut).
    let mut reads: HashMap<NodeId, HashSet<NodeId>> = HashMap::default();
    for n in cone {
        let inputs = &nodes[n.index()].inputs;
        let read_of =
            |j: &NodeId, cut: &HashSet<NodeId>, reads: &HashMap<NodeId, HashSet<NodeId>>| {
                if stored.contains_key(j) || cut.contains(j) {
                    std::iter::once(*j).collect()
                } else {
                    reads[j].clone()
                }
            };
        let mut read: HashSet<NodeId> = inputs
            .iter()
            .flat_map(|j| read_of(j, &cut, &reads))
            .collect();
        while read.len() >= max {
            let widest = inputs
                .iter()
                .filter(|j| !stored.contains_key(j) && !cut.contains(j))
                .max_by_key(|j| reads[j].len());
            match widest {
                Some(&j) => {
                    cut.insert(j);
                    read = inputs
                        .iter()
                        .flat_map(|j| read_of(j, &cut, &reads))
                        .collect();
                }
                None if n == target => return Vec::new(),
                None => {
                    cut.insert(n);
                    break;
                }
            }
        }
        reads.insert(n, read);
    }
    let mut cuts: Vec<NodeId> = cut.into_iter().collect();
    cuts.sort();
    cuts
}

/// A kernel's dispatches for one cut of its index range, and the problem
/// (if any) emitting it found, which is the same for every cut.
struct Cut {
    kernels: Vec<KernelSpec>,
    problem: Option<Problem>,
}

impl Cut {
    /// The most storage bindings one of its dispatches takes.
    fn widest(&self) -> usize {
        self.kernels
            .iter()
            .map(|k| k.bindings.len())
            .max()
            .unwrap_or(0)
    }
}

/// The fewest dispatches of a kernel whose bindings fit the device.
/// `build(s, f)` builds the kernel with its slots (elements or rows,
/// outputs, rows of tiles) cut into at most `s` windows and each fold (a
/// reduction's, a product's k; an element-wise kernel's columns) into at
/// most `f`. Tried: the whole range, then 2, 4, 8, … windows of the slots;
/// where `cut_folds`, of each fold, then of both (a column sum of a large
/// matrix needs both). Each way of cutting goes on up to `MAX_WINDOWS`
/// dispatches, or until three finer cuts in a row bind no fewer buffers (a
/// window of a tensor read out of order reaches all its parts however
/// narrow). None is tried where every window binds at least `floor`
/// buffers (`None`: every cut accesses the buffers the whole range does),
/// more than the device allows. Where none fits, the whole range, built
/// last, so that whatever `build` planned is its own.
fn in_windows(
    limits: &GpuLimits,
    cut_folds: bool,
    floor: Option<usize>,
    mut build: impl FnMut(usize, usize) -> Result<Cut>,
) -> Result<Cut> {
    let max = limits.max_storage_buffers as usize;
    let whole = build(1, 1)?;
    // Where every cut's kernels access the buffers the whole range's does,
    // a window binds at least one part of each (an access out of its
    // reach still binds one): the whole's count of buffers is the floor.
    let floor = floor.unwrap_or_else(|| {
        let buffers = |k: &KernelSpec| k.bindings.iter().map(|b| b.buf).collect::<HashSet<_>>();
        whole
            .kernels
            .iter()
            .map(|k| buffers(k).len())
            .max()
            .unwrap_or(0)
    });
    // Trying windows costs their code: dozens of kernels per way of cutting.
    if whole.problem.is_some() || whole.widest() <= max || floor > max {
        return Ok(whole);
    }
    for (slots, folds) in [(true, false), (false, true), (true, true)] {
        if folds && !cut_folds {
            continue;
        }
        let (mut best, mut stale) = (whole.widest(), 0);
        let mut n = 2;
        let cuts = |n: usize| (if slots { n } else { 1 }, if folds { n } else { 1 });
        while cuts(n).0 * cuts(n).1 <= MAX_WINDOWS && stale < 3 {
            let cut = build(cuts(n).0, cuts(n).1)?;
            if cut.widest() <= max {
                return Ok(cut);
            }
            stale = if cut.widest() < best { 0 } else { stale + 1 };
            best = best.min(cut.widest());
            n *= 2;
        }
    }
    build(1, 1)
}

/// The fewest bindings any window of a kernel takes: one for each buffer
/// it reads at its own index (`reads`: every element reads each) and one
/// for each buffer of `targets` (every element writes each).
fn fewest_bindings(stored: &HashMap<NodeId, BufId>, reads: &[NodeId], targets: &[Target]) -> usize {
    let read = reads.iter().map(|n| stored[n]);
    let bufs: HashSet<BufId> = read.chain(targets.iter().map(|t| t.buf)).collect();
    bufs.len()
}

/// `0..len` in at most `n` windows. Windows (but the last) have one
/// power-of-two length, so that a window of a tensor read in order reaches
/// as few binding parts (a power of two elements each) as it can.
fn windows(len: usize, n: usize) -> Vec<Range<usize>> {
    if n == 1 || len <= 1 {
        return std::iter::once(0..len).collect();
    }
    let w = len.div_ceil(n).next_power_of_two();
    (0..len).step_by(w).map(|a| a..(a + w).min(len)).collect()
}

/// Where a cut of a reduction into windows with `count` partials per output
/// (of `outs`) leaves its results: the target's own buffer where there is
/// one, else a new buffer of partials after the first `planned` buffers
/// (an earlier cut's partials dropped).
fn results_buffer(
    buffers: &mut Vec<BufSpec>,
    planned: usize,
    target: Target,
    outs: usize,
    count: usize,
) -> BufId {
    buffers.truncate(planned);
    if count == 1 {
        return target.buf;
    }
    buffers.push(BufSpec {
        numel: outs * count,
        kind: BufKind::Temp,
    });
    buffers.len() - 1
}

/// A kernel's label, with its window where it has several.
fn window_label(label: &str, k: usize, n: usize) -> String {
    if n == 1 {
        label.to_string()
    } else {
        format!("{label} (window {} of {n})", k + 1)
    }
}

fn elementwise_kernels(
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
fn split(ctx: Ctx, buffers: &[BufSpec], extent: usize, targets: &[Target]) -> Result<Fit> {
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
fn own_index_reads(
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
fn vectorized<T>(
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
fn vec_holes(
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
fn lane_targets(
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
fn vector_kernel(
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

fn ids(targets: &[Target]) -> Vec<NodeId> {
    targets.iter().map(|t| t.node).collect()
}

/// One reduction: pass 1 folds chunks of each output (with the operand's
/// element-wise producers fused in, and `riders` written on the way); when
/// there is more than one chunk, pass 2 folds the chunks. Where the
/// tensors take more bindings than one dispatch may have, pass 1 is cut
/// into windows of its outputs, or of each fold (whose results are then
/// partials too, folded by pass 2 in order).
fn reduction(
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
fn followed_by(first: Vec<KernelSpec>, rest: Fit) -> Fit {
    match rest {
        Fit::Kernels(k) => Fit::Kernels(first.into_iter().chain(k).collect()),
        other => other,
    }
}

/// A reduction's chunk results: output `o`'s `groups` partials, element `r`
/// at `o * output_stride + r * stride`.
#[derive(Clone, Copy)]
struct Partials {
    buf: BufId,
    groups: usize,
    output_stride: usize,
    stride: usize,
}

/// The last pass of a chunked reduction: fold each output's partials in
/// order, store it, and run the reduction's epilogue.
fn fold_partials(
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
struct FoldedHere {
    blocks: usize,
    block_results: BufId,
    counters: BufId,
}

/// The LAST hole of `shaders/reduce.wgsl` for one output's `count` chunk
/// results in `dst`, folded in the same dispatch (`reduce_last.wgsl`):
/// stores the reduction and runs its epilogue.
#[allow(clippy::too_many_arguments)]
fn last_fold(
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
struct ReduceSpace {
    slots: Range<usize>,
    groups: usize,
    len: usize,
    fold: Range<usize>,
}

impl ReduceSpace {
    /// Whole folds of a few elements: a thread each (reduce_short.wgsl).
    fn short(&self) -> bool {
        self.groups == 1 && self.len <= SHORT_REDUCE && self.fold == (0..self.len)
    }
}

/// One reduction dispatch over `space`: `shaders/reduce.wgsl` folding
/// vec4s where `vec` (`reduce_fold_vec.wgsl`), else f32s
/// (`reduce_fold.wgsl`), or `reduce_short.wgsl` (whole folds of a few
/// elements, a thread each); `holes` are what the emitter wrote (BINDINGS,
/// BASE, STORE, and OFFSET, BODY and VALUE or the vec4 holes) with `e`,
/// which says what the kernel binds and loads.
fn reduce_kernel(
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

/// A matrix product in tiles (`shaders/matmul.wgsl`). Where its tensors
/// take more bindings than one dispatch may have, it is cut into windows
/// of the output's rows of tiles (a batch of inputs times a small matrix),
/// of the sum's k (a gradient summed over the batch: each window adds its
/// sums to the earlier windows', in order), or both.
fn matmul_kernel(ctx: Ctx, buffers: &[BufSpec], target: Target, f: &MatmulForm) -> Result<Fit> {
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

/// The epilogue of a reduction's last pass: `targets` at index `slot`, where
/// the reduction's own value is the tree's `total`.
fn emit_epilogue(
    e: &mut Emitter,
    stored: &HashMap<NodeId, BufId>,
    reduction: NodeId,
    targets: &[Target],
) -> String {
    e.preset(reduction, "slot", "total");
    emit_targets(e, stored, targets, "slot");
    e.take_body()
}

/// Whether computing `id` reads the stored node `r` only at its own flat
/// index: every path from `id`'s operands to `r` passes only element-wise
/// ops and reshapes. (`id` itself may be stored, for later kernels to load;
/// what matters is what computing it reads.)
fn at_own_index(id: NodeId, r: NodeId, nodes: &[Node], loads: &HashMap<NodeId, BufId>) -> bool {
    operands_at_own_index(id, r, (nodes, loads), &mut HashMap::default())
}

/// `at_own_index`, each node's answer once: an expression that reads a
/// value twice at every step down would otherwise take twice as long per
/// step.
fn at_own_index_memo(
    id: NodeId,
    r: NodeId,
    ctx: (&[Node], &HashMap<NodeId, BufId>),
    memo: &mut HashMap<NodeId, bool>,
) -> bool {
    let (_, loads) = ctx;
    if id == r || loads.contains_key(&id) {
        return true;
    }
    if let Some(&known) = memo.get(&id) {
        return known;
    }
    let answer = operands_at_own_index(id, r, ctx, memo);
    memo.insert(id, answer);
    answer
}

/// Whether `id`'s operands read `r` only at `id`'s own index.
fn operands_at_own_index(
    id: NodeId,
    r: NodeId,
    ctx: (&[Node], &HashMap<NodeId, BufId>),
    memo: &mut HashMap<NodeId, bool>,
) -> bool {
    let (nodes, loads) = ctx;
    let node = &nodes[id.index()];
    match node.op {
        Op::Const(_) => true,
        Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Reshape => node
            .inputs
            .iter()
            .all(|&j| at_own_index_memo(j, r, ctx, memo)),
        _ => !node.inputs.iter().any(|&j| reaches(j, r, nodes, loads)),
    }
}

/// Whether `id`'s expression reads `r` at all.
fn reaches(id: NodeId, r: NodeId, nodes: &[Node], loads: &HashMap<NodeId, BufId>) -> bool {
    let mut seen = HashSet::default();
    let mut stack = vec![id];
    while let Some(n) = stack.pop() {
        if n == r {
            return true;
        }
        if !loads.contains_key(&n) && seen.insert(n) {
            stack.extend(&nodes[n.index()].inputs);
        }
    }
    false
}

/// Whether reduction `r2`'s operand is `r1`'s operand's shape, reduced over
/// the complementary axes, and reads `r1` only through a broadcast of one
/// value per row (so a row's result can be used as soon as it is folded),
/// reading nothing else that is not yet computed.
fn rowcol_pair(
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
fn per_row(
    id: NodeId,
    r1: NodeId,
    rows: &Shape,
    nodes: &[Node],
    loads: &HashMap<NodeId, BufId>,
) -> bool {
    per_row_memo(id, r1, rows, (nodes, loads), &mut HashMap::default())
}

/// `per_row`, each node's answer once (as `at_own_index_memo`).
fn per_row_memo(
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
struct RowColFolds {
    cols: usize,
    rows_at_once: usize,
    row_len: usize,
    /// WGSL: a row's first source index, in `slot`.
    slot: String,
    /// WGSL: the source offset of row element `r`.
    offset: String,
}

impl RowColFolds {
    /// Row `b` of the block: `inner` with `slot`, the row's index, clamped
    /// to the last row.
    fn row(&self, b: usize, inner: &str) -> String {
        format!("{{\nlet slot = min(block + {b}u, last - 1u);\n{inner}}}\n")
    }

    /// Inside row `b`, element `k` of the thread folded into `acc`: its
    /// source index `idx`, clamped to a valid neighbour, and `keep`, whether
    /// it needed no clamping (the select leaves the rest out).
    fn fold(&self, op: ReduceOp, b: usize, k: usize, acc: &str, body: &str, value: &str) -> String {
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

    fn rows(&self, op: ReduceOp, body: &str, value: &str) -> String {
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

    fn accs(&self) -> String {
        let accs: Vec<String> = (0..self.rows_at_once).map(|b| format!("acc{b}")).collect();
        accs.join(", ")
    }

    /// Each row's result, stored by the first thread (`store` in `slot`
    /// and `total`).
    fn stores(&self, store: &str) -> String {
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
    fn columns(&self, op: ReduceOp, per_row: &str, body: &str, value: &str) -> String {
        (0..self.rows_at_once)
            .map(|b| {
                let folds: String = (0..self.cols)
                    .map(|k| self.fold(op, b, k, &format!("col{k}"), body, value))
                    .collect();
                self.row(b, &format!("let total = totals[{b}];\n{per_row}\n{folds}"))
            })
            .collect()
    }

    fn declare_cols(&self, op: ReduceOp) -> String {
        let identity = f32_literal(op.identity());
        (0..self.cols)
            .map(|k| format!("var col{k}: f32 = {identity};\n"))
            .collect()
    }

    /// Each column accumulator stored (`store` in `col` and `value`).
    fn store_partials(&self, store: &str) -> String {
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
struct LaneFolds {
    cols: usize,
    /// How many subgroups a workgroup has at most (of the smallest size).
    max_subgroups: usize,
    /// WGSL: a row's first source index, in `slot`.
    slot: String,
    /// The source offset of a row element.
    offset: StridedMap,
    /// The nodes, and their buffers, that both operands read at their own
    /// index: loaded once per element, for both folds.
    shared: Vec<(NodeId, BufId)>,
}

impl LaneFolds {
    /// The row's fold: each lane's elements into `acc`, then the
    /// subgroup's fold of `acc` into `total`. Loads the shared nodes.
    fn row(&self, e: &mut Emitter, o: NodeId, op: ReduceOp) -> String {
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
    fn fold(&self, e: &mut Emitter, j: usize, o: NodeId, op: ReduceOp, acc: &str) -> String {
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
    fn columns(&self, e: &mut Emitter, o: NodeId, op: ReduceOp, per_row: &str) -> String {
        let folds: String = (0..self.cols)
            .map(|j| self.fold(e, j, o, op, &format!("col{j}")))
            .collect();
        format!("{per_row}{folds}")
    }

    fn declare_cols(&self, op: ReduceOp) -> String {
        let identity = f32_literal(op.identity());
        (0..self.cols)
            .map(|j| format!("var col{j}: f32 = {identity};\n"))
            .collect()
    }

    /// Subgroup `s`'s columns folded into `scratch` (the first's stored).
    fn scratch(&self, op: ReduceOp) -> String {
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

/// The stored nodes the nodes `from` read at their own flat index, through
/// element-wise ops and reshapes, in the order walks down their inputs
/// (from each of `from` in turn) meet them.
fn direct_loads(from: &[NodeId], nodes: &[Node], loads: &HashMap<NodeId, BufId>) -> Vec<NodeId> {
    let mut seen = HashSet::default();
    let mut out = Vec::new();
    // Inputs are pushed last first, so that the first is walked first.
    let mut stack: Vec<NodeId> = from.iter().rev().copied().collect();
    while let Some(n) = stack.pop() {
        if !seen.insert(n) {
            continue;
        }
        let node = &nodes[n.index()];
        if loads.contains_key(&n) {
            out.push(n);
        } else if matches!(
            node.op,
            Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Reshape
        ) {
            stack.extend(node.inputs.iter().rev());
        }
    }
    out
}

/// The broadcasts over `shape` of one value per row (of the row
/// reduction's kept-dims shape `rows`) that `id` reads at its own index,
/// through element-wise ops: each is one value over a row, at the row's
/// index in the broadcast's operand.
fn row_broadcasts(
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
fn rowcol(
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
