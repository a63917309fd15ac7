//! WGSL generation: a node's value at an index becomes straight-line code.
//!
//! [`Emitter::value`] writes the statements computing node `n` at flat index
//! `idx` (of `n`'s own shape) and returns the WGSL expression holding it.
//! Materialised nodes are loaded from their buffer; element-wise ops recurse
//! at the same index; layout ops (broadcast, permute, slice, pad, reshape)
//! recurse at a remapped index. So a whole chain of element-wise and layout
//! ops, forward and backward, fuses into one kernel, and a value needed at
//! two indices is recomputed rather than stored. Values are shared within a
//! kernel by (node, index).
//!
//! The emitter also bounds every index it writes: given the range of the
//! kernel's own index (`set_range`), each remapped index gets bounds from
//! its map, and each buffer binds only the parts its accesses can reach.
//! That is what lets the scheduler cut a kernel over tensors too large for
//! its bindings into windows of its index space, one dispatch each.

use super::plan::{Binding, BufId, BufSpec};
use crate::graph::{Node, NodeId};
use crate::ops::{f32_literal, BinaryOp, Op, WGSL_PRELUDE};
use crate::shape::{PadMap, Shape, StridedMap};
use rustc_hash::FxHashMap as HashMap;
use std::fmt::Write;
use std::ops::{Range, RangeInclusive};

/// A node computed more often than this inside one kernel (at distinct
/// indices, or at one index in the separate scopes of pads) is stored
/// instead: a stencil or roll reads a value at two shifted indices a step,
/// and recomputing would take exponentially many copies in the steps.
pub(crate) const MAX_COPIES_PER_NODE: usize = 6;
/// Kernels index with u32: a value computed or stored at an index has fewer
/// elements than this (so that the sum of two indices cannot wrap either).
pub(crate) const MAX_ELEMENTS: usize = 1 << 31;

/// What emitting a kernel found that it cannot be built with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Problem {
    /// A node computed too many times: store it and plan again.
    TooManyCopies(NodeId),
    /// A node computed at an index has `MAX_ELEMENTS` elements or more.
    TooLarge(NodeId),
}

pub(crate) struct Emitter<'a> {
    nodes: &'a [Node],
    /// Which buffer holds each materialised node.
    stored: &'a HashMap<NodeId, BufId>,
    /// How many elements each buffer holds, and how many fit one binding.
    layout: Layout<'a>,
    /// The buffers this kernel uses, in first-use order.
    used: Vec<Use>,
    /// Bounds (least, greatest) of index variables, where known.
    ranges: HashMap<String, (usize, usize)>,
    /// Index variables that range over a block of rows by columns.
    blocks: HashMap<String, Block>,
    pub body: String,
    indent: usize,
    memo: HashMap<(NodeId, String), String>,
    index_memo: HashMap<String, String>,
    /// Index names known to be another index plus a constant.
    offsets: HashMap<String, (String, i64)>,
    /// Per buffer, the vec4 holding its elements 4q..4q+3 and which of them
    /// is at `idx` (`set_vec4_lane`).
    vec4_lane: HashMap<BufId, (String, usize)>,
    /// How many times each node has been computed (`MAX_COPIES_PER_NODE`).
    copies: HashMap<NodeId, usize>,
    /// Nodes whose value at whatever index is reached is a known expression.
    substitutes: HashMap<NodeId, String>,
    /// The first problem found while emitting.
    pub problem: Option<Problem>,
    /// The stored nodes whose values the kernel loads.
    loaded: Vec<NodeId>,
    /// Each node's value where it depends on constants alone (`folded`).
    constants: HashMap<NodeId, Option<f64>>,
    next: usize,
}

impl<'a> Emitter<'a> {
    pub fn new(
        nodes: &'a [Node],
        stored: &'a HashMap<NodeId, BufId>,
        layout: Layout<'a>,
        indent: usize,
    ) -> Self {
        Emitter {
            nodes,
            stored,
            layout,
            used: Vec::new(),
            ranges: HashMap::default(),
            blocks: HashMap::default(),
            body: String::new(),
            indent,
            memo: HashMap::default(),
            index_memo: HashMap::default(),
            offsets: HashMap::default(),
            vec4_lane: HashMap::default(),
            copies: HashMap::default(),
            substitutes: HashMap::default(),
            problem: None,
            loaded: Vec::new(),
            constants: HashMap::default(),
            next: 0,
        }
    }

