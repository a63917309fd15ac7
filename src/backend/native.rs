//! Native code for the CPU fast path: a run of element-wise instructions
//! of a tape compiled by Cranelift into one loop whose intermediate values
//! stay in vector registers, where the tape would store each to memory
//! and load it back.
//!
//! A kernel computes exactly the f32 operations of the instructions it
//! replaces, in the same order: IEEE arithmetic, `max`/`min` as Rust's
//! (a NaN operand gives the other one), comparisons as 1.0 or 0.0. No
//! multiply-add is fused (Cranelift fuses none unless asked), so the bits
//! are the tape's. Only ops with such exact counterparts are compiled;
//! `exp`, `sin` and the like stay in the tape (`supports`).
//!
//! Cranelift's x86 backend has 128-bit vectors: four lanes, against the
//! tape's eight with AVX2, so a kernel pays off from a few instructions on
//! (see `MIN_OPS` in cpu_fast.rs).

use crate::ops::{BinaryOp, UnaryOp};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, Type, Value};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};
use std::mem::ManuallyDrop;

/// Where an operand comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Operand {
    /// Element `i` of vector input `k`.
    Vector(usize),
    /// Scalar input `k`, the same for every element.
    Scalar(usize),
    Const(f32),
    /// The result of the kernel's `k`-th expression.
    Value(usize),
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Expr {
    Unary(UnaryOp, Operand),
    Binary(BinaryOp, Operand, Operand),
    /// `mask != 0 ? a : b`.
    Select(Operand, Operand, Operand),
}

/// What a kernel computes at each element `i < n`: its expressions in
/// order, then `outs[j][i]` = the value of expression `results[j]`.
#[derive(Debug, Default)]
pub(crate) struct Kernel {
    pub vectors: usize,
    pub scalars: usize,
    pub code: Vec<Expr>,
    pub results: Vec<usize>,
}

/// `f(vectors, scalars, outs, n)`: reads `n` floats from each vector
/// input, writes `n` to each output. Every element's inputs are read
/// before its outputs are written, so an output may be an input.
pub(crate) type KernelFn =
    unsafe extern "C" fn(*const *const f32, *const f32, *const *mut f32, usize);

/// Whether a kernel can compute `op` bit for bit as the tape does.
pub(crate) fn supports_unary(op: UnaryOp) -> bool {
    use UnaryOp::*;
    matches!(
        op,
        Neg | Abs | Sqrt | Rsqrt | Recip | Square | Relu | Detach
    )
}

/// Likewise for a binary op (all but `Pow`).
pub(crate) fn supports_binary(op: BinaryOp) -> bool {
    op != BinaryOp::Pow
}

/// The compiler and the memory its kernels live in: a kernel may be called
/// while this lives.
pub(crate) struct Jit {
    module: ManuallyDrop<JITModule>,
    context: FunctionBuilderContext,
    count: usize,
}

impl Drop for Jit {
    fn drop(&mut self) {
        // SAFETY: the module is taken once, here; the kernels are called
        // only while the plan that owns this `Jit` lives.
        unsafe { ManuallyDrop::take(&mut self.module).free_memory() };
    }
}

impl Jit {
    /// A compiler for this CPU, or `None` where Cranelift has no backend
    /// for it (the tape then runs alone). Only x86-64 with SSE4.1 and
    /// AArch64: the vector ops used here are implemented (and tested) on
    /// those; elsewhere Cranelift may panic rather than refuse.
    pub(crate) fn new() -> Option<Jit> {
        #[cfg(target_arch = "x86_64")]
        if !std::arch::is_x86_feature_detected!("sse4.1") {
            return None;
        }
        if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            return None;
        }
        let mut flags = settings::builder();
        for (name, value) in [
            ("opt_level", "speed"),
            ("enable_verifier", "false"),
            ("use_colocated_libcalls", "false"),
            ("is_pic", "false"),
        ] {
            flags.set(name, value).ok()?;
        }
        let isa = cranelift_native::builder()
            .ok()?
            .finish(settings::Flags::new(flags))
            .ok()?;
        let module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        Some(Jit {
            module: ManuallyDrop::new(module),
            context: FunctionBuilderContext::new(),
            count: 0,
        })
    }

    /// Compile `kernel`; `None` if Cranelift refuses it (logged; the tape
    /// then runs those instructions itself).
    pub(crate) fn compile(&mut self, kernel: &Kernel) -> Option<KernelFn> {
        let config = self.module.target_config();
        let ptr = config.pointer_type();
        let mut ctx = self.module.make_context();
        for _ in 0..4 {
            ctx.func.signature.params.push(AbiParam::new(ptr));
        }
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut self.context);
            body(&mut b, kernel, ptr);
            b.seal_all_blocks();
            b.finalize(config);
        }
        self.count += 1;
        let name = format!("kernel{}", self.count);
        let module = &mut self.module;
        let warn =
            |e| log::warn!("fast path: a native kernel failed to compile ({e}); the tape runs it");
        let signature = &ctx.func.signature;
        let id = module
            .declare_function(&name, Linkage::Local, signature)
            .map_err(warn)
            .ok()?;
        module.define_function(id, &mut ctx).map_err(warn).ok()?;
        module.finalize_definitions().map_err(warn).ok()?;
        module.clear_context(&mut ctx);
        let code = self.module.get_finalized_function(id);
        // SAFETY: the function was built with `KernelFn`'s signature (four
        // pointer-sized arguments, the platform's C convention, which is
        // Cranelift's default).
        Some(unsafe { std::mem::transmute::<*const u8, KernelFn>(code) })
    }
}

