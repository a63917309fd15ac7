//! The CPU fast path: f32, fused, in chunks, on every core.
//!
//! Like the GPU backend, it stores only leaves, reductions and the values
//! asked for; everything else is computed chunk by chunk inside the pass
//! that needs it. A chunk is a set of indices into a node's elements (a
//! contiguous range, or a list after a layout op), and a node's value on a
//! chunk is computed once per set of indices and shared, so a fused
//! expression costs one tight loop per op over a few thousand elements
//! that stay in cache. Reductions fold in a fixed order per thread and
//! combine the threads in order: the same inputs give the same bits on
//! every run on one machine.

use crate::backend::cpu::live_nodes;
use crate::graph::{Node, NodeId};
use crate::ops::{BinaryOp, Op, ReduceOp, UnaryOp};
use crate::shape::{PadMap, StridedMap};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// Elements per chunk: the working set of a fused expression stays in cache.
const CHUNK: usize = 4096;

/// The indices of one chunk of a node's elements.
#[derive(Clone)]
enum Indices {
    Range { start: usize, len: usize },
    List(Vec<usize>),
}

impl Indices {
    fn len(&self) -> usize {
        match self {
            Indices::Range { len, .. } => *len,
            Indices::List(v) => v.len(),
        }
    }
    fn get(&self, k: usize) -> usize {
        match self {
            Indices::Range { start, .. } => start + k,
            Indices::List(v) => v[k],
        }
    }
}

/// Evaluates fused expressions on one chunk at a time.
struct ChunkEval<'a> {
    nodes: &'a [Node],
    /// Values of the stored nodes computed so far, by node index.
    stored: &'a [Option<Cow<'a, [f32]>>],
    sets: Vec<Indices>,
    memo: HashMap<(NodeId, usize), Rc<Vec<f32>>>,
}

impl<'a> ChunkEval<'a> {
    fn new(nodes: &'a [Node], stored: &'a [Option<Cow<'a, [f32]>>]) -> Self {
        ChunkEval {
            nodes,
            stored,
            sets: Vec::new(),
            memo: HashMap::new(),
        }
    }

    /// Start a new chunk: the elements `start..start + len` of some node.
    fn range(&mut self, start: usize, len: usize) -> usize {
        self.sets.clear();
        self.memo.clear();
        self.sets.push(Indices::Range { start, len });
        0
    }

    fn set(&mut self, ix: Indices) -> usize {
        self.sets.push(ix);
        self.sets.len() - 1
    }

    /// Node `id` at the indices of set `s`; a stored node is loaded unless
    /// `compute` asks for it to be computed from its operands.
    fn value(&mut self, id: NodeId, s: usize, compute: bool) -> Rc<Vec<f32>> {
        if let Some(v) = self.memo.get(&(id, s)) {
            return v.clone();
        }
        let node = &self.nodes[id.index()];
        let len = self.sets[s].len();
        let v = match (&self.stored[id.index()], compute) {
            (Some(buf), false) => Rc::new(match &self.sets[s] {
                Indices::Range { start, len } => buf[*start..start + len].to_vec(),
                Indices::List(ix) => ix.iter().map(|&i| buf[i]).collect(),
            }),
            _ => self.compute(node, s, len),
        };
        self.memo.insert((id, s), v.clone());
        v
    }

    fn compute(&mut self, node: &Node, s: usize, len: usize) -> Rc<Vec<f32>> {
        let input = |k: usize| node.inputs[k];
        let in_shape = |k: usize| &self.nodes[node.inputs[k].index()].shape;
        Rc::new(match &node.op {
            Op::Const(c) => vec![*c as f32; len],
            Op::Unary(u) => {
                let a = self.value(input(0), s, false);
                unary(*u, &a)
            }
            Op::Binary(b) => {
                let x = self.value(input(0), s, false);
                let y = self.value(input(1), s, false);
                binary(*b, &x, &y)
            }
            Op::Select => {
                let m = self.value(input(0), s, false);
                let x = self.value(input(1), s, false);
                let y = self.value(input(2), s, false);
                (0..len)
                    .map(|k| if m[k] != 0.0 { x[k] } else { y[k] })
                    .collect()
            }
            // The same elements in the same order: shared, not copied.
            Op::Reshape => return self.value(input(0), s, false),
            Op::Broadcast if in_shape(0).numel() == 1 => {
                let one = self.set(Indices::Range { start: 0, len: 1 });
                vec![self.value(input(0), one, false)[0]; len]
            }
            Op::Broadcast => {
                let m = StridedMap::broadcast(in_shape(0), &node.shape);
                return self.mapped(input(0), s, &m);
            }
            Op::Permute(perm) => {
                let m = StridedMap::permute(in_shape(0), perm);
                return self.mapped(input(0), s, &m);
            }
            Op::Slice { axis, start } => {
                let m = StridedMap::slice(in_shape(0), *axis, *start, node.shape.0[*axis]);
                return self.mapped(input(0), s, &m);
            }
            Op::Pad { axis, before } => {
                // Padding reads element 0 and is masked to zero afterwards.
                let pad = PadMap::new(in_shape(0), *axis, *before, node.shape.0[*axis]);
                let src: Vec<Option<usize>> =
                    (0..len).map(|k| pad.source(self.sets[s].get(k))).collect();
                let t = self.set(Indices::List(src.iter().map(|x| x.unwrap_or(0)).collect()));
                let v = self.value(input(0), t, false);
                src.iter()
                    .zip(v.iter())
                    .map(|(x, &y)| if x.is_some() { y } else { 0.0 })
                    .collect()
            }
            Op::Input(_) | Op::Param { .. } | Op::Reduce { .. } => {
                unreachable!("{} nodes are stored", node.op.name())
            }
        })
    }

    /// `input` at the indices the strided map `m` takes this set's indices to.
    fn mapped(&mut self, input: NodeId, s: usize, m: &StridedMap) -> Rc<Vec<f32>> {
        let ix = match &self.sets[s] {
            Indices::Range { start, len } => m.sources(*start, *len),
            Indices::List(v) => v.iter().map(|&i| m.source(i)).collect(),
        };
        // Consecutive indices (a slice of a range, say) stay a range: loads are copies.
        let ix = match ix.first() {
            Some(&start) if ix.windows(2).all(|w| w[1] == w[0] + 1) => Indices::Range {
                start,
                len: ix.len(),
            },
            _ => Indices::List(ix),
        };
        let t = self.set(ix);
        self.value(input, t, false)
    }
}

/// `f` over a chunk; generic so that each op's loop is compiled (and
/// vectorised) on its own.
#[inline(always)]
fn map(x: &[f32], f: impl Fn(f32) -> f32) -> Vec<f32> {
    x.iter().map(|&a| f(a)).collect()
}

/// `f` over two chunks, likewise.
#[inline(always)]
fn zip(x: &[f32], y: &[f32], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    x.iter().zip(y).map(|(&a, &b)| f(a, b)).collect()
}

/// A unary op of the op table, with its loop specialised per op: matching
/// on a constant variant inside the loop folds away.
fn unary(op: UnaryOp, x: &[f32]) -> Vec<f32> {
    use UnaryOp::*;
    macro_rules! each {
        ($($v:ident),*) => {
            match op {
                $($v => map(x, |a| $v.cpu(a)),)*
                PowConst(c) => map(x, |a| PowConst(c).cpu(a)),
            }
        };
    }
    each!(
        Neg, Abs, Sign, Exp, Log, Sqrt, Rsqrt, Recip, Square, Sin, Cos, Tanh, Sigmoid, Relu,
        Softplus, Detach
    )
}

/// A binary op of the op table, with its loop specialised per op.
fn binary(op: BinaryOp, x: &[f32], y: &[f32]) -> Vec<f32> {
    use BinaryOp::*;
    macro_rules! each {
        ($($v:ident),*) => {
            match op {
                $($v => zip(x, y, |a, b| $v.cpu(a, b)),)*
            }
        };
    }
    each!(Add, Sub, Mul, Div, Max, Min, Pow, Lt, Le, Gt, Ge, Eq)
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |t| t.get())
}

