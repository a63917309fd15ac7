//! The rule every GPU plan keeps, checked once over its final kernel list.
//!
//! The scheduler fuses in several places (riders in a reduction's first
//! pass, epilogues in its last, a column reduction with the row reduction
//! it reads, windows, a second pass over partials), and each attachment
//! must keep one rule: a kernel reads a value only once every kernel that
//! writes it has run. A fusion that breaks it computes from a buffer that
//! is not yet written (or never is), which no driver reports: the result is
//! silently wrong. So the rule is not trusted to each place that fuses; it
//! is checked here, over what will actually be dispatched, and a plan that
//! breaks it is refused with `Error::Plan` instead of run.

use super::plan::{BufId, BufKind, KernelSpec, Plan};
use crate::error::{Error, Result};
use crate::graph::NodeId;

/// Check that `kernels`, dispatched in order, compute `plan`'s values
/// right: in every run of the program, and in a run that computes only the
/// updates (`Plan::for_updates`), which leaves some kernels out.
///
/// - No kernel writes an input or a parameter's current value.
/// - A kernel loads a stored value only after every kernel that writes it.
///   (A fused row+column pass loads nothing its own column fold writes; a
///   kernel of level L loads only what levels below L wrote.)
/// - Any other buffer a kernel reads (a reduction's partials or counters)
///   was written before it, or by the kernel itself.
/// - Every requested output that is not an input, and every updated
///   parameter's next value, is written by some kernel.
pub(crate) fn check(plan: &Plan, outputs: &[NodeId]) -> Result<()> {
    let all: Vec<&KernelSpec> = plan.kernels.iter().collect();
    check_order(plan, &all, outputs)?;
    let updates: Vec<&KernelSpec> = plan
        .kernels
        .iter()
        .zip(plan.for_updates())
        .filter_map(|(k, keep)| keep.then_some(k))
        .collect();
    check_order(plan, &updates, &[])
}

fn check_order(plan: &Plan, kernels: &[&KernelSpec], outputs: &[NodeId]) -> Result<()> {
    let bug = |detail: String| Err(Error::Plan(detail));
    let leaf = |b: BufId| {
        matches!(
            plan.buffers[b].kind,
            BufKind::Input(_) | BufKind::Param { next: false, .. }
        )
    };
    // The last kernel that writes each buffer.
    let mut last_write: Vec<Option<usize>> = vec![None; plan.buffers.len()];
    for (k, spec) in kernels.iter().enumerate() {
        for b in spec.bindings.iter().filter(|b| b.write) {
            if leaf(b.buf) {
                return bug(format!(
                    "`{}` writes buffer {}, an input's or a parameter's current value",
                    spec.label, b.buf
                ));
            }
            last_write[b.buf] = Some(k);
        }
    }
    let mut written = vec![false; plan.buffers.len()];
    for (k, spec) in kernels.iter().enumerate() {
        for &n in &spec.reads {
            let b = plan.stored[&n];
            match last_write[b] {
                _ if leaf(b) => {}
                Some(w) if w < k => {}
                Some(w) => {
                    return bug(format!(
                        "`{}` loads %{} (buffer {b}) before `{}` writes it",
                        spec.label,
                        n.index(),
                        kernels[w].label
                    ))
                }
                None => {
                    return bug(format!(
                        "`{}` loads %{} (buffer {b}), which no kernel writes",
                        spec.label,
                        n.index()
                    ))
                }
            }
        }
        let mine = |b: BufId| spec.bindings.iter().any(|x| x.buf == b && x.write);
        for b in spec.bindings.iter().filter(|b| !b.write) {
            if !leaf(b.buf) && !written[b.buf] && !mine(b.buf) {
                return bug(format!(
                    "`{}` reads buffer {} before any kernel writes it",
                    spec.label, b.buf
                ));
            }
        }
        for b in spec.bindings.iter().filter(|b| b.write) {
            written[b.buf] = true;
        }
    }
    for o in outputs {
        let b = plan.stored[o];
        if !leaf(b) && plan.buffers[b].numel > 0 && last_write[b].is_none() {
            return bug(format!(
                "output %{} (buffer {b}) is never written",
                o.index()
            ));
        }
    }
    for (b, spec) in plan.buffers.iter().enumerate() {
        let update = matches!(spec.kind, BufKind::Param { next: true, .. });
        if update && spec.numel > 0 && last_write[b].is_none() {
            return bug(format!("the update of buffer {b} is never written"));
        }
    }
    Ok(())
}
