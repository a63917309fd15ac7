//! The CPU fast path: f32, fused, in chunks, on every core.
//!
//! A program is planned once ([`FastPlan::new`]) into passes, as on the GPU:
//! only leaves, reductions, the values asked for and the nodes that keep
//! expressions at most `MAX_FUSED_DEPTH` deep are stored; everything else
//! is computed inside the pass that needs it. A pass runs over one
//! extent (its element-wise targets' elements, or its reductions'
//! operands') in chunks (by default 1024 elements, 16384 where the pass
//! derives index sets: see `CpuOptions::deriving_chunk`), and each chunk runs a
//! tape of instructions over registers of a chunk's floats that stay in
//! cache. The tape is an interpreter's, but each instruction is a loop over
//! a whole register, specialised per op and compiled for AVX2 where the CPU
//! has it, so dispatch costs little next to the arithmetic. Runs of
//! element-wise instructions, and spans of them through pads and
//! broadcasts, are compiled to native kernels (`native.rs`) that keep their
//! values in vector registers; the tape is what they fall back to, and
//! their bits are its bits.
//!
//! Layout ops move no data. A chunk is a set of indices; a layout op derives
//! the set its operand is needed at, as runs `base, base + stride, …` that
//! load as copies, fills or strided gathers (a load of consecutive elements
//! is read in place). A broadcast along the last axis computes its operand
//! once per repeated index and then expands it (a per-row value costs one
//! evaluation per row, not one per element), and a pad never computes its
//! padding. A uniform value (a constant, a broadcast scalar) is computed
//! once and read as a scalar. Each node is computed once per set of indices.
//! In a chunk of whole rows, a vector broadcast along them is read in place
//! once and a per-row value is held once per row (`Compact`), and a fold of
//! products reads them so, two rows at a time (`Acc::fold_rows`).
//!
//! Passes run in steps. A pass that reads a row reduction only one value per
//! row runs task by task right after the pass that folds it, while the
//! task's rows are in cache (a logistic-regression step reads X once).
//!
//! A matrix product (`matmul_form`: a `matmul` or a product in its
//! gradients) is not a pass's fold but a stage of its own, run by blocks
//! (`gemm.rs`) between its group's steps and the next group's; its factors
//! are read as strided views of stored values, and a factor computed in
//! the graph (a layer's activations) is stored for it.
//!
//! Work is split into tasks of a fixed number of chunks, a partition fixed
//! by the extent alone, run on rayon's threads. Reductions fold each task
//! in a fixed order into f64 accumulators (a long f32 sum drifts; the GPU's
//! tree does not, and neither should we) and combine the tasks in order:
//! the same inputs give the same bits on any machine, whatever its cores or
//! vector width.

use crate::backend::cpu::live_nodes;
use crate::backend::gemm::Product;
use crate::backend::native::{self, Expr, Jit, Kernel, KernelFn, Operand};
use crate::backend::{depth_cuts, matmul_form};
use crate::fmath;
use crate::graph::{Node, NodeId};
use crate::ops::{BinaryOp, Op, ReduceOp, UnaryOp};
use crate::shape::{PadMap, StridedMap};
use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;
use std::collections::BTreeMap;

/// How the fast path cuts its work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuOptions {
    /// Elements per chunk: a tape's registers stay in the core's cache.
    pub chunk: usize,
    /// Elements per chunk of a pass that reads through broadcasts, slices
    /// or pads. Such a pass derives their indices chunk by chunk and often
    /// computes per-row values there, work per chunk rather than per
    /// element, so its chunks are longer: a chunk of several rows reads a
    /// vector broadcast along them in place once, and per-row values as
    /// one value per row.
    pub deriving_chunk: usize,
    /// Chunks (of `chunk` elements) per task: enough that a task's
    /// start-up cost vanishes, few enough that the cores share the work
    /// evenly.
    pub chunks_per_task: usize,
    /// Compile runs of element-wise instructions to native code where
    /// Cranelift has a backend for this CPU, in passes over a chunk or more
    /// (same bits; off: the tape alone, for comparison).
    pub native: bool,
}

/// The longest chunk: a task's registers are this many floats each.
const MAX_CHUNK: usize = 1 << 20;

impl CpuOptions {
    /// An error for options no plan can run: empty or over-long chunks
    /// (registers of `MAX_CHUNK` floats at most), tasks of no chunks, or
    /// tasks whose length overflows.
    pub(crate) fn check(&self) -> crate::Result<()> {
        let bad = |detail: String| Err(crate::Error::Options(detail));
        for (name, chunk) in [
            ("chunk", self.chunk),
            ("deriving_chunk", self.deriving_chunk),
        ] {
            if !(1..=MAX_CHUNK).contains(&chunk) {
                return bad(format!("{name} is {chunk}, not within 1..={MAX_CHUNK}"));
            }
        }
        let longest = self.chunk.max(self.deriving_chunk);
        if self.chunks_per_task == 0 || longest.checked_mul(self.chunks_per_task).is_none() {
            return bad(format!(
                "chunks_per_task is {}: a task takes at least one chunk, and its length must fit a usize",
                self.chunks_per_task
            ));
        }
        Ok(())
    }
}

impl Default for CpuOptions {
    fn default() -> Self {
        CpuOptions {
            chunk: 1024,
            deriving_chunk: 16384,
            chunks_per_task: 128,
            native: true,
        }
    }
}

/// The elements `base, base + stride, …` (`len` of them) of a node, held
/// at consecutive places of a register.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Run {
    base: usize,
    stride: usize,
    len: usize,
}

/// How an expanding op fills its register from its operand's values at the
/// compressed set: copy `n` values, repeat one value `n` times, or write `n` zeros.
#[derive(Clone, Copy, Debug)]
enum Piece {
    Copy(usize),
    Repeat(usize),
    Zero(usize),
}

/// How a set of indices into an operand derives from its parent set (the
/// indices of the op's result).
#[derive(Clone, PartialEq)]
enum Derive {
    /// Permute or slice: one operand index per result index.
    Map(StridedMap),
    /// Broadcast: an index repeated along a run is computed once.
    Broadcast(StridedMap),
    /// Pad: padding is not computed.
    Pad(PadMap),
}

impl Derive {
    fn expands(&self) -> bool {
        !matches!(self, Derive::Map(_))
    }
}

/// A set of a pass: derived from set `parent` (set 0 is the chunk itself).
struct SetSpec {
    parent: usize,
    derive: Derive,
}

/// A set's indices on the current chunk; for an expanding set, also how its
/// values expand to its parent's.
#[derive(Default)]
struct SetRuns {
    runs: Vec<Run>,
    pieces: Vec<Piece>,
    len: usize,
}

type Reg = usize;

/// Which operands of a binary op are read at each element: both, or one
/// of them is uniform and read once.
#[derive(Clone, Copy, Debug)]
enum Form {
    Each,
    LeftOne,
    RightOne,
}

/// One step of a tape. `set` gives the number of elements (its length).
#[derive(Clone, Debug)]
enum Instr {
    Load {
        dst: Reg,
        node: usize,
        set: usize,
    },
    /// A constant (uniform: computed at `SCALAR`).
    Const {
        dst: Reg,
        value: f32,
    },
    Unary {
        dst: Reg,
        op: UnaryOp,
        a: Reg,
        set: usize,
    },
    Binary {
        dst: Reg,
        op: BinaryOp,
        form: Form,
        a: Reg,
        b: Reg,
        set: usize,
    },
    Select {
        dst: Reg,
        mask: Reg,
        a: Reg,
        b: Reg,
        set: usize,
    },
    /// The uniform value in `src` (at `SCALAR`) as a flat register, for
    /// a set of more indices.
    Splat {
        dst: Reg,
        src: Reg,
    },
    /// `src` holds an operand at expanding set `set`; `dst` gets the
    /// values at `set`'s parent. `last`: this is `src`'s last read, so a
    /// plain copy can take its register instead.
    Expand {
        dst: Reg,
        src: Reg,
        set: usize,
        last: bool,
    },
    /// The chunk's values of the pass's `out`-th element-wise target.
    Store {
        src: Reg,
        out: usize,
    },
    /// The chunk's operand values of the pass's `out`-th reduction.
    Fold {
        src: Reg,
        out: usize,
    },
    /// A `Fold` of the products `a · b` (a dot product, a weighted
    /// sum), each formed on the way rather than stored first.
    FoldProduct {
        a: Reg,
        b: Reg,
        form: Form,
        out: usize,
    },
    /// The pass's `index`-th native kernel, in place of the `len`
    /// instructions after this one (which run instead where a kernel's
    /// input holds one value for all its elements: see `Native`).
    Native {
        index: usize,
        len: usize,
    },
}

impl Instr {
    fn dst(&self) -> Option<Reg> {
        use Instr::*;
        match self {
            Load { dst, .. }
            | Const { dst, .. }
            | Unary { dst, .. }
            | Binary { dst, .. }
            | Select { dst, .. }
            | Splat { dst, .. }
            | Expand { dst, .. } => Some(*dst),
            Store { .. } | Fold { .. } | FoldProduct { .. } | Native { .. } => None,
        }
    }
    /// Call `f` with each register the instruction reads.
    fn for_each_src(&self, mut f: impl FnMut(Reg)) {
        use Instr::*;
        match *self {
            Load { .. } | Const { .. } | Native { .. } => {}
            Unary { a, .. } => f(a),
            Binary { a, b, .. } | FoldProduct { a, b, .. } => {
                f(a);
                f(b)
            }
            Select { mask, a, b, .. } => {
                f(mask);
                f(a);
                f(b)
            }
            Expand { src, .. } | Splat { src, .. } | Store { src, .. } | Fold { src, .. } => f(src),
        }
    }
    fn regs_mut(&mut self) -> Vec<&mut Reg> {
        use Instr::*;
        match self {
            Load { dst, .. } | Const { dst, .. } => vec![dst],
            Unary { dst, a, .. } => vec![dst, a],
            Binary { dst, a, b, .. } => vec![dst, a, b],
            Select {
                dst, mask, a, b, ..
            } => vec![dst, mask, a, b],
            Expand { dst, src, .. } | Splat { dst, src, .. } => vec![dst, src],
            Store { src, .. } | Fold { src, .. } => vec![src],
            FoldProduct { a, b, .. } => vec![a, b],
            // The instructions it stands for hold its registers.
            Native { .. } => vec![],
        }
    }
}

/// A reduction of a pass: its result, and where each operand element goes.
struct Reduction {
    node: NodeId,
    op: ReduceOp,
    to_out: StridedMap,
    outs: usize,
}

/// One sweep over `extent` elements computing `stores` and `reductions`.
struct Pass {
    extent: usize,
    sets: Vec<SetSpec>,
    tape: Vec<Instr>,
    natives: Vec<Native>,
    regs: usize,
    stores: Vec<NodeId>,
    reductions: Vec<Reduction>,
}

/// A run of element-wise instructions of a tape compiled as one kernel.
struct Native {
    f: KernelFn,
    io: Io,
    /// The sets its instructions run at and those of its expansions: it
    /// runs over their elements where all are as long, and each expansion
    /// (`copies`) is a plain copy.
    sets: Vec<usize>,
    copies: Vec<usize>,
}

/// What a native kernel reads and writes.
#[derive(Default)]
struct Io {
    /// The registers it reads element by element, and reads element 0 of
    /// (uniform operands).
    vectors: Vec<Reg>,
    scalars: Vec<Reg>,
    /// Where it writes each result.
    outs: Vec<Target>,
}

/// Where a native kernel writes a result: a register, or straight into
/// the pass's `k`-th element-wise target (in place of a `Store`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    Reg(Reg),
    Store(usize),
}

/// A program for the fast path: passes, and the buffers they write (kept
/// between runs, so a run allocates nothing large).
pub(crate) struct FastPlan {
    stages: Vec<Stage>,
    /// The value of each computed stored node, by node index.
    values: Vec<Vec<f32>>,
    /// Holds the passes' native kernels (in a mutex only so that a plan
    /// stays `Sync`: nothing locks it).
    _jit: Option<std::sync::Mutex<Jit>>,
}

