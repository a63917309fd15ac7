//! The op table. Every op is a variant here, and this file alone says, for
//! each, how its output shape follows from its inputs, how the CPU reference
//! evaluates it, which WGSL expression computes it, and its vector-Jacobian
//! product (written with the same ops, so gradients of gradients work).
//!
//! Element-wise ops take operands of one shape: broadcasting is an explicit
//! [`Op::Broadcast`] node that the recording API inserts, and whose
//! vector-Jacobian product (a sum over the broadcast axes) is the only place
//! broadcasting is undone.

use crate::graph::Var;
use crate::shape::Shape;

/// Ops of one operand, applied element by element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Neg,
    Abs,
    Sign,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Recip,
    Square,
    Sin,
    Cos,
    Tanh,
    Sigmoid,
    Relu,
    Softplus,
    /// `x^c` for a constant exponent `c`.
    PowConst(f64),
    /// The identity whose gradient is zero (`stop_gradient`).
    Detach,
}

/// Ops of two operands of one shape, applied element by element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// At ties the gradient splits equally between the operands.
    Max,
    /// At ties the gradient splits equally between the operands.
    Min,
    Pow,
    /// Comparisons give masks (1.0 where true, else 0.0) with no gradient.
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

/// Reductions over a set of axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    /// The gradient splits equally between tied maxima.
    Max,
    /// The gradient splits equally between tied minima.
    Min,
}

/// One node's operation. The node's own shape completes the description
/// (a reshape's or broadcast's target, a slice's or pad's length).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Data given to every run, by name.
    Input(String),
    /// A value that lives in the program between runs, by name. It starts
    /// at zero (optimizer state) or must be set before the first run.
    Param {
        name: String,
        starts_at_zero: bool,
    },
    /// A scalar constant.
    Const(f64),
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// `select(mask, a, b)`: `a` where `mask != 0`, else `b`.
    Select,
    /// Reduce over `axes`, keeping them as size-1 dimensions.
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
    },
    /// Same elements in the same order, another shape.
    Reshape,
    /// Output axis `k` is input axis `perm[k]`.
    Permute(Vec<usize>),
    /// Broadcast to the node's shape (right-aligned, NumPy rules).
    Broadcast,
    /// The node's length of elements along `axis`, from `start`.
    Slice {
        axis: usize,
        start: usize,
    },
    /// Zeros around the input along `axis`: `before` in front, the rest behind.
    Pad {
        axis: usize,
        before: usize,
    },
}

impl UnaryOp {
    /// The name used in errors and generated code comments.
    pub fn name(self) -> &'static str {
        use UnaryOp::*;
        match self {
            Neg => "neg",
            Abs => "abs",
            Sign => "sign",
            Exp => "exp",
            Log => "log",
            Sqrt => "sqrt",
            Rsqrt => "rsqrt",
            Recip => "recip",
            Square => "square",
            Sin => "sin",
            Cos => "cos",
            Tanh => "tanh",
            Sigmoid => "sigmoid",
            Relu => "relu",
            Softplus => "softplus",
            PowConst(_) => "pow",
            Detach => "detach",
        }
    }

    /// The CPU math, in f64 (the reference) or f32 (the fast path).
    #[inline(always)]
    pub fn cpu<T: Real>(self, x: T) -> T {
        use UnaryOp::*;
        let (zero, one) = (T::from_f64(0.0), T::from_f64(1.0));
        match self {
            Neg => -x,
            Abs => x.abs(),
            Sign => sign(x),
            Exp => x.exp_of(),
            Log => x.ln_of(),
            Sqrt => x.sqrt(),
            Rsqrt => one / x.sqrt(),
            Recip => one / x,
            Square => x * x,
            Sin => x.sin_of(),
            Cos => x.cos_of(),
            Tanh => x.tanh_of(),
            Sigmoid => one / (one + (-x).exp_of()),
            Relu => max(x, zero),
            Softplus => max(x, zero) + (-x.abs()).exp_of().ln_1p_of(),
            PowConst(c) => x.powf(T::from_f64(c)),
            Detach => x,
        }
    }

    /// The WGSL expression of `x` (an f32 expression). Where WGSL leaves
    /// a special value's result to the implementation, a helper of the
    /// prelude gives the CPU's (see `WGSL_PRELUDE`).
    pub fn wgsl(self, x: &str) -> String {
        use UnaryOp::*;
        match self {
            Neg => format!("-{x}"),
            Abs => format!("abs({x})"),
            Sign => format!("wg_sign({x})"),
            Exp => format!("exp({x})"),
            Log => format!("log({x})"),
            Sqrt => format!("sqrt({x})"),
            Rsqrt => format!("inverseSqrt({x})"),
            Recip => format!("1.0 / {x}"),
            Square => format!("{x} * {x}"),
            Sin => format!("sin({x})"),
            Cos => format!("cos({x})"),
            Tanh => format!("wg_tanh({x})"),
            Sigmoid => format!("1.0 / (1.0 + exp(-{x}))"),
            Relu => format!("max({x}, 0.0)"),
            Softplus => format!("wg_softplus({x})"),
            PowConst(c) => format!("wg_pow({x}, {})", f32_literal(c)),
            Detach => x.to_string(),
        }
    }

    /// The gradient reaching the operand `x`, given the gradient `g` of the
    /// result `y`. `None`: no gradient flows (a constant function almost everywhere).
    pub fn vjp<'g>(self, g: Var<'g>, x: Var<'g>, y: Var<'g>) -> Option<Var<'g>> {
        use UnaryOp::*;
        Some(match self {
            Neg => -g,
            Abs => g * x.sign(),
            Sign | Detach => return None,
            Exp => g * y,
            Log => g / x,
            Sqrt => g * 0.5 / y,
            Rsqrt => g * -0.5 * y / x,
            Recip => -g * y * y,
            Square => g * 2.0 * x,
            Sin => g * x.cos(),
            Cos => -g * x.sin(),
            Tanh => g * (1.0 - y.square()),
            Sigmoid => g * y * (1.0 - y),
            Relu => g * x.gt(0.0),
            Softplus => g * x.sigmoid(),
            PowConst(c) => g * c * x.powf(c - 1.0),
        })
    }
}

