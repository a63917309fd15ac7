//! # wgrad: gradients on any GPU
//!
//! Record a static graph of tensor operations once, differentiate it as a
//! graph transform, compile forward and backward together into a few fused
//! WGSL kernels, and run them many times through wgpu (Vulkan, Metal, DX12).
//! A CPU reference backend evaluates the same graph in f64.
//!
//! ```
//! use wgrad::{Device, Graph};
//! let g = Graph::new();
//! let (x, y, z) = (g.input("x", []), g.input("y", []), g.input("z", []));
//! let f = (x + y) * y.max(z);
//! let grads = g.grad(f, &[x, y, z]);
//! let mut prog = g.compile(&Device::cpu(), &[f, grads[0], grads[1], grads[2]]).unwrap();
//! let out = prog.run(&[("x", &[1.0]), ("y", &[2.0]), ("z", &[0.0])]).unwrap();
//! assert_eq!(out, vec![vec![6.0], vec![2.0], vec![5.0], vec![0.0]]);
//! ```
//!
//! Devices: [`Device::gpu`] (wgpu), [`Device::cpu`] (the f64 reference) and
//! [`Device::cpu_f32`] (a fused, multi-threaded f32 fast path);
//! [`Device::auto`] picks a GPU if there is one.
//!
//! Derivatives: [`Graph::grad`] (reverse mode) and [`Graph::jvp`] (forward
//! mode, along tangents) record their nodes into the same graph, so they
//! compose: the gradient of a gradient, or the `jvp` of one (a
//! Hessian-vector product).
//!
//! Training: parameters ([`Graph::param`]) stay in the program between runs;
//! [`Graph::compile_with_updates`] fuses updates such as those of an
//! [`Optimizer`] with the gradient that feeds them, so a step is one submit.
//!
//! Conventions: `max`/`min` (element-wise and reductions) split the gradient
//! equally between tied arguments, as PyTorch and JAX do. (The backprop slide
//! this project began from uses a strict indicator, which differs only at ties.)

mod autodiff;
pub mod backend;
mod error;
mod fmath;
mod gradcheck;
mod graph;
mod helpers;
pub mod ops;
pub mod optim;
mod program;
mod reductions;
pub mod shape;

pub use backend::cpu_fast::CpuOptions;
pub use backend::wgpu::device::{GpuContext, GpuLimits, GpuOptions};
pub use error::{Error, Result};
pub use gradcheck::{gradcheck, GradCheck};
pub use graph::{Graph, IntoVar, Node, NodeId, Var};
pub use optim::{Optimizer, Updates};
pub use program::{Device, KernelTime, Program, Stats};
pub use shape::Shape;