impl FastPlan {
    /// Plan the computation of `roots`, of which the parameters' updates
    /// read `updated`.
    pub(crate) fn new(
        nodes: &[Node],
        roots: &[NodeId],
        updated: &[NodeId],
        options: CpuOptions,
    ) -> FastPlan {
        let live = live_nodes(nodes, roots);
        // Stored like reductions: the nodes that keep every pass's
        // expressions shallow, and those a pass would compute too often
        // (`MAX_COPIES_PER_NODE`), found as passes are built.
        let mut cut = vec![false; nodes.len()];
        for id in depth_cuts(nodes, &live) {
            cut[id.index()] = true;
        }
        let mut jit = options.native.then(Jit::new).flatten();
        let passes = loop {
            match plan_passes(nodes, &live, roots, &mut cut, options, &mut jit) {
                Ok(passes) => break passes,
                Err(copied) => copied.iter().for_each(|n| cut[n.index()] = true),
            }
        };
        let mut stages = steps(passes, options);
        let mut needed = vec![false; nodes.len()];
        for i in live_nodes(nodes, updated) {
            needed[i] = true;
        }
        for stage in &mut stages {
            let for_updates = stage.computed().any(|id| needed[id.index()]);
            stage.for_updates = for_updates;
        }
        if log::log_enabled!(log::Level::Debug) {
            for (i, stage) in stages.iter().enumerate() {
                let step = match &stage.work {
                    Work::Sweep(step) => step,
                    Work::Product(p) => {
                        log::debug!("fast path step {i}: the product {:?}", p.node);
                        continue;
                    }
                };
                log::debug!("fast path step {i}: tasks of {} elements", step.task);
                for p in &step.passes {
                    log::debug!(
                        "  pass over {} elements, {} registers, stores {:?}",
                        p.extent,
                        p.regs,
                        p.stores
                    );
                    for instr in &p.tape {
                        log::debug!("    {instr:?}");
                    }
                }
            }
        }
        FastPlan {
            stages,
            values: vec![Vec::new(); nodes.len()],
            _jit: jit.map(std::sync::Mutex::new),
        }
    }

    /// Run every pass, or (`outputs` false) those the updates need;
    /// `leaves` holds every input and parameter read.
    pub(crate) fn run(&mut self, nodes: &[Node], leaves: &HashMap<NodeId, &[f32]>, outputs: bool) {
        for stage in self.stages.iter().filter(|s| outputs || s.for_updates) {
            let step = match &stage.work {
                Work::Sweep(step) => step,
                Work::Product(p) => {
                    let mut out = std::mem::take(&mut self.values[p.node.index()]);
                    out.resize(nodes[p.node.index()].shape.numel(), 0.0);
                    let read =
                        |n: NodeId| leaves.get(&n).copied().unwrap_or(&self.values[n.index()]);
                    let [a, b] = p.factors();
                    p.run(read(a), read(b), &mut out);
                    self.values[p.node.index()] = out;
                    continue;
                }
            };
            // The step's results leave `values` while it reads the rest.
            let stores: Vec<NodeId> = step.passes.iter().flat_map(|p| p.stores.clone()).collect();
            let mut outs: Vec<Vec<f32>> = stores
                .iter()
                .map(|t| std::mem::take(&mut self.values[t.index()]))
                .collect();
            for (o, t) in outs.iter_mut().zip(&stores) {
                o.resize(nodes[t.index()].shape.numel(), 0.0);
            }
            let mut data: Vec<Src> = self.values.iter().map(|v| Src::all(v)).collect();
            for (id, v) in leaves {
                data[id.index()] = Src::all(v);
            }
            let folded = step.run(&data, &mut outs);
            for (o, t) in outs.into_iter().zip(&stores) {
                self.values[t.index()] = o;
            }
            let reductions = step.passes.iter().flat_map(|p| &p.reductions);
            for (r, v) in reductions.zip(folded) {
                self.values[r.node.index()] = v;
            }
        }
    }

    /// The computed nodes the plan keeps a buffer for.
    pub(crate) fn buffers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.stages.iter().flat_map(Stage::computed)
    }

    /// The value of computed node `id` after a run.
    pub(crate) fn value(&self, id: NodeId) -> &[f32] {
        &self.values[id.index()]
    }

    /// The buffer of computed node `id`, which the plan reuses: swap it out
    /// to keep its value, and the plan refills whatever is left there.
    pub(crate) fn value_mut(&mut self, id: NodeId) -> &mut Vec<f32> {
        &mut self.values[id.index()]
    }
}

/// A group of a plan: its passes (one per extent), and its matrix products.
type Group = (Vec<Pass>, Vec<Product>);

/// The passes and products of each group of a plan storing the nodes of
/// `cut` (products add the factors they need stored), or the nodes a pass
/// would compute more than `MAX_COPIES_PER_NODE` times: store them too
/// and plan again.
fn plan_passes(
    nodes: &[Node],
    live: &[usize],
    roots: &[NodeId],
    cut: &mut [bool],
    options: CpuOptions,
    jit: &mut Option<Jit>,
) -> Result<Vec<Group>, Vec<NodeId>> {
    // Matrix products run by blocks (`gemm.rs`), reading their
    // factors as views of stored values: a factor's value that is
    // not stored (a layer's activations) is stored.
    let mut products: HashMap<usize, Product> = HashMap::default();
    for &i in live {
        let id = NodeId(i as u32);
        let Some(form) = matmul_form(nodes, id).filter(|f| f.shape.numel() > 0) else {
            continue;
        };
        loop {
            let stored = |n: NodeId| {
                let node = &nodes[n.index()];
                is_leaf(node) || matches!(node.op, Op::Reduce { .. }) || cut[n.index()]
            };
            match Product::new(nodes, id, &form, stored) {
                Ok(product) => {
                    products.insert(i, product);
                    break;
                }
                Err(n) => cut[n.index()] = true,
            }
        }
    }
    let mut is_root = vec![false; nodes.len()];
    for r in roots {
        is_root[r.index()] = true;
    }
    // Targets by group: a reduction (or cut) of level L (one more than
    // the highest level of the reductions it reads) and an element-wise
    // root reading reductions up to level L - 1 both run in group L,
    // after every reduction they read.
    let mut level: Vec<usize> = vec![0; nodes.len()];
    let mut groups: BTreeMap<usize, Vec<NodeId>> = BTreeMap::new();
    for &i in live {
        let node = &nodes[i];
        let below = node.inputs.iter().map(|j| level[j.index()]).max();
        let stored_below = matches!(node.op, Op::Reduce { .. }) || cut[i];
        level[i] = below.unwrap_or(0) + usize::from(stored_below);
        let id = NodeId(i as u32);
        if !is_leaf(node) && (stored_below || is_root[i]) {
            groups
                .entry(level[i] + usize::from(!stored_below))
                .or_default()
                .push(id);
        }
    }
    let mut stored: Vec<bool> = nodes.iter().map(is_leaf).collect();
    let mut passes: Vec<Group> = Vec::new();
    let mut copied = Vec::new();
    for group in groups.into_values() {
        let (group, mine): (Vec<NodeId>, Vec<NodeId>) = group
            .into_iter()
            .partition(|t| !products.contains_key(&t.index()));
        let mine: Vec<Product> = mine
            .iter()
            .map(|t| products.remove(&t.index()).expect("a product"))
            .collect();
        // One pass per extent: reductions fold on the way through the
        // elements their operand shares with element-wise targets.
        let mut by_extent: BTreeMap<usize, Vec<NodeId>> = BTreeMap::new();
        let targets = group.clone();
        for t in group {
            let node = &nodes[t.index()];
            let extent = match node.op {
                Op::Reduce { .. } => nodes[node.inputs[0].index()].shape.numel(),
                _ => node.shape.numel(),
            };
            by_extent.entry(extent).or_default().push(t);
        }
        let group: Vec<Pass> = by_extent
            .into_iter()
            .map(|(extent, targets)| {
                // A pass shorter than a chunk runs each instruction
                // once, over part of a register: a native loop saves
                // little there, and compiling it costs a millisecond.
                let jit = jit.as_mut().filter(|_| extent >= options.chunk);
                Builder::new(nodes, &stored).pass(extent, &targets, jit)
            })
            .filter_map(|pass| pass.map_err(|n| copied.extend(n)).ok())
            .collect();
        // Every target of the group is stored after it, whether its
        // pass was built or must be built again.
        for t in targets.iter().chain(mine.iter().map(|p| &p.node)) {
            stored[t.index()] = true;
        }
        passes.push((group, mine));
    }
    if copied.is_empty() {
        Ok(passes)
    } else {
        Err(copied)
    }
}

fn is_leaf(node: &Node) -> bool {
    matches!(node.op, Op::Input(_) | Op::Param { .. })
}

/// A node computed at more sets than this in one pass is stored instead:
/// a stencil or roll reads a value at two shifted sets a step, and each
/// derivation makes a set of its own, so recomputing would take
/// exponentially many sets in the steps.
const MAX_COPIES_PER_NODE: usize = 6;

/// The set of a pass's chunk, and the set of one index (0) at which a
/// uniform value is computed.
const CHUNK_SET: usize = 0;
const SCALAR: usize = 1;

/// A node's values in a register: at each index of a set, or (`uniform`)
/// one value that holds at every index, in element 0.
#[derive(Clone, Copy)]
struct Val {
    reg: Reg,
    uniform: bool,
}

/// Records one pass's tape.
struct Builder<'a> {
    nodes: &'a [Node],
    stored: &'a [bool],
    sets: Vec<SetSpec>,
    tape: Vec<Instr>,
    memo: HashMap<(NodeId, usize), Val>,
    splats: HashMap<(NodeId, usize), Reg>,
    uniform: HashMap<NodeId, bool>,
    /// How many sets each node has been computed at, and the nodes
    /// computed at more than `MAX_COPIES_PER_NODE`.
    copies: HashMap<NodeId, usize>,
    copied: Vec<NodeId>,
    next: Reg,
}

impl<'a> Builder<'a> {
    fn new(nodes: &'a [Node], stored: &'a [bool]) -> Self {
        // The chunk's and the scalar set's runs are set per chunk, not derived.
        let fixed = || SetSpec {
            parent: 0,
            derive: Derive::Map(StridedMap {
                out_dims: Vec::new(),
                src_strides: Vec::new(),
                offset: 0,
            }),
        };
        Builder {
            nodes,
            stored,
            sets: vec![fixed(), fixed()],
            tape: Vec::new(),
            memo: HashMap::default(),
            splats: HashMap::default(),
            uniform: HashMap::default(),
            copies: HashMap::default(),
            copied: Vec::new(),
            next: 0,
        }
    }

    /// The pass computing `targets`, or the nodes it would compute more
    /// than `MAX_COPIES_PER_NODE` times (which must be stored instead).
    fn pass(
        mut self,
        extent: usize,
        targets: &[NodeId],
        jit: Option<&mut Jit>,
    ) -> Result<Pass, Vec<NodeId>> {
        let mut stores = Vec::new();
        let mut reductions = Vec::new();
        for &t in targets {
            let node = &self.nodes[t.index()];
            if let Op::Reduce { op, axes } = &node.op {
                let operand = &self.nodes[node.inputs[0].index()].shape;
                let src = self.vector(node.inputs[0], CHUNK_SET);
                self.tape.push(Instr::Fold {
                    src,
                    out: reductions.len(),
                });
                reductions.push(Reduction {
                    node: t,
                    op: *op,
                    to_out: StridedMap::reduce_to(operand, axes, &node.shape).simplified(),
                    outs: node.shape.numel(),
                });
            } else {
                let src = self.vector(t, CHUNK_SET);
                self.tape.push(Instr::Store {
                    src,
                    out: stores.len(),
                });
                stores.push(t);
            }
        }
        if !self.copied.is_empty() {
            return Err(self.copied);
        }
        fold_negations(&mut self.tape, &mut self.next);
        fold_constants(&mut self.tape);
        drop_identities(&mut self.tape);
        fold_products(&mut self.tape);
        drop_unread(&mut self.tape);
        let mut natives = match jit {
            Some(jit) => compile_natives(&mut self.tape, jit),
            None => Vec::new(),
        };
        let (regs, physical) = allocate_registers(&mut self.tape);
        for Native { io, .. } in &mut natives {
            for r in io.vectors.iter_mut().chain(&mut io.scalars) {
                *r = physical[r];
            }
            for t in &mut io.outs {
                if let Target::Reg(r) = t {
                    *r = physical[r];
                }
            }
        }
        Ok(Pass {
            extent,
            sets: self.sets,
            tape: self.tape,
            natives,
            regs,
            stores,
            reductions,
        })
    }