impl BinaryOp {
    /// The name used in errors.
    pub fn name(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Add => "add",
            Sub => "sub",
            Mul => "mul",
            Div => "div",
            Max => "max",
            Min => "min",
            Pow => "pow",
            Lt => "lt",
            Le => "le",
            Gt => "gt",
            Ge => "ge",
            Eq => "eq",
        }
    }

    /// The CPU math, in f64 (the reference) or f32 (the fast path).
    #[inline(always)]
    pub fn cpu<T: Real>(self, a: T, b: T) -> T {
        use BinaryOp::*;
        let mask = |c: bool| T::from_f64(if c { 1.0 } else { 0.0 });
        match self {
            Add => a + b,
            Sub => a - b,
            Mul => a * b,
            Div => a / b,
            Max => max(a, b),
            Min => min(a, b),
            Pow => a.powf(b),
            Lt => mask(a < b),
            Le => mask(a <= b),
            Gt => mask(a > b),
            Ge => mask(a >= b),
            Eq => mask(a == b),
        }
    }

    /// The WGSL expression of `a op b`.
    pub fn wgsl(self, a: &str, b: &str) -> String {
        use BinaryOp::*;
        let mask = |c: &str| format!("select(0.0, 1.0, {a} {c} {b})");
        match self {
            Add => format!("{a} + {b}"),
            Sub => format!("{a} - {b}"),
            Mul => format!("{a} * {b}"),
            Div => format!("{a} / {b}"),
            Max => format!("max({a}, {b})"),
            Min => format!("min({a}, {b})"),
            Pow => format!("wg_pow({a}, {b})"),
            Lt => mask("<"),
            Le => mask("<="),
            Gt => mask(">"),
            Ge => mask(">="),
            Eq => mask("=="),
        }
    }

    /// The gradients reaching `a` and `b`, given the gradient `g` of `y = a op b`.
    pub fn vjp<'g>(self, g: Var<'g>, a: Var<'g>, b: Var<'g>, y: Var<'g>) -> [Option<Var<'g>>; 2] {
        use BinaryOp::*;
        match self {
            Add => [Some(g), Some(g)],
            Sub => [Some(g), Some(-g)],
            Mul => [Some(g * b), Some(g * a)],
            Div => [Some(g / b), Some(-g * y / b)],
            Max | Min => {
                // 1 where `a` wins, 1/2 at a tie, 0 where `b` wins.
                let wins = if self == Max { a.gt(b) } else { a.lt(b) };
                let share = wins + 0.5 * a.eq(b);
                [Some(g * share), Some(g * (1.0 - share))]
            }
            Pow => [Some(g * b * a.pow(b - 1.0)), Some(g * y * a.log())],
            Lt | Le | Gt | Ge | Eq => [None, None],
        }
    }
}

