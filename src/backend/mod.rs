//! The two backends: the CPU reference and the GPU through wgpu.
pub(crate) mod cpu;
pub(crate) mod cpu_fast;
mod gemm;
pub(crate) mod native;
pub mod wgpu;

use crate::graph::{Node, NodeId};
use crate::ops::{BinaryOp, Op, ReduceOp};
use crate::shape::Shape;

/// A fused expression (what one kernel or pass computes between values it
/// loads) is at most this many nodes deep; a deeper one stores a value on
/// the way and reads it back. On lavapipe, one kernel of a chain of
/// element-wise ops (forward and backward) took 0.66 s to compile at 1,000
/// ops, 12 s at 4,000 and 97 s at 10,000: a driver's compile time grows
/// faster than a kernel's length. The planners' walks down an expression
/// recurse as deep as it is.
pub(crate) const MAX_FUSED_DEPTH: usize = 256;

/// The live nodes (`live`, in arena order) to store so that no expression
/// between the values kernels load (inputs, parameters, reductions) is
/// deeper than `MAX_FUSED_DEPTH`. Walking up the arena (a node's inputs
/// come before it), a node whose longest path down to a loaded value
/// reaches the bound is stored, and counts as loaded above it.
pub(crate) fn depth_cuts(nodes: &[Node], live: &[usize]) -> Vec<NodeId> {
    let mut depth = vec![0usize; nodes.len()];
    let mut cuts = Vec::new();
    for &i in live {
        if matches!(
            nodes[i].op,
            Op::Input(_) | Op::Param { .. } | Op::Reduce { .. }
        ) {
            continue;
        }
        let below = nodes[i].inputs.iter().map(|j| depth[j.index()]).max();
        let d = 1 + below.unwrap_or(0);
        if d >= MAX_FUSED_DEPTH {
            cuts.push(NodeId(i as u32));
        } else {
            depth[i] = d;
        }
    }
    cuts
}

/// A sum over consecutive axes (together `k`) of a product `p · q` where `p`
/// is a broadcast constant along axis `n` and `q` one along axis `m`: a
/// (batched) matrix product, as `matmul` and its gradients record it. The
/// other axes are batch axes.
pub(crate) struct MatmulForm {
    pub p: NodeId,
    pub q: NodeId,
    pub m: usize,
    pub n: usize,
    /// The reduced axes (consecutive).
    pub ks: Vec<usize>,
    /// The number of terms in each sum.
    pub depth: usize,
    pub batch: Vec<usize>,
    pub shape: Shape,
}

pub(crate) fn matmul_form(nodes: &[Node], id: NodeId) -> Option<MatmulForm> {
    let node = &nodes[id.index()];
    let Op::Reduce {
        op: ReduceOp::Sum,
        axes,
    } = &node.op
    else {
        return None;
    };
    let prod = &nodes[node.inputs[0].index()];
    // Consecutive reduced axes are one axis of the row-major layout (the
    // batched gradient of a broadcast operand sums over batch and rows).
    let consecutive = axes.windows(2).all(|w| w[1] == w[0] + 1);
    if !consecutive || prod.op != Op::Binary(BinaryOp::Mul) || prod.shape.rank() < axes.len() + 2 {
        return None;
    }
    let shape = prod.shape.clone();
    let reduced = |x: usize| axes.contains(&x);
    // Whether `v` is a broadcast that does not vary along `axis`.
    let flat = |v: NodeId, axis: usize| {
        let n = &nodes[v.index()];
        if n.op != Op::Broadcast {
            return false;
        }
        let input = &nodes[n.inputs[0].index()].shape;
        let shift = shape.rank() - input.rank();
        axis < shift || input.0[axis - shift] == 1
    };
    let [a, b] = [prod.inputs[0], prod.inputs[1]];
    for (p, q) in [(a, b), (b, a)] {
        let candidates = |f: &dyn Fn(usize) -> bool| {
            (0..shape.rank())
                .filter(|&x| !reduced(x) && f(x))
                .collect::<Vec<_>>()
        };
        let ms = candidates(&|x| flat(q, x) && !flat(p, x));
        let ns = candidates(&|x| flat(p, x) && !flat(q, x));
        if let (Some(&m), Some(&n)) = (ms.last(), ns.last()) {
            // Skinny products (a matrix times a vector) go to the plain reduction.
            if shape.0[m] < 2 || shape.0[n] < 2 {
                return None;
            }
            let batch = (0..shape.rank())
                .filter(|&x| x != m && x != n && !reduced(x))
                .collect();
            let depth = axes.iter().map(|&x| shape.0[x]).product();
            return Some(MatmulForm {
                p,
                q,
                m,
                n,
                ks: axes.clone(),
                depth,
                batch,
                shape,
            });
        }
    }
    None
}