    fn emit(&mut self, make: impl FnOnce(Reg) -> Instr) -> Reg {
        let dst = self.next;
        self.next += 1;
        self.tape.push(make(dst));
        dst
    }

    /// The set of `derive` from `parent`, shared with any equal one.
    fn set(&mut self, parent: usize, derive: Derive) -> usize {
        let found = self
            .sets
            .iter()
            .position(|s| s.parent == parent && s.derive == derive);
        found.unwrap_or_else(|| {
            self.sets.push(SetSpec { parent, derive });
            self.sets.len() - 1
        })
    }

    /// Whether node `id` has one value at every index (a constant, a
    /// broadcast scalar, what is computed from them alone).
    fn is_uniform(&mut self, id: NodeId) -> bool {
        if let Some(&u) = self.uniform.get(&id) {
            return u;
        }
        let node = &self.nodes[id.index()];
        let u = node.shape.numel() == 1
            || (!self.stored[id.index()]
                && match node.op {
                    Op::Const(_) => true,
                    Op::Broadcast
                    | Op::Reshape
                    | Op::Permute(_)
                    | Op::Slice { .. }
                    | Op::Unary(_)
                    | Op::Binary(_)
                    | Op::Select => node.inputs.iter().all(|&j| self.is_uniform(j)),
                    _ => false,
                });
        self.uniform.insert(id, u);
        u
    }

    /// Node `id` at each index of set `set`, in a register of its own.
    fn vector(&mut self, id: NodeId, set: usize) -> Reg {
        let v = self.value(id, set);
        if !v.uniform || set == SCALAR {
            return v.reg;
        }
        if let Some(&r) = self.splats.get(&(id, set)) {
            return r;
        }
        let r = self.emit(|dst| Instr::Splat { dst, src: v.reg });
        self.splats.insert((id, set), r);
        r
    }

    /// Count one more set `id` is computed at; whether that is one too many.
    fn too_many_copies(&mut self, id: NodeId) -> bool {
        let copies = self.copies.entry(id).or_default();
        *copies += 1;
        if *copies > MAX_COPIES_PER_NODE {
            self.copied.push(id);
            return true;
        }
        false
    }

    /// Node `id` at set `set`: a uniform node is computed once, at `SCALAR`.
    fn value(&mut self, id: NodeId, set: usize) -> Val {
        if set != SCALAR && self.is_uniform(id) {
            return self.value(id, SCALAR);
        }
        if let Some(&v) = self.memo.get(&(id, set)) {
            return v;
        }
        let uniform = set == SCALAR;
        let vector = |reg| Val { reg, uniform };
        let node = &self.nodes[id.index()];
        let input = |k: usize| node.inputs[k];
        let in_shape = |k: usize| &self.nodes[node.inputs[k].index()].shape;
        let v = if self.stored[id.index()] {
            let n = id.index();
            vector(self.emit(|dst| Instr::Load { dst, node: n, set }))
        } else if self.too_many_copies(id) {
            // The pass is planned again with `id` stored: stand in a constant.
            vector(self.emit(|dst| Instr::Const { dst, value: 0.0 }))
        } else {
            let derive = match &node.op {
                // A uniform operand is the same at every index.
                Op::Broadcast | Op::Permute(_) | Op::Slice { .. }
                    if uniform && self.is_uniform(input(0)) =>
                {
                    return self.value(input(0), SCALAR);
                }
                Op::Broadcast => {
                    let m = StridedMap::broadcast(in_shape(0), &node.shape).simplified();
                    // Only a broadcast along the last axis repeats an index
                    // within a run; the others read each index once per run.
                    Some(match m.src_strides.last() {
                        Some(0) => Derive::Broadcast(m),
                        _ => Derive::Map(m),
                    })
                }
                Op::Permute(perm) => Some(Derive::Map(
                    StridedMap::permute(in_shape(0), perm).simplified(),
                )),
                Op::Slice { axis, start } => Some(Derive::Map(
                    StridedMap::slice(in_shape(0), *axis, *start, node.shape.0[*axis]).simplified(),
                )),
                Op::Pad { axis, before } => Some(Derive::Pad(PadMap::new(
                    in_shape(0),
                    *axis,
                    *before,
                    node.shape.0[*axis],
                ))),
                _ => None,
            };
            match (&node.op, derive) {
                (_, Some(Derive::Map(m) | Derive::Broadcast(m))) if m.is_identity() => {
                    self.value(input(0), set)
                }
                (_, Some(d)) if d.expands() => {
                    let s = self.set(set, d);
                    let src = self.vector(input(0), s);
                    vector(self.emit(|dst| Instr::Expand {
                        dst,
                        src,
                        set: s,
                        last: false,
                    }))
                }
                (_, Some(d)) => {
                    // At SCALAR, the one source index is a scalar too.
                    let s = self.set(set, d);
                    let v = self.value(input(0), s);
                    Val {
                        reg: v.reg,
                        uniform: uniform || v.uniform,
                    }
                }
                (Op::Const(c), None) => {
                    let value = *c as f32;
                    vector(self.emit(|dst| Instr::Const { dst, value }))
                }
                (Op::Unary(op), None) => {
                    let (op, a) = (*op, self.value(input(0), set).reg);
                    vector(self.emit(|dst| Instr::Unary { dst, op, a, set }))
                }
                (Op::Binary(op), None) => {
                    let op = *op;
                    let (a, b) = (self.value(input(0), set), self.value(input(1), set));
                    // A uniform operand is read as one value.
                    let form = match (uniform, a.uniform, b.uniform) {
                        (true, ..) | (false, false, false) => Form::Each,
                        (false, false, true) => Form::RightOne,
                        (false, true, false) => Form::LeftOne,
                        (false, true, true) => unreachable!("uniform nodes are computed at SCALAR"),
                    };
                    let (a, b) = (a.reg, b.reg);
                    vector(self.emit(|dst| Instr::Binary {
                        dst,
                        op,
                        form,
                        a,
                        b,
                        set,
                    }))
                }
                (Op::Select, None) => {
                    let mask = self.vector(input(0), set);
                    let a = self.vector(input(1), set);
                    let b = self.vector(input(2), set);
                    vector(self.emit(|dst| Instr::Select {
                        dst,
                        mask,
                        a,
                        b,
                        set,
                    }))
                }
                // The same elements in the same order.
                (Op::Reshape, None) => self.value(input(0), set),
                (op, None) => unreachable!("{} nodes are stored", op.name()),
            }
        };
        self.memo.insert((id, set), v);
        v
    }
}

