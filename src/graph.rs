//! The recorded graph: an arena of nodes addressed by [`NodeId`], and [`Var`],
//! a `Copy` handle with operator overloading for recording into it.

use crate::error::{Error, Result};
use crate::ops::{BinaryOp, Op, UnaryOp};
use crate::shape::Shape;
use std::cell::{Cell, Ref, RefCell};
use std::fmt;
use std::panic::Location;

/// The index of a node in its graph's arena.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct NodeId(pub(crate) u32);

impl NodeId {
    /// The position in the arena (also a topological order: operands come first).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One recorded operation.
#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub shape: Shape,
    /// Where the user recorded it (for `grad`'s nodes: where `grad` was called).
    pub location: &'static Location<'static>,
}

/// A static graph of tensor operations, recorded once and compiled for a device.
///
/// Nodes are only ever appended, so a node's operands always come before it.
/// The arena sits in a `RefCell` so that [`Var`] handles can record through a
/// shared reference; every borrow is short and internal.
#[derive(Default)]
pub struct Graph {
    nodes: RefCell<Vec<Node>>,
    /// While `grad` records backward nodes, they take its caller's location.
    location_override: Cell<Option<&'static Location<'static>>>,
}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.nodes.borrow().iter().enumerate() {
            let ins: Vec<_> = n.inputs.iter().map(|x| format!("%{}", x.0)).collect();
            writeln!(f, "%{i} = {:?}({}) : {}", n.op, ins.join(", "), n.shape)?;
        }
        Ok(())
    }
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Number of nodes recorded so far.
    pub fn len(&self) -> usize {
        self.nodes.borrow().len()
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An error unless every one of `vars` was recorded in this graph.
    #[track_caller]
    pub(crate) fn own<'a, 'g: 'a>(
        &self,
        mut vars: impl Iterator<Item = &'a Var<'g>>,
    ) -> Result<()> {
        if vars.any(|v| !std::ptr::eq(v.graph(), self)) {
            return Err(Error::Graph {
                detail: "a node of another graph was given".into(),
                location: Location::caller(),
            });
        }
        Ok(())
    }

    /// The recorded nodes.
    pub fn nodes(&self) -> Ref<'_, Vec<Node>> {
        self.nodes.borrow()
    }

    /// The handle of a recorded node.
    pub fn var(&self, id: NodeId) -> Var<'_> {
        assert!(id.index() < self.len(), "node {id:?} is not in this graph");
        Var { id, graph: self }
    }

    /// A named input: data given to every run. Panics if the name is taken.
    #[track_caller]
    pub fn input(&self, name: &str, shape: impl Into<Shape>) -> Var<'_> {
        self.try_input(name, shape)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A named input, or an error if the name is taken.
    #[track_caller]
    pub fn try_input(&self, name: &str, shape: impl Into<Shape>) -> Result<Var<'_>> {
        self.leaf(
            Op::Input(name.to_string()),
            name,
            shape.into(),
            Location::caller(),
        )
    }

    /// A named parameter: a value that stays in the program (on the GPU)
    /// between runs, set with `Program::set_param` and updated by the program's
    /// updates. Panics if the name is taken.
    #[track_caller]
    pub fn param(&self, name: &str, shape: impl Into<Shape>) -> Var<'_> {
        self.try_param(name, shape)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A named parameter, or an error if the name is taken.
    #[track_caller]
    pub fn try_param(&self, name: &str, shape: impl Into<Shape>) -> Result<Var<'_>> {
        self.leaf(
            Op::Param {
                name: name.to_string(),
                starts_at_zero: false,
            },
            name,
            shape.into(),
            Location::caller(),
        )
    }

    /// A parameter that starts at zero, such as an optimizer's state; it
    /// needs no `set_param`. Panics if the name is taken.
    #[track_caller]
    pub fn state(&self, name: &str, shape: impl Into<Shape>) -> Var<'_> {
        self.try_state(name, shape)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A zero-started parameter, or an error if the name is taken.
    #[track_caller]
    pub fn try_state(&self, name: &str, shape: impl Into<Shape>) -> Result<Var<'_>> {
        self.state_at(name, shape.into(), Location::caller())
    }

    /// `try_state`, its errors naming `location`.
    pub(crate) fn state_at(
        &self,
        name: &str,
        shape: Shape,
        location: &'static Location<'static>,
    ) -> Result<Var<'_>> {
        let op = Op::Param {
            name: name.to_string(),
            starts_at_zero: true,
        };
        self.leaf(op, name, shape, location)
    }

    fn leaf(
        &self,
        op: Op,
        name: &str,
        shape: Shape,
        location: &'static Location<'static>,
    ) -> Result<Var<'_>> {
        let taken = self.nodes.borrow().iter().any(|n| match &n.op {
            Op::Input(m) | Op::Param { name: m, .. } => m == name,
            _ => false,
        });
        if taken {
            return Err(Error::DuplicateName {
                name: name.to_string(),
                location,
            });
        }
        checked_size(op.name(), &shape, location)?;
        Ok(self.push(op, vec![], shape))
    }

    /// A scalar constant.
    #[track_caller]
    pub fn constant(&self, value: f64) -> Var<'_> {
        self.push(Op::Const(value), vec![], Shape::scalar())
    }

    /// A tensor of one value.
    #[track_caller]
    pub fn full(&self, value: f64, shape: impl Into<Shape>) -> Var<'_> {
        self.constant(value).broadcast_to(shape)
    }

    /// Append a node whose shape has been checked.
    #[track_caller]
    pub(crate) fn push(&self, op: Op, inputs: Vec<NodeId>, shape: Shape) -> Var<'_> {
        // `Location::caller` called here, not passed to `unwrap_or_else`:
        // there it would name the closure's caller inside core.
        let location = match self.location_override.get() {
            Some(location) => location,
            None => Location::caller(),
        };
        let mut nodes = self.nodes.borrow_mut();
        let id = NodeId(u32::try_from(nodes.len()).expect("more than 2^32 nodes"));
        nodes.push(Node {
            op,
            inputs,
            shape,
            location,
        });
        Var { id, graph: self }
    }

    /// Record with every new node attributed to `location` (used by `grad`).
    pub(crate) fn recording_at<T>(
        &self,
        location: &'static Location<'static>,
        f: impl FnOnce() -> T,
    ) -> T {
        let before = self.location_override.replace(Some(location));
        let out = f();
        self.location_override.set(before);
        out
    }
}