    /// Let the index variable (or index expression) `name` range over
    /// `lo..=hi` in this kernel.
    pub fn set_range(&mut self, name: &str, lo: usize, hi: usize) {
        self.ranges.insert(name.to_string(), (lo, hi));
    }

    /// Let the index variable `name` range over `block`: its rows by its
    /// columns, of a shape whose last axis has `block.row_len` elements.
    pub fn set_block(&mut self, name: &str, block: Block) {
        let (rows, cols) = (block.rows, block.cols);
        let (lo, hi) = (
            rows.0 * block.row_len + cols.0,
            rows.1 * block.row_len + cols.1,
        );
        self.set_range(name, lo, hi);
        self.blocks.insert(name.to_string(), block);
    }

    /// Bounds on the index expression `idx`: a variable with a range, or a literal.
    pub fn range_of(&self, idx: &str) -> Option<(usize, usize)> {
        if let Some(&r) = self.ranges.get(idx) {
            return Some(r);
        }
        let v = idx.strip_suffix('u')?.parse().ok()?;
        Some((v, v))
    }

    /// Note an access to `buf` at `idx` (an index into `view`): the
    /// elements it can reach (all of them where `idx` is not bounded).
    fn use_buffer(&mut self, buf: BufId, write: bool, idx: &str, view: View) {
        let numel = self.layout.buffers[buf].numel;
        let width = if view == View::Vec4 { 4 } else { 1 };
        let reach = match self.range_of(idx) {
            // Within the buffer (which has at least one part, even empty).
            Some((lo, hi)) => {
                let start = (lo * width).min(numel.saturating_sub(1));
                start..((hi + 1) * width).min(numel).max(start)
            }
            None => 0..numel,
        };
        match self
            .used
            .iter_mut()
            .find(|u| u.buf == buf && u.view == view)
        {
            Some(u) => {
                u.write |= write;
                u.reach = u.reach.start.min(reach.start)..u.reach.end.max(reach.end);
            }
            None => self.used.push(Use {
                buf,
                view,
                write,
                reach,
            }),
        }
    }

    /// An expression loading vec4 `q` (elements 4q..4q+3) of buffer `buf`,
    /// which must be one binding.
    pub fn load_vec(&mut self, buf: BufId, q: &str) -> String {
        self.use_buffer(buf, false, q, View::Vec4);
        format!("t{buf}v[{q}]")
    }

    /// A statement storing the vec4 `value` into vec4 `q` of buffer `buf`,
    /// or (with `lane`) its component `lane` alone.
    pub fn store_vec_statement(
        &mut self,
        buf: BufId,
        q: &str,
        value: &str,
        lane: Option<usize>,
    ) -> String {
        self.use_buffer(buf, true, q, View::Vec4);
        match lane {
            Some(j) => format!("t{buf}v[{q}][{j}u] = {value}[{j}u];"),
            None => format!("t{buf}v[{q}] = {value};"),
        }
    }

    /// The buffers this kernel binds both as f32s and as vec4s and writes:
    /// one dispatch may not write a buffer through one binding while it
    /// reads it through another.
    pub fn written_through_two_views(&self) -> Vec<BufId> {
        self.used
            .iter()
            .filter(|u| {
                let other = self
                    .used
                    .iter()
                    .find(|o| o.buf == u.buf && o.view != u.view);
                other.is_some_and(|o| o.write || u.write)
            })
            .map(|u| u.buf)
            .collect()
    }

