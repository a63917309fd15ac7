//! Choosing an adapter and opening a device with the adapter's own limits.

use crate::error::{Error, Result};
use std::sync::Arc;

/// Limits the code generator and scheduler plan against. They come from the
/// adapter; tests shrink them to force the large-tensor paths on any device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuLimits {
    /// Largest storage buffer binding, in bytes.
    pub max_storage_binding: u64,
    /// Largest buffer, in bytes.
    pub max_buffer: u64,
    /// Most workgroups in one dispatch dimension.
    pub max_workgroups: u32,
    /// Most storage buffers one kernel may bind.
    pub max_storage_buffers: u32,
    /// The smallest subgroup the adapter runs, where kernels may use
    /// subgroup operations (`None`: they may not).
    pub min_subgroup_size: Option<u32>,
    /// Whether a storage barrier orders memory across workgroups (a
    /// device-scope fence, as on Vulkan), so that the last workgroup of a
    /// reduction to count its chunk done can fold the others' results in
    /// the same dispatch.
    pub device_fences: bool,
}

impl Default for GpuLimits {
    /// WebGPU's guaranteed minimums: what any adapter offers.
    fn default() -> GpuLimits {
        let l = wgpu::Limits::default();
        GpuLimits {
            max_storage_binding: l.max_storage_buffer_binding_size,
            max_buffer: l.max_buffer_size,
            max_workgroups: l.max_compute_workgroups_per_dimension,
            max_storage_buffers: l.max_storage_buffers_per_shader_stage,
            min_subgroup_size: None,
            device_fences: false,
        }
    }
}

/// How to open the GPU.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Plan for a smaller storage binding than the adapter's (tests use this
    /// to run the split-binding paths on small tensors).
    pub max_storage_binding: Option<u64>,
    /// Plan for fewer workgroups per dimension than the adapter allows.
    pub max_workgroups: Option<u32>,
    /// Plan for fewer storage buffers per kernel than the adapter allows.
    pub max_storage_buffers: Option<u32>,
    /// Plan without subgroup operations even where the adapter has them
    /// (tests and the bench compare the two ways).
    pub no_subgroups: bool,
    /// Plan as for a device without device-scope fences: a reduction's
    /// chunks are folded in a second dispatch (tests and the bench compare
    /// the two ways).
    pub no_device_fences: bool,
}

/// An open wgpu device and what wgrad knows about it.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) limits: GpuLimits,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl GpuContext {
    /// Open the best adapter: a discrete GPU, then an integrated one, then a
    /// virtual one, then a software rasteriser (lavapipe). `WGPU_BACKEND`
    /// narrows the backends searched and `WGPU_ADAPTER_NAME` (a substring,
    /// any case) picks an adapter by name.
    pub fn open(options: &GpuOptions) -> Result<Arc<GpuContext>> {
        if options.max_workgroups == Some(0) {
            return Err(Error::Options("max_workgroups is 0".into()));
        }
        if options.max_storage_buffers.is_some_and(|n| n < 2) {
            return Err(Error::Options(
                "max_storage_buffers is below 2: a kernel binds what it reads and what it writes"
                    .into(),
            ));
        }
        let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle().with_env();
        // Where the driver reports a memory budget (DX12; Vulkan with
        // VK_EXT_memory_budget), a buffer beyond it is an out-of-memory
        // error at creation rather than a lost device later.
        desc.memory_budget_thresholds.for_resource_creation = Some(95);
        let instance = wgpu::Instance::new(desc);
        let adapters = pollster::block_on(instance.enumerate_adapters(backends));
        let wanted = std::env::var("WGPU_ADAPTER_NAME")
            .ok()
            .map(|s| s.to_lowercase());
        let seen: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{:?} {:?} '{}'", i.backend, i.device_type, i.name)
            })
            .collect();
        let rank = |t: wgpu::DeviceType| match t {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Cpu => 3,
            wgpu::DeviceType::Other => 4,
        };
        let adapter = adapters
            .into_iter()
            .filter(|a| {
                wanted
                    .as_ref()
                    .is_none_or(|w| a.get_info().name.to_lowercase().contains(w))
            })
            .min_by_key(|a| rank(a.get_info().device_type))
            .ok_or_else(|| Error::NoAdapter {
                tried: format!(
                    "backends {backends:?}{}; adapters seen: [{}]",
                    wanted
                        .as_ref()
                        .map(|w| format!(", name containing '{w}' (WGPU_ADAPTER_NAME)"))
                        .unwrap_or_default(),
                    seen.join(", ")
                ),
            })?;
        let info = adapter.get_info();
        // Ask for everything the adapter offers, not WebGPU's small defaults.
        let adapter_limits = adapter.limits();
        // Timestamps, where the adapter has them, time each kernel
        // (`Program::kernel_times`); runs never write them.
        // Subgroup operations, where the adapter has them, let a kernel fold
        // across a subgroup without workgroup barriers.
        let subgroups = adapter.features().contains(wgpu::Features::SUBGROUP)
            && !options.no_subgroups
            && info.subgroup_min_size >= 1;
        let features = adapter.features() & wgpu::Features::TIMESTAMP_QUERY
            | if subgroups {
                wgpu::Features::SUBGROUP
            } else {
                wgpu::Features::empty()
            };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("wgrad"),
            required_features: features,
            required_limits: adapter_limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Gpu(format!("could not open '{}': {e}", info.name)))?;
        // Errors are caught by error scopes where they can happen; anything
        // else is logged rather than aborting the process.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            log::error!("wgpu: {e}");
        }));
        let max_storage_binding = adapter_limits.max_storage_buffer_binding_size;
        let max_workgroups = adapter_limits.max_compute_workgroups_per_dimension;
        let limits = GpuLimits {
            max_storage_binding: options
                .max_storage_binding
                .map_or(max_storage_binding, |m| m.min(max_storage_binding)),
            max_buffer: adapter_limits.max_buffer_size,
            max_workgroups: options
                .max_workgroups
                .map_or(max_workgroups, |m| m.min(max_workgroups)),
            max_storage_buffers: options
                .max_storage_buffers
                .map_or(adapter_limits.max_storage_buffers_per_shader_stage, |m| {
                    m.min(adapter_limits.max_storage_buffers_per_shader_stage)
                }),
            min_subgroup_size: subgroups.then_some(info.subgroup_min_size),
            // SPIR-V's storageBarrier is a device-scope acquire-release
            // fence. Metal's threadgroup barriers order memory only within a
            // threadgroup, and DX12 untested: they fold in two dispatches.
            device_fences: info.backend == wgpu::Backend::Vulkan && !options.no_device_fences,
        };
        log::info!(
            "wgrad: using {:?} {:?} '{}'",
            info.backend,
            info.device_type,
            info.name
        );
        Ok(Arc::new(GpuContext {
            device,
            queue,
            info,
            limits,
        }))
    }

    /// "Vulkan DiscreteGpu 'NVIDIA H100 80GB HBM3', subgroups of 32+ lanes",
    /// for people.
    pub fn describe(&self) -> String {
        let subgroups = match self.limits.min_subgroup_size {
            Some(size) => format!(", subgroups of {size}+ lanes"),
            None => String::new(),
        };
        format!(
            "{:?} {:?} '{}'{subgroups}",
            self.info.backend, self.info.device_type, self.info.name
        )
    }

    /// The limits programs are planned against.
    pub fn limits(&self) -> &GpuLimits {
        &self.limits
    }

    /// Whether the adapter is a software rasteriser (lavapipe, WARP, …).
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }
}
