//! The GPU backend: schedule → fuse → WGSL → pipelines.
pub(crate) mod codegen;
pub mod device;
mod invariant;
pub(crate) mod program;
pub(crate) mod schedule;
