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
//! - a reduction gets `shaders/reduce.wgsl` (`reduce.rs`: one pass, or two
//!   when each output folds many elements), or `shaders/matmul.wgsl`
//!   (`matmul.rs`) when it is a matrix product, or `shaders/rowcol.wgsl`
//!   (`rowcol.rs`) together with a column reduction of the next level that
//!   needs its per-row results;
//! - element-wise targets of the extent of a reduction's operand ride in its
//!   first pass (which visits every operand index exactly once);
//! - element-wise targets that read a reduction only at their own index run
//!   in its last pass, as its epilogue;
//! - the other element-wise targets of one extent share a kernel
//!   (`elementwise.rs`), split when it would bind more buffers than the
//!   device allows.
//!
//! A buffer larger than one storage binding is split into parts of `chunk`
//! elements (see `codegen::Layout`). A kernel binds only the parts its
//! index range can reach; one whose tensors take more bindings than the
//! device allows is cut into windows of its index range, one dispatch each
//! (`windows.rs`). The plan (`plan.rs`) is checked against the ordering
//! rule every fusion must keep before it is used (`invariant.rs`).

use super::codegen::{validate, Emitter, Problem, MAX_ELEMENTS};
use super::device::GpuLimits;
use super::elementwise::elementwise_kernels;
use super::invariant;
use super::matmul::matmul_kernel;
use super::plan::{BufId, BufKind, BufSpec, KernelSpec, Plan, Request};
use super::reduce::reduction;
use super::rowcol::{rowcol, rowcol_pair};
use crate::backend::cpu::live_nodes;
use crate::backend::depth_cuts;
use crate::backend::matmul_form;
use crate::error::{Error, Result};
use crate::graph::{Node, NodeId};
use crate::ops::Op;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::BTreeMap;

/// The workgroup tree fold both reduction templates end in.
pub(super) const TREE: &str = include_str!("../../../shaders/tree.wgsl");

/// Threads per workgroup, in every template.
pub(super) const WORKGROUP: usize = 256;

/// A tensor is split into at most this many buffers (each one binding):
/// 2^31 elements (the most a kernel indexes) in WebGPU's default bindings
/// of 128 MiB take 64.
pub(super) const MAX_PARTS: usize = 1 << 16;

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

pub(super) enum Attempt {
    Done(Plan),
    /// Store these nodes and plan again.
    Store(Vec<NodeId>),
}

/// What every kernel of one plan is generated against.
#[derive(Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub(super) nodes: &'a [Node],
    /// The stored nodes kernels load, and their buffers.
    pub(super) loads: &'a HashMap<NodeId, BufId>,
    pub(super) limits: &'a GpuLimits,
    /// Elements per binding.
    pub(super) chunk: usize,
}

/// A value a kernel computes and the buffer it goes to.
#[derive(Clone, Copy, Debug)]
pub(super) struct Target {
    pub(super) node: NodeId,
    pub(super) buf: BufId,
}

/// Plan `req`, whose live nodes are `live`, storing the nodes of `extra` too.
pub(super) fn try_plan(
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

pub(super) fn is_leaf(op: &Op) -> bool {
    matches!(op, Op::Input(_) | Op::Param { .. })
}

/// The stored nodes `id`'s expression reads directly (stopping at stored nodes).
pub(super) fn reads(
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

pub(super) fn level_of(
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

pub(super) fn dispatch_count(items: usize, per_group: usize, limits: &GpuLimits) -> u32 {
    items
        .div_ceil(per_group)
        .clamp(1, limits.max_workgroups as usize) as u32
}

/// Emit `targets` at index `idx` into `e`. A target whose buffer is its
/// node's home is computed from its operands; any other target (an update
/// copying a value that lives elsewhere) loads the value and stores it.
pub(super) fn emit_targets(
    e: &mut Emitter,
    stored: &HashMap<NodeId, BufId>,
    targets: &[Target],
    idx: &str,
) {
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
pub(super) enum Fit {
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
pub(super) fn fits(
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
pub(super) fn too_large(node: &Node) -> Error {
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
pub(super) fn width_cuts(
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

pub(super) fn ids(targets: &[Target]) -> Vec<NodeId> {
    targets.iter().map(|t| t.node).collect()
}

/// Whether computing `id` reads the stored node `r` only at its own flat
/// index: every path from `id`'s operands to `r` passes only element-wise
/// ops and reshapes. (`id` itself may be stored, for later kernels to load;
/// what matters is what computing it reads.)
pub(super) fn at_own_index(
    id: NodeId,
    r: NodeId,
    nodes: &[Node],
    loads: &HashMap<NodeId, BufId>,
) -> bool {
    operands_at_own_index(id, r, (nodes, loads), &mut HashMap::default())
}

/// `at_own_index`, each node's answer once: an expression that reads a
/// value twice at every step down would otherwise take twice as long per
/// step.
pub(super) fn at_own_index_memo(
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
pub(super) fn operands_at_own_index(
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
pub(super) fn reaches(
    id: NodeId,
    r: NodeId,
    nodes: &[Node],
    loads: &HashMap<NodeId, BufId>,
) -> bool {
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

/// The stored nodes the nodes `from` read at their own flat index, through
/// element-wise ops and reshapes, in the order walks down their inputs
/// (from each of `from` in turn) meet them.
pub(super) fn direct_loads(
    from: &[NodeId],
    nodes: &[Node],
    loads: &HashMap<NodeId, BufId>,
) -> Vec<NodeId> {
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
