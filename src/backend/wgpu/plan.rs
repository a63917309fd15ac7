//! A GPU plan: the buffers a program holds and the kernels a run
//! dispatches, in order, as the scheduler (`schedule.rs`) makes them.

use crate::graph::{Node, NodeId};
use rustc_hash::FxHashMap as HashMap;

/// A buffer of the program, by index.
pub(crate) type BufId = usize;

/// What a buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BufKind {
    /// The k-th input of the program.
    Input(usize),
    /// The k-th parameter; `next` is the buffer its update is written to
    /// (the two swap after every run).
    Param { index: usize, next: bool },
    /// Computed and used within a run.
    Temp,
}

#[derive(Clone, Debug)]
pub(crate) struct BufSpec {
    pub numel: usize,
    pub kind: BufKind,
}

impl BufSpec {
    /// How many buffers of `chunk` elements hold this one.
    pub fn parts(&self, chunk: usize) -> usize {
        self.numel.div_ceil(chunk).max(1)
    }
}

/// One compute dispatch.
#[derive(Clone, Debug)]
pub(crate) struct KernelSpec {
    pub label: String,
    pub wgsl: String,
    /// Storage bindings, in binding order.
    pub bindings: Vec<Binding>,
    /// The stored nodes whose values it loads.
    pub reads: Vec<NodeId>,
    pub workgroups: u32,
}

/// A part of a buffer bound to a kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Binding {
    pub buf: BufId,
    pub part: usize,
    /// Whether the kernel writes it.
    pub write: bool,
    /// The bytes of the part the kernel can reach: what it reads or writes
    /// at most (a window of a tensor reaches a little of its neighbours' parts).
    pub bytes: u64,
}

/// Everything the program needs to create its buffers and pipelines.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub buffers: Vec<BufSpec>,
    /// Elements per binding; a larger buffer is split into parts of this size.
    pub chunk: usize,
    pub kernels: Vec<KernelSpec>,
    /// Where each stored node's value lives after a run.
    pub stored: HashMap<NodeId, BufId>,
}

impl Plan {
    /// Which kernels a run that computes only the updates dispatches:
    /// walking back from the buffers the updates write, a kernel writing a
    /// needed buffer is needed, and so is every buffer it reads.
    pub fn for_updates(&self) -> Vec<bool> {
        let mut needed: Vec<bool> = self
            .buffers
            .iter()
            .map(|b| matches!(b.kind, BufKind::Param { next: true, .. }))
            .collect();
        let mut keep = vec![false; self.kernels.len()];
        for (k, spec) in self.kernels.iter().enumerate().rev() {
            if spec.bindings.iter().any(|b| b.write && needed[b.buf]) {
                keep[k] = true;
                for b in &spec.bindings {
                    needed[b.buf] |= !b.write;
                }
            }
        }
        keep
    }
}

/// What a program computes: `outputs`, and `updates` (param node, value node).
pub(crate) struct Request<'a> {
    pub nodes: &'a [Node],
    pub outputs: &'a [NodeId],
    pub updates: &'a [(NodeId, NodeId)],
    /// The program's inputs and parameters, in the order their buffers are numbered.
    pub inputs: &'a [NodeId],
    pub params: &'a [NodeId],
}