    /// An expression loading element `idx` of buffer `buf`.
    pub fn load(&mut self, buf: BufId, idx: &str) -> String {
        if let Some((vector, lane)) = self.vec4_lane.get(&buf) {
            let (base, k) = match self.offsets.get(idx) {
                Some((base, k)) => (base.as_str(), *k),
                None => (idx, 0),
            };
            let j = *lane as i64 + k;
            if base == "idx" && (0..4).contains(&j) {
                return format!("{vector}[{j}u]");
            }
        }
        self.use_buffer(buf, false, idx, View::F32);
        if self.layout.parts(buf) == 1 {
            format!("t{buf}[{idx}]")
        } else {
            format!("ld_t{buf}({idx})")
        }
    }

    /// An expression loading element `idx` of stored node `id`'s value.
    pub fn load_stored(&mut self, id: NodeId, idx: &str) -> String {
        self.loaded.push(id);
        self.load(self.stored[&id], idx)
    }

    /// The stored nodes whose values the kernel loads (for the plan's
    /// invariant: each is written whole before the kernel runs).
    pub fn loaded(&self) -> Vec<NodeId> {
        let mut v = self.loaded.clone();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// A statement storing `value` into element `idx` of buffer `buf`.
    pub fn store_statement(&mut self, buf: BufId, idx: &str, value: &str) -> String {
        self.use_buffer(buf, true, idx, View::F32);
        if self.layout.parts(buf) == 1 {
            format!("t{buf}[{idx}] = {value};")
        } else {
            format!("st_t{buf}({idx}, {value});")
        }
    }

    /// Element `idx` of buffer `buf` seen as an `atomic<u32>` (a counter),
    /// which must be one binding.
    pub fn counter(&mut self, buf: BufId, idx: &str) -> String {
        self.use_buffer(buf, true, idx, View::Atomic);
        format!("t{buf}a[{idx}]")
    }

    /// The bindings, in binding order: each buffer's parts that the kernel
    /// can reach.
    pub fn bindings(&self) -> Vec<Binding> {
        let chunk = self.layout.chunk;
        let len = |r: &Range<usize>| r.end.saturating_sub(r.start);
        let meet = |a: &Range<usize>, b: &Range<usize>| a.start.max(b.start)..a.end.min(b.end);
        self.used
            .iter()
            .enumerate()
            .flat_map(|(i, u)| {
                // A buffer bound twice (as f32s and as vec4s) moves the
                // elements both views reach once: the second counts the rest.
                let seen = self.used[..i].iter().find(|o| o.buf == u.buf);
                u.parts(chunk).map(move |part| {
                    let here = meet(&u.reach, &(part * chunk..(part + 1) * chunk));
                    let reached = len(&here) - seen.map_or(0, |o| len(&meet(&here, &o.reach)));
                    Binding {
                        buf: u.buf,
                        part,
                        write: u.write,
                        bytes: 4 * reached as u64,
                    }
                })
            })
            .collect()
    }

    fn line(&mut self, s: &str) {
        let _ = writeln!(self.body, "{:w$}{s}", "", w = self.indent * 4);
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    /// Let node `id` be `expr` at every index this kernel reaches it at (the
    /// caller has proved that all those indices hold that one value).
    pub fn substitute(&mut self, id: NodeId, expr: &str) {
        self.substitutes.insert(id, expr.to_string());
    }

    /// Let node `id` at index `idx` be the expression `expr` (already computed).
    pub fn preset(&mut self, id: NodeId, idx: &str, expr: &str) {
        let idx = if self.nodes[id.index()].shape.numel() == 1 {
            "0u"
        } else {
            idx
        };
        self.memo.insert((id, idx.to_string()), expr.to_string());
    }

    /// The statements emitted so far; the next ones start a fresh scope
    /// (nothing emitted before is reused after).
    pub fn take_body(&mut self) -> String {
        // A body of its own (an unrolled element, a lane) computes its
        // values afresh, on purpose: copies are counted per body.
        self.copies.clear();
        self.memo.clear();
        self.index_memo.clear();
        self.offsets.clear();
        std::mem::take(&mut self.body)
    }

    /// A name for the u32 index expression `expr` (shared when repeated).
    /// An index that is another plus a constant is written as its base
    /// plus the sum of the constants, so that equal indices get one name
    /// (and one load): a shifted slice of a shifted slice, read back at
    /// the kernel's own index, is `idx`.
    pub fn index(&mut self, expr: String) -> String {
        if is_identifier(&expr) {
            return expr;
        }
        let (expr, base_offset) = match self.offset_of(&expr) {
            Some((base, 0)) => return base,
            Some((base, k)) if k > 0 => (format!("{base} + {k}u"), Some((base, k))),
            Some((base, k)) => (format!("{base} - {}u", -k), Some((base, k))),
            None => (expr, None),
        };
        if let Some(v) = self.index_memo.get(&expr) {
            return v.clone();
        }
        let v = self.fresh("i");
        self.line(&format!("let {v}: u32 = {expr};"));
        self.index_memo.insert(expr, v.clone());
        if let Some(bo) = base_offset {
            self.offsets.insert(v.clone(), bo);
        }
        v
    }

    /// `expr` as (base index, constant) where it is `name ± c`.
    fn offset_of(&self, expr: &str) -> Option<(String, i64)> {
        let (name, sign, c) = match expr.split_once(" + ") {
            Some((n, c)) => (n, 1, c),
            None => {
                let (n, c) = expr.split_once(" - ")?;
                (n, -1, c)
            }
        };
        let c: i64 = c.strip_suffix('u')?.parse().ok()?;
        if !is_identifier(name) {
            return None;
        }
        Some(match self.offsets.get(name) {
            Some((base, k)) => (base.clone(), k + sign * c),
            None => (name.to_string(), sign * c),
        })
    }

    /// Emit lane `lane` (0 to 3) of a kernel over vec4s (not a subgroup's
    /// lane): a load of a buffer in `vectors` (buffer, name of the vec4
    /// holding elements 4q..4q+3) at `idx` plus a constant c reads component
    /// `lane + c` of that vec4 where it is one (`idx` is 4q + `lane`), and
    /// memory elsewhere. With no vectors, every load reads memory.
    pub fn set_vec4_lane(&mut self, lane: usize, vectors: &[(BufId, String)]) {
        self.vec4_lane = vectors
            .iter()
            .map(|(b, name)| (*b, (name.clone(), lane)))
            .collect();
    }

    /// Store `value` into element `idx` of buffer `buf`.
    pub fn store(&mut self, buf: BufId, idx: &str, value: &str) {
        let st = self.store_statement(buf, idx, value);
        self.line(&st);
    }

    /// The value of node `id` at flat index `idx` (a WGSL u32 expression).
    pub fn value(&mut self, id: NodeId, idx: &str) -> String {
        self.value_at(id, idx, true)
    }

    /// Like `value`, but computes a stored node from its operands (for the
    /// kernel that writes it).
    pub fn compute(&mut self, id: NodeId, idx: &str) -> String {
        self.value_at(id, idx, false)
    }

    fn value_at(&mut self, id: NodeId, idx: &str, load_stored: bool) -> String {
        // Once a problem is found the kernel is planned again: emitting the
        // rest would be wasted (and, for too many copies, exponential).
        if self.problem.is_some() {
            return "0.0".to_string();
        }
        if let Some(v) = self.substitutes.get(&id) {
            return v.clone();
        }
        if let Some(c) = self.folded(id) {
            return f32_literal(c);
        }
        let node = &self.nodes[id.index()];
        // A value of one element is the same at every index: one name for
        // it, so that it is computed (and counted) once.
        let idx = if node.shape.numel() == 1 { "0u" } else { idx };
        let key = (id, idx.to_string());
        if let Some(v) = self.memo.get(&key) {
            return v.clone();
        }
        if load_stored && self.stored.contains_key(&id) {
            let x = self.load_stored(id, idx);
            let v = self.fresh("v");
            self.line(&format!("let {v}: f32 = {x};"));
            self.memo.insert(key, v.clone());
            return v;
        }
        let copies = self.copies.entry(id).or_default();
        *copies += 1;
        if *copies > MAX_COPIES_PER_NODE {
            self.problem = self.problem.or(Some(Problem::TooManyCopies(id)));
        }
        if node.shape.numel() >= MAX_ELEMENTS {
            self.problem = self.problem.or(Some(Problem::TooLarge(id)));
        }
        let input = |k: usize| node.inputs[k];
        let in_shape = |k: usize| &self.nodes[node.inputs[k].index()].shape;
        let v = match &node.op {
            Op::Unary(u) => {
                let a = self.value(input(0), idx);
                self.assign(&u.wgsl(&a))
            }
            Op::Binary(b) => {
                let x = self.value(input(0), idx);
                let y = self.value(input(1), idx);
                let zero = |c: Option<f64>| c.is_some_and(|c| c as f32 == 0.0);
                let (cx, cy) = (self.folded(input(0)), self.folded(input(1)));
                // Where a literal meets a value, shader compilers fold as if
                // no value were infinite or NaN: x · 0 to 0, x / 0 and 0 / x
                // to 0, x - x to 0. IEEE's answers, without a fold to make.
                let expr = match b {
                    BinaryOp::Mul if zero(cy) => format!("wg_times_zero({x}, {y})"),
                    BinaryOp::Mul if zero(cx) => format!("wg_times_zero({y}, {x})"),
                    BinaryOp::Div if zero(cy) => {
                        let negative = cy.is_some_and(|c| c.is_sign_negative());
                        format!("{x} * wg_inf({negative})")
                    }
                    BinaryOp::Div if zero(cx) => format!("wg_zero_over({x}, {y})"),
                    BinaryOp::Sub if input(0) == input(1) => format!("wg_minus_itself({x})"),
                    _ => b.wgsl(&x, &y),
                };
                self.assign(&expr)
            }
            Op::Select => {
                let m = self.value(input(0), idx);
                let x = self.value(input(1), idx);
                let y = self.value(input(2), idx);
                self.assign(&format!("select({y}, {x}, wg_nonzero({m}))"))
            }
            Op::Reshape => self.value(input(0), idx),
            Op::Broadcast if in_shape(0).numel() == 1 => self.value(input(0), "0u"),
            Op::Broadcast => {
                let m = StridedMap::broadcast(in_shape(0), &node.shape);
                let src = self.strided(&m, idx);
                self.value(input(0), &src)
            }
            Op::Permute(perm) => {
                let m = StridedMap::permute(in_shape(0), perm);
                let src = self.strided(&m, idx);
                self.value(input(0), &src)
            }
            Op::Slice { axis, start } => {
                let m = StridedMap::slice(in_shape(0), *axis, *start, node.shape.0[*axis]);
                let src = self.strided(&m, idx);
                self.value(input(0), &src)
            }
            Op::Pad { axis, before } => {
                let (axis, before) = (*axis, *before);
                self.pad(
                    input(0),
                    in_shape(0).clone(),
                    axis,
                    before,
                    &node.shape,
                    idx,
                )
            }
            Op::Input(_) | Op::Param { .. } | Op::Reduce { .. } | Op::Const(_) => {
                unreachable!("{} nodes are stored by the schedule", node.op.name())
            }
        };
        self.memo.insert(key, v.clone());
        v
    }

    /// The value of `id` where it is computed from constants alone, folded
    /// here as the reference computes it (in f64, rounded once): a kernel
    /// gets one literal, never an expression of literals for the shader
    /// compiler to fold (naga refuses one whose value is not finite, such
    /// as `log(0.0)`, and drivers fold them with fewer IEEE guarantees).
    fn folded(&mut self, id: NodeId) -> Option<f64> {
        if let Some(&c) = self.constants.get(&id) {
            return c;
        }
        let nodes = self.nodes;
        let node = &nodes[id.index()];
        // A value of no elements is never read, and padding around one is
        // all zeros: no index arithmetic over empty axes (a division by 0).
        let empty = |j: NodeId| nodes[j.index()].shape.numel() == 0;
        if empty(id) || (matches!(node.op, Op::Pad { .. }) && empty(node.inputs[0])) {
            self.constants.insert(id, Some(0.0));
            return Some(0.0);
        }
        // The walk stops at stored values (so it is as shallow as the
        // kernel's expressions), but for a reduction over no elements.
        let known = |j: NodeId| {
            let n = &nodes[j.index()];
            !self.stored.contains_key(&j) || matches!(n.op, Op::Reduce { .. }) && empty(n.inputs[0])
        };
        let mut operand = |k: usize| {
            let j = node.inputs[k];
            if known(j) {
                self.folded(j)
            } else {
                None
            }
        };
        let c = match &node.op {
            Op::Const(c) => Some(*c),
            Op::Unary(u) => operand(0).map(|a| u.cpu(a)),
            Op::Binary(b) => operand(0).zip(operand(1)).map(|(x, y)| b.cpu(x, y)),
            Op::Select => match (operand(0), operand(1), operand(2)) {
                (Some(m), Some(a), Some(b)) => Some(if m != 0.0 { a } else { b }),
                _ => None,
            },
            // One value at every index.
            Op::Broadcast | Op::Reshape | Op::Permute(_) | Op::Slice { .. } => operand(0),
            // Over no elements: the fold's identity (a sum's 0), known here
            // rather than left for a compiler to fold with a loop of none.
            Op::Reduce { op, .. } if empty(node.inputs[0]) => Some(op.identity()),
            _ => None,
        };
        self.constants.insert(id, c);
        c
    }

    fn assign(&mut self, expr: &str) -> String {
        let v = self.fresh("v");
        self.line(&format!("let {v}: f32 = {expr};"));
        v
    }

    /// The source index of a strided map at output index `idx`.
    pub fn strided(&mut self, m: &StridedMap, idx: &str) -> String {
        if m.is_identity() {
            return idx.to_string();
        }
        let v = self.index(strided_expr(m, idx));
        // A block of the map's own rows and columns bounds its source as a
        // block; anything else as a flat range.
        let block = self
            .blocks
            .get(idx)
            .filter(|b| m.out_dims.last() == Some(&b.row_len));
        let bounds = match block {
            Some(b) => Some(m.block_source_range(b.rows, b.cols)),
            None => self.range_of(idx).map(|(lo, hi)| m.source_range(lo, hi)),
        };
        if let Some(bounds) = bounds {
            self.bound(&v, bounds);
        }
        v
    }

    /// Bound the index `name` by `bounds`, and by those it had: an index
    /// written as an existing one (`idx` for `idx - 1u + 1u`) may be bounded
    /// both ways. Inside a pad's branch the bounds can be narrower than
    /// outside: `pad` puts the ranges back as they were after the branch.
    fn bound(&mut self, name: &str, (lo, hi): (usize, usize)) {
        let b = match self.ranges.get(name) {
            // Disjoint bounds: the code is never reached (a pad's branch that
            // this window never takes); either bound will do.
            Some(&(l, h)) if l.max(lo) > h.min(hi) => (l, h),
            Some(&(l, h)) => (l.max(lo), h.min(hi)),
            None => (lo, hi),
        };
        self.ranges.insert(name.to_string(), b);
    }

    /// Pad: the source's value where the output index falls inside it, else 0.
    /// The source is computed only inside the branch, so its statements get
    /// a scope of their own.
    fn pad(
        &mut self,
        src: NodeId,
        in_shape: Shape,
        axis: usize,
        before: usize,
        out: &Shape,
        idx: &str,
    ) -> String {
        let inner: usize = out.0[axis + 1..].iter().product();
        let (len, out_len) = (in_shape.0[axis], out.0[axis]);
        // Where the index stays below one block of the padded axis, its
        // outer axes are 0 and the division's remainder is the quotient.
        let one_block = self
            .range_of(idx)
            .is_some_and(|(_, hi)| hi < out_len * inner);
        let simple = inner == 1 && one_block;
        let a = self.index(if simple {
            idx.to_string()
        } else {
            format!("({idx} / {inner}u) % {out_len}u")
        });
        // The source index (inside the branch).
        let s = if simple {
            format!("{a} - {before}u")
        } else {
            format!(
                "({idx} / {}u) * {}u + ({a} - {before}u) * {inner}u + {idx} % {inner}u",
                out_len * inner,
                len * inner
            )
        };
        let v = self.fresh("v");
        self.line(&format!("var {v}: f32 = 0.0;"));
        self.line(&format!(
            "if ({a} >= {before}u && {a} < {}u) {{",
            before + len
        ));
        let (memo, index_memo, offsets, ranges) = (
            self.memo.clone(),
            self.index_memo.clone(),
            self.offsets.clone(),
            self.ranges.clone(),
        );
        self.indent += 1;
        let s = self.index(s);
        if let Some((lo, hi)) = self.range_of(idx) {
            let map = PadMap::new(&in_shape, axis, before, out_len);
            self.bound(&s, map.source_range(lo, hi));
        }
        let x = self.value(src, &s);
        self.line(&format!("{v} = {x};"));
        self.indent -= 1;
        self.line("}");
        self.memo = memo;
        self.index_memo = index_memo;
        self.offsets = offsets;
        self.ranges = ranges;
        v
    }

    /// The `@binding` declarations for the buffers used; a buffer split over
    /// several bindings gets functions that pick the part by index (only the
    /// parts bound: the others are out of the kernel's reach).
    pub fn declarations(&self) -> String {
        let mut s = String::new();
        let mut slot = 0;
        for u in &self.used {
            let (buf, write) = (u.buf, u.write);
            let parts = u.parts(self.layout.chunk);
            let (first, last) = (*parts.start(), *parts.end());
            let access = if write { "read_write" } else { "read" };
            let array = match u.view {
                View::Vec4 => Some(("v", "vec4<f32>")),
                View::Atomic => Some(("a", "atomic<u32>")),
                View::F32 => None,
            };
            if let Some((suffix, element)) = array {
                let _ = writeln!(
                    s,
                    "@group(0) @binding({slot}) var<storage, {access}> t{buf}{suffix}: array<{element}>;"
                );
                slot += 1;
                continue;
            }
            if self.layout.parts(buf) == 1 {
                let _ = writeln!(
                    s,
                    "@group(0) @binding({slot}) var<storage, {access}> t{buf}: array<f32>;"
                );
                slot += 1;
                continue;
            }
            for p in first..=last {
                let _ = writeln!(
                    s,
                    "@group(0) @binding({slot}) var<storage, {access}> t{buf}_{p}: array<f32>;"
                );
                slot += 1;
            }
            let (shift, mask) = (self.layout.chunk.trailing_zeros(), self.layout.chunk - 1);
            // A switch on the part, or (a window that reaches one part of
            // the buffer) that part alone.
            let pick = |body: &dyn Fn(usize) -> String| {
                if first == last {
                    return format!("    {}\n", body(first));
                }
                let arms: String = (first..=last)
                    .map(|p| {
                        let label = if p == last {
                            "default".to_string()
                        } else {
                            format!("case {p}u")
                        };
                        format!("        {label}: {{ {} }}\n", body(p))
                    })
                    .collect();
                format!("    switch (i >> {shift}u) {{\n{arms}    }}\n")
            };
            let _ = writeln!(
                s,
                "fn ld_t{buf}(i: u32) -> f32 {{\n{}}}",
                pick(&|p| format!("return t{buf}_{p}[i & {mask}u];"))
            );
            if write {
                let _ = writeln!(
                    s,
                    "fn st_t{buf}(i: u32, v: f32) {{\n{}}}",
                    pick(&|p| format!("t{buf}_{p}[i & {mask}u] = v;"))
                );
            }
        }
        s
    }
}

/// Rows `rows` (a flat range over all axes but the last) by columns `cols`
/// (of the last axis, `row_len` long) of a shape, both inclusive.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Block {
    pub rows: (usize, usize),
    pub cols: (usize, usize),
    pub row_len: usize,
}

/// How a kernel's binding sees a buffer's elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    F32,
    Vec4,
    /// As counters (`atomic<u32>`).
    Atomic,
}

