//! A planned program on a wgpu device: buffers, pipelines and bind groups are
//! created once; a run writes the inputs, encodes every dispatch into one
//! command buffer, submits it once, and reads back only what was asked for.

use super::device::GpuContext;
use super::plan::{BufKind, Plan};
use crate::error::{Error, Result};
use crate::graph::NodeId;
use crate::program::{KernelTime, Outputs, Stats};
use std::sync::Arc;

/// How long `wait` polls before it blocks: a thread asleep in the driver's
/// wait wakes late (on an H100, a run of 2^10 elements took 0.056–0.086 ms
/// blocking, 0.037 polling). Runs longer than this lose little to a late
/// wake next to their own time.
const SPIN: std::time::Duration = std::time::Duration::from_millis(20);

struct Kernel {
    label: String,
    /// Bytes the kernel can reach in its bindings (what it reads and writes).
    bytes: u64,
    /// Whether an update reads what the kernel writes (if not, it serves
    /// the outputs alone).
    for_updates: bool,
    pipeline: wgpu::ComputePipeline,
    /// One bind group per parity of the parameter buffers.
    bind_groups: Vec<wgpu::BindGroup>,
    workgroups: u32,
}

/// A run's command buffer encoded ahead (see `GpuProgram::submit`).
struct Encoded {
    outputs: Outputs,
    parity: usize,
    commands: wgpu::CommandBuffer,
}

pub(crate) struct GpuProgram {
    ctx: Arc<GpuContext>,
    plan: Plan,
    /// The buffers behind each planned buffer (one per part), for parity 0
    /// and parity 1 (the same unless it is a parameter's current/next pair).
    buffers: Vec<Vec<[Arc<wgpu::Buffer>; 2]>>,
    kernels: Vec<Kernel>,
    /// Readback buffers for each output, one per part of its buffer (an
    /// output may be larger than the largest buffer).
    staging: Vec<Vec<wgpu::Buffer>>,
    outputs: Vec<NodeId>,
    parity: usize,
    has_updates: bool,
    bytes_held: u64,
    /// The next run's command buffer, if encoded ahead.
    next: Option<Encoded>,
}

