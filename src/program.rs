//! Devices, compiling a graph for one, and running the result many times.

use crate::backend::cpu;
use crate::backend::cpu_fast::{CpuOptions, FastPlan};
use crate::backend::wgpu::device::{GpuContext, GpuOptions};
use crate::backend::wgpu::plan::Request;
use crate::backend::wgpu::program::GpuProgram;
use crate::backend::wgpu::schedule;
use crate::error::{Error, Result};
use crate::graph::{Graph, Node, NodeId, Var};
use crate::ops::{Op, Real};
use crate::shape::Shape;
use rustc_hash::FxHashMap as HashMap;
use std::panic::Location;
use std::sync::Arc;

/// Where a program runs.
#[derive(Clone, Debug)]
pub enum Device {
    /// The reference interpreter: f64 arithmetic on the CPU.
    Cpu,
    /// The CPU fast path: f32, fused loops over chunks, every core.
    CpuF32(CpuOptions),
    /// A GPU through wgpu (Vulkan, Metal or DX12), or a software Vulkan such as lavapipe.
    Gpu(Arc<GpuContext>),
}

impl Device {
    /// The CPU reference backend (f64).
    pub fn cpu() -> Device {
        Device::Cpu
    }

    /// The CPU fast path (f32, fused, multi-threaded).
    pub fn cpu_f32() -> Device {
        Device::CpuF32(CpuOptions::default())
    }

    /// The CPU fast path, cutting its work as `options` says (tests use
    /// tiny chunks to cross every boundary with small tensors).
    pub fn cpu_f32_with(options: CpuOptions) -> Device {
        Device::CpuF32(options)
    }

    /// The best GPU adapter (see [`GpuContext::open`]), or an error saying what was tried.
    pub fn gpu() -> Result<Device> {
        Device::gpu_with(&GpuOptions::default())
    }

    /// A GPU, planning against limits no larger than `options` gives; an
    /// error for options no plan can keep (no workgroups, fewer than two
    /// bindings per kernel).
    pub fn gpu_with(options: &GpuOptions) -> Result<Device> {
        Ok(Device::Gpu(GpuContext::open(options)?))
    }

    /// A hardware GPU if there is one, else the CPU fast path; logs why. A
    /// software Vulkan (lavapipe, SwiftShader) runs the same kernels on the
    /// same CPU more than ten times slower than the fast path, so it is only
    /// used when asked for ([`Device::gpu`]).
    pub fn auto() -> Device {
        match Device::gpu() {
            Ok(Device::Gpu(ctx)) if ctx.is_software() => {
                log::info!(
                    "wgrad: only a software GPU ({}); using the CPU fast path",
                    ctx.describe()
                );
                Device::cpu_f32()
            }
            Ok(d) => d,
            Err(e) => {
                log::warn!("wgrad: no GPU ({e}); using the CPU fast path");
                Device::cpu_f32()
            }
        }
    }

    /// What this device is, for people.
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => "CPU reference backend (f64)".to_string(),
            Device::CpuF32(_) => format!(
                "CPU fast path (f32, {} threads)",
                rayon::current_num_threads()
            ),
            Device::Gpu(ctx) => ctx.describe(),
        }
    }

    /// Whether this is a GPU device (software Vulkan included).
    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Gpu(_))
    }
}

/// What a run does with the program's outputs (the updates always run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outputs {
    /// Compute them and read them back.
    ReadBack,
    /// Compute them, read nothing back.
    Compute,
    /// Compute only what the updates need.
    Skip,
}

/// What one run of a program costs, from the program's own plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Compute dispatches per run (0 on the CPU, as are the bytes read and
    /// written: they count kernels' bindings).
    pub dispatches: usize,
    /// Bytes the kernels read per run (each bound buffer counted once per kernel).
    pub bytes_read: u64,
    /// Bytes the kernels write per run.
    pub bytes_written: u64,
    /// Bytes of device memory the program holds.
    pub bytes_held: u64,
}

/// One kernel's time on the GPU (`Program::kernel_times`).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// What the kernel computes (its plan's label).
    pub label: String,
    /// Milliseconds between the timestamps before and after it.
    pub ms: f64,
    /// Bytes its bindings hold: what it reads and writes, as `Stats` counts them.
    pub bytes: u64,
}