/// The loop: four elements at a time, then one at a time.
fn body(b: &mut FunctionBuilder, kernel: &Kernel, ptr: Type) {
    let entry = b.create_block();
    let (wide, check, narrow, exit) = (
        b.create_block(),
        b.create_block(),
        b.create_block(),
        b.create_block(),
    );
    b.append_block_params_for_function_params(entry);
    for block in [wide, check, narrow] {
        b.append_block_param(block, ptr); // the byte offset of element i
    }
    b.switch_to_block(entry);
    let [vectors, scalars, outs, n] = *b.block_params(entry) else {
        unreachable!("four parameters")
    };
    let trusted = MemFlagsData::trusted();
    let load_ptr = |b: &mut FunctionBuilder, base: Value, k: usize| {
        b.ins().load(ptr, trusted, base, 8 * k as i32)
    };
    let vector_ptrs: Vec<Value> = (0..kernel.vectors)
        .map(|k| load_ptr(b, vectors, k))
        .collect();
    let out_ptrs: Vec<Value> = (0..kernel.results.len())
        .map(|k| load_ptr(b, outs, k))
        .collect();
    let scalar_values: Vec<Value> = (0..kernel.scalars)
        .map(|k| b.ins().load(types::F32, trusted, scalars, 4 * k as i32))
        .collect();
    let bytes = b.ins().ishl_imm_u(n, 2);
    let wide_bytes = b.ins().band_imm_s(bytes, !15i64);
    let zero = b.ins().iconst(ptr, 0);
    let any_wide = b.ins().icmp_imm_u(IntCC::NotEqual, wide_bytes, 0);
    b.ins()
        .brif(any_wide, wide, &[zero.into()], check, &[zero.into()]);

    b.switch_to_block(wide);
    let at = b.block_params(wide)[0];
    step(
        b,
        kernel,
        types::F32X4,
        &vector_ptrs,
        &scalar_values,
        &out_ptrs,
        at,
    );
    let next = b.ins().iadd_imm_u(at, 16);
    let more = b.ins().icmp(IntCC::UnsignedLessThan, next, wide_bytes);
    b.ins()
        .brif(more, wide, &[next.into()], check, &[next.into()]);

    b.switch_to_block(check);
    let at = b.block_params(check)[0];
    let more = b.ins().icmp(IntCC::UnsignedLessThan, at, bytes);
    b.ins().brif(more, narrow, &[at.into()], exit, &[]);

    b.switch_to_block(narrow);
    let at = b.block_params(narrow)[0];
    step(
        b,
        kernel,
        types::F32,
        &vector_ptrs,
        &scalar_values,
        &out_ptrs,
        at,
    );
    let next = b.ins().iadd_imm_u(at, 4);
    b.ins().jump(check, &[next.into()]);

    b.switch_to_block(exit);
    b.ins().return_(&[]);
}