impl GpuProgram {
    pub fn new(
        ctx: Arc<GpuContext>,
        plan: Plan,
        outputs: Vec<NodeId>,
        has_updates: bool,
    ) -> Result<GpuProgram> {
        let bytes_held: u64 = plan.buffers.iter().map(|b| b.numel.max(1) as u64 * 4).sum();
        if ctx.is_software() {
            // The readback buffers are host memory too.
            let numel = |o: &NodeId| plan.buffers[plan.stored[o]].numel.max(1) as u64;
            let readback: u64 = outputs.iter().map(|o| 4 * numel(o)).sum();
            crate::program::check_host_memory(bytes_held + readback)?;
        }
        let device = &ctx.device;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        // A planned buffer larger than one binding is made of parts of
        // `plan.chunk` elements.
        let chunk = plan.chunk;
        let make = |numel: usize, label: &str| -> Vec<Arc<wgpu::Buffer>> {
            (0..numel.div_ceil(chunk).max(1))
                .map(|p| {
                    let len = part_len(numel, chunk, p);
                    // Whole vec4s: a kernel reading a tensor as vec4s reads
                    // its last vec4 whole.
                    Arc::new(device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(label),
                        size: (len.max(1).next_multiple_of(4) * 4) as u64,
                        usage,
                        mapped_at_creation: false,
                    }))
                })
                .collect()
        };
        let mut buffers: Vec<Vec<[Arc<wgpu::Buffer>; 2]>> = Vec::new();
        // A parameter's current and next buffers are made together.
        let mut param_pairs: Vec<Option<[Vec<Arc<wgpu::Buffer>>; 2]>> = Vec::new();
        for (k, b) in plan.buffers.iter().enumerate() {
            let [now, then] = match b.kind {
                BufKind::Param { index, next } => {
                    if param_pairs.len() <= index {
                        param_pairs.resize(index + 1, None);
                    }
                    let updated = plan
                        .buffers
                        .iter()
                        .any(|o| o.kind == BufKind::Param { index, next: true });
                    let pair = param_pairs[index].get_or_insert_with(|| {
                        let a = make(b.numel, "param");
                        let b2 = if updated {
                            make(b.numel, "param next")
                        } else {
                            a.clone()
                        };
                        [a, b2]
                    });
                    if next {
                        [pair[1].clone(), pair[0].clone()]
                    } else {
                        [pair[0].clone(), pair[1].clone()]
                    }
                }
                _ => {
                    let parts = make(b.numel, &format!("buffer {k}"));
                    [parts.clone(), parts]
                }
            };
            buffers.push(now.into_iter().zip(then).map(|(a, b)| [a, b]).collect());
        }
        let mut kernels = Vec::new();
        for (spec, for_updates) in plan.kernels.iter().zip(plan.for_updates()) {
            log::debug!(
                "wgrad kernel {}: {} workgroups",
                spec.label,
                spec.workgroups
            );
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&spec.label),
                source: wgpu::ShaderSource::Wgsl(spec.wgsl.as_str().into()),
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&spec.label),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            let layout = pipeline.get_bind_group_layout(0);
            let parities = if has_updates { 2 } else { 1 };
            let bind_groups = (0..parities)
                .map(|p| {
                    let entries: Vec<wgpu::BindGroupEntry> = spec
                        .bindings
                        .iter()
                        .enumerate()
                        .map(|(slot, b)| wgpu::BindGroupEntry {
                            binding: slot as u32,
                            resource: buffers[b.buf][b.part][p].as_entire_binding(),
                        })
                        .collect();
                    device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(&spec.label),
                        layout: &layout,
                        entries: &entries,
                    })
                })
                .collect();
            kernels.push(Kernel {
                label: spec.label.clone(),
                bytes: spec.bindings.iter().map(|b| b.bytes).sum(),
                for_updates,
                pipeline,
                bind_groups,
                workgroups: spec.workgroups,
            });
        }
        let staging = outputs
            .iter()
            .map(|o| readback_parts(device, &plan, plan.stored[o]))
            .collect();
        if let Some(e) = pollster::block_on(validation.pop()) {
            return Err(Error::Gpu(format!("creating the program: {e}")));
        }
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(Error::OutOfMemory {
                needed: bytes_held,
                detail: e.to_string(),
            });
        }
        Ok(GpuProgram {
            ctx,
            plan,
            buffers,
            kernels,
            staging,
            outputs,
            parity: 0,
            has_updates,
            bytes_held,
            next: None,
        })
    }

    /// The planned buffer holding the k-th parameter's current value.
    fn param_buffer(&self, k: usize) -> usize {
        self.plan
            .buffers
            .iter()
            .position(|b| {
                b.kind
                    == BufKind::Param {
                        index: k,
                        next: false,
                    }
            })
            .expect("every parameter has a buffer")
    }

    fn input_buffer(&self, k: usize) -> usize {
        self.plan
            .buffers
            .iter()
            .position(|b| b.kind == BufKind::Input(k))
            .expect("every input has a buffer")
    }

    /// Write `data` into planned buffer `buf`, part by part.
    fn write(&self, buf: usize, data: &[f32]) {
        for (part, slice) in self.buffers[buf].iter().zip(data.chunks(self.plan.chunk)) {
            self.ctx
                .queue
                .write_buffer(&part[self.parity], 0, bytemuck::cast_slice(slice));
        }
    }

    /// Record copies of planned buffer `buf` into its readback buffers
    /// `staging` (`readback_parts`), part by part.
    fn copy_out(&self, enc: &mut wgpu::CommandEncoder, buf: usize, staging: &[wgpu::Buffer]) {
        for (part, to) in self.buffers[buf].iter().zip(staging) {
            // The part's elements, not the whole vec4s its buffer holds.
            enc.copy_buffer_to_buffer(&part[self.parity], 0, to, 0, to.size());
        }
    }

    pub fn set_param(&mut self, k: usize, data: &[f32]) {
        self.write(self.param_buffer(k), data);
    }

    pub fn param(&self, k: usize) -> Result<Vec<f32>> {
        let buf = self.param_buffer(k);
        let staging = readback_parts(&self.ctx.device, &self.plan, buf);
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        self.copy_out(&mut enc, buf, &staging);
        self.ctx.queue.submit([enc.finish()]);
        let mut out = self.read::<f32>(&[&staging])?;
        Ok(out.pop().expect("one buffer read"))
    }

    /// One run: inputs in the program's input order; outputs read back if asked.
    pub fn run(&mut self, inputs: &[&[f32]], outputs: Outputs) -> Result<Vec<Vec<f32>>> {
        self.submit(inputs, outputs, None);
        if outputs != Outputs::ReadBack {
            return Ok(Vec::new());
        }
        let staging: Vec<&[wgpu::Buffer]> = self.staging.iter().map(Vec::as_slice).collect();
        let mut out = self.read::<f32>(&staging)?;
        for (v, o) in out.iter_mut().zip(&self.outputs) {
            v.truncate(self.plan.buffers[self.plan.stored[o]].numel);
        }
        Ok(out)
    }

    /// Whether the device can time kernels (`kernel_times`).
    pub fn check_timestamps(&self) -> Result<()> {
        if self
            .ctx
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
        {
            Ok(())
        } else {
            Err(Error::Gpu(format!(
                "'{}' has no timestamp queries to time kernels with",
                self.ctx.info.name
            )))
        }
    }

    /// One run like `run(.., Outputs::Compute)`, each kernel in a compute
    /// pass of its own between two timestamps: the GPU's time per kernel
    /// (on a device that passes `check_timestamps`).
    pub fn kernel_times(&mut self, inputs: &[&[f32]]) -> Result<Vec<KernelTime>> {
        let device = &self.ctx.device;
        let count = 2 * self.kernels.len() as u32;
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("kernel times"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let size = 8 * count as u64;
        let resolved = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kernel times"),
            size,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kernel times readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.submit(
            inputs,
            Outputs::Compute,
            Some((&queries, &resolved, &staging)),
        );
        let ticks = self
            .read::<u64>(&[std::slice::from_ref(&staging)])?
            .remove(0);
        let ns_per_tick = self.ctx.queue.get_timestamp_period() as f64;
        Ok(self
            .kernels
            .iter()
            .zip(ticks.chunks(2))
            .map(|(k, t)| KernelTime {
                label: k.label.clone(),
                ms: t[1].saturating_sub(t[0]) as f64 * ns_per_tick * 1e-6,
                bytes: k.bytes,
            })
            .collect())
    }

    /// Write the inputs, submit the kernels `outputs` needs (and the copies
    /// to readback buffers when it is `ReadBack`) in one command buffer.
    /// With `timed`, every kernel runs in its own pass between two
    /// timestamps, resolved into the first buffer and copied into the
    /// second.
    ///
    /// An untimed run then encodes the next run's command buffer, for the
    /// same `outputs`, while the GPU works: on an H100 a run's encoding
    /// and submission took 0.011–0.032 ms, next to a kernel of 0.006–0.010
    /// ms at 2^20 elements; encoding ahead took a Rosenbrock step at 2^28
    /// from 0.758 to 0.751 ms. A run asking for other outputs encodes its
    /// own.
    fn submit(
        &mut self,
        inputs: &[&[f32]],
        outputs: Outputs,
        timed: Option<(&wgpu::QuerySet, &wgpu::Buffer, &wgpu::Buffer)>,
    ) {
        for (k, data) in inputs.iter().enumerate() {
            self.write(self.input_buffer(k), data);
        }
        let ready = self
            .next
            .take()
            .filter(|n| timed.is_none() && n.outputs == outputs && n.parity == self.parity);
        let commands = match ready {
            Some(n) => n.commands,
            None => self.encode(outputs, timed),
        };
        self.ctx.queue.submit([commands]);
        if self.has_updates {
            self.parity ^= 1;
        }
        if timed.is_none() {
            self.next = Some(Encoded {
                outputs,
                parity: self.parity,
                commands: self.encode(outputs, None),
            });
        }
    }

    /// One run's command buffer, for the current parity (see `submit`).
    fn encode(
        &self,
        outputs: Outputs,
        timed: Option<(&wgpu::QuerySet, &wgpu::Buffer, &wgpu::Buffer)>,
    ) -> wgpu::CommandBuffer {
        let mut enc = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("run") });
        let needed = |k: &&Kernel| outputs != Outputs::Skip || k.for_updates;
        let encode = |pass: &mut wgpu::ComputePass, k: &Kernel| {
            pass.set_pipeline(&k.pipeline);
            pass.set_bind_group(
                0,
                &k.bind_groups[self.parity.min(k.bind_groups.len() - 1)],
                &[],
            );
            pass.dispatch_workgroups(k.workgroups, 1, 1);
        };
        match timed {
            None => {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("run"),
                    timestamp_writes: None,
                });
                for k in self.kernels.iter().filter(needed) {
                    encode(&mut pass, k);
                }
            }
            Some((queries, resolved, staging)) => {
                for (i, k) in self.kernels.iter().filter(needed).enumerate() {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(&k.label),
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: queries,
                            beginning_of_pass_write_index: Some(2 * i as u32),
                            end_of_pass_write_index: Some(2 * i as u32 + 1),
                        }),
                    });
                    encode(&mut pass, k);
                }
                enc.resolve_query_set(queries, 0..queries.count(), resolved, 0);
                enc.copy_buffer_to_buffer(resolved, 0, staging, 0, resolved.size());
            }
        }
        if outputs == Outputs::ReadBack {
            for (o, staging) in self.outputs.iter().zip(&self.staging) {
                self.copy_out(&mut enc, self.plan.stored[o], staging);
            }
        }
        enc.finish()
    }

    /// Wait for the queue, then copy mapped readback buffers out: each
    /// value's parts, one after another.
    fn read<T: bytemuck::Pod>(&self, staging: &[&[wgpu::Buffer]]) -> Result<Vec<Vec<T>>> {
        for s in staging.iter().copied().flatten() {
            s.slice(..).map_async(wgpu::MapMode::Read, |r| {
                if let Err(e) = r {
                    log::error!("wgrad: mapping a readback buffer failed: {e}");
                }
            });
        }
        self.wait()?;
        staging
            .iter()
            .map(|parts| {
                let mut v = Vec::new();
                for s in parts.iter() {
                    let view = s
                        .get_mapped_range(..)
                        .map_err(|e| Error::Gpu(format!("reading results back: {e}")))?;
                    v.extend_from_slice(bytemuck::cast_slice::<u8, T>(&view));
                    drop(view);
                    s.unmap();
                }
                Ok(v)
            })
            .collect()
    }

    /// Block until all submitted work is done. On a hardware GPU, poll in
    /// a loop for up to `SPIN` first: a short run ends sooner than a thread
    /// asleep in the driver's wait wakes. A software adapter's work runs on
    /// the CPU the loop would take, so it blocks at once.
    pub fn wait(&self) -> Result<()> {
        let device = &self.ctx.device;
        let failed = |e: wgpu::PollError| Error::Gpu(format!("waiting for the GPU: {e}"));
        if !self.ctx.is_software() {
            let start = std::time::Instant::now();
            while start.elapsed() < SPIN {
                if device
                    .poll(wgpu::PollType::Poll)
                    .map_err(failed)?
                    .is_queue_empty()
                {
                    return Ok(());
                }
                std::hint::spin_loop();
            }
        }
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(failed)
    }

    pub fn stats(&self) -> Stats {
        let mut s = Stats {
            dispatches: self.kernels.len(),
            bytes_held: self.bytes_held,
            ..Default::default()
        };
        for k in &self.plan.kernels {
            for b in &k.bindings {
                if b.write {
                    s.bytes_written += b.bytes;
                } else {
                    s.bytes_read += b.bytes;
                }
            }
        }
        s
    }

    pub fn kernels_wgsl(&self) -> Vec<String> {
        self.plan.kernels.iter().map(|k| k.wgsl.clone()).collect()
    }
}

/// Readback buffers for planned buffer `buf`: one per part, of the part's
/// elements (one for an empty buffer).
fn readback_parts(device: &wgpu::Device, plan: &Plan, buf: usize) -> Vec<wgpu::Buffer> {
    let (numel, chunk) = (plan.buffers[buf].numel, plan.chunk);
    (0..plan.buffers[buf].parts(chunk))
        .map(|p| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: (part_len(numel, chunk, p).max(1) * 4) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
        .collect()
}

/// How many of a planned buffer's `numel` elements its part `p` holds,
/// in parts of `chunk` (0 for the one part of an empty buffer).
fn part_len(numel: usize, chunk: usize, p: usize) -> usize {
    (numel - (p * chunk).min(numel)).min(chunk)
}