enum Exec {
    /// Parameter values, zero until set (as GPU buffers are); whether a
    /// value was set is `Program::params_set`.
    Cpu(Vec<Vec<f64>>),
    CpuF32 {
        params: Vec<Vec<f32>>,
        plan: Box<FastPlan>,
    },
    Gpu(Box<GpuProgram>),
}

/// A graph compiled for a device: run it many times with new inputs.
/// Parameters stay in the program (on the GPU) between runs.
pub struct Program {
    nodes: Vec<Node>,
    outputs: Vec<NodeId>,
    updates: Vec<(NodeId, NodeId)>,
    inputs: Vec<NodeId>,
    params: Vec<NodeId>,
    /// Which parameters the computation reads (and so must be set).
    params_read: Vec<bool>,
    /// Which parameters have a value (set by the user or by an update).
    params_set: Vec<bool>,
    exec: Exec,
    device: Device,
}

impl Graph {
    /// Compile the graph to compute `outputs` on `device`.
    #[track_caller]
    pub fn compile(&self, device: &Device, outputs: &[Var<'_>]) -> Result<Program> {
        self.compile_with_updates(device, outputs, &[])
    }

    /// Compile the graph to compute `outputs` and, after every run, replace
    /// each parameter `p` of `updates` by its value `v` (computed from the
    /// parameters' values before the run). On the GPU the update is fused
    /// with the computation that feeds it and never leaves the device.
    #[track_caller]
    pub fn compile_with_updates(
        &self,
        device: &Device,
        outputs: &[Var<'_>],
        updates: &[(Var<'_>, Var<'_>)],
    ) -> Result<Program> {
        let location = Location::caller();
        self.own(
            outputs
                .iter()
                .chain(updates.iter().flat_map(|(p, v)| [p, v])),
        )?;
        let nodes: Vec<Node> = self.nodes().clone();
        let outputs: Vec<NodeId> = outputs.iter().map(|v| v.id()).collect();
        let mut update_ids = Vec::new();
        for (p, v) in updates {
            if !matches!(nodes[p.id().index()].op, Op::Param { .. }) {
                return Err(Error::Graph {
                    detail: format!(
                        "only parameters can be updated; %{} is a {}",
                        p.id().index(),
                        nodes[p.id().index()].op.name()
                    ),
                    location,
                });
            }
            if p.shape() != v.shape() {
                return Err(Error::Shape {
                    op: "update",
                    detail: "a parameter's update must keep its shape".into(),
                    lhs: p.shape(),
                    rhs: v.shape(),
                    location,
                });
            }
            if update_ids.iter().any(|&(q, _)| q == p.id()) {
                return Err(Error::Graph {
                    detail: format!("parameter %{} is updated twice", p.id().index()),
                    location,
                });
            }
            update_ids.push((p.id(), v.id()));
        }
        let mut roots = outputs.clone();
        roots.extend(update_ids.iter().map(|u| u.1));
        let live = cpu::live_nodes(&nodes, &roots);
        let inputs: Vec<NodeId> = live
            .iter()
            .map(|&i| NodeId(i as u32))
            .filter(|id| matches!(nodes[id.index()].op, Op::Input(_)))
            .collect();
        let mut params: Vec<NodeId> = live
            .iter()
            .map(|&i| NodeId(i as u32))
            .filter(|id| matches!(nodes[id.index()].op, Op::Param { .. }))
            .collect();
        let params_read = vec![true; params.len()];
        let mut params_read = params_read;
        for &(p, _) in &update_ids {
            if !params.contains(&p) {
                params.push(p);
                params_read.push(false);
            }
        }
        let exec = match device {
            Device::Cpu => {
                // Every value of a run, at most (each is freed after its last use).
                let values = live.iter().map(|&i| NodeId(i as u32));
                check_host_memory(total_numel(&nodes, values).saturating_mul(8))?;
                Exec::Cpu(zeros(&nodes, &params)?)
            }
            Device::CpuF32(options) => {
                options.check()?;
                let updated: Vec<NodeId> = update_ids.iter().map(|u| u.1).collect();
                let plan = FastPlan::new(&nodes, &roots, &updated, *options);
                check_host_memory(fast_bytes_held(&nodes, &params, &plan))?;
                Exec::CpuF32 {
                    params: zeros(&nodes, &params)?,
                    plan: Box::new(plan),
                }
            }
            Device::Gpu(ctx) => {
                let plan = schedule::plan(
                    &Request {
                        nodes: &nodes,
                        outputs: &outputs,
                        updates: &update_ids,
                        inputs: &inputs,
                        params: &params,
                    },
                    &ctx.limits,
                )?;
                Exec::Gpu(Box::new(GpuProgram::new(
                    ctx.clone(),
                    plan,
                    outputs.clone(),
                    !update_ids.is_empty(),
                )?))
            }
        };
        // Zero-started parameters have their value already (wgpu zeroes new buffers).
        let params_set = params
            .iter()
            .map(|p| {
                matches!(
                    nodes[p.index()].op,
                    Op::Param {
                        starts_at_zero: true,
                        ..
                    }
                )
            })
            .collect();
        Ok(Program {
            nodes,
            outputs,
            updates: update_ids,
            inputs,
            params_set,
            params,
            params_read,
            exec,
            device: device.clone(),
        })
    }

    /// Evaluate `outputs` on the CPU reference in f64; `feeds` gives every
    /// input and parameter they depend on, by name.
    #[track_caller]
    pub fn eval_f64(&self, outputs: &[Var<'_>], feeds: &[(&str, &[f64])]) -> Result<Vec<Vec<f64>>> {
        self.own(outputs.iter())?;
        let nodes = self.nodes();
        let outs: Vec<NodeId> = outputs.iter().map(|v| v.id()).collect();
        let leaves: Vec<NodeId> = cpu::live_nodes(&nodes, &outs)
            .into_iter()
            .map(|i| NodeId(i as u32))
            .filter(|id| matches!(nodes[id.index()].op, Op::Input(_) | Op::Param { .. }))
            .collect();
        let data = match_feeds(&nodes, &leaves, feeds)?;
        let values = leaves.iter().copied().zip(data).collect();
        Ok(cpu::evaluate(&nodes, &outs, &values))
    }

    /// The WGSL kernels this graph compiles to for `outputs`, planned for
    /// WebGPU's default limits and validated with naga; no GPU needed.
    #[track_caller]
    pub fn wgsl(&self, outputs: &[Var<'_>]) -> Result<Vec<String>> {
        self.own(outputs.iter())?;
        let nodes = self.nodes().clone();
        let outs: Vec<NodeId> = outputs.iter().map(|v| v.id()).collect();
        let live = cpu::live_nodes(&nodes, &outs);
        let leaves = |pick: fn(&Op) -> bool| -> Vec<NodeId> {
            live.iter()
                .map(|&i| NodeId(i as u32))
                .filter(|id| pick(&nodes[id.index()].op))
                .collect()
        };
        let inputs = leaves(|op| matches!(op, Op::Input(_)));
        let params = leaves(|op| matches!(op, Op::Param { .. }));
        let plan = schedule::plan(
            &Request {
                nodes: &nodes,
                outputs: &outs,
                updates: &[],
                inputs: &inputs,
                params: &params,
            },
            &Default::default(),
        )?;
        Ok(plan.kernels.into_iter().map(|k| k.wgsl).collect())
    }
}

/// Order the fed data by `leaves`, checking names and lengths.
fn match_feeds<'a, T>(
    nodes: &[Node],
    leaves: &[NodeId],
    feeds: &[(&str, &'a [T])],
) -> Result<Vec<&'a [T]>> {
    let name_of = |id: NodeId| match &nodes[id.index()].op {
        Op::Input(n) | Op::Param { name: n, .. } => n.as_str(),
        _ => unreachable!("leaves are named"),
    };
    // A name the graph has but this computation does not read is ignored:
    // one set of feeds can serve every program compiled from a graph.
    let in_graph = |name: &str| {
        nodes
            .iter()
            .any(|n| matches!(&n.op, Op::Input(m) | Op::Param { name: m, .. } if m == name))
    };
    for (k, (name, _)) in feeds.iter().enumerate() {
        if feeds[..k].iter().any(|(n, _)| n == name) {
            return Err(Error::DuplicateInput {
                name: name.to_string(),
            });
        }
        if !in_graph(name) {
            let known: Vec<&str> = leaves.iter().map(|&l| name_of(l)).collect();
            return Err(Error::UnknownInput {
                name: name.to_string(),
                known: known.join(", "),
            });
        }
    }
    leaves
        .iter()
        .map(|&l| {
            let shape = &nodes[l.index()].shape;
            let data = feeds
                .iter()
                .find(|(n, _)| *n == name_of(l))
                .ok_or_else(|| Error::MissingInput {
                    name: name_of(l).to_string(),
                    shape: shape.clone(),
                    expected: shape.numel(),
                })?
                .1;
            check_len(name_of(l), shape, data.len())?;
            Ok(data)
        })
        .collect()
}

fn check_len(name: &str, shape: &Shape, got: usize) -> Result<()> {
    if got != shape.numel() {
        return Err(Error::WrongLength {
            name: name.to_string(),
            shape: shape.clone(),
            expected: shape.numel(),
            got,
        });
    }
    Ok(())
}

impl Program {
    /// Run once and read back every output, in the order given to `compile`.
    pub fn run(&mut self, inputs: &[(&str, &[f32])]) -> Result<Vec<Vec<f32>>> {
        self.execute(inputs, Outputs::ReadBack)
    }

    /// Run once without reading anything back (parameters are still updated).
    /// On the GPU this only submits the work; a later `run` or `param` waits for it.
    pub fn step(&mut self, inputs: &[(&str, &[f32])]) -> Result<()> {
        self.execute(inputs, Outputs::Compute).map(|_| ())
    }

    /// Apply the parameters' updates only: what only the outputs need (a
    /// loss no update reads, say) is not computed. A training loop calls
    /// this between the steps whose loss it reads with `run`. On the GPU
    /// this only submits the work, as `step` does.
    pub fn update(&mut self, inputs: &[(&str, &[f32])]) -> Result<()> {
        self.execute(inputs, Outputs::Skip).map(|_| ())
    }

    /// Block until all submitted work has finished (a no-op on the CPU).
    pub fn wait(&self) -> Result<()> {
        match &self.exec {
            Exec::Cpu(_) | Exec::CpuF32 { .. } => Ok(()),
            Exec::Gpu(g) => g.wait(),
        }
    }

    fn execute(&mut self, inputs: &[(&str, &[f32])], outputs: Outputs) -> Result<Vec<Vec<f32>>> {
        let data = self.feeds(inputs)?;
        self.dispatch(&data, outputs)
    }

    fn dispatch(&mut self, data: &[&[f32]], outputs: Outputs) -> Result<Vec<Vec<f32>>> {
        let run = CpuRun {
            nodes: &self.nodes,
            inputs: &self.inputs,
            params: &self.params,
            outputs: &self.outputs,
            updates: &self.updates,
        };
        match &mut self.exec {
            Exec::Cpu(params) => Ok(run.reference(params, data, outputs)),
            Exec::CpuF32 { params, plan } => Ok(run.fast(params, plan, data, outputs)),
            Exec::Gpu(g) => g.run(data, outputs),
        }
    }

    /// The inputs' data in the program's order, once every parameter a run
    /// reads has a value; the updated parameters count as set from then on.
    fn feeds<'a>(&mut self, inputs: &[(&str, &'a [f32])]) -> Result<Vec<&'a [f32]>> {
        let data = match_feeds(&self.nodes, &self.inputs, inputs)?;
        if let Some(k) =
            (0..self.params.len()).find(|&k| self.params_read[k] && !self.params_set[k])
        {
            let n = &self.nodes[self.params[k].index()];
            return Err(Error::UnsetParam {
                name: n.op_name_string(),
                shape: n.shape.clone(),
            });
        }
        for &(p, _) in &self.updates {
            let k = self.params.iter().position(|&q| q == p).expect("listed");
            self.params_set[k] = true;
        }
        Ok(data)
    }

