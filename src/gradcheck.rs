//! Checking a graph's gradients against central finite differences in f64.

use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::ops::Op;
use std::panic::Location;

/// The outcome of [`gradcheck`]: the worst disagreement found.
#[derive(Clone, Debug, PartialEq)]
pub struct GradCheck {
    /// Largest `|analytic - numeric| / max(1, |numeric|)` over all elements.
    pub worst_error: f64,
    /// Which variable (index into `wrt`) and element it was at.
    pub worst_at: (usize, usize),
    /// The analytic and numeric derivatives there.
    pub analytic: f64,
    pub numeric: f64,
}

/// Compare the gradients of the scalar `loss` with respect to the inputs or
/// parameters `wrt` (recorded into `graph` by this call) against central
/// differences with step `h`, all on the CPU reference in f64. `feeds` gives
/// every input and parameter the loss depends on. An error for a step that
/// is not positive and finite, or a variable of `wrt` that is not an
/// input or parameter fed in `feeds`.
#[track_caller]
pub fn gradcheck(
    graph: &Graph,
    loss: Var<'_>,
    wrt: &[Var<'_>],
    feeds: &[(&str, &[f64])],
    h: f64,
) -> Result<GradCheck> {
    let location = Location::caller();
    if !(h > 0.0 && h.is_finite()) {
        return Err(Error::Argument {
            op: "gradcheck",
            detail: format!("the step must be positive and finite, got {h}"),
            location,
        });
    }
    graph.own(wrt.iter())?;
    let mut slots = Vec::new();
    for var in wrt {
        let node = &graph.nodes()[var.id().index()];
        let (Op::Input(name) | Op::Param { name, .. }) = &node.op else {
            return Err(Error::Argument {
                op: "gradcheck",
                detail: format!(
                    "%{} is a {}: only inputs and parameters can be perturbed",
                    var.id().index(),
                    node.op.name()
                ),
                location,
            });
        };
        let slot = feeds.iter().position(|(n, _)| n == name);
        slots.push(slot.ok_or_else(|| Error::MissingInput {
            name: name.clone(),
            shape: node.shape.clone(),
            expected: node.shape.numel(),
        })?);
    }
    let grads = graph.try_grad(loss, wrt)?;
    let analytic = graph.eval_f64(&grads, feeds)?;
    let mut owned: Vec<(String, Vec<f64>)> = feeds
        .iter()
        .map(|(n, d)| (n.to_string(), d.to_vec()))
        .collect();
    let mut worst = GradCheck {
        worst_error: 0.0,
        worst_at: (0, 0),
        analytic: 0.0,
        numeric: 0.0,
    };
    for (w, &slot) in slots.iter().enumerate() {
        for (e, &a) in analytic[w].iter().enumerate() {
            let x0 = owned[slot].1[e];
            let mut at = |x: f64| -> Result<f64> {
                owned[slot].1[e] = x;
                let view: Vec<(&str, &[f64])> = owned
                    .iter()
                    .map(|(n, d)| (n.as_str(), d.as_slice()))
                    .collect();
                Ok(graph.eval_f64(&[loss], &view)?[0][0])
            };
            let numeric = (at(x0 + h)? - at(x0 - h)?) / (2.0 * h);
            owned[slot].1[e] = x0;
            let err = (a - numeric).abs() / numeric.abs().max(1.0);
            if err > worst.worst_error || err.is_nan() {
                worst = GradCheck {
                    worst_error: err,
                    worst_at: (w, e),
                    analytic: a,
                    numeric,
                };
            }
        }
    }
    Ok(worst)
}
