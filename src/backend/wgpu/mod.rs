//! The GPU backend: schedule → fuse → WGSL → pipelines.
pub(crate) mod codegen;
pub mod device;
mod elementwise;
mod invariant;
mod matmul;
pub(crate) mod plan;
pub(crate) mod program;
mod reduce;
mod rowcol;
pub(crate) mod schedule;
mod windows;