/// Evaluate `roots` given the leaves' values; returns each root's values.
pub(crate) fn evaluate(
    nodes: &[Node],
    roots: &[NodeId],
    leaves: &HashMap<NodeId, &[f32]>,
) -> Vec<Vec<f32>> {
    let live = live_nodes(nodes, roots);
    let mut stored: Vec<Option<Cow<[f32]>>> = vec![None; nodes.len()];
    for (id, v) in leaves {
        stored[id.index()] = Some(Cow::Borrowed(*v));
    }
    // Targets: reductions and the roots that are not leaves, by level (one
    // more than the highest level of the reductions they read).
    let mut level: Vec<usize> = vec![0; nodes.len()];
    let mut targets: BTreeMap<usize, Vec<NodeId>> = BTreeMap::new();
    for &i in &live {
        let node = &nodes[i];
        let below = node
            .inputs
            .iter()
            .map(|j| level[j.index()])
            .max()
            .unwrap_or(0);
        let is_reduce = matches!(node.op, Op::Reduce { .. });
        level[i] = below + usize::from(is_reduce);
        let id = NodeId(i as u32);
        let is_leaf = matches!(node.op, Op::Input(_) | Op::Param { .. });
        if !is_leaf && (is_reduce || roots.contains(&id)) {
            // A reduction's result is ready one level after its operand.
            targets
                .entry(level[i] + usize::from(!is_reduce))
                .or_default()
                .push(id);
        }
    }
    for (_, group) in targets {
        let (reductions, elementwise): (Vec<NodeId>, Vec<NodeId>) = group
            .into_iter()
            .partition(|id| matches!(nodes[id.index()].op, Op::Reduce { .. }));
        let mut done: Vec<(NodeId, Vec<f32>)> = reductions
            .iter()
            .map(|&r| (r, reduce(nodes, &stored, r)))
            .collect();
        let mut by_extent: BTreeMap<usize, Vec<NodeId>> = BTreeMap::new();
        for t in elementwise {
            by_extent
                .entry(nodes[t.index()].shape.numel())
                .or_default()
                .push(t);
        }
        for (extent, ts) in by_extent {
            let values = elementwise_pass(nodes, &stored, extent, &ts);
            done.extend(ts.into_iter().zip(values));
        }
        for (id, v) in done {
            stored[id.index()] = Some(Cow::Owned(v));
        }
    }
    // Hand computed values over without copying (a root listed twice is copied).
    let mut out = Vec::with_capacity(roots.len());
    for (k, r) in roots.iter().enumerate() {
        let again = roots[k + 1..].contains(r);
        out.push(
            match stored[r.index()].take().expect("every root is computed") {
                Cow::Owned(v) if !again => v,
                v => {
                    let copy = v.to_vec();
                    stored[r.index()] = Some(v);
                    copy
                }
            },
        );
    }
    out
}