    /// Set parameter `name` (row-major data).
    pub fn set_param(&mut self, name: &str, data: &[f32]) -> Result<()> {
        let k = self.param_index(name)?;
        let shape = &self.nodes[self.params[k].index()].shape;
        check_len(name, shape, data.len())?;
        match &mut self.exec {
            Exec::Cpu(params) => params[k] = data.iter().map(|&x| x as f64).collect(),
            Exec::CpuF32 { params, .. } => params[k] = data.to_vec(),
            Exec::Gpu(g) => g.set_param(k, data),
        }
        self.params_set[k] = true;
        Ok(())
    }

    /// Read parameter `name` back (waits for submitted work).
    pub fn param(&self, name: &str) -> Result<Vec<f32>> {
        let k = self.param_index(name)?;
        if !self.params_set[k] {
            return Err(Error::UnsetParam {
                name: name.to_string(),
                shape: self.nodes[self.params[k].index()].shape.clone(),
            });
        }
        match &self.exec {
            Exec::Cpu(params) => Ok(as_f32(&params[k])),
            Exec::CpuF32 { params, .. } => Ok(params[k].clone()),
            Exec::Gpu(g) => {
                let mut v = g.param(k)?;
                v.truncate(self.nodes[self.params[k].index()].shape.numel());
                Ok(v)
            }
        }
    }

