//! The CPU reference: interprets the graph node by node, in f64, in arena
//! order (which is topological). Every GPU result is checked against it.

use crate::graph::{Node, NodeId};
use crate::ops::Op;
use crate::shape::{PadMap, Shape, StridedMap};
use rustc_hash::FxHashMap as HashMap;

/// The values of `outputs`, given the values of every input and parameter
/// they depend on (`leaves`, by node). Intermediate values are dropped after
/// their last use.
pub(crate) fn evaluate(
    nodes: &[Node],
    outputs: &[NodeId],
    leaves: &HashMap<NodeId, &[f64]>,
) -> Vec<Vec<f64>> {
    let live = live_nodes(nodes, outputs);
    // The last node that reads each value; outputs are read at the end.
    let mut last_use = vec![0usize; nodes.len()];
    for &i in &live {
        for j in &nodes[i].inputs {
            last_use[j.index()] = last_use[j.index()].max(i);
        }
    }
    for o in outputs {
        last_use[o.index()] = usize::MAX;
    }
    let mut values: Vec<Option<Vec<f64>>> = vec![None; nodes.len()];
    for &i in &live {
        let node = &nodes[i];
        let args: Vec<&[f64]> = node
            .inputs
            .iter()
            .map(|j| values[j.index()].as_deref().expect("operand evaluated"))
            .collect();
        let in_shapes: Vec<&Shape> = node
            .inputs
            .iter()
            .map(|j| &nodes[j.index()].shape)
            .collect();
        let v = match &node.op {
            Op::Input(_) | Op::Param { .. } => leaves[&NodeId(i as u32)].to_vec(),
            _ => eval_op(node, &args, &in_shapes),
        };
        values[i] = Some(v);
        for j in &node.inputs {
            if last_use[j.index()] == i {
                values[j.index()] = None;
            }
        }
    }
    outputs
        .iter()
        .map(|o| values[o.index()].clone().expect("output evaluated"))
        .collect()
}

/// The nodes `outputs` depend on, in arena (topological) order.
pub(crate) fn live_nodes(nodes: &[Node], outputs: &[NodeId]) -> Vec<usize> {
    let mut live = vec![false; nodes.len()];
    for o in outputs {
        live[o.index()] = true;
    }
    for i in (0..nodes.len()).rev() {
        if live[i] {
            for j in &nodes[i].inputs {
                live[j.index()] = true;
            }
        }
    }
    (0..nodes.len()).filter(|&i| live[i]).collect()
}

/// `f(i)` for `i` in `0..n`, split over the machine's cores when `n` is large
/// (each element is computed alone, so the result does not depend on the split).
fn par_map(n: usize, f: impl Fn(usize) -> f64 + Sync) -> Vec<f64> {
    const MIN_PER_THREAD: usize = 1 << 15;
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let threads = threads.min(n / MIN_PER_THREAD).max(1);
    if threads == 1 {
        return (0..n).map(f).collect();
    }
    let mut out = vec![0.0; n];
    let per = n.div_ceil(threads);
    std::thread::scope(|s| {
        for (k, part) in out.chunks_mut(per).enumerate() {
            let f = &f;
            s.spawn(move || {
                for (j, o) in part.iter_mut().enumerate() {
                    *o = f(k * per + j);
                }
            });
        }
    });
    out
}

fn eval_op(node: &Node, args: &[&[f64]], in_shapes: &[&Shape]) -> Vec<f64> {
    let n = node.shape.numel();
    let gather = |m: StridedMap| -> Vec<f64> { par_map(n, |i| args[0][m.source(i)]) };
    match &node.op {
        Op::Input(_) | Op::Param { .. } => unreachable!("leaves are given"),
        Op::Const(c) => vec![*c],
        Op::Unary(u) => par_map(n, |i| u.cpu(args[0][i])),
        Op::Binary(b) => par_map(n, |i| b.cpu(args[0][i], args[1][i])),
        Op::Select => par_map(n, |i| {
            if args[0][i] != 0.0 {
                args[1][i]
            } else {
                args[2][i]
            }
        }),
        Op::Reduce { op, axes } => {
            // Each input element folds into the output element it lands on,
            // in index order (a fixed order: the same bits every run).
            let input = in_shapes[0];
            let to_out = StridedMap::reduce_to(input, axes, &node.shape);
            let mut out = vec![op.identity(); node.shape.numel()];
            for (i, &x) in args[0].iter().enumerate() {
                let o = to_out.source(i);
                out[o] = op.cpu(out[o], x);
            }
            out
        }
        Op::Reshape => args[0].to_vec(),
        Op::Permute(perm) => gather(StridedMap::permute(in_shapes[0], perm)),
        Op::Broadcast => gather(StridedMap::broadcast(in_shapes[0], &node.shape)),
        Op::Slice { axis, start } => gather(StridedMap::slice(
            in_shapes[0],
            *axis,
            *start,
            node.shape.0[*axis],
        )),
        Op::Pad { axis, before } => {
            let pad = PadMap::new(in_shapes[0], *axis, *before, node.shape.0[*axis]);
            par_map(n, |i| pad.source(i).map_or(0.0, |s| args[0][s]))
        }
    }
}
