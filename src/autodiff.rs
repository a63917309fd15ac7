//! Reverse mode as a graph transform: `grad` appends the backward pass to the
//! same graph, built from the op table's vector-Jacobian products, so
//! gradients are ordinary nodes (and can be differentiated again). Forward
//! mode (`jvp`) is two reverse passes over the same table.

use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Var};
use rustc_hash::FxHashMap as HashMap;
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

    /// The Jacobian-vector product: the derivative of `output` (any shape)
    /// along `tangents` (one per variable of `wrt`, of its shape), recorded
    /// into this graph; of `output`'s shape. A Hessian-vector product is the
    /// `jvp` of a gradient. Panics (with the caller's line) where the
    /// counts or shapes of `wrt` and `tangents` differ.
    ///
    /// Forward mode as two reverse passes (the op table has vector-Jacobian
    /// products only): the gradient of `Σ output·u` is `uᵀJ`, linear in
    /// `u`, so the gradient of `Σ_i (uᵀJ)_i·v_i` with respect to `u` is
    /// `J·v`, whatever `u` is (a constant here, which no kernel reads).
    #[track_caller]
    pub fn jvp<'g>(&'g self, output: Var<'g>, wrt: &[Var<'g>], tangents: &[Var<'g>]) -> Var<'g> {
        self.try_jvp(output, wrt, tangents)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `jvp`, or an error if `wrt` and `tangents` differ in count or shapes.
    #[track_caller]
    pub fn try_jvp<'g>(
        &'g self,
        output: Var<'g>,
        wrt: &[Var<'g>],
        tangents: &[Var<'g>],
    ) -> Result<Var<'g>> {
        let location = Location::caller();
        self.own(std::iter::once(&output).chain(wrt).chain(tangents))?;
        if wrt.len() != tangents.len() {
            return Err(Error::Graph {
                detail: format!(
                    "jvp needs one tangent per variable: {} variables, {} tangents",
                    wrt.len(),
                    tangents.len()
                ),
                location,
            });
        }
        for (w, t) in wrt.iter().zip(tangents) {
            if w.shape() != t.shape() {
                return Err(Error::Shape {
                    op: "jvp",
                    detail: "a tangent's shape differs from its variable's".into(),
                    lhs: w.shape(),
                    rhs: t.shape(),
                    location,
                });
            }
        }
        Ok(self.recording_at(location, || {
            let u = self.full(0.0, output.shape());
            let vjp = self.backward((output * u).sum(), wrt);
            let along = vjp.iter().zip(tangents).map(|(&a, &v)| (a * v).sum());
            let total = along
                .reduce(|a, b| a + b)
                .unwrap_or_else(|| self.constant(0.0));
            self.backward(total, &[u]).remove(0)
        }))
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

        let mut grads: HashMap<NodeId, Var<'g>> = HashMap::default();
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