    fn param_index(&self, name: &str) -> Result<usize> {
        self.params
            .iter()
            .position(|p| self.nodes[p.index()].op_name_string() == name)
            .ok_or_else(|| Error::UnknownParam {
                name: name.to_string(),
                known: self
                    .params
                    .iter()
                    .map(|p| self.nodes[p.index()].op_name_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// What one run costs.
    pub fn stats(&self) -> Stats {
        let held = |bytes_held| Stats {
            bytes_held,
            ..Stats::default()
        };
        match &self.exec {
            Exec::Cpu(_) => {
                held(total_numel(&self.nodes, self.params.iter().copied()).saturating_mul(8))
            }
            Exec::CpuF32 { plan, .. } => held(fast_bytes_held(&self.nodes, &self.params, plan)),
            Exec::Gpu(g) => g.stats(),
        }
    }

    /// The device the program runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Run once, as `step` does, timing each kernel on the GPU (the CPU
    /// backends have no kernels: they run the step and return none). For
    /// finding which kernel is slow: separate passes and timestamps add a
    /// little time of their own. An error on an adapter without timestamp
    /// queries.
    pub fn kernel_times(&mut self, inputs: &[(&str, &[f32])]) -> Result<Vec<KernelTime>> {
        if let Exec::Gpu(g) = &self.exec {
            g.check_timestamps()?;
        }
        let data = self.feeds(inputs)?;
        match &mut self.exec {
            Exec::Gpu(g) => g.kernel_times(&data),
            Exec::Cpu(_) | Exec::CpuF32 { .. } => {
                self.dispatch(&data, Outputs::Compute)?;
                Ok(Vec::new())
            }
        }
    }

    /// The generated WGSL of each kernel, in dispatch order (empty on the CPU).
    pub fn kernels_wgsl(&self) -> Vec<String> {
        match &self.exec {
            Exec::Cpu(_) | Exec::CpuF32 { .. } => Vec::new(),
            Exec::Gpu(g) => g.kernels_wgsl(),
        }
    }
}

impl Node {
    /// The name of an input or parameter node.
    pub(crate) fn op_name_string(&self) -> String {
        match &self.op {
            Op::Input(n) | Op::Param { name: n, .. } => n.clone(),
            op => op.name().to_string(),
        }
    }
}

/// Elements in the values of `ids` (saturating: a count past `u64` is
/// more memory than any machine has all the same).
fn total_numel(nodes: &[Node], ids: impl IntoIterator<Item = NodeId>) -> u64 {
    ids.into_iter()
        .map(|id| nodes[id.index()].shape.numel() as u64)
        .fold(0, u64::saturating_add)
}

/// Bytes the fast path keeps between runs: parameters and the plan's buffers.
fn fast_bytes_held(nodes: &[Node], params: &[NodeId], plan: &FastPlan) -> u64 {
    total_numel(nodes, params.iter().copied().chain(plan.buffers())).saturating_mul(4)
}

/// Zeros for every parameter, or an error if the memory cannot be had.
fn zeros<T: Real>(nodes: &[Node], params: &[NodeId]) -> Result<Vec<Vec<T>>> {
    params
        .iter()
        .map(|p| {
            let n = nodes[p.index()].shape.numel();
            let mut v = Vec::new();
            v.try_reserve_exact(n).map_err(|e| Error::OutOfMemory {
                needed: (n as u64).saturating_mul(std::mem::size_of::<T>() as u64),
                detail: e.to_string(),
            })?;
            v.resize(n, T::from_f64(0.0));
            Ok(v)
        })
        .collect()
}

/// Refuse, before anything is allocated, a program needing more memory
/// than this machine has free: the CPU backends' buffers, and a software
/// GPU's, are host memory, which the system promises freely and then
/// reclaims by killing the process when the pages are first touched.
pub(crate) fn check_host_memory(needed: u64) -> Result<()> {
    match host_memory_available() {
        Some(free) if needed > free => Err(Error::OutOfMemory {
            needed,
            detail: format!("this machine has {free} bytes available"),
        }),
        _ => Ok(()),
    }
}

/// Memory a new allocation can have without swapping (Linux's
/// MemAvailable); `None` where unknown.
fn host_memory_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn as_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// What a run on a CPU backend reads of its program.
struct CpuRun<'a> {
    nodes: &'a [Node],
    inputs: &'a [NodeId],
    params: &'a [NodeId],
    outputs: &'a [NodeId],
    updates: &'a [(NodeId, NodeId)],
}

impl CpuRun<'_> {
    /// Every leaf's values: the inputs given, then the parameters.
    fn leaves<'a, T>(
        &self,
        inputs: &'a [impl AsRef<[T]>],
        params: &'a [Vec<T>],
    ) -> HashMap<NodeId, &'a [T]> {
        let inputs = self.inputs.iter().zip(inputs.iter().map(|d| d.as_ref()));
        let params = self.params.iter().zip(params.iter().map(|v| v.as_slice()));
        inputs.chain(params).map(|(&id, v)| (id, v)).collect()
    }