/// A buffer a kernel uses: whether it writes it, and the elements it can
/// reach; through one view.
#[derive(Clone, Debug)]
struct Use {
    buf: BufId,
    view: View,
    write: bool,
    reach: Range<usize>,
}

impl Use {
    /// The parts (of `chunk` elements) it binds: those it can reach, at
    /// least one.
    fn parts(&self, chunk: usize) -> RangeInclusive<usize> {
        self.reach.start / chunk..=self.reach.end.max(self.reach.start + 1).div_ceil(chunk) - 1
    }
}

/// The size of every buffer, and how many elements one binding may hold.
#[derive(Clone, Copy)]
pub(crate) struct Layout<'a> {
    pub buffers: &'a [BufSpec],
    /// Elements per binding: a power of two, so the part is `i >> log2(chunk)`.
    pub chunk: usize,
}

impl Layout<'_> {
    /// How many bindings buffer `buf` takes.
    pub fn parts(&self, buf: BufId) -> usize {
        self.buffers[buf].parts(self.chunk)
    }
}

/// Whether `s` is a WGSL name (an index variable), not an expression.
fn is_identifier(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.chars().next().is_some_and(|c| !c.is_ascii_digit())
}

/// `Σ_k ((idx / stride_k) % dim_k) * src_k + offset` with the trivial parts left out.
pub(crate) fn strided_expr(m: &StridedMap, idx: &str) -> String {
    // Over the fewest axes: each axis costs a division and a remainder.
    let m = &m.simplified();
    // A map over no elements is never applied (its strides would divide by 0).
    if m.out_dims.contains(&0) {
        return format!("{}u", m.offset);
    }
    let out_strides = Shape(m.out_dims.clone()).strides();
    let mut terms = Vec::new();
    for (k, ((&dim, &src), &stride)) in m
        .out_dims
        .iter()
        .zip(&m.src_strides)
        .zip(&out_strides)
        .enumerate()
    {
        if src == 0 || dim == 1 {
            continue;
        }
        let mut t = idx.to_string();
        if stride != 1 {
            t = format!("({t} / {stride}u)");
        }
        if k != 0 {
            t = format!("({t} % {dim}u)");
        }
        if src != 1 {
            t = format!("{t} * {src}u");
        }
        terms.push(t);
    }
    if m.offset != 0 || terms.is_empty() {
        terms.push(format!("{}u", m.offset));
    }
    terms.join(" + ")
}

