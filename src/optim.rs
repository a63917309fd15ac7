//! Optimizers as graph ops. Each turns parameters and their gradients into
//! updates for [`Graph::compile_with_updates`], so a step is fused with the
//! gradient that feeds it, runs in one submit, and keeps parameters and
//! optimizer state on the device.

use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::ops::Op;
use crate::shape::Shape;
use std::panic::Location;

/// A first-order optimizer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// `w ← w − lr·g`
    Sgd { lr: f64 },
    /// `v ← μ·v + g; w ← w − lr·v` (PyTorch's form; `v` starts at zero).
    Momentum { lr: f64, mu: f64 },
    /// Adam (Kingma & Ba) with bias correction; moments start at zero.
    Adam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
}

impl Optimizer {
    /// Adam with the usual β₁ = 0.9, β₂ = 0.999, ε = 1e-8.
    pub fn adam(lr: f64) -> Optimizer {
        Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// The updates that minimise the scalar `loss` over `params` by one
    /// step. Panics (with the caller's line) where `try_minimize` errs.
    #[track_caller]
    pub fn minimize<'g>(&self, loss: Var<'g>, params: &[Var<'g>]) -> Updates<'g> {
        self.try_minimize(loss, params)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `minimize`, or an error: a loss that is not a scalar, `params`
    /// that are not parameters of the loss's graph or are named twice, or
    /// state names already taken (the optimizer applied to them before).
    #[track_caller]
    pub fn try_minimize<'g>(&self, loss: Var<'g>, params: &[Var<'g>]) -> Result<Updates<'g>> {
        let grads = loss.graph().try_grad(loss, params)?;
        self.try_updates(params, &grads)
    }

    /// The updates of one step for `params` given their gradients. State
    /// (velocity, moments, the step count) is recorded as zero-started
    /// parameters named after each parameter: `w.velocity`, `w.adam_m`, …
    /// Panics (with the caller's line) where `try_updates` errs.
    #[track_caller]
    pub fn updates<'g>(&self, params: &[Var<'g>], grads: &[Var<'g>]) -> Updates<'g> {
        self.try_updates(params, grads)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `updates`, or an error: not one gradient per parameter, or of
    /// another shape, `params` that are not parameters or are named twice,
    /// or state names already taken.
    #[track_caller]
    pub fn try_updates<'g>(&self, params: &[Var<'g>], grads: &[Var<'g>]) -> Result<Updates<'g>> {
        let location = Location::caller();
        let Some(first) = params.first() else {
            return Ok(Vec::new());
        };
        let g: &'g Graph = first.graph();
        g.own(params.iter().chain(grads))?;
        let graph_error = |detail: String| Error::Graph { detail, location };
        if params.len() != grads.len() {
            return Err(graph_error(format!(
                "one gradient per parameter: {} parameters, {} gradients",
                params.len(),
                grads.len()
            )));
        }
        let mut names = Vec::new();
        for (w, dw) in params.iter().zip(grads) {
            let name = match &g.nodes()[w.id().index()].op {
                Op::Param { name, .. } => name.clone(),
                op => {
                    return Err(graph_error(format!(
                        "only parameters can be optimized; %{} is a {}",
                        w.id().index(),
                        op.name()
                    )))
                }
            };
            if names.contains(&name) {
                return Err(graph_error(format!("parameter `{name}` is given twice")));
            }
            if w.shape() != dw.shape() {
                return Err(Error::Shape {
                    op: "updates",
                    detail: format!("the gradient of `{name}` has another shape"),
                    lhs: w.shape(),
                    rhs: dw.shape(),
                    location,
                });
            }
            names.push(name);
        }
        let state = |name: String, shape: Shape| g.state_at(&name, shape, location);
        let mut out = Vec::new();
        match *self {
            Optimizer::Sgd { lr } => {
                for (&w, &dw) in params.iter().zip(grads) {
                    out.push((w, w - lr * dw));
                }
            }
            Optimizer::Momentum { lr, mu } => {
                for ((&w, &dw), name) in params.iter().zip(grads).zip(&names) {
                    let v = state(format!("{name}.velocity"), w.shape())?;
                    let v1 = mu * v + dw;
                    out.push((v, v1));
                    out.push((w, w - lr * v1));
                }
            }
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                let t = state(format!("{}.adam_step", names[0]), Shape::scalar())?;
                let t1 = t + 1.0;
                out.push((t, t1));
                let correct1 = 1.0 - g.constant(beta1).pow(t1);
                let correct2 = 1.0 - g.constant(beta2).pow(t1);
                for ((&w, &dw), name) in params.iter().zip(grads).zip(&names) {
                    let m = state(format!("{name}.adam_m"), w.shape())?;
                    let v = state(format!("{name}.adam_v"), w.shape())?;
                    let m1 = beta1 * m + (1.0 - beta1) * dw;
                    let v1 = beta2 * v + (1.0 - beta2) * dw.square();
                    out.push((m, m1));
                    out.push((v, v1));
                    let step = lr * (m1 / correct1) / ((v1 / correct2).sqrt() + eps);
                    out.push((w, w - step));
                }
            }
        }
        Ok(out)
    }
}

/// Updates for [`Graph::compile_with_updates`]: each parameter with its new value.
pub type Updates<'g> = Vec<(Var<'g>, Var<'g>)>;