impl ReduceOp {
    /// The name used in errors.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
        }
    }
    /// The value of a reduction over nothing.
    pub fn identity(self) -> f64 {
        match self {
            ReduceOp::Sum => 0.0,
            ReduceOp::Max => f64::NEG_INFINITY,
            ReduceOp::Min => f64::INFINITY,
        }
    }
    /// Fold one more element into an accumulator, on the CPU.
    #[inline(always)]
    pub fn cpu<T: Real>(self, acc: T, x: T) -> T {
        match self {
            ReduceOp::Sum => acc + x,
            ReduceOp::Max => max(acc, x),
            ReduceOp::Min => min(acc, x),
        }
    }
    /// The WGSL expression folding `x` into `acc`.
    pub fn wgsl(self, acc: &str, x: &str) -> String {
        match self {
            ReduceOp::Sum => format!("{acc} + {x}"),
            ReduceOp::Max => format!("max({acc}, {x})"),
            ReduceOp::Min => format!("min({acc}, {x})"),
        }
    }
    /// The WGSL subgroup operation folding a value across a subgroup.
    pub fn subgroup_wgsl(self) -> &'static str {
        match self {
            ReduceOp::Sum => "subgroupAdd",
            ReduceOp::Max => "subgroupMax",
            ReduceOp::Min => "subgroupMin",
        }
    }
    /// The gradient reaching the operand `x` (shape `x`), given the gradient
    /// `g` of the kept-dims result `y`.
    pub fn vjp<'g>(self, g: Var<'g>, x: Var<'g>, y: Var<'g>, axes: &[usize]) -> Var<'g> {
        let shape = x.shape();
        match self {
            ReduceOp::Sum => g.broadcast_to(&shape),
            ReduceOp::Max | ReduceOp::Min => {
                let hit = x.eq(y.broadcast_to(&shape));
                let count = hit.sum_axes_keepdims(axes);
                hit * (g / count).broadcast_to(&shape)
            }
        }
    }
}

impl Op {
    /// The op's name, for errors and generated code.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input(_) => "input",
            Op::Param { .. } => "param",
            Op::Const(_) => "constant",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Select => "select",
            Op::Reduce { op, .. } => op.name(),
            Op::Reshape => "reshape",
            Op::Permute(_) => "permute",
            Op::Broadcast => "broadcast_to",
            Op::Slice { .. } => "slice",
            Op::Pad { .. } => "pad",
        }
    }

    /// The gradients reaching each operand, given the gradient `g` of the
    /// node's value `y`; `None` where no gradient flows. Only operands with
    /// `needed[k]` set are differentiated.
    pub fn vjp<'g>(
        &self,
        g: Var<'g>,
        inputs: &[Var<'g>],
        y: Var<'g>,
        needed: &[bool],
    ) -> Vec<Option<Var<'g>>> {
        let x = inputs.first().copied();
        let x_shape = || x.expect("op has an operand").shape();
        match self {
            Op::Input(_) | Op::Param { .. } | Op::Const(_) => vec![],
            Op::Unary(u) => vec![u.vjp(g, inputs[0], y)],
            Op::Binary(b) => {
                let [ga, gb] = b.vjp(g, inputs[0], inputs[1], y);
                vec![ga.filter(|_| needed[0]), gb.filter(|_| needed[1])]
            }
            Op::Select => {
                let (mask, zero) = (inputs[0], g.graph().constant(0.0));
                vec![
                    None,
                    needed[1].then(|| mask.select(g, zero)),
                    needed[2].then(|| mask.select(zero, g)),
                ]
            }
            Op::Reduce { op, axes } => vec![Some(op.vjp(g, inputs[0], y, axes))],
            Op::Reshape => vec![Some(g.reshape(x_shape()))],
            Op::Permute(perm) => {
                let mut inverse = vec![0; perm.len()];
                for (k, &p) in perm.iter().enumerate() {
                    inverse[p] = k;
                }
                vec![Some(g.permute(&inverse))]
            }
            Op::Broadcast => {
                // Sum over the axes that broadcasting created or stretched.
                let (from, to) = (x_shape(), y.shape());
                let shift = to.rank() - from.rank();
                let axes: Vec<usize> = (0..to.rank())
                    .filter(|&k| k < shift || (from.0[k - shift] == 1 && to.0[k] != 1))
                    .collect();
                vec![Some(g.sum_axes_keepdims(&axes).reshape(from))]
            }
            Op::Slice { axis, start } => {
                let (len, full) = (y.shape().0[*axis], x_shape().0[*axis]);
                vec![Some(g.pad(*axis as isize, *start, full - start - len))]
            }
            Op::Pad { axis, before } => {
                let len = x_shape().0[*axis];
                vec![Some(g.slice(*axis as isize, *before, before + len))]
            }
        }
    }
}