/// Remove negations the ops around them can absorb, exactly (IEEE
/// negation only flips the sign): `x + (-y)` is `x - y`, `x - (-y)` is
/// `x + y`, and `-(s · y)` for a uniform `s` is `(-s) · y`, the scalar
/// negated once per chunk rather than every element. The tape is still
/// in SSA form; `next` is its next free register.
fn fold_negations(tape: &mut [Instr], next: &mut Reg) {
    let uses = reads(tape);
    let mut def = defs(tape);
    // The operand of a negation read only by the instruction at hand.
    let negated =
        |tape: &[Instr], def: &HashMap<Reg, usize>, r: Reg| match def.get(&r).map(|&d| &tape[d]) {
            Some(&Instr::Unary {
                op: UnaryOp::Neg,
                a,
                ..
            }) if uses.get(&r) == Some(&1) => Some(a),
            _ => None,
        };
    for k in 0..tape.len() {
        match tape[k] {
            Instr::Binary {
                dst,
                op: op @ (BinaryOp::Add | BinaryOp::Sub),
                form,
                a,
                b,
                set,
            } => {
                let flip = |op| match op {
                    BinaryOp::Add => BinaryOp::Sub,
                    _ => BinaryOp::Add,
                };
                let rewrite = match (negated(tape, &def, a), negated(tape, &def, b)) {
                    (_, Some(z)) => Some((flip(op), form, a, z)),
                    (Some(z), None) if op == BinaryOp::Add => {
                        let form = match form {
                            Form::LeftOne => Form::RightOne,
                            Form::RightOne => Form::LeftOne,
                            Form::Each => Form::Each,
                        };
                        Some((BinaryOp::Sub, form, b, z))
                    }
                    _ => None,
                };
                if let Some((op, form, a, b)) = rewrite {
                    tape[k] = Instr::Binary {
                        dst,
                        op,
                        form,
                        a,
                        b,
                        set,
                    };
                }
            }
            Instr::Unary {
                dst,
                op: UnaryOp::Neg,
                a: t,
                set,
            } if uses.get(&t) == Some(&1) => {
                let d = def[&t]; // operands are defined first
                if let Instr::Binary {
                    op: BinaryOp::Mul,
                    form: form @ (Form::LeftOne | Form::RightOne),
                    a,
                    b,
                    set: s,
                    ..
                } = tape[d]
                {
                    if s == set {
                        let scalar = *next;
                        *next += 1;
                        let (one, a, b) = match form {
                            Form::LeftOne => (a, scalar, b),
                            _ => (b, a, scalar),
                        };
                        // The product takes the negation's place (and result).
                        tape[k] = Instr::Binary {
                            dst,
                            op: BinaryOp::Mul,
                            form,
                            a,
                            b,
                            set,
                        };
                        tape[d] = Instr::Unary {
                            dst: scalar,
                            op: UnaryOp::Neg,
                            a: one,
                            set: SCALAR,
                        };
                        def.remove(&t);
                        def.insert(scalar, d);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Compute at plan time what depends on constants alone (autodiff leaves
/// `1 · 100 · 2` and the like, and `fold_negations` scalars to negate),
/// with the same f32 operations the tape would run on them: the same bits,
/// without an instruction per chunk for each.
fn fold_constants(tape: &mut [Instr]) {
    let mut known: HashMap<Reg, f32> = HashMap::default();
    for instr in tape.iter_mut() {
        let folded = match *instr {
            Instr::Const { dst, value } => {
                known.insert(dst, value);
                None
            }
            Instr::Unary {
                dst,
                op,
                a,
                set: SCALAR,
            } => known.get(&a).map(|&x| (dst, op.cpu(x))),
            Instr::Binary {
                dst,
                op,
                a,
                b,
                set: SCALAR,
                ..
            } => match (known.get(&a), known.get(&b)) {
                (Some(&x), Some(&y)) => Some((dst, op.cpu(x, y))),
                _ => None,
            },
            _ => None,
        };
        if let Some((dst, value)) = folded {
            *instr = Instr::Const { dst, value };
            known.insert(dst, value);
        }
    }
}

/// Drop the operations that give their operand back, bit for bit:
/// `1 · x`, `x · 1`, `x / 1`, `x - 0` (autodiff seeds gradients with 1);
/// their readers read the operand instead. (`x + 0` is not one: -0 + 0
/// is +0.)
fn drop_identities(tape: &mut [Instr]) {
    let mut known: HashMap<Reg, f32> = HashMap::default();
    let mut same: HashMap<Reg, Reg> = HashMap::default();
    for instr in tape.iter_mut() {
        let dst = instr.dst();
        for r in instr.regs_mut() {
            if Some(*r) != dst {
                if let Some(&to) = same.get(r) {
                    *r = to;
                }
            }
        }
        match *instr {
            Instr::Const { dst, value } => {
                known.insert(dst, value);
            }
            Instr::Binary {
                dst,
                op,
                form,
                a,
                b,
                ..
            } => {
                let is = |r: Reg, v: f32| known.get(&r).map(|k| k.to_bits()) == Some(v.to_bits());
                let operand = match (op, form) {
                    (BinaryOp::Mul, Form::LeftOne) if is(a, 1.0) => Some(b),
                    (BinaryOp::Mul | BinaryOp::Div, Form::RightOne) if is(b, 1.0) => Some(a),
                    (BinaryOp::Sub, Form::RightOne) if is(b, 0.0) => Some(a),
                    _ => None,
                };
                if let Some(x) = operand {
                    same.insert(dst, x);
                }
            }
            _ => {}
        }
    }
}

/// Fold the products that only a fold reads as they are formed: a chunk's
/// products are not stored and read back. The same f32 products in the
/// same order, so the same bits.
fn fold_products(tape: &mut [Instr]) {
    let uses = reads(tape);
    let def = defs(tape);
    for k in 0..tape.len() {
        let Instr::Fold { src, out } = tape[k] else {
            continue;
        };
        let product = match def.get(&src).map(|&d| &tape[d]) {
            Some(&Instr::Binary {
                op: BinaryOp::Mul,
                form,
                a,
                b,
                set: CHUNK_SET,
                ..
            }) => Some((a, b, form)),
            _ => None,
        };
        if let (Some((a, b, form)), Some(1)) = (product, uses.get(&src)) {
            tape[k] = Instr::FoldProduct { a, b, form, out };
        }
    }
}

/// Where each register is written (once: the tape is in SSA form).
fn defs(tape: &[Instr]) -> HashMap<Reg, usize> {
    let written = tape.iter().enumerate();
    written.filter_map(|(k, i)| Some((i.dst()?, k))).collect()
}

/// How many times each register is read.
fn reads(tape: &[Instr]) -> HashMap<Reg, usize> {
    let mut uses: HashMap<Reg, usize> = HashMap::default();
    for instr in tape {
        instr.for_each_src(|r| *uses.entry(r).or_default() += 1);
    }
    uses
}

/// Element-wise instructions in a row that a native kernel replaces, at
/// the least: with four lanes to the tape's eight, a kernel gains by
/// keeping values in registers, which takes a few instructions.
const MIN_NATIVE: usize = 3;

/// The set an instruction computes element by element at, if a kernel
/// can compute it.
fn native_set(instr: &Instr) -> Option<usize> {
    match *instr {
        Instr::Unary { op, set, .. } if native::supports_unary(op) => Some(set),
        Instr::Binary { op, set, .. } if native::supports_binary(op) => Some(set),
        Instr::Select { set, .. } => Some(set),
        _ => None,
    }
    .filter(|&set| set != SCALAR)
}

/// Compile each long enough run of element-wise instructions at one set
/// into a native kernel, marked by an `Instr::Native` before the run. The
/// tape's leaves (loads, constants) move to its front first and its folds
/// to its end, so that they do not cut runs. The tape is in SSA form; the
/// kernels' registers too.
fn compile_natives(tape: &mut Vec<Instr>, jit: &mut Jit) -> Vec<Native> {
    let leaf = |i: &Instr| matches!(i, Instr::Load { .. } | Instr::Const { .. });
    let fold = |i: &Instr| matches!(i, Instr::Fold { .. } | Instr::FoldProduct { .. });
    let (leaves, rest): (Vec<Instr>, Vec<Instr>) = tape.drain(..).partition(leaf);
    let (folds, rest): (Vec<Instr>, Vec<Instr>) = rest.into_iter().partition(fold);
    let consts: HashMap<Reg, f32> = leaves
        .iter()
        .filter_map(|i| match *i {
            Instr::Const { dst, value } => Some((dst, value)),
            _ => None,
        })
        .collect();
    tape.extend(leaves);
    // Where each register is last read, in the order the tape will have
    // (the folds after the rest): a run's result is an output if read
    // after the run.
    let mut last_read: HashMap<Reg, usize> = HashMap::default();
    for (at, instr) in rest.iter().chain(&folds).enumerate() {
        instr.for_each_src(|r| {
            last_read.insert(r, at);
        });
    }
    let mut natives = Vec::new();
    let mut k = 0;
    while k < rest.len() {
        let end = k + span(&rest[k..]);
        if end == k {
            tape.push(rest[k].clone());
            k += 1;
            continue;
        }
        let read_after = |r: Reg, at: usize| last_read.get(&r).is_some_and(|&l| l >= at);
        let inner = runs(&rest[k..end], k, &read_after, &consts, jit, &mut natives);
        // A span through pads and broadcasts is also one kernel, for the
        // chunks where each of them only copies (no padding, no repeats).
        let span = &rest[k..end];
        let expands: Vec<usize> = span
            .iter()
            .filter_map(|i| match *i {
                Instr::Expand { set, .. } => Some(set),
                _ => None,
            })
            .collect();
        let ops = span.iter().filter(|i| native_set(i).is_some()).count();
        if !expands.is_empty() && ops >= MIN_NATIVE {
            let (kernel, io) = kernel(span, &|r| read_after(r, end), &consts);
            if let Some(f) = jit.compile(&kernel) {
                let mut sets: Vec<usize> = span.iter().filter_map(native_set).collect();
                if span.iter().any(|i| matches!(i, Instr::Store { .. })) {
                    sets.push(CHUNK_SET);
                }
                sets.extend(&expands);
                sets.sort_unstable();
                sets.dedup();
                tape.push(Instr::Native {
                    index: natives.len(),
                    len: inner.len(),
                });
                natives.push(Native {
                    f,
                    io,
                    sets,
                    copies: expands,
                });
            }
        }
        tape.extend(inner);
        k = end;
    }
    tape.extend(folds);
    natives
}

/// The length of the span of instructions from `tape[0]` that a kernel
/// may compute: element-wise ones at any set but `SCALAR`, expansions
/// (pads, broadcasts; copies where a kernel runs them), and stores of the
/// span's results.
fn span(tape: &[Instr]) -> usize {
    let mut end = 0;
    while let Some(instr) = tape.get(end) {
        let computed = |r| tape[..end].iter().any(|i| i.dst() == Some(r));
        match *instr {
            Instr::Store { src, .. } | Instr::Expand { src, .. } if computed(src) => {}
            _ if native_set(instr).is_some() => {}
            _ => break,
        }
        end += 1;
    }
    end
}

/// Compile each long enough run of element-wise instructions at one set
/// within `span` (which starts at `first` of the tape, whose register `r`
/// is read at or after position `at` if `read_after(r, at)`) into a
/// kernel: the span's instructions, each run with a `Native` marker before
/// it.
fn runs(
    span: &[Instr],
    first: usize,
    read_after: &dyn Fn(Reg, usize) -> bool,
    consts: &HashMap<Reg, f32>,
    jit: &mut Jit,
    natives: &mut Vec<Native>,
) -> Vec<Instr> {
    let mut out = Vec::new();
    let mut k = 0;
    while k < span.len() {
        let Some(set) = native_set(&span[k]) else {
            out.push(span[k].clone());
            k += 1;
            continue;
        };
        // The run goes on through the stores of its results at the
        // chunk's elements, which the kernel makes itself.
        let mut end = k;
        while let Some(instr) = span.get(end) {
            let stored =
                |src| set == CHUNK_SET && span[k..end].iter().any(|i| i.dst() == Some(src));
            match *instr {
                Instr::Store { src, .. } if stored(src) => {}
                _ if native_set(instr) == Some(set) => {}
                _ => break,
            }
            end += 1;
        }
        let run = &span[k..end];
        let ops = run.iter().filter(|i| native_set(i).is_some()).count();
        if ops >= MIN_NATIVE {
            let (kernel, io) = kernel(run, &|r| read_after(r, first + end), consts);
            if let Some(f) = jit.compile(&kernel) {
                out.push(Instr::Native {
                    index: natives.len(),
                    len: run.len(),
                });
                natives.push(Native {
                    f,
                    io,
                    sets: vec![set],
                    copies: Vec::new(),
                });
            }
        }
        out.extend_from_slice(run);
        k = end;
    }
    out
}

/// The kernel of a run of element-wise instructions (and the stores of
/// their results, and expansions, as copies), whose results are outputs
/// where `read_after`, and the registers it reads and writes.
fn kernel(
    run: &[Instr],
    read_after: &dyn Fn(Reg) -> bool,
    consts: &HashMap<Reg, f32>,
) -> (Kernel, Io) {
    let mut kernel = Kernel::default();
    let mut io = Io::default();
    let mut defined: HashMap<Reg, usize> = HashMap::default();
    let operand = |io: &mut Io, defined: &HashMap<Reg, usize>, r: Reg, one: bool| {
        let index = |list: &mut Vec<Reg>| {
            list.iter().position(|&x| x == r).unwrap_or_else(|| {
                list.push(r);
                list.len() - 1
            })
        };
        if let Some(&v) = defined.get(&r) {
            Operand::Value(v)
        } else if let Some(&c) = consts.get(&r) {
            Operand::Const(c)
        } else if one {
            Operand::Scalar(index(&mut io.scalars))
        } else {
            Operand::Vector(index(&mut io.vectors))
        }
    };
    for instr in run {
        if let Instr::Store { src, out } = *instr {
            io.outs.push(Target::Store(out));
            kernel.results.push(defined[&src]);
            continue;
        }
        if let Instr::Expand { dst, src, .. } = *instr {
            defined.insert(dst, defined[&src]);
            continue;
        }
        let (dst, expr) = match *instr {
            Instr::Unary { dst, op, a, .. } => {
                (dst, Expr::Unary(op, operand(&mut io, &defined, a, false)))
            }
            Instr::Binary {
                dst,
                op,
                form,
                a,
                b,
                ..
            } => {
                let a = operand(&mut io, &defined, a, matches!(form, Form::LeftOne));
                let b = operand(&mut io, &defined, b, matches!(form, Form::RightOne));
                (dst, Expr::Binary(op, a, b))
            }
            Instr::Select {
                dst, mask, a, b, ..
            } => {
                let mask = operand(&mut io, &defined, mask, false);
                let a = operand(&mut io, &defined, a, false);
                let b = operand(&mut io, &defined, b, false);
                (dst, Expr::Select(mask, a, b))
            }
            _ => unreachable!("runs hold element-wise instructions"),
        };
        defined.insert(dst, kernel.code.len());
        kernel.code.push(expr);
    }
    for dst in run.iter().filter_map(Instr::dst) {
        if read_after(dst) {
            io.outs.push(Target::Reg(dst));
            kernel.results.push(defined[&dst]);
        }
    }
    kernel.vectors = io.vectors.len();
    kernel.scalars = io.scalars.len();
    (kernel, io)
}

/// Drop the instructions whose results nothing reads (negations folded
/// away, constants folded into others).
fn drop_unread(tape: &mut Vec<Instr>) {
    loop {
        let mut read = rustc_hash::FxHashSet::default();
        for instr in tape.iter() {
            instr.for_each_src(|r| {
                read.insert(r);
            });
        }
        let before = tape.len();
        tape.retain(|i| i.dst().is_none_or(|d| read.contains(&d)));
        if tape.len() == before {
            return;
        }
    }
}

/// Give the tape's values physical registers, reusing a register once its
/// value is read for the last time; returns how many it needs, and each
/// value's register. A result never shares a register with its operands,
/// so loops never alias.
fn allocate_registers(tape: &mut [Instr]) -> (usize, HashMap<Reg, Reg>) {
    let mut last_use: HashMap<Reg, usize> = HashMap::default();
    for (k, instr) in tape.iter_mut().enumerate() {
        for r in instr.regs_mut() {
            last_use.insert(*r, k);
        }
    }
    let mut physical: HashMap<Reg, Reg> = HashMap::default();
    let (mut free, mut count): (Vec<Reg>, usize) = (Vec::new(), 0);
    for (k, instr) in tape.iter_mut().enumerate() {
        if let Instr::Expand { src, last, .. } = instr {
            *last = last_use[src] == k;
        }
        let dst = instr.dst();
        if let Some(d) = dst {
            let p = free.pop().unwrap_or_else(|| {
                count += 1;
                count - 1
            });
            physical.insert(d, p);
        }
        let mut freed = Vec::new();
        for r in instr.regs_mut() {
            let virt = *r;
            *r = physical[&virt];
            if last_use[&virt] == k && !freed.contains(r) {
                freed.push(*r);
            }
        }
        free.extend(freed);
    }
    (count, physical)
}

/// Where node values are read: element `i` of a node is `values[i - first]`
/// (a task's own rows of a fused reduction start at `first`).
#[derive(Clone, Copy)]
struct Src<'a> {
    values: &'a [f32],
    first: usize,
}

impl<'a> Src<'a> {
    fn all(values: &'a [f32]) -> Self {
        Src { values, first: 0 }
    }
}

/// One sweep over the elements of its passes' extent. A step of two passes
/// runs the second task by task right after the first, on the same
/// elements while they are in cache, reading the rows the first pass's
/// reductions have just finished (see `fuse`).
struct Step {
    passes: Vec<Pass>,
    chunk: usize,
    /// Elements per task.
    task: usize,
}

/// What a plan runs, in order: a step, or a matrix product.
struct Stage {
    work: Work,
    /// Whether an update reads what the stage computes (if not, it serves
    /// the outputs alone).
    for_updates: bool,
}

enum Work {
    Sweep(Step),
    Product(Product),
}

impl Stage {
    fn new(work: Work) -> Stage {
        Stage {
            work,
            for_updates: true,
        }
    }

    /// The nodes it writes.
    fn computed(&self) -> Box<dyn Iterator<Item = NodeId> + '_> {
        match &self.work {
            Work::Sweep(step) => Box::new(step.passes.iter().flat_map(Pass::computed)),
            Work::Product(p) => Box::new(std::iter::once(p.node)),
        }
    }
}

/// Order each group's passes into steps, fusing a pass into the one
/// before it where it may read that pass's row reductions row by row; a
/// group's products run after every step of the groups before it.
fn steps(groups: Vec<Group>, options: CpuOptions) -> Vec<Stage> {
    let task = options.chunk.max(1) * options.chunks_per_task.max(1);
    let chunk = |passes: &[Pass]| match passes.iter().any(|p| p.sets.len() > SCALAR + 1) {
        true => options.deriving_chunk.max(1),
        false => options.chunk.max(1),
    };
    let single = |p: Pass| {
        let chunk = chunk(std::slice::from_ref(&p));
        Stage::new(Work::Sweep(Step {
            passes: vec![p],
            chunk,
            task: task.div_ceil(chunk) * chunk,
        }))
    };
    let mut out = Vec::new();
    // The previous group's passes not fused yet: each may be fused with a
    // pass of this group, and that step runs after all the others.
    let mut waiting: Vec<Pass> = Vec::new();
    for (group, products) in groups {
        let (mut fused, mut rest) = (Vec::new(), Vec::new());
        for b in group {
            let partner = waiting
                .iter()
                .enumerate()
                .find_map(|(k, a)| fusable(a, &b, task).map(|rows| (k, rows)));
            match partner {
                Some((k, rows)) => {
                    let passes = vec![waiting.remove(k), b];
                    // Chunks of whole rows where a row fits, and tasks of
                    // whole chunks (so of whole rows).
                    let chunk = match chunk(&passes) {
                        c if rows <= c => c / rows * rows,
                        c => c,
                    };
                    let whole = if rows <= chunk { chunk } else { rows };
                    fused.push(Step {
                        passes,
                        chunk,
                        task: task.div_ceil(whole) * whole,
                    })
                }
                None => rest.push(b),
            }
        }
        // A fused step's second pass may read the reductions of another
        // fused step's first pass: that step goes first. Where two read
        // each other's, one step runs as its two passes apart.
        let mut ordered = Vec::new();
        while !fused.is_empty() {
            let first = (0..fused.len()).find(|&k| {
                let later = fused.iter().enumerate().filter(|&(j, _)| j != k);
                !later
                    .map(|(_, o)| &o.passes[0])
                    .any(|a| reads_from(&fused[k].passes[1], a))
            });
            match first {
                Some(k) => ordered.push(fused.remove(k)),
                None => {
                    let mut apart = fused.remove(0).passes.into_iter();
                    waiting.extend(apart.next());
                    rest.extend(apart);
                }
            }
        }
        out.extend(waiting.drain(..).map(single));
        out.extend(ordered.into_iter().map(|s| Stage::new(Work::Sweep(s))));
        out.extend(products.into_iter().map(|p| Stage::new(Work::Product(p))));
        waiting = rest;
    }
    out.extend(waiting.into_iter().map(single));
    out
}

/// Whether pass `b` reads any of pass `a`'s reductions.
fn reads_from(b: &Pass, a: &Pass) -> bool {
    b.tape.iter().any(|instr| {
        matches!(*instr, Instr::Load { node, .. } if a.reductions.iter().any(|r| r.node.index() == node))
    })
}

/// Whether `b` can run task by task right after `a`, and if so the length
/// of `a`'s rows (tasks hold whole rows). `a`'s reductions must fold
/// contiguous rows of that length, and `b` must read them only one value
/// per row at its own elements' rows, and read nothing `a` stores.
fn fusable(a: &Pass, b: &Pass, task: usize) -> Option<usize> {
    if a.extent != b.extent || a.reductions.is_empty() {
        return None;
    }
    // Rows of no elements fold nothing to fuse with.
    let rows = a.reductions[0]
        .to_out
        .out_dims
        .get(1)
        .copied()
        .filter(|&r| r > 0)?;
    let row_wise = |r: &Reduction| r.to_out.src_strides == [1, 0] && r.to_out.out_dims[1] == rows;
    if rows > task || !a.reductions.iter().all(row_wise) {
        return None;
    }
    let reads_ok = b.tape.iter().all(|instr| match *instr {
        Instr::Load { node, set, .. } => {
            let reduction = a.reductions.iter().find(|r| r.node.index() == node);
            let spec = &b.sets[set];
            match reduction {
                Some(r) => {
                    set > SCALAR
                        && spec.parent == CHUNK_SET
                        && matches!(&spec.derive, Derive::Map(m) | Derive::Broadcast(m) if *m == r.to_out)
                }
                None => !a.stores.iter().any(|t| t.index() == node),
            }
        }
        _ => true,
    });
    reads_ok.then_some(rows)
}

impl Step {
    /// Run the step over its extent; `outs` are its passes' stores'
    /// buffers, in order. Returns each reduction's result, in order.
    fn run(&self, data: &[Src], outs: &mut [Vec<f32>]) -> Vec<Vec<f32>> {
        let extent = self.passes[0].extent;
        let size = self.task;
        let mut parts: Vec<Vec<&mut [f32]>> =
            (0..extent.div_ceil(size)).map(|_| Vec::new()).collect();
        for o in outs.iter_mut() {
            for (k, part) in o.chunks_mut(size).enumerate() {
                parts[k].push(part);
            }
        }
        let task = |(k, mut slices): (usize, Vec<&mut [f32]>)| {
            let start = k * size;
            self.task(data, start, size.min(extent - start), &mut slices)
        };
        let reductions: Vec<&Reduction> = self.passes.iter().flat_map(|p| &p.reductions).collect();
        let mut accs: Vec<Vec<f64>> = reductions
            .iter()
            .map(|r| vec![r.op.identity(); r.outs])
            .collect();
        // Tasks run in batches whose accumulators are combined, in task
        // order, before the next batch starts: a column reduction's tasks
        // each hold up to a task's worth of outputs, and all of them at
        // once could outgrow the input. A batch holds at most `PARTIALS`
        // accumulators, and is otherwise as long as can be: each batch
        // ends with the threads waiting while this one combines.
        const PARTIALS: usize = 1 << 22;
        let per_task: usize = reductions.iter().map(|r| r.outs.min(size)).sum();
        let batch_len = (PARTIALS / per_task.max(1)).max(1);
        let mut pending = parts.into_iter().enumerate();
        loop {
            let batch: Vec<_> = pending.by_ref().take(batch_len).collect();
            // A batch of one task runs here: no thread is worth waking for it.
            let partials: Vec<Vec<(usize, Vec<f64>)>> = match batch.len() {
                0 => break,
                1 => batch.into_iter().map(task).collect(),
                _ => batch.into_par_iter().map(task).collect(),
            };
            for p in partials {
                for ((acc, r), (lo, part)) in accs.iter_mut().zip(&reductions).zip(p) {
                    combine(r.op, acc, lo, &part);
                }
            }
        }
        accs.into_iter()
            .map(|acc| acc.into_iter().map(|x| x as f32).collect())
            .collect()
    }

    /// One task of the step: its passes one after the other on elements
    /// `start..start + len`. Returns every reduction's accumulators over
    /// the outputs the task touches, with the first of them.
    fn task(
        &self,
        data: &[Src],
        start: usize,
        len: usize,
        outs: &mut [&mut [f32]],
    ) -> Vec<(usize, Vec<f64>)> {
        let (a, rest) = (&self.passes[0], &self.passes[1..]);
        let (outs_a, outs_b) = outs.split_at_mut(a.stores.len());
        let mut accs = a.task(data, start, len, self.chunk, outs_a);
        if let Some(b) = rest.first() {
            // This task's rows are whole: each is final, and is what the
            // combination of the tasks will give.
            let rows: Vec<Vec<f32>> = a
                .reductions
                .iter()
                .zip(&accs)
                .map(|(r, (_, acc))| {
                    let id = r.op.identity();
                    acc.iter().map(|&x| r.op.cpu(id, x) as f32).collect()
                })
                .collect();
            let mut local = data.to_vec();
            for ((r, (lo, _)), values) in a.reductions.iter().zip(&accs).zip(&rows) {
                local[r.node.index()] = Src { values, first: *lo };
            }
            accs.extend(b.task(&local, start, len, self.chunk, outs_b));
        }
        accs
    }
}

impl Pass {
    /// The nodes the pass writes: its stores and its reductions.
    fn computed(&self) -> impl Iterator<Item = NodeId> + '_ {
        let reductions = self.reductions.iter().map(|r| r.node);
        self.stores.iter().copied().chain(reductions)
    }

    /// `task_body`, compiled for the widest vectors this CPU has: the same
    /// operations in the same order, so the same bits, only sooner.
    fn task(
        &self,
        data: &[Src],
        start: usize,
        len: usize,
        chunk: usize,
        outs: &mut [&mut [f32]],
    ) -> Vec<(usize, Vec<f64>)> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: this CPU has AVX2, checked just above.
            return unsafe { self.task_avx2(data, start, len, chunk, outs) };
        }
        self.task_body(data, start, len, chunk, outs)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn task_avx2(
        &self,
        data: &[Src],
        start: usize,
        len: usize,
        chunk: usize,
        outs: &mut [&mut [f32]],
    ) -> Vec<(usize, Vec<f64>)> {
        self.task_body(data, start, len, chunk, outs)
    }

    /// The elements `start..start + len`, chunk by chunk; returns each
    /// reduction's accumulators over the outputs this task touches, and the
    /// first of them. Everything in the loop is inlined here, so that it is
    /// compiled for the caller's target features.
    #[inline(always)]
    fn task_body(
        &self,
        data: &[Src],
        start: usize,
        len: usize,
        chunk: usize,
        outs: &mut [&mut [f32]],
    ) -> Vec<(usize, Vec<f64>)> {
        let mut regs = take_registers(self.regs, chunk);
        // A load of consecutive elements is not copied: its register is a
        // view of the source.
        let mut views: Vec<Option<&[f32]>> = vec![None; self.regs];
        // A flat register holds one value for every index of its set, in
        // element 0 alone: a per-row value over a chunk within one row, or
        // a uniform one, costs one element until a loop needs it spread.
        let mut flat = vec![false; self.regs];
        let mut compact: Vec<Option<Compact>> = vec![None; self.regs];
        let mut sets: Vec<SetRuns> = (0..self.sets.len()).map(|_| SetRuns::default()).collect();
        sets[SCALAR].runs.push(Run {
            base: 0,
            stride: 0,
            len: 1,
        });
        sets[SCALAR].len = 1;
        let mut runs = Vec::new();
        let mut scratch = Scratch::default();
        let mut accs: Vec<Acc> = self
            .reductions
            .iter()
            .map(|r| {
                runs.clear();
                map_runs(&r.to_out, whole(start, len), &mut |run| runs.push(run));
                let lo = runs.iter().map(|r| r.base).min().unwrap_or(0);
                let hi = runs.iter().map(|r| r.base + (r.len - 1) * r.stride).max();
                Acc::new(r.op, lo, hi.map_or(0, |h| h + 1 - lo))
            })
            .collect();
        for c in (0..len).step_by(chunk) {
            let n = chunk.min(len - c);
            sets[CHUNK_SET].runs.clear();
            sets[CHUNK_SET].runs.push(whole(start + c, n));
            sets[CHUNK_SET].len = n;
            for k in SCALAR + 1..self.sets.len() {
                let spec = &self.sets[k];
                let (done, rest) = sets.split_at_mut(k);
                derive(&spec.derive, &done[spec.parent].runs, &mut rest[0]);
            }
            // Instructions a native kernel has just computed.
            let mut skip = 0;
            for instr in &self.tape {
                use Instr::*;
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                if let Native { index, len } = *instr {
                    let native = &self.natives[index];
                    // A kernel reads every element of its inputs: where
                    // one holds a single value, the tape runs instead.
                    let n = sets[native.sets[0]].len;
                    let aligned = native.sets.iter().all(|&s| sets[s].len == n)
                        && native
                            .copies
                            .iter()
                            .all(|&s| matches!(sets[s].pieces[..], [Piece::Copy(m)] if m == n));
                    if aligned && native.io.vectors.iter().all(|&r| !flat[r]) {
                        for &r in &native.io.vectors {
                            write_out(&mut regs, &mut views, &mut compact, r);
                        }
                        let stores = outs.iter_mut().map(|o| o[c..].as_mut_ptr());
                        scratch.stores.clear();
                        scratch.stores.extend(stores);
                        native.run(
                            &mut regs,
                            &mut views,
                            &mut flat,
                            &mut compact,
                            &mut scratch,
                            n,
                        );
                        skip = len;
                    }
                    continue;
                }
                // A fold's outputs at the chunk's elements.
                if let Fold { out, .. } | FoldProduct { out, .. } = *instr {
                    runs.clear();
                    let to_out = &self.reductions[out].to_out;
                    map_runs(to_out, whole(start + c, n), &mut |run| runs.push(run));
                }
                // Compact operands are written out, but a fold of
                // products reads them in place where each of its runs
                // reads each factor's values, or one value, in place, and
                // not both factors as one value. (Not where its runs are
                // of a few elements, as a permuted operand's are: checks
                // per run would cost more than one fold over them all.)
                let in_place = match *instr {
                    FoldProduct { a, b, form, .. } if runs.len() * 4 <= n => {
                        let (ra, rb) = (views[a].unwrap_or(&regs[a]), views[b].unwrap_or(&regs[b]));
                        let a_one = flat[a] || matches!(form, Form::LeftOne);
                        let b_one = flat[b] || matches!(form, Form::RightOne);
                        let mut at = 0;
                        runs.iter().all(|r| {
                            let pa = part(ra, a_one, compact[a], at, r.len);
                            let pb = part(rb, b_one, compact[b], at, r.len);
                            at += r.len;
                            !matches!(
                                (pa, pb),
                                (None, _) | (_, None) | (Some(Part::One(_)), Some(Part::One(_)))
                            )
                        })
                    }
                    _ => false,
                };
                if !in_place {
                    instr.for_each_src(|r| write_out(&mut regs, &mut views, &mut compact, r));
                }
                // Operands read element by element are spread out first.
                match *instr {
                    Store { src, .. } | Fold { src, .. } => spread(&mut regs, &mut flat, src, n),
                    // At most one factor is read once (a uniform product
                    // is folded as a scaled register).
                    FoldProduct { a, b, form, .. }
                        if !in_place
                            && (flat[a] || matches!(form, Form::LeftOne))
                            && (flat[b] || matches!(form, Form::RightOne)) =>
                    {
                        let r = if matches!(form, Form::RightOne) { a } else { b };
                        spread(&mut regs, &mut flat, r, n)
                    }
                    Select {
                        mask, a, b, set, ..
                    } if !(flat[mask] && flat[a] && flat[b]) => {
                        for r in [mask, a, b] {
                            spread(&mut regs, &mut flat, r, sets[set].len);
                        }
                    }
                    Expand { src, set, .. } if !repeats_one(&sets[set].pieces) => {
                        spread(&mut regs, &mut flat, src, sets[set].len)
                    }
                    _ => {}
                }
                // Compute into a register (taken out while its operands are read).
                let mut d = instr.dst().map(|r| std::mem::take(&mut regs[r]));
                let read = |r: Reg| views[r].unwrap_or(&regs[r]);
                let mut result_flat = false;
                // A result read in place: a source's, or a dying operand's.
                let mut view = None;
                let mut take = None;
                let mut result_compact = None;
                match *instr {
                    Store { src, out } => outs[out][c..c + n].copy_from_slice(&read(src)[..n]),
                    Fold { src, out } => {
                        accs[out].fold(self.reductions[out].op, &read(src)[..n], &runs);
                    }
                    FoldProduct { a, b, form, out } if in_place => {
                        let (op, acc) = (self.reductions[out].op, &mut accs[out]);
                        let a_one = flat[a] || matches!(form, Form::LeftOne);
                        let b_one = flat[b] || matches!(form, Form::RightOne);
                        let (x, y) = (read(a), read(b));
                        let parts = |at, len| {
                            let pa = part(x, a_one, compact[a], at, len);
                            (pa, part(y, b_one, compact[b], at, len))
                        };
                        let products = |at, len| match parts(at, len) {
                            (Some(Part::Each(x)), Some(Part::Each(y))) => Some(Products(x, y)),
                            _ => None,
                        };
                        let (mut at, mut k) = (0, 0);
                        while k < runs.len() {
                            // `ROWS_AT_ONCE` rows of products at once, where
                            // as many runs in a row are rows of one length.
                            if let Some(rows) = runs
                                .get(k..k + ROWS_AT_ONCE)
                                .filter(|f| f.iter().all(|r| r.stride == 0 && r.len == f[0].len))
                            {
                                let len = rows[0].len;
                                let terms: [_; ROWS_AT_ONCE] =
                                    std::array::from_fn(|j| products(at + j * len, len));
                                if terms.iter().all(Option::is_some) {
                                    acc.fold_rows_at_once(op, terms.map(Option::unwrap), rows);
                                    (at, k) = (at + ROWS_AT_ONCE * len, k + ROWS_AT_ONCE);
                                    continue;
                                }
                            }
                            let (r, run) = (runs[k], &runs[k..k + 1]);
                            match parts(at, r.len) {
                                (Some(Part::Each(x)), Some(Part::Each(y))) => {
                                    acc.fold(op, Products(x, y), run)
                                }
                                (Some(Part::Each(x)), Some(Part::One(s)))
                                | (Some(Part::One(s)), Some(Part::Each(x))) => {
                                    acc.fold(op, Scaled(x, s), run)
                                }
                                _ => unreachable!("checked before"),
                            }
                            (at, k) = (at + r.len, k + 1);
                        }
                    }
                    FoldProduct { a, b, form, out } => {
                        let r = &self.reductions[out];
                        let a_one = flat[a] || matches!(form, Form::LeftOne);
                        let b_one = flat[b] || matches!(form, Form::RightOne);
                        let (x, y) = (read(a), read(b));
                        let acc = &mut accs[out];
                        match (a_one, b_one) {
                            (true, _) => acc.fold(r.op, Scaled(&y[..n], x[0]), &runs),
                            (_, true) => acc.fold(r.op, Scaled(&x[..n], y[0]), &runs),
                            _ => acc.fold(r.op, Products(&x[..n], &y[..n]), &runs),
                        }
                    }
                    Native { .. } => unreachable!("handled above"),
                    Load { node, set, .. } => {
                        let (src, at) = (data[node], &sets[set].runs);
                        if let [Run {
                            base,
                            stride: 1,
                            len,
                        }] = at[..]
                        {
                            let from = base - src.first;
                            view = Some(&src.values[from..from + len]);
                        } else if let Some(&first) = at
                            .first()
                            .filter(|r| r.stride == 1 && at.len() > 1 && at.iter().all(|s| s == *r))
                        {
                            // Runs repeating one run: that run, in place.
                            let from = first.base - src.first;
                            view = Some(&src.values[from..from + first.len]);
                            result_compact = Some(Compact::Period {
                                period: first.len,
                                len: first.len * at.len(),
                            });
                        } else {
                            load(d.as_mut().expect("a result"), src, at);
                        }
                    }
                    Const { value, .. } => {
                        d.as_mut().expect("a result")[0] = value;
                        result_flat = true;
                    }
                    Splat { src, .. } => {
                        d.as_mut().expect("a result")[0] = read(src)[0];
                        result_flat = true;
                    }
                    Unary { op, a, set, .. } => {
                        result_flat = flat[a];
                        let len = if result_flat { 1 } else { sets[set].len };
                        let out = &mut d.as_mut().expect("a result")[..len];
                        unary(op, &read(a)[..len], out)
                    }
                    Binary {
                        op,
                        form,
                        a,
                        b,
                        set,
                        ..
                    } => {
                        let a_one = flat[a] || matches!(form, Form::LeftOne);
                        let b_one = flat[b] || matches!(form, Form::RightOne);
                        result_flat = a_one && b_one;
                        let (form, len) = match (a_one, b_one) {
                            (true, true) => (Form::Each, 1),
                            (true, false) => (Form::LeftOne, sets[set].len),
                            (false, true) => (Form::RightOne, sets[set].len),
                            (false, false) => (Form::Each, sets[set].len),
                        };
                        let out = &mut d.as_mut().expect("a result")[..len];
                        binary(op, form, read(a), read(b), out)
                    }
                    Select {
                        mask, a, b, set, ..
                    } => {
                        result_flat = flat[mask];
                        let len = if result_flat { 1 } else { sets[set].len };
                        let out = &mut d.as_mut().expect("a result")[..len];
                        let (m, a, b) = (read(mask), read(a), read(b));
                        for (k, o) in out.iter_mut().enumerate() {
                            *o = if m[k] != 0.0 { a[k] } else { b[k] };
                        }
                    }
                    Expand { src, set, last, .. } => {
                        let pieces = &sets[set].pieces;
                        result_flat = repeats_one(pieces);
                        let out = d.as_mut().expect("a result");
                        match pieces[..] {
                            _ if result_flat => out[0] = read(src)[0],
                            // Each value repeated as often: the values.
                            [Piece::Repeat(block), ..]
                                if pieces
                                    .iter()
                                    .all(|p| matches!(*p, Piece::Repeat(m) if m == block)) =>
                            {
                                let k = pieces.len();
                                out[..k].copy_from_slice(&read(src)[..k]);
                                result_compact = Some(Compact::Blocks {
                                    block,
                                    len: block * k,
                                });
                            }
                            // All of a dying operand's values, in order:
                            // the result is that register (or view).
                            [Piece::Copy(_)] if last => match views[src] {
                                Some(v) => view = Some(v),
                                None => take = Some(src),
                            },
                            _ => expand(out, read(src), pieces),
                        }
                    }
                }
                if let (Some(r), Some(mut d)) = (instr.dst(), d) {
                    if let Some(src) = take {
                        std::mem::swap(&mut d, &mut regs[src]);
                    }
                    regs[r] = d;
                    flat[r] = result_flat;
                    views[r] = view;
                    compact[r] = result_compact;
                }
            }
        }
        SPARE_REGISTERS.with_borrow_mut(|spare| spare.extend(regs));
        accs.into_iter()
            .zip(&self.reductions)
            .map(|(acc, r)| acc.finish(r.op))
            .collect()
    }
}

/// A task's buffers for a native kernel's pointers.
#[derive(Default)]
struct Scratch {
    vectors: Vec<*const f32>,
    scalars: Vec<f32>,
    outs: Vec<*mut f32>,
    /// Where the current chunk's values of each element-wise target go.
    stores: Vec<*mut f32>,
}

impl Native {
    /// Run the kernel over the `n` elements of its set: its output
    /// registers then hold whole registers.
    #[inline(always)]
    fn run(
        &self,
        regs: &mut [Vec<f32>],
        views: &mut [Option<&[f32]>],
        flat: &mut [bool],
        compact: &mut [Option<Compact>],
        scratch: &mut Scratch,
        n: usize,
    ) {
        // Pointers from `as_ptr`/`as_mut_ptr`, which make no reference to
        // the elements: an output may be an input (the kernel reads an
        // element's inputs before it writes its outputs).
        let Scratch {
            vectors,
            scalars,
            outs,
            stores,
        } = scratch;
        vectors.clear();
        vectors.extend(
            self.io
                .vectors
                .iter()
                .map(|&r| views[r].map_or(regs[r].as_ptr(), <[f32]>::as_ptr)),
        );
        scalars.clear();
        scalars.extend(
            self.io
                .scalars
                .iter()
                .map(|&r| views[r].map_or(regs[r][0], |v| v[0])),
        );
        outs.clear();
        outs.extend(self.io.outs.iter().map(|&t| match t {
            Target::Reg(r) => regs[r].as_mut_ptr(),
            Target::Store(k) => stores[k],
        }));
        debug_assert!(self
            .io
            .vectors
            .iter()
            .all(|&r| views[r].map_or(regs[r].len(), <[f32]>::len) >= n));
        // SAFETY: each input holds at least `n` floats (a register holds
        // a chunk, a view its set's elements), and so does each output (a
        // register, or a target from the chunk's first element); the
        // kernel reads and writes `n` of each, and the scalars it reads.
        unsafe { (self.f)(vectors.as_ptr(), scalars.as_ptr(), outs.as_ptr(), n) };
        for &t in &self.io.outs {
            if let Target::Reg(r) = t {
                flat[r] = false;
                views[r] = None;
                compact[r] = None;
            }
        }
    }
}

thread_local! {
    /// Each thread's registers between tasks: a run allocates none once
    /// every thread has run a task as large.
    static SPARE_REGISTERS: std::cell::RefCell<Vec<Vec<f32>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `count` registers of `chunk` floats (their contents left from before).
fn take_registers(count: usize, chunk: usize) -> Vec<Vec<f32>> {
    SPARE_REGISTERS.with_borrow_mut(|spare| {
        (0..count)
            .map(|_| {
                let mut r = spare.pop().unwrap_or_default();
                r.resize(chunk, 0.0);
                r
            })
            .collect()
    })
}

/// The run of the `len` elements from `start`.
fn whole(start: usize, len: usize) -> Run {
    Run {
        base: start,
        stride: 1,
        len,
    }
}

/// Append `r` to `runs`, extending the last run where `r` continues it.
fn push_run(runs: &mut Vec<Run>, r: Run) {
    if r.len == 0 {
        return;
    }
    if let Some(p) = runs.last_mut() {
        if p.len == 1 && r.base >= p.base && (r.len == 1 || r.stride == r.base - p.base) {
            *p = Run {
                base: p.base,
                stride: r.base - p.base,
                len: 1 + r.len,
            };
            return;
        }
        if (r.stride == p.stride || r.len == 1) && r.base == p.base + p.len * p.stride {
            p.len += r.len;
            return;
        }
    }
    runs.push(r);
}

/// The sources under strided map `m` of the elements of run `r`, as runs.
fn map_runs(m: &StridedMap, r: Run, emit: &mut impl FnMut(Run)) {
    let Some((&d, &step)) = m.out_dims.last().zip(m.src_strides.last()) else {
        // Every element reads the one source.
        return emit(Run {
            base: m.offset,
            stride: 0,
            len: r.len,
        });
    };
    match r.stride {
        _ if r.len == 0 => {}
        0 => emit(Run {
            base: m.source(r.base),
            stride: 0,
            len: r.len,
        }),
        // Along the last axis the sources step evenly, and from one row to
        // the next by the axis before's stride, until that axis wraps
        // (there the source is computed afresh: divisions, one per axis).
        1 => {
            let n = m.out_dims.len();
            let (rows, row_step) = match n {
                1 => (usize::MAX, 0),
                _ => (m.out_dims[n - 2], m.src_strides[n - 2]),
            };
            let (mut i, end) = (r.base, r.base + r.len);
            let (mut col, mut row, mut src) = (i % d, (i / d) % rows, m.source(i));
            loop {
                let len = (d - col).min(end - i);
                emit(Run {
                    base: src,
                    stride: step,
                    len,
                });
                i += len;
                if i == end {
                    break;
                }
                row += 1;
                src = match row == rows {
                    true => {
                        row = 0;
                        m.source(i)
                    }
                    false => src - col * step + row_step,
                };
                col = 0;
            }
        }
        stride => {
            for k in 0..r.len {
                emit(Run {
                    base: m.source(r.base + k * stride),
                    stride: 1,
                    len: 1,
                });
            }
        }
    }
}

/// The sources under pad map `p` of the elements of run `r`: `None` for a
/// stretch of padding.
fn pad_runs(p: &PadMap, r: Run, emit: &mut impl FnMut(Option<Run>, usize)) {
    if r.stride != 1 {
        for k in 0..r.len {
            let src = p.source(r.base + k * r.stride);
            emit(src.map(|base| whole(base, 1)), 1);
        }
        return;
    }
    let (mut i, end) = (r.base, r.base + r.len);
    while i < end {
        let (src, stop) = p.segment(i);
        let len = stop.min(end) - i;
        emit(src.map(|base| whole(base, len)), len);
        i += len;
    }
}

/// Derive a set's runs (and for an expanding set, its pieces) on this chunk.
fn derive(d: &Derive, parent: &[Run], out: &mut SetRuns) {
    let SetRuns { runs, pieces, len } = out;
    runs.clear();
    pieces.clear();
    // An expanding set computes a run repeating one index once, and skips
    // padding; a mapped set has one index per parent index.
    let expands = d.expands();
    let mut piece = |src: Option<Run>, len: usize| {
        let (p, run) = match src {
            None => (Piece::Zero(len), None),
            Some(r) if expands && r.stride == 0 && r.len > 1 => {
                (Piece::Repeat(len), Some(Run { len: 1, ..r }))
            }
            Some(r) => (Piece::Copy(len), Some(r)),
        };
        match (pieces.last_mut(), p) {
            (Some(Piece::Copy(a)), Piece::Copy(b)) | (Some(Piece::Zero(a)), Piece::Zero(b)) => {
                *a += b
            }
            _ => pieces.push(p),
        }
        if let Some(run) = run {
            push_run(runs, run);
        }
    };
    for &r in parent {
        match d {
            Derive::Map(m) | Derive::Broadcast(m) => {
                map_runs(m, r, &mut |run| piece(Some(run), run.len))
            }
            Derive::Pad(p) => pad_runs(p, r, &mut piece),
        }
    }
    *len = runs.iter().map(|r| r.len).sum();
}

/// Gather `src` at `runs` into the front of `dst`.
#[inline(always)]
fn load(dst: &mut [f32], src: Src, runs: &[Run]) {
    let mut at = 0;
    for r in runs {
        let d = &mut dst[at..at + r.len];
        let base = r.base - src.first;
        match r.stride {
            1 => d.copy_from_slice(&src.values[base..base + r.len]),
            0 => d.fill(src.values[base]),
            s => {
                for (k, x) in d.iter_mut().enumerate() {
                    *x = src.values[base + k * s];
                }
            }
        }
        at += r.len;
    }
}

/// Whether an expansion repeats one value over its whole set.
fn repeats_one(pieces: &[Piece]) -> bool {
    matches!(pieces, [Piece::Repeat(_)])
}

/// How a register holds its values when it does not hold one per index:
/// compactly, read in place by a fold of products and written out in full
/// (`write_out`) before anything else reads it.
#[derive(Clone, Copy, Debug)]
enum Compact {
    /// Its first `period` values, repeated over `len` indices: a vector
    /// broadcast along the rows of a chunk of several rows.
    Period { period: usize, len: usize },
    /// Value `k` for each of the indices `k·block..(k + 1)·block` of
    /// `len`: one value per row, expanded over a chunk of whole rows.
    Blocks { block: usize, len: usize },
}

/// Write a compact register's values out at each of its indices (into the
/// register itself, which then stops being a view).
fn write_out(
    regs: &mut [Vec<f32>],
    views: &mut [Option<&[f32]>],
    compact: &mut [Option<Compact>],
    r: Reg,
) {
    let Some(c) = compact[r].take() else { return };
    let reg = &mut regs[r];
    match c {
        Compact::Period { period, len } => {
            if let Some(v) = views[r].take() {
                reg[..period].copy_from_slice(&v[..period]);
            }
            for at in (period..len).step_by(period) {
                reg.copy_within(..period, at);
            }
        }
        // From the last block back: block k's value, at k, is read
        // before the blocks from k on are written.
        Compact::Blocks { block, len } => {
            for k in (0..len / block).rev() {
                let v = reg[k];
                reg[k * block..(k + 1) * block].fill(v);
            }
        }
    }
}

/// Terms `at..at + len` of a fold's operand as read in place: its values,
/// or one value for all of them (`None`: they are neither, in place).
#[derive(Clone, Copy)]
enum Part<'a> {
    Each(&'a [f32]),
    One(f32),
}

fn part(
    values: &[f32],
    one: bool,
    compact: Option<Compact>,
    at: usize,
    len: usize,
) -> Option<Part<'_>> {
    match compact {
        _ if one => Some(Part::One(values[0])),
        None => Some(Part::Each(&values[at..at + len])),
        Some(Compact::Period { period, .. }) => {
            let from = at % period;
            (from + len <= period).then(|| Part::Each(&values[from..from + len]))
        }
        Some(Compact::Blocks { block, .. }) => {
            (at % block + len <= block).then(|| Part::One(values[at / block]))
        }
    }
}

/// Write a flat register's value at each of its set's `len` indices.
fn spread(regs: &mut [Vec<f32>], flat: &mut [bool], r: Reg, len: usize) {
    if flat[r] {
        let v = regs[r][0];
        regs[r][..len].fill(v);
        flat[r] = false;
    }
}

/// Expand `src` (values at a compressed set) into `dst` by `pieces`.
#[inline(always)]
fn expand(dst: &mut [f32], src: &[f32], pieces: &[Piece]) {
    let (mut from, mut at) = (0, 0);
    for p in pieces {
        match *p {
            Piece::Copy(n) => {
                dst[at..at + n].copy_from_slice(&src[from..from + n]);
                from += n;
                at += n;
            }
            Piece::Repeat(n) => {
                dst[at..at + n].fill(src[from]);
                from += 1;
                at += n;
            }
            Piece::Zero(n) => {
                dst[at..at + n].fill(0.0);
                at += n;
            }
        }
    }
}

/// A unary op of the op table over a register, its loop specialised per
/// op: matching on a constant variant inside the loop folds away. The
/// polynomial ones (`fmath`) run in 16 lanes where the CPU has AVX-512
/// (the same operations per element: the same bits).
#[inline(always)]
fn unary(op: UnaryOp, x: &[f32], out: &mut [f32]) {
    use UnaryOp::*;
    #[cfg(target_arch = "x86_64")]
    if matches!(op, Exp | Log | Tanh | Sigmoid | Softplus | Sin | Cos)
        && std::arch::is_x86_feature_detected!("avx512f")
    {
        // SAFETY: this CPU has AVX-512, checked just above.
        return unsafe { unary_avx512(op, x, out) };
    }
    unary_body(op, x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn unary_avx512(op: UnaryOp, x: &[f32], out: &mut [f32]) {
    unary_body(op, x, out)
}

#[inline(always)]
fn unary_body(op: UnaryOp, x: &[f32], out: &mut [f32]) {
    use UnaryOp::*;
    macro_rules! each {
        ($($v:ident),*) => {
            match op {
                $($v => for (o, &a) in out.iter_mut().zip(x) { *o = $v.cpu(a) },)*
                // Their loop would hold libm's call for large arguments.
                Sin => fmath::trig_over(x, out, fmath::sin_reduced, f32::sin),
                Cos => fmath::trig_over(x, out, fmath::cos_reduced, f32::cos),
                PowConst(c) => for (o, &a) in out.iter_mut().zip(x) { *o = PowConst(c).cpu(a) },
            }
        };
    }
    each!(
        Neg, Abs, Sign, Exp, Log, Sqrt, Rsqrt, Recip, Square, Tanh, Sigmoid, Relu, Softplus, Detach
    )
}

/// A binary op of the op table over registers (the front `out.len()`
/// elements, or element 0 of a uniform operand), likewise.
#[inline(always)]
fn binary(op: BinaryOp, form: Form, x: &[f32], y: &[f32], out: &mut [f32]) {
    use BinaryOp::*;
    let n = out.len();
    macro_rules! each {
        ($($v:ident),*) => {
            match op {
                $($v => match form {
                    Form::Each => {
                        for ((o, &a), &b) in out.iter_mut().zip(&x[..n]).zip(&y[..n]) {
                            *o = $v.cpu(a, b)
                        }
                    }
                    Form::LeftOne => {
                        let a = x[0];
                        for (o, &b) in out.iter_mut().zip(&y[..n]) {
                            *o = $v.cpu(a, b)
                        }
                    }
                    Form::RightOne => {
                        let b = y[0];
                        for (o, &a) in out.iter_mut().zip(&x[..n]) {
                            *o = $v.cpu(a, b)
                        }
                    }
                },)*
            }
        };
    }
    each!(Add, Sub, Mul, Div, Max, Min, Pow, Lt, Le, Gt, Ge, Eq)
}

/// A task's accumulators for one reduction: outputs `lo..lo + wide.len()`.
///
/// Sums are kept in f64, but f32 adds twice as many lanes at once and
/// needs no conversion, so terms first fold in f32 in bounded numbers: a
/// run into one output in f32 lanes a block at a time, a run along the
/// outputs (a column sum) into `narrow`, which goes into `wide` every
/// `DEPTH` such runs. No f32 partial has more than `DEPTH` terms.
struct Acc {
    lo: usize,
    wide: Vec<f64>,
    /// Allocated at the first run along the outputs.
    narrow: Vec<f32>,
    /// Runs folded into `narrow` since it last went into `wide`, and the
    /// outputs (relative to `lo`) they touched.
    depth: usize,
    touched: std::ops::Range<usize>,
}

/// Rows a fold of products folds together: their loads in flight at once.
/// Two rows' lanes fill half of AVX2's vector registers; four spill them,
/// and ran slower (a row product at 2^24 on this machine, 2.2 against 2.4 ms).
const ROWS_AT_ONCE: usize = 2;

/// Terms an f32 partial holds at most before it goes into f64.
pub(crate) const DEPTH: usize = 32;
/// The f32 lanes a run into one output folds in, and the terms of each
/// of its blocks (each block's lanes go into f64 on their own).
const LANES: usize = 32;
const BLOCK: usize = LANES * DEPTH;

impl Acc {
    fn new(op: ReduceOp, lo: usize, len: usize) -> Acc {
        Acc {
            lo,
            wide: vec![op.identity(); len],
            narrow: Vec::new(),
            depth: 0,
            touched: 0..0,
        }
    }

    /// Fold the terms `x` into the outputs `runs` name; the loops
    /// specialised per op and kind of terms.
    #[inline(always)]
    fn fold(&mut self, op: ReduceOp, x: impl Terms, runs: &[Run]) {
        use ReduceOp::*;
        match op {
            Sum => self.fold_runs(Sum, x, runs),
            Max => self.fold_runs(Max, x, runs),
            Min => self.fold_runs(Min, x, runs),
        }
    }

    /// `fold_rows` of `ROWS_AT_ONCE` runs, its loops specialised per op.
    #[inline(always)]
    fn fold_rows_at_once<T: Terms>(&mut self, op: ReduceOp, x: [T; ROWS_AT_ONCE], runs: &[Run]) {
        use ReduceOp::*;
        let rows: [&Run; ROWS_AT_ONCE] = std::array::from_fn(|j| &runs[j]);
        match op {
            Sum => self.fold_rows(Sum, x, rows),
            Max => self.fold_rows(Max, x, rows),
            Min => self.fold_rows(Min, x, rows),
        }
    }

    /// Fold the terms `x[k]` into the output of run `runs[k]` (each of
    /// stride 0, all as long), in independent f32 lanes (they vectorise
    /// and hide the adder's latency), a block at a time. The runs' groups
    /// of lanes interleave, so that `R` rows' loads are in flight at once;
    /// each run's operations are the same, in the same order, whatever `R`.
    #[inline(always)]
    fn fold_rows<const R: usize, T: Terms>(&mut self, op: ReduceOp, x: [T; R], runs: [&Run; R]) {
        let len = runs[0].len;
        for b in (0..len).step_by(BLOCK) {
            let n = BLOCK.min(len - b);
            let blocks: [T; R] = std::array::from_fn(|r| x[r].part(b, n));
            let mut lanes = [[op.identity() as f32; LANES]; R];
            for g in 0..n / LANES {
                for (block, lanes) in blocks.iter().zip(&mut lanes) {
                    block.fold_group(g, lanes, |l, v| op.cpu(l, v));
                }
            }
            for ((block, lanes), run) in blocks.iter().zip(&lanes).zip(runs) {
                let tail = (n / LANES * LANES..n).map(|k| block.at(k) as f64);
                let a = &mut self.wide[run.base - self.lo];
                *a = tail.fold(op.cpu(*a, lane_tree(op, lanes)), |s, v| op.cpu(s, v));
            }
        }
    }

    #[inline(always)]
    fn fold_runs(&mut self, op: ReduceOp, x: impl Terms, runs: &[Run]) {
        let mut at = 0;
        for r in runs {
            let x = x.part(at, r.len);
            at += r.len;
            let first = r.base - self.lo;
            match r.stride {
                0 => self.fold_rows(op, [x], [r]),
                1 => {
                    if self.depth == DEPTH {
                        self.flush(op);
                    }
                    if self.narrow.is_empty() {
                        self.narrow = vec![op.identity() as f32; self.wide.len()];
                    }
                    let span = first..first + r.len;
                    self.touched = match self.depth {
                        0 => span.clone(),
                        _ => self.touched.start.min(span.start)..self.touched.end.max(span.end),
                    };
                    self.depth += 1;
                    x.fold_into(&mut self.narrow[span], |a, v| op.cpu(a, v));
                }
                s => {
                    for k in 0..r.len {
                        let a = &mut self.wide[first + k * s];
                        *a = op.cpu(*a, x.at(k) as f64);
                    }
                }
            }
        }
    }

    /// Move the f32 partials into f64.
    fn flush(&mut self, op: ReduceOp) {
        let t = std::mem::replace(&mut self.touched, 0..0);
        let id = op.identity() as f32;
        for (w, n) in self.wide[t.clone()].iter_mut().zip(&mut self.narrow[t]) {
            *w = op.cpu(*w, *n as f64);
            *n = id;
        }
        self.depth = 0;
    }

    /// The outputs' first index and their f64 accumulators.
    fn finish(mut self, op: ReduceOp) -> (usize, Vec<f64>) {
        self.flush(op);
        (self.lo, self.wide)
    }
}

/// The terms a fold reads, `len()` of them: a register's values, or
/// products formed on the way (`FoldProduct`).
trait Terms: Copy {
    /// The terms `at..at + len`.
    fn part(self, at: usize, len: usize) -> Self;
    fn at(self, k: usize) -> f32;
    /// `acc[k] = f(acc[k], term k)` for each term (as many as `acc`
    /// holds), written as one zip so that it vectorises.
    fn fold_into(self, acc: &mut [f32], f: impl Fn(f32, f32) -> f32);
    /// `lanes[k] = f(lanes[k], term g·N + k)` for each `k < N`.
    #[inline(always)]
    fn fold_group<const N: usize>(
        self,
        g: usize,
        lanes: &mut [f32; N],
        f: impl Fn(f32, f32) -> f32,
    ) {
        self.part(g * N, N).fold_into(lanes, f);
    }
}

impl Terms for &[f32] {
    #[inline(always)]
    fn part(self, at: usize, len: usize) -> Self {
        &self[at..at + len]
    }
    #[inline(always)]
    fn at(self, k: usize) -> f32 {
        self[k]
    }
    #[inline(always)]
    fn fold_into(self, acc: &mut [f32], f: impl Fn(f32, f32) -> f32) {
        for (a, &x) in acc.iter_mut().zip(self) {
            *a = f(*a, x);
        }
    }
}

/// `x[k] · y[k]`.
#[derive(Clone, Copy)]
struct Products<'a>(&'a [f32], &'a [f32]);

impl Terms for Products<'_> {
    #[inline(always)]
    fn part(self, at: usize, len: usize) -> Self {
        Products(&self.0[at..at + len], &self.1[at..at + len])
    }
    #[inline(always)]
    fn at(self, k: usize) -> f32 {
        self.0[k] * self.1[k]
    }
    #[inline(always)]
    fn fold_into(self, acc: &mut [f32], f: impl Fn(f32, f32) -> f32) {
        for ((a, &x), &y) in acc.iter_mut().zip(self.0).zip(self.1) {
            *a = f(*a, x * y);
        }
    }
    #[inline(always)]
    fn fold_group<const N: usize>(
        self,
        g: usize,
        lanes: &mut [f32; N],
        f: impl Fn(f32, f32) -> f32,
    ) {
        // Indexed over arrays of a known length, the lanes stay in vector
        // registers (a zip of the slices came out as scalar code).
        let at = g * N..(g + 1) * N;
        let (x, y): (&[f32; N], &[f32; N]) = (
            self.0[at.clone()].try_into().unwrap(),
            self.1[at].try_into().unwrap(),
        );
        for k in 0..N {
            lanes[k] = f(lanes[k], x[k] * y[k]);
        }
    }
}

/// `x[k] · s` (a product of floats is the same either way round).
#[derive(Clone, Copy)]
struct Scaled<'a>(&'a [f32], f32);

impl Terms for Scaled<'_> {
    #[inline(always)]
    fn part(self, at: usize, len: usize) -> Self {
        Scaled(&self.0[at..at + len], self.1)
    }
    #[inline(always)]
    fn at(self, k: usize) -> f32 {
        self.0[k] * self.1
    }
    #[inline(always)]
    fn fold_into(self, acc: &mut [f32], f: impl Fn(f32, f32) -> f32) {
        for (a, &x) in acc.iter_mut().zip(self.0) {
            *a = f(*a, x * self.1);
        }
    }
    #[inline(always)]
    fn fold_group<const N: usize>(
        self,
        g: usize,
        lanes: &mut [f32; N],
        f: impl Fn(f32, f32) -> f32,
    ) {
        // As for `Products`.
        let x: &[f32; N] = self.0[g * N..(g + 1) * N].try_into().unwrap();
        for k in 0..N {
            lanes[k] = f(lanes[k], x[k] * self.1);
        }
    }
}

/// The fold of the lanes in f64, as a tree (lane k with lane k + half,
/// halving): independent adds that vectorise, where a chain of `LANES`
/// adds would wait on each in turn.
#[inline(always)]
fn lane_tree(op: ReduceOp, lanes: &[f32; LANES]) -> f64 {
    let mut w = lanes.map(f64::from);
    let mut half = LANES;
    while half > 1 {
        half /= 2;
        for k in 0..half {
            w[k] = op.cpu(w[k], w[k + half]);
        }
    }
    w[0]
}

/// Fold a task's accumulators (outputs from `lo`) into the step's.
fn combine(op: ReduceOp, acc: &mut [f64], lo: usize, part: &[f64]) {
    use ReduceOp::*;
    let acc = &mut acc[lo..lo + part.len()];
    match op {
        Sum => acc.iter_mut().zip(part).for_each(|(a, &x)| *a += x),
        Max => acc
            .iter_mut()
            .zip(part)
            .for_each(|(a, &x)| *a = crate::ops::max(*a, x)),
        Min => acc
            .iter_mut()
            .zip(part)
            .for_each(|(a, &x)| *a = crate::ops::min(*a, x)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Graph;

    #[test]
    fn polynomial_unary_ops_give_the_op_tables_bits_in_every_lane_width() {
        // Scattered bit patterns: every sign and exponent, NaNs and infinities.
        let xs: Vec<f32> = (0..200_000u32)
            .map(|k| f32::from_bits(k.wrapping_mul(2_654_435_761)))
            .collect();
        for op in [
            UnaryOp::Exp,
            UnaryOp::Log,
            UnaryOp::Tanh,
            UnaryOp::Sigmoid,
            UnaryOp::Softplus,
            UnaryOp::Sin,
            UnaryOp::Cos,
        ] {
            let mut wide = vec![0.0; xs.len()];
            unary(op, &xs, &mut wide);
            for (&x, &got) in xs.iter().zip(&wide) {
                let want = op.cpu(x);
                let same = got.to_bits() == want.to_bits() || got.is_nan() && want.is_nan();
                assert!(same, "{op:?}({x:e}): {got:e} in a loop, {want:e} alone");
            }
        }
    }

    #[test]
    fn a_matrix_product_and_both_its_gradients_run_by_blocks() {
        let g = Graph::new();
        let (a, b) = (g.input("a", [9, 40]), g.param("b", [40, 7]));
        // `a·b` reads a computed value: it is stored for the product.
        let loss = a.tanh().matmul(b).sin().sum();
        let mut roots = vec![loss.id()];
        roots.extend(g.grad(loss, &[a, b]).iter().map(|d| d.id()));
        let plan = FastPlan::new(&g.nodes(), &roots, &[], CpuOptions::default());
        let products = (plan.stages.iter())
            .filter(|s| matches!(s.work, Work::Product(_)))
            .count();
        assert_eq!(products, 3, "a·b, and the products in ∇a and ∇b");
    }
}
