//! The two backends: the CPU reference and the GPU through wgpu.
pub(crate) mod cpu;
pub(crate) mod cpu_fast;
pub(crate) mod native;
pub mod wgpu;

use crate::graph::{Node, NodeId};
use crate::ops::Op;

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