/// A handle to a node of a [`Graph`], for recording. It is `Copy`, so
/// expressions read as math: `let f = (x + y) * y.max(z);`.
#[derive(Clone, Copy)]
pub struct Var<'g> {
    pub(crate) id: NodeId,
    pub(crate) graph: &'g Graph,
}

impl fmt::Debug for Var<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Var(%{} {})", self.id.0, self.shape())
    }
}

/// Things that can stand as an operand: a [`Var`] or a number (a constant).
pub trait IntoVar<'g> {
    /// The operand in `graph`, or an error for a [`Var`] of another graph.
    fn into_var(self, graph: &'g Graph) -> Result<Var<'g>>;
}
impl<'g> IntoVar<'g> for Var<'g> {
    #[track_caller]
    fn into_var(self, graph: &'g Graph) -> Result<Var<'g>> {
        graph.own(std::iter::once(&self))?;
        Ok(self)
    }
}
impl<'g> IntoVar<'g> for f64 {
    #[track_caller]
    fn into_var(self, graph: &'g Graph) -> Result<Var<'g>> {
        Ok(graph.constant(self))
    }
}
impl<'g> IntoVar<'g> for f32 {
    #[track_caller]
    fn into_var(self, graph: &'g Graph) -> Result<Var<'g>> {
        Ok(graph.constant(self as f64))
    }
}

macro_rules! unary_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[track_caller]
        pub fn $name(self) -> Var<'g> {
            self.unary(UnaryOp::$op)
        }
    )*};
}