/// Fill a template's `{{NAME}}` holes (`PRELUDE` with `WGSL_PRELUDE`), and
/// the holes of what fills them; every hole must be filled. One pass over
/// the text: planning fills a template for every kernel it tries.
pub(crate) fn fill(template: &str, holes: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + WGSL_PRELUDE.len());
    fill_into(&mut out, template, holes);
    out
}

fn fill_into(out: &mut String, template: &str, holes: &[(&str, &str)]) {
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        let name = &after[..end];
        let value = match name {
            "PRELUDE" => Some(WGSL_PRELUDE),
            _ => holes.iter().find(|(n, _)| *n == name).map(|(_, v)| *v),
        };
        match value {
            Some(v) => fill_into(out, v, holes),
            None => {
                debug_assert!(false, "unfilled hole `{name}` in template:\n{template}");
                out.push_str(&rest[start..start + end + 4]);
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
}

/// Check a generated shader with naga before wgpu sees it.
pub(crate) fn validate(source: &str) -> crate::Result<()> {
    let invalid = |message: String| crate::Error::InvalidShader {
        message,
        source_code: source.to_string(),
    };
    let module =
        naga::front::wgsl::parse_str(source).map_err(|e| invalid(e.emit_to_string(source)))?;
    // Subgroup operations are allowed here; the planner writes them only
    // for a device that has them.
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default() | naga::valid::Capabilities::SUBGROUP,
    )
    .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
    .subgroup_operations(naga::valid::SubgroupOperationSet::all())
    .validate(&module)
    .map_err(|e| invalid(e.emit_to_string(source)))?;
    Ok(())
}