/// The kernel at the elements from byte offset `at`: one (`F32`) or four
/// (`F32X4`). Constants and splats made here are hoisted out of the loop
/// by Cranelift.
fn step(
    b: &mut FunctionBuilder,
    kernel: &Kernel,
    ty: Type,
    vector_ptrs: &[Value],
    scalars: &[Value],
    out_ptrs: &[Value],
    at: Value,
) {
    let wide = ty.is_vector();
    let splat = |b: &mut FunctionBuilder, s: Value| if wide { b.ins().splat(ty, s) } else { s };
    let constant = |b: &mut FunctionBuilder, c: f32| {
        let s = b.ins().f32const(c);
        splat(b, s)
    };
    // `mask ? x : y` for a comparison's result.
    let pick = |b: &mut FunctionBuilder, mask: Value, x: Value, y: Value| {
        if wide {
            let mask = b.ins().bitcast(ty, MemFlagsData::new(), mask);
            b.ins().bitselect(mask, x, y)
        } else {
            b.ins().select(mask, x, y)
        }
    };
    // Not `aligned`: a register's elements start anywhere in a source.
    let access = MemFlagsData::new().with_notrap();
    let loaded: Vec<Value> = vector_ptrs
        .iter()
        .map(|&p| {
            let address = b.ins().iadd(p, at);
            b.ins().load(ty, access, address, 0)
        })
        .collect();
    let mut values: Vec<Value> = Vec::with_capacity(kernel.code.len());
    for expr in &kernel.code {
        let get = |b: &mut FunctionBuilder, o: Operand| match o {
            Operand::Vector(k) => loaded[k],
            Operand::Scalar(k) => splat(b, scalars[k]),
            Operand::Const(c) => constant(b, c),
            Operand::Value(k) => values[k],
        };
        let v = match *expr {
            Expr::Unary(op, x) => {
                let x = get(b, x);
                use UnaryOp::*;
                match op {
                    Neg => b.ins().fneg(x),
                    Abs => b.ins().fabs(x),
                    Sqrt => b.ins().sqrt(x),
                    Rsqrt => {
                        let (one, root) = (constant(b, 1.0), b.ins().sqrt(x));
                        b.ins().fdiv(one, root)
                    }
                    Recip => {
                        let one = constant(b, 1.0);
                        b.ins().fdiv(one, x)
                    }
                    Square => b.ins().fmul(x, x),
                    Relu => {
                        let zero = constant(b, 0.0);
                        max_min(b, true, x, zero, &pick)
                    }
                    Detach => x,
                    _ => unreachable!("`supports_unary` admits no {op:?}"),
                }
            }
            Expr::Binary(op, x, y) => {
                let (x, y) = (get(b, x), get(b, y));
                use BinaryOp::*;
                let compare = |b: &mut FunctionBuilder, cc: FloatCC| {
                    let mask = b.ins().fcmp(cc, x, y);
                    let (one, zero) = (constant(b, 1.0), constant(b, 0.0));
                    pick(b, mask, one, zero)
                };
                match op {
                    Add => b.ins().fadd(x, y),
                    Sub => b.ins().fsub(x, y),
                    Mul => b.ins().fmul(x, y),
                    Div => b.ins().fdiv(x, y),
                    Max => max_min(b, true, x, y, &pick),
                    Min => max_min(b, false, x, y, &pick),
                    Lt => compare(b, FloatCC::LessThan),
                    Le => compare(b, FloatCC::LessThanOrEqual),
                    Gt => compare(b, FloatCC::GreaterThan),
                    Ge => compare(b, FloatCC::GreaterThanOrEqual),
                    Eq => compare(b, FloatCC::Equal),
                    Pow => unreachable!("`supports_binary` admits no Pow"),
                }
            }
            Expr::Select(mask, x, y) => {
                let (mask, x, y) = (get(b, mask), get(b, x), get(b, y));
                let zero = constant(b, 0.0);
                // A NaN mask is not 0: it picks `x`, as the tape does.
                let set = b.ins().fcmp(FloatCC::NotEqual, mask, zero);
                pick(b, set, x, y)
            }
        };
        values.push(v);
    }
    for (&p, &k) in out_ptrs.iter().zip(&kernel.results) {
        let address = b.ins().iadd(p, at);
        b.ins().store(access, values[k], address, 0);
    }
}

/// Rust's `x.max(y)` (`max`) or `x.min(y)`: the other operand where one is
/// NaN; `x` where they are equal (as the tape's compiled loops give ±0).
fn max_min(
    b: &mut FunctionBuilder,
    max: bool,
    x: Value,
    y: Value,
    pick: &impl Fn(&mut FunctionBuilder, Value, Value, Value) -> Value,
) -> Value {
    let y_wins = if max {
        b.ins().fcmp(FloatCC::LessThan, x, y)
    } else {
        b.ins().fcmp(FloatCC::LessThan, y, x)
    };
    let x_nan = b.ins().fcmp(FloatCC::Unordered, x, x);
    let mask = b.ins().bor(y_wins, x_nan);
    pick(b, mask, y, x)
}