    fn slot(&self, param: NodeId) -> usize {
        self.params
            .iter()
            .position(|&q| q == param)
            .expect("listed")
    }

    /// Evaluate outputs and updates in f64, then apply the updates.
    fn reference(
        &self,
        params: &mut [Vec<f64>],
        data: &[&[f32]],
        outputs: Outputs,
    ) -> Vec<Vec<f32>> {
        let converted: Vec<Vec<f64>> = data
            .iter()
            .map(|d| d.iter().map(|&x| x as f64).collect())
            .collect();
        let mut roots = match outputs {
            Outputs::Skip => Vec::new(),
            _ => self.outputs.to_vec(),
        };
        let computed = roots.len();
        roots.extend(self.updates.iter().map(|u| u.1));
        let mut values = cpu::evaluate(self.nodes, &roots, &self.leaves(&converted, params));
        let updated = values.split_off(computed);
        for ((p, _), v) in self.updates.iter().zip(updated) {
            params[self.slot(*p)] = v;
        }
        match outputs {
            Outputs::ReadBack => values.iter().map(|v| as_f32(v)).collect(),
            _ => Vec::new(),
        }
    }

    /// Run the fast path's plan, then apply the updates: a computed value
    /// is swapped into its parameter, and the plan refills the old buffer
    /// on the next run, so a step copies nothing.
    fn fast(
        &self,
        params: &mut [Vec<f32>],
        plan: &mut FastPlan,
        data: &[&[f32]],
        outputs: Outputs,
    ) -> Vec<Vec<f32>> {
        let leaves = self.leaves(data, params);
        plan.run(self.nodes, &leaves, outputs != Outputs::Skip);
        let value = |id: &NodeId| match leaves.get(id) {
            Some(v) => v.to_vec(),
            None => plan.value(*id).to_vec(),
        };
        let outputs = match outputs {
            Outputs::ReadBack => self.outputs.iter().map(value).collect(),
            _ => Vec::new(),
        };
        // A leaf, or a value two parameters take, is copied.
        let copies: Vec<Option<Vec<f32>>> = (0..self.updates.len())
            .map(|k| {
                let v = self.updates[k].1;
                let again = self.updates[k + 1..].iter().any(|u| u.1 == v);
                (again || leaves.contains_key(&v)).then(|| value(&v))
            })
            .collect();
        for (&(p, v), copy) in self.updates.iter().zip(copies) {
            let slot = self.slot(p);
            match copy {
                Some(c) => params[slot] = c,
                None => std::mem::swap(&mut params[slot], plan.value_mut(v)),
            }
        }
        outputs
    }
}
