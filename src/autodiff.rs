//! Reverse mode as a graph transform: `grad` appends the backward pass to the
//! same graph, built from the op table's vector-Jacobian products, so
//! gradients are ordinary nodes (and can be differentiated again).

use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Var};
use std::collections::HashMap;
use std::panic::Location;

impl Graph {
    /// The gradients of the scalar `loss` with respect to each of `wrt`,
    /// recorded into this graph. A variable the loss does not depend on gets
    /// a gradient of zeros. Panics (with the caller's line) if `loss` is not a scalar.
    #[track_caller]
    pub fn grad<'g>(&'g self, loss: Var<'g>, wrt: &[Var<'g>]) -> Vec<Var<'g>> {
        self.try_grad(loss, wrt).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `grad`, or an error if `loss` is not a scalar.
    #[track_caller]
    pub fn try_grad<'g>(&'g self, loss: Var<'g>, wrt: &[Var<'g>]) -> Result<Vec<Var<'g>>> {
        let location = Location::caller();
        self.own(std::iter::once(&loss).chain(wrt))?;
        if loss.numel() != 1 {
            return Err(Error::Graph {
                detail: format!(
                    "grad needs a scalar loss (one element), got shape {}",
                    loss.shape()
                ),
                location,
            });
        }
        Ok(self.recording_at(location, || self.backward(loss, wrt)))
    }

    fn backward<'g>(&'g self, loss: Var<'g>, wrt: &[Var<'g>]) -> Vec<Var<'g>> {
        let last = loss.id().index();
        // Only nodes on a path from some `wrt` to `loss` need a gradient.
        let (ops, inputs): (Vec<_>, Vec<_>) = self.nodes()[..=last]
            .iter()
            .map(|n| (n.op.clone(), n.inputs.clone()))
            .unzip();
        let mut from_wrt = vec![false; last + 1];
        for w in wrt {
            if w.id().index() <= last {
                from_wrt[w.id().index()] = true;
            }
        }
        for i in 0..=last {
            from_wrt[i] |= inputs[i].iter().any(|j| from_wrt[j.index()]);
        }
        let mut to_loss = vec![false; last + 1];
        to_loss[last] = true;
        for i in (0..=last).rev() {
            if to_loss[i] {
                for j in &inputs[i] {
                    to_loss[j.index()] = true;
                }
            }
        }
        let needed = |j: NodeId| from_wrt[j.index()] && to_loss[j.index()];

        let mut grads: HashMap<NodeId, Var<'g>> = HashMap::new();
        grads.insert(loss.id(), self.full(1.0, loss.shape()));
        for i in (0..=last).rev() {
            let id = NodeId(i as u32);
            let Some(&g) = grads.get(&id) else { continue };
            if !needed(id) || inputs[i].is_empty() {
                continue;
            }
            let operands: Vec<Var<'g>> = inputs[i].iter().map(|&j| self.var(j)).collect();
            let need: Vec<bool> = inputs[i].iter().map(|&j| needed(j)).collect();
            let parts = ops[i].vjp(g, &operands, self.var(id), &need);
            for (k, part) in parts.into_iter().enumerate() {
                let j = inputs[i][k];
                if let (Some(p), true) = (part, need[k]) {
                    let sum = match grads.get(&j) {
                        Some(&acc) => acc + p,
                        None => p,
                    };
                    grads.insert(j, sum);
                }
            }
        }
        wrt.iter()
            .map(|w| {
                grads
                    .get(&w.id())
                    .copied()
                    .unwrap_or_else(|| self.full(0.0, w.shape()))
            })
            .collect()
    }
}