/// The shape of a reduction's kept-dims result.
pub fn reduced_shape(input: &Shape, axes: &[usize]) -> Shape {
    Shape(
        (0..input.rank())
            .map(|k| if axes.contains(&k) { 1 } else { input.0[k] })
            .collect(),
    )
}

fn sign<T: Real>(x: T) -> T {
    let zero = T::from_f64(0.0);
    if x > zero {
        T::from_f64(1.0)
    } else if x < zero {
        T::from_f64(-1.0)
    } else {
        x // keeps 0, -0 and NaN, as WGSL's sign does for zeros
    }
}

/// The larger of `a` and `b`; the other where one is NaN (as IEEE
/// `maxNum`), and `a` where they are equal: `max(-0, +0)` is -0. Written
/// out, not `f32::max`, whose choice between zeros is unspecified and in
/// practice depends on how a loop is compiled: the CPU paths' bits are the
/// same however they are compiled (the native kernels compute this too).
#[inline(always)]
pub(crate) fn max<T: Real>(a: T, b: T) -> T {
    if a < b || a.is_nan() {
        b
    } else {
        a
    }
}

/// The smaller, likewise: `min(+0, -0)` is +0.
#[inline(always)]
pub(crate) fn min<T: Real>(a: T, b: T) -> T {
    if b < a || a.is_nan() {
        b
    } else {
        a
    }
}

/// The float types the CPU backends compute in: f64 for the reference, f32
/// for the fast path. The op table's CPU math is written once, for both,
/// with num-traits' `Float` for the functions.
pub trait Real: num_traits::Float + Send + Sync {
    /// `x` rounded to this type, as `as` rounds (out of range: infinite).
    fn from_f64(x: f64) -> Self;
    /// e^x, ln x, ln(1 + x), tanh x, sin x and cos x: libm's (the f64
    /// reference); f32 (the fast path) takes `fmath`'s, which the fast
    /// path's loops vectorize.
    #[inline(always)]
    fn exp_of(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn ln_of(self) -> Self {
        self.ln()
    }
    #[inline(always)]
    fn ln_1p_of(self) -> Self {
        self.ln_1p()
    }
    #[inline(always)]
    fn tanh_of(self) -> Self {
        self.tanh()
    }
    #[inline(always)]
    fn sin_of(self) -> Self {
        self.sin()
    }
    #[inline(always)]
    fn cos_of(self) -> Self {
        self.cos()
    }
}

impl Real for f32 {
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn exp_of(self) -> Self {
        crate::fmath::exp(self)
    }
    #[inline(always)]
    fn ln_of(self) -> Self {
        crate::fmath::ln(self)
    }
    #[inline(always)]
    fn ln_1p_of(self) -> Self {
        crate::fmath::ln_1p(self)
    }
    #[inline(always)]
    fn tanh_of(self) -> Self {
        crate::fmath::tanh(self)
    }
    #[inline(always)]
    fn sin_of(self) -> Self {
        crate::fmath::sin(self)
    }
    #[inline(always)]
    fn cos_of(self) -> Self {
        crate::fmath::cos(self)
    }
}

impl Real for f64 {
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x
    }
}

/// An f32 literal for WGSL: always with a decimal point or exponent, a
/// negative one in parentheses (an op that prefixes its operand, `-x`,
/// must not make `--1.5`, WGSL's decrement), and a bit pattern for
/// infinities and NaN (WGSL has no literal for them).
pub fn f32_literal(x: f64) -> String {
    let v = x as f32;
    if !v.is_finite() {
        format!("bitcast<f32>({}u)", v.to_bits())
    } else if v.is_sign_negative() {
        format!("({v:?})")
    } else {
        format!("{v:?}")
    }
}

