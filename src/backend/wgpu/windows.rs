//! Cutting a kernel into windows of its index range, one dispatch each,
//! where its tensors take more storage bindings than the device allows.

use super::codegen::Problem;
use super::device::GpuLimits;
use super::plan::{BufId, BufKind, BufSpec, KernelSpec};
use super::schedule::Target;
use crate::error::Result;
use crate::graph::NodeId;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::ops::Range;

/// A kernel is cut into at most this many windows of its index range.
pub(super) const MAX_WINDOWS: usize = 1024;

/// A kernel's dispatches for one cut of its index range, and the problem
/// (if any) emitting it found, which is the same for every cut.
pub(super) struct Cut {
    pub(super) kernels: Vec<KernelSpec>,
    pub(super) problem: Option<Problem>,
}

impl Cut {
    /// The most storage bindings one of its dispatches takes.
    pub(super) fn widest(&self) -> usize {
        self.kernels
            .iter()
            .map(|k| k.bindings.len())
            .max()
            .unwrap_or(0)
    }
}

/// The fewest dispatches of a kernel whose bindings fit the device.
/// `build(s, f)` builds the kernel with its slots (elements or rows,
/// outputs, rows of tiles) cut into at most `s` windows and each fold (a
/// reduction's, a product's k; an element-wise kernel's columns) into at
/// most `f`. Tried: the whole range, then 2, 4, 8, … windows of the slots;
/// where `cut_folds`, of each fold, then of both (a column sum of a large
/// matrix needs both). Each way of cutting goes on up to `MAX_WINDOWS`
/// dispatches, or until three finer cuts in a row bind no fewer buffers (a
/// window of a tensor read out of order reaches all its parts however
/// narrow). None is tried where every window binds at least `floor`
/// buffers (`None`: every cut accesses the buffers the whole range does),
/// more than the device allows. Where none fits, the whole range, built
/// last, so that whatever `build` planned is its own.
pub(super) fn in_windows(
    limits: &GpuLimits,
    cut_folds: bool,
    floor: Option<usize>,
    mut build: impl FnMut(usize, usize) -> Result<Cut>,
) -> Result<Cut> {
    let max = limits.max_storage_buffers as usize;
    let whole = build(1, 1)?;
    // Where every cut's kernels access the buffers the whole range's does,
    // a window binds at least one part of each (an access out of its
    // reach still binds one): the whole's count of buffers is the floor.
    let floor = floor.unwrap_or_else(|| {
        let buffers = |k: &KernelSpec| k.bindings.iter().map(|b| b.buf).collect::<HashSet<_>>();
        whole
            .kernels
            .iter()
            .map(|k| buffers(k).len())
            .max()
            .unwrap_or(0)
    });
    // Trying windows costs their code: dozens of kernels per way of cutting.
    if whole.problem.is_some() || whole.widest() <= max || floor > max {
        return Ok(whole);
    }
    for (slots, folds) in [(true, false), (false, true), (true, true)] {
        if folds && !cut_folds {
            continue;
        }
        let (mut best, mut stale) = (whole.widest(), 0);
        let mut n = 2;
        let cuts = |n: usize| (if slots { n } else { 1 }, if folds { n } else { 1 });
        while cuts(n).0 * cuts(n).1 <= MAX_WINDOWS && stale < 3 {
            let cut = build(cuts(n).0, cuts(n).1)?;
            if cut.widest() <= max {
                return Ok(cut);
            }
            stale = if cut.widest() < best { 0 } else { stale + 1 };
            best = best.min(cut.widest());
            n *= 2;
        }
    }
    build(1, 1)
}

/// The fewest bindings any window of a kernel takes: one for each buffer
/// it reads at its own index (`reads`: every element reads each) and one
/// for each buffer of `targets` (every element writes each).
pub(super) fn fewest_bindings(
    stored: &HashMap<NodeId, BufId>,
    reads: &[NodeId],
    targets: &[Target],
) -> usize {
    let read = reads.iter().map(|n| stored[n]);
    let bufs: HashSet<BufId> = read.chain(targets.iter().map(|t| t.buf)).collect();
    bufs.len()
}

/// `0..len` in at most `n` windows. Windows (but the last) have one
/// power-of-two length, so that a window of a tensor read in order reaches
/// as few binding parts (a power of two elements each) as it can.
pub(super) fn windows(len: usize, n: usize) -> Vec<Range<usize>> {
    if n == 1 || len <= 1 {
        return std::iter::once(0..len).collect();
    }
    let w = len.div_ceil(n).next_power_of_two();
    (0..len).step_by(w).map(|a| a..(a + w).min(len)).collect()
}

/// Where a cut of a reduction into windows with `count` partials per output
/// (of `outs`) leaves its results: the target's own buffer where there is
/// one, else a new buffer of partials after the first `planned` buffers
/// (an earlier cut's partials dropped).
pub(super) fn results_buffer(
    buffers: &mut Vec<BufSpec>,
    planned: usize,
    target: Target,
    outs: usize,
    count: usize,
) -> BufId {
    buffers.truncate(planned);
    if count == 1 {
        return target.buf;
    }
    buffers.push(BufSpec {
        numel: outs * count,
        kind: BufKind::Temp,
    });
    buffers.len() - 1
}

/// A kernel's label, with its window where it has several.
pub(super) fn window_label(label: &str, k: usize, n: usize) -> String {
    if n == 1 {
        label.to_string()
    } else {
        format!("{label} (window {} of {n})", k + 1)
    }
}