/// Compute element-wise `targets` of one extent together, chunk by chunk,
/// the chunks split over the threads.
fn elementwise_pass(
    nodes: &[Node],
    stored: &[Option<Cow<[f32]>>],
    extent: usize,
    targets: &[NodeId],
) -> Vec<Vec<f32>> {
    let mut out: Vec<Vec<f32>> = targets.iter().map(|_| vec![0.0; extent]).collect();
    let per_thread = extent.div_ceil(threads()).div_ceil(CHUNK).max(1) * CHUNK;
    let mut parts: Vec<Vec<&mut [f32]>> = Vec::new();
    for o in out.iter_mut() {
        for (k, part) in o.chunks_mut(per_thread).enumerate() {
            if parts.len() <= k {
                parts.push(Vec::new());
            }
            parts[k].push(part);
        }
    }
    std::thread::scope(|scope| {
        for (k, mut slices) in parts.into_iter().enumerate() {
            scope.spawn(move || {
                let mut e = ChunkEval::new(nodes, stored);
                let first = k * per_thread;
                let mine = slices[0].len();
                for start in (0..mine).step_by(CHUNK) {
                    let len = CHUNK.min(mine - start);
                    let s = e.range(first + start, len);
                    for (t, slice) in targets.iter().zip(slices.iter_mut()) {
                        let v = e.value(*t, s, true);
                        slice[start..start + len].copy_from_slice(&v);
                    }
                }
            });
        }
    });
    out
}

/// A reduction: its operand computed chunk by chunk over its own elements,
/// each thread folding a contiguous share into its own accumulators, the
/// threads combined in order.
fn reduce(nodes: &[Node], stored: &[Option<Cow<[f32]>>], id: NodeId) -> Vec<f32> {
    let node = &nodes[id.index()];
    let Op::Reduce { op, axes } = &node.op else {
        unreachable!("a reduction")
    };
    let operand = node.inputs[0];
    let input = &nodes[operand.index()].shape;
    let to_out = StridedMap::reduce_to(input, axes, &node.shape);
    let (n, outs) = (input.numel(), node.shape.numel());
    // Accumulators are f64: a long f32 sum in order loses digits (2^20
    // terms drift by ~1e-3), the GPU's tree does not, and neither should we.
    let identity = op.identity();
    let per_thread = n.div_ceil(threads()).div_ceil(CHUNK).max(1) * CHUNK;
    let partials: Vec<Vec<f64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n.div_ceil(per_thread))
            .map(|k| {
                let to_out = &to_out;
                scope.spawn(move || {
                    let mut acc = vec![identity; outs];
                    let mut e = ChunkEval::new(nodes, stored);
                    let end = (k * per_thread + per_thread).min(n);
                    for start in (k * per_thread..end).step_by(CHUNK) {
                        let len = CHUNK.min(end - start);
                        let s = e.range(start, len);
                        let v = e.value(operand, s, false);
                        fold(*op, &mut acc, &v, outs == 1, || to_out.sources(start, len));
                    }
                    acc
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a reduction thread panicked"))
            .collect()
    });
    let mut out = vec![identity; outs];
    for p in partials {
        for (o, x) in out.iter_mut().zip(p) {
            *o = op.cpu(*o, x);
        }
    }
    out.into_iter().map(|x| x as f32).collect()
}

/// Fold a chunk into the accumulators (all into one when `single`, else each
/// element into the output `slots()` names), the loop specialised per op.
fn fold(op: ReduceOp, acc: &mut [f64], v: &[f32], single: bool, slots: impl Fn() -> Vec<usize>) {
    use ReduceOp::*;
    macro_rules! each {
        ($($r:ident),*) => {
            match op {
                $($r => {
                    if single {
                        acc[0] = v.iter().fold(acc[0], |a, &x| $r.cpu(a, x as f64));
                    } else {
                        for (&o, &x) in slots().iter().zip(v) {
                            acc[o] = $r.cpu(acc[o], x as f64);
                        }
                    }
                })*
            }
        };
    }
    each!(Sum, Max, Min)
}
