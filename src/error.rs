//! The library's one error type.

use crate::shape::Shape;
use std::panic::Location;

/// Everything that can go wrong in wgrad, from recording to running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An op was given operands whose shapes do not fit together.
    #[error("{location}: {op}: {detail} (shapes {lhs} and {rhs})")]
    Shape {
        op: &'static str,
        detail: String,
        lhs: Shape,
        rhs: Shape,
        location: &'static Location<'static>,
    },
    /// An op was given an argument that is not a shape problem (a bad axis, a bad permutation, …).
    #[error("{location}: {op}: {detail}")]
    Argument {
        op: &'static str,
        detail: String,
        location: &'static Location<'static>,
    },
    /// Two inputs or parameters share one name.
    #[error("{location}: the name `{name}` is already used by another input or parameter")]
    DuplicateName {
        name: String,
        location: &'static Location<'static>,
    },
    /// `run` was not given data for an input the program reads.
    #[error("missing input `{name}` (shape {shape}, {expected} values)")]
    MissingInput {
        name: String,
        shape: Shape,
        expected: usize,
    },
    /// `run` was given data for one name twice.
    #[error("input `{name}` is given twice")]
    DuplicateInput { name: String },
    /// `run` was given data for a name the program does not have.
    #[error("unknown input `{name}`; the program's inputs are: {known}")]
    UnknownInput { name: String, known: String },
    /// Data of the wrong length for an input or parameter.
    #[error("`{name}` has shape {shape} and needs {expected} values, but {got} were given")]
    WrongLength {
        name: String,
        shape: Shape,
        expected: usize,
        got: usize,
    },
    /// A parameter the program reads was never given a value.
    #[error("parameter `{name}` (shape {shape}) has no value yet; call `set_param` first")]
    UnsetParam { name: String, shape: Shape },
    /// `set_param`/`param` named something that is not a parameter of this program.
    #[error("`{name}` is not a parameter of this program; its parameters are: {known}")]
    UnknownParam { name: String, known: String },
    /// No GPU adapter could be found.
    #[error("no GPU adapter found (tried: {tried})")]
    NoAdapter { tried: String },
    /// The GPU device could not be opened, or reported an error.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// The device does not have the memory the program asks for.
    #[error("out of device memory: the program needs {needed} bytes in buffers ({detail})")]
    OutOfMemory { needed: u64, detail: String },
    /// A generated shader failed naga's validation: a bug in wgrad, reported with the source.
    #[error("generated WGSL failed validation: {message}\n{source_code}")]
    InvalidShader {
        message: String,
        source_code: String,
    },
    /// The GPU planner made a plan that breaks its own ordering rule (a
    /// kernel reading a value before it is written): a bug in wgrad,
    /// refused rather than run, since it would give wrong numbers silently.
    #[error("the GPU plan is out of order (a bug in wgrad; please report it): {0}")]
    Plan(String),
    /// Device options that no program can be planned for.
    #[error("invalid device options: {0}")]
    Options(String),
    /// A tensor or program exceeds what wgrad supports on this device.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The graph cannot be used as asked (e.g. grad of a non-scalar).
    #[error("{location}: {detail}")]
    Graph {
        detail: String,
        location: &'static Location<'static>,
    },
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