macro_rules! binary_methods {
    ($($(#[$doc:meta])* $name:ident $try_name:ident => $op:ident),* $(,)?) => {$(
        $(#[$doc])*
        /// Operands broadcast by NumPy's rules; panics with the caller's line otherwise.
        #[track_caller]
        pub fn $name(self, rhs: impl IntoVar<'g>) -> Var<'g> {
            self.$try_name(rhs).unwrap_or_else(|e| panic!("{e}"))
        }
        #[track_caller]
        pub fn $try_name(self, rhs: impl IntoVar<'g>) -> Result<Var<'g>> {
            self.try_binary(BinaryOp::$op, rhs)
        }
    )*};
}

#[allow(clippy::should_implement_trait)] // add/sub/… are also operators; the methods take numbers too
impl<'g> Var<'g> {
    /// The node this handle refers to.
    pub fn id(self) -> NodeId {
        self.id
    }
    /// The graph it belongs to.
    pub fn graph(self) -> &'g Graph {
        self.graph
    }
    /// Its shape.
    pub fn shape(self) -> Shape {
        self.graph.nodes.borrow()[self.id.index()].shape.clone()
    }
    /// Its number of elements.
    pub fn numel(self) -> usize {
        self.graph.nodes.borrow()[self.id.index()].shape.numel()
    }

    #[track_caller]
    fn unary(self, op: UnaryOp) -> Var<'g> {
        self.graph.push(Op::Unary(op), vec![self.id], self.shape())
    }

    unary_methods! {
        neg => Neg, abs => Abs, sign => Sign, exp => Exp, log => Log, sqrt => Sqrt,
        rsqrt => Rsqrt, recip => Recip, square => Square, sin => Sin, cos => Cos,
        tanh => Tanh, sigmoid => Sigmoid, relu => Relu,
        /// `log(1 + exp(x))`, computed without overflow.
        softplus => Softplus,
        /// The same value, with no gradient flowing through (`stop_gradient`).
        detach => Detach,
    }

    /// `self^c` for a constant exponent (a negative base is fine when `c` is an integer).
    #[track_caller]
    pub fn powf(self, c: f64) -> Var<'g> {
        self.unary(UnaryOp::PowConst(c))
    }

    binary_methods! {
        add try_add => Add, sub try_sub => Sub, mul try_mul => Mul, div try_div => Div,
        /// The larger operand; at ties the gradient splits equally.
        max try_max => Max,
        /// The smaller operand; at ties the gradient splits equally.
        min try_min => Min,
        /// `self^rhs`, element-wise.
        pow try_pow => Pow,
        /// Mask: 1 where `self < rhs`, else 0 (no gradient).
        lt try_lt => Lt,
        /// Mask: 1 where `self <= rhs`.
        le try_le => Le,
        /// Mask: 1 where `self > rhs`.
        gt try_gt => Gt,
        /// Mask: 1 where `self >= rhs`.
        ge try_ge => Ge,
        /// Mask: 1 where `self == rhs`.
        eq try_eq => Eq,
    }

    /// A binary op after broadcasting both operands to a common shape.
    #[track_caller]
    pub fn try_binary(self, op: BinaryOp, rhs: impl IntoVar<'g>) -> Result<Var<'g>> {
        let location = Location::caller();
        let rhs = rhs.into_var(self.graph)?;
        let (a, b) = (self.shape(), rhs.shape());
        let out = Shape::broadcast(&a, &b).ok_or_else(|| Error::Shape {
            op: op.name(),
            detail: "operands do not broadcast".into(),
            lhs: a.clone(),
            rhs: b.clone(),
            location,
        })?;
        let (x, y) = (self.try_broadcast_to(&out)?, rhs.try_broadcast_to(&out)?);
        Ok(self.graph.push(Op::Binary(op), vec![x.id, y.id], out))
    }

    /// `a` where `self != 0`, else `b`; all three broadcast together. The
    /// gradient flows to `a` and `b`, never to the mask.
    #[track_caller]
    pub fn select(self, a: impl IntoVar<'g>, b: impl IntoVar<'g>) -> Var<'g> {
        self.try_select(a, b).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `select`, or an error if the shapes do not broadcast.
    #[track_caller]
    pub fn try_select(self, a: impl IntoVar<'g>, b: impl IntoVar<'g>) -> Result<Var<'g>> {
        let location = Location::caller();
        let (a, b) = (a.into_var(self.graph)?, b.into_var(self.graph)?);
        let err = |l: Shape, r: Shape| Error::Shape {
            op: "select",
            detail: "operands do not broadcast".into(),
            lhs: l,
            rhs: r,
            location,
        };
        let ab =
            Shape::broadcast(&a.shape(), &b.shape()).ok_or_else(|| err(a.shape(), b.shape()))?;
        let out = Shape::broadcast(&self.shape(), &ab).ok_or_else(|| err(self.shape(), ab))?;
        let mut ids = Vec::new();
        for v in [self, a, b] {
            ids.push(v.try_broadcast_to(&out)?.id);
        }
        Ok(self.graph.push(Op::Select, ids, out))
    }

    // ---- shape ops ----------------------------------------------------

    /// Broadcast to `shape` by NumPy's rules (a no-op if the shape is already that).
    #[track_caller]
    pub fn broadcast_to(self, shape: impl Into<Shape>) -> Var<'g> {
        self.try_broadcast_to(shape)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `broadcast_to`, or an error if the shape does not broadcast.
    #[track_caller]
    pub fn try_broadcast_to(self, shape: impl Into<Shape>) -> Result<Var<'g>> {
        let location = Location::caller();
        let (from, to) = (self.shape(), shape.into());
        if from == to {
            return Ok(self);
        }
        if !from.broadcasts_to(&to) {
            return Err(Error::Shape {
                op: "broadcast_to",
                detail: "cannot broadcast".into(),
                lhs: from,
                rhs: to,
                location,
            });
        }
        checked_size("broadcast_to", &to, location)?;
        Ok(self.graph.push(Op::Broadcast, vec![self.id], to))
    }

    /// The same elements in another shape of the same size.
    #[track_caller]
    pub fn reshape(self, shape: impl Into<Shape>) -> Var<'g> {
        self.try_reshape(shape).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `reshape`, or an error if the sizes differ.
    #[track_caller]
    pub fn try_reshape(self, shape: impl Into<Shape>) -> Result<Var<'g>> {
        let location = Location::caller();
        let (from, to) = (self.shape(), shape.into());
        if from == to {
            return Ok(self);
        }
        checked_size("reshape", &to, location)?;
        if from.numel() != to.numel() {
            return Err(Error::Shape {
                op: "reshape",
                detail: "element counts differ".into(),
                lhs: from,
                rhs: to,
                location,
            });
        }
        Ok(self.graph.push(Op::Reshape, vec![self.id], to))
    }

    /// Reorder axes: output axis `k` is input axis `perm[k]`.
    #[track_caller]
    pub fn permute(self, perm: &[usize]) -> Var<'g> {
        self.try_permute(perm).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `permute`, or an error if `perm` is not a permutation of the axes.
    #[track_caller]
    pub fn try_permute(self, perm: &[usize]) -> Result<Var<'g>> {
        let location = Location::caller();
        let shape = self.shape();
        let mut seen = vec![false; shape.rank()];
        let ok = perm.len() == shape.rank()
            && perm
                .iter()
                .all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true));
        if !ok {
            return Err(Error::Argument {
                op: "permute",
                detail: format!("{perm:?} is not a permutation of the axes of shape {shape}"),
                location,
            });
        }
        if perm.iter().enumerate().all(|(k, &p)| k == p) {
            return Ok(self);
        }
        let out = Shape(perm.iter().map(|&p| shape.0[p]).collect());
        Ok(self
            .graph
            .push(Op::Permute(perm.to_vec()), vec![self.id], out))
    }

    /// Swap the last two axes (a matrix transpose, batched).
    #[track_caller]
    pub fn transpose(self) -> Var<'g> {
        self.try_transpose().unwrap_or_else(|e| panic!("{e}"))
    }

    /// `transpose`, or an error below rank 2.
    #[track_caller]
    pub fn try_transpose(self) -> Result<Var<'g>> {
        let r = self.shape().rank();
        if r < 2 {
            return Err(Error::Argument {
                op: "transpose",
                detail: format!("needs rank >= 2, got shape {}", self.shape()),
                location: Location::caller(),
            });
        }
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        self.try_permute(&perm)
    }

    /// Elements `start..end` along `axis` (negative axes count from the end).
    #[track_caller]
    pub fn slice(self, axis: isize, start: usize, end: usize) -> Var<'g> {
        self.try_slice(axis, start, end)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `slice`, or an error for a bad axis or range.
    #[track_caller]
    pub fn try_slice(self, axis: isize, start: usize, end: usize) -> Result<Var<'g>> {
        let location = Location::caller();
        let mut shape = self.shape();
        let axis = self.axis("slice", axis)?;
        if start > end || end > shape.0[axis] {
            return Err(Error::Argument {
                op: "slice",
                detail: format!("range {start}..{end} is outside axis {axis} of shape {shape}"),
                location,
            });
        }
        if start == 0 && end == shape.0[axis] {
            return Ok(self);
        }
        shape.0[axis] = end - start;
        Ok(self
            .graph
            .push(Op::Slice { axis, start }, vec![self.id], shape))
    }

    /// Zeros around `self` along `axis`: `before` in front, `after` behind.
    #[track_caller]
    pub fn pad(self, axis: isize, before: usize, after: usize) -> Var<'g> {
        self.try_pad(axis, before, after)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `pad`, or an error for a bad axis or a result too large.
    #[track_caller]
    pub fn try_pad(self, axis: isize, before: usize, after: usize) -> Result<Var<'g>> {
        let location = Location::caller();
        let mut shape = self.shape();
        let axis = self.axis("pad", axis)?;
        if before == 0 && after == 0 {
            return Ok(self);
        }
        let len = shape.0[axis]
            .checked_add(before)
            .and_then(|l| l.checked_add(after));
        let Some(len) = len else {
            return Err(Error::Argument {
                op: "pad",
                detail: format!(
                    "{before} before and {after} after axis {axis} of shape {shape} overflow"
                ),
                location,
            });
        };
        shape.0[axis] = len;
        checked_size("pad", &shape, location)?;
        Ok(self
            .graph
            .push(Op::Pad { axis, before }, vec![self.id], shape))
    }

    /// Join tensors along `axis`; all other dimensions must agree.
    #[track_caller]
    pub fn concat(parts: &[Var<'g>], axis: isize) -> Var<'g> {
        Var::try_concat(parts, axis).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `concat`, or an error if the shapes do not fit.
    #[track_caller]
    pub fn try_concat(parts: &[Var<'g>], axis: isize) -> Result<Var<'g>> {
        let location = Location::caller();
        let first = *parts.first().ok_or_else(|| Error::Argument {
            op: "concat",
            detail: "nothing to concatenate".into(),
            location,
        })?;
        first.graph.own(parts.iter())?;
        let ax = first.axis("concat", axis)?;
        let s0 = first.shape();
        let mut total = 0;
        for p in parts {
            let s = p.shape();
            let fits = s.rank() == s0.rank() && (0..s.rank()).all(|k| k == ax || s.0[k] == s0.0[k]);
            if !fits {
                return Err(Error::Shape {
                    op: "concat",
                    detail: format!("dimensions other than axis {ax} must agree"),
                    lhs: s0,
                    rhs: s,
                    location,
                });
            }
            total += s.0[ax]; // within the size of the parts' graph
        }
        // A sum of zero-padded parts: fused on the GPU, each element reads one part.
        let mut before = 0;
        let mut out: Option<Var<'g>> = None;
        for p in parts {
            let len = p.shape().0[ax];
            let padded = p.try_pad(ax as isize, before, total - before - len)?;
            out = Some(out.map_or(padded, |o| o + padded));
            before += len;
        }
        Ok(out.expect("at least one part"))
    }

    /// Resolve a possibly negative axis.
    #[track_caller]
    pub(crate) fn axis(self, op: &'static str, axis: isize) -> Result<usize> {
        let location = Location::caller();
        let rank = self.shape().rank() as isize;
        let a = if axis < 0 { axis + rank } else { axis };
        if a < 0 || a >= rank {
            return Err(Error::Argument {
                op,
                detail: format!("axis {axis} is out of range for shape {}", self.shape()),
                location,
            });
        }
        Ok(a as usize)
    }

    #[track_caller]
    pub(crate) fn axes(self, op: &'static str, axes: &[isize]) -> Result<Vec<usize>> {
        let location = Location::caller();
        let mut out = Vec::new();
        for &a in axes {
            let a = self.axis(op, a)?;
            if out.contains(&a) {
                return Err(Error::Argument {
                    op,
                    detail: format!("axis {a} is named twice"),
                    location,
                });
            }
            out.push(a);
        }
        out.sort_unstable();
        Ok(out)
    }
}

/// An error unless a tensor of `shape` can exist: its element count at
/// most `Shape::MAX_NUMEL`, computed without overflow.
fn checked_size(
    op: &'static str,
    shape: &Shape,
    location: &'static Location<'static>,
) -> Result<()> {
    // Its axes of length 0 counted as 1: every product of a shape's axes
    // (strides, a reduction's fold) fits then, empty or not.
    let mut sizes = shape.0.iter().map(|&d| d.max(1));
    match sizes.try_fold(1usize, |n, d| n.checked_mul(d)) {
        Some(n) if n <= Shape::MAX_NUMEL => Ok(()),
        _ => Err(Error::Argument {
            op,
            detail: format!(
                "shape {shape} has more than {} elements, or would but for its empty axes \
                 (its f64 bytes must fit an isize)",
                Shape::MAX_NUMEL
            ),
            location,
        }),
    }
}

macro_rules! operator {
    ($trait:ident $method:ident) => {
        impl<'g> std::ops::$trait<Var<'g>> for Var<'g> {
            type Output = Var<'g>;
            #[track_caller]
            fn $method(self, rhs: Var<'g>) -> Var<'g> {
                Var::$method(self, rhs)
            }
        }
        impl<'g> std::ops::$trait<f64> for Var<'g> {
            type Output = Var<'g>;
            #[track_caller]
            fn $method(self, rhs: f64) -> Var<'g> {
                Var::$method(self, rhs)
            }
        }
        impl<'g> std::ops::$trait<Var<'g>> for f64 {
            type Output = Var<'g>;
            #[track_caller]
            fn $method(self, rhs: Var<'g>) -> Var<'g> {
                Var::$method(rhs.graph.constant(self), rhs)
            }
        }
    };
}
operator!(Add add);
operator!(Sub sub);
operator!(Mul mul);
operator!(Div div);

impl<'g> std::ops::Neg for Var<'g> {
    type Output = Var<'g>;
    #[track_caller]
    fn neg(self) -> Var<'g> {
        Var::neg(self)
    }
}
