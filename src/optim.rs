//! Optimizers as graph ops. Each turns parameters and their gradients into
//! updates for [`Graph::compile_with_updates`], so a step is fused with the
//! gradient that feeds it, runs in one submit, and keeps parameters and
//! optimizer state on the device.

use crate::graph::{Graph, Var};

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

    /// The updates that minimise the scalar `loss` over `params` by one step.
    #[track_caller]
    pub fn minimize<'g>(&self, loss: Var<'g>, params: &[Var<'g>]) -> Vec<(Var<'g>, Var<'g>)> {
        let grads = loss.graph().grad(loss, params);
        self.updates(params, &grads)
    }

    /// The updates of one step for `params` given their gradients. State
    /// (velocity, moments, the step count) is recorded as zero-started
    /// parameters named after each parameter: `w.velocity`, `w.adam_m`, …
    #[track_caller]
    pub fn updates<'g>(&self, params: &[Var<'g>], grads: &[Var<'g>]) -> Vec<(Var<'g>, Var<'g>)> {
        assert_eq!(params.len(), grads.len(), "one gradient per parameter");
        let Some(first) = params.first() else {
            return Vec::new();
        };
        let g: &'g Graph = first.graph();
        let name = |p: &Var<'g>| g.nodes()[p.id().index()].op_name_string();
        let mut out = Vec::new();
        match *self {
            Optimizer::Sgd { lr } => {
                for (&w, &dw) in params.iter().zip(grads) {
                    out.push((w, w - lr * dw));
                }
            }
            Optimizer::Momentum { lr, mu } => {
                for (&w, &dw) in params.iter().zip(grads) {
                    let v = g.state(&format!("{}.velocity", name(&w)), w.shape());
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
                let t = g.state(&format!("{}.adam_step", name(first)), []);
                let t1 = t + 1.0;
                out.push((t, t1));
                let correct1 = 1.0 - g.constant(beta1).pow(t1);
                let correct2 = 1.0 - g.constant(beta2).pow(t1);
                for (&w, &dw) in params.iter().zip(grads) {
                    let m = g.state(&format!("{}.adam_m", name(&w)), w.shape());
                    let v = g.state(&format!("{}.adam_v", name(&w)), w.shape());
                    let m1 = beta1 * m + (1.0 - beta1) * dw;
                    let v1 = beta2 * v + (1.0 - beta2) * dw.square();
                    out.push((m, m1));
                    out.push((v, v1));
                    let step = lr * (m1 / correct1) / ((v1 / correct2).sqrt() + eps);
                    out.push((w, w - step));
                }
            }
        }
        out
    }
}