/// WGSL helpers that op expressions may call; every generated shader starts with them.
///
/// WGSL lets an implementation assume that no value is infinite or NaN,
/// and leaves `sign`, `clamp` and `pow` of special values to it; shader
/// compilers then fold float tests away. So these helpers test special
/// values on the bits, which no float assumption can fold, and give the
/// CPU's answers (`UnaryOp::cpu`, `BinaryOp::cpu`).
pub const WGSL_PRELUDE: &str = "\
// The bits of |x|: above 0x7f800000u a NaN, at it an infinity, 0u a zero.
fn wg_abs_bits(x: f32) -> u32 {
    return bitcast<u32>(x) & 0x7fffffffu;
}
fn wg_inf(negative: bool) -> f32 {
    return bitcast<f32>(select(0x7f800000u, 0xff800000u, negative));
}
// A select's mask: true for a NaN, as on the CPU (NaN != 0).
fn wg_nonzero(m: f32) -> bool {
    return wg_abs_bits(m) != 0u;
}
// Zeros and NaN are their own sign.
fn wg_sign(x: f32) -> f32 {
    let a = wg_abs_bits(x);
    if (a == 0u || a > 0x7f800000u) { return x; }
    return bitcast<f32>((bitcast<u32>(x) & 0x80000000u) | 0x3f800000u);
}
// NaN stays NaN (a clamp would make it 1); below 2^-10, x - x^3/3 is tanh
// to f32's precision, where some drivers' ratio of exponentials is not;
// past 15 tanh is 1 in f32, where that ratio overflows.
fn wg_tanh(x: f32) -> f32 {
    if (wg_abs_bits(x) > 0x7f800000u) { return x; }
    if (abs(x) < 0.0009765625) { return x - x * x * x / 3.0; }
    return tanh(clamp(x, -15.0, 15.0));
}
// max(x, 0) + ln(1 + e^-|x|): where e^-|x| is below 0.01, 1 + e^-|x|
// would round it away (softplus(-20) is 2e-9, not 0), so its series.
fn wg_softplus(x: f32) -> f32 {
    let u = exp(-abs(x));
    var l = log(1.0 + u);
    if (u < 0.01) {
        l = u * (1.0 - u * (0.5 - u * (0.33333334 - u * (0.25 - u * 0.2))));
    }
    return max(x, 0.0) + l;
}
// x · ±0 (a literal zero, which compilers fold x · 0 to): NaN for an
// infinite or NaN x, else a zero signed by both signs.
fn wg_times_zero(x: f32, zero: f32) -> f32 {
    if (wg_abs_bits(x) >= 0x7f800000u) { return bitcast<f32>(0x7fc00000u); }
    return bitcast<f32>((bitcast<u32>(x) ^ bitcast<u32>(zero)) & 0x80000000u);
}
// ±0 / x (a literal zero, which compilers fold 0 / x to): NaN for a zero
// or NaN x, else a zero signed by both signs.
fn wg_zero_over(zero: f32, x: f32) -> f32 {
    let a = wg_abs_bits(x);
    if (a == 0u || a > 0x7f800000u) { return bitcast<f32>(0x7fc00000u); }
    return bitcast<f32>((bitcast<u32>(x) ^ bitcast<u32>(zero)) & 0x80000000u);
}
// x - x, which compilers fold to 0: NaN for an infinite or NaN x.
fn wg_minus_itself(x: f32) -> f32 {
    if (wg_abs_bits(x) >= 0x7f800000u) { return bitcast<f32>(0x7fc00000u); }
    return 0.0;
}
// x^y as the CPU's pow: x^±0 = 1 and 1^y = 1 (NaN included), NaN in
// gives NaN, the limits at zeros and infinities, a negative base only to
// an integer power (its sign by the power's parity), and exact results
// for the powers 1, 2, 1/2 and -1 that gradients ask for.
fn wg_pow(x: f32, y: f32) -> f32 {
    let ax = wg_abs_bits(x);
    let ay = wg_abs_bits(y);
    if (ay == 0u || bitcast<u32>(x) == 0x3f800000u) { return 1.0; }
    if (ax > 0x7f800000u || ay > 0x7f800000u) { return bitcast<f32>(0x7fc00000u); }
    let negative_x = bitcast<u32>(x) >= 0x80000000u;
    let negative_y = bitcast<u32>(y) >= 0x80000000u;
    if (ay == 0x7f800000u) {
        if (ax == 0x3f800000u) { return 1.0; }
        if ((ax > 0x3f800000u) == negative_y) { return 0.0; }
        return wg_inf(false);
    }
    let integer = fract(y) == 0.0;
    let odd = integer && ay < 0x4b800000u && fract(y * 0.5) != 0.0;
    let sign = select(0u, bitcast<u32>(x) & 0x80000000u, odd);
    if (ax == 0u) {
        return bitcast<f32>(select(0u, 0x7f800000u, negative_y) | sign);
    }
    if (ax == 0x7f800000u) {
        return bitcast<f32>(select(0x7f800000u, 0u, negative_y) | sign);
    }
    if (negative_x && !integer) { return bitcast<f32>(0x7fc00000u); }
    if (y == 1.0) { return x; }
    if (y == 2.0) { return x * x; }
    if (y == -1.0) { return 1.0 / x; }
    if (y == 0.5) { return sqrt(x); }
    let m = exp2(y * log2(abs(x)));
    return bitcast<f32>(bitcast<u32>(m) | sign);
}
";
