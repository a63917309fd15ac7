//! The two backends: the CPU reference and the GPU through wgpu.
pub(crate) mod cpu;
pub(crate) mod cpu_fast;
pub(crate) mod native;
pub mod wgpu;
