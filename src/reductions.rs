//! Reductions over any set of axes: sum, mean, max, min and logsumexp,
//! with or without the reduced axes kept.

use crate::error::{Error, Result};
use crate::graph::Var;
use crate::ops::{reduced_shape, Op, ReduceOp};
use std::panic::Location;

impl<'g> Var<'g> {
    /// Reduce over sorted, distinct `axes`, keeping them as size-1 dimensions.
    #[track_caller]
    pub(crate) fn reduce_keepdims(self, op: ReduceOp, axes: &[usize]) -> Var<'g> {
        if axes.is_empty() {
            return self;
        }
        let out = reduced_shape(&self.shape(), axes);
        self.graph.push(
            Op::Reduce {
                op,
                axes: axes.to_vec(),
            },
            vec![self.id],
            out,
        )
    }

    #[track_caller]
    pub(crate) fn sum_axes_keepdims(self, axes: &[usize]) -> Var<'g> {
        self.reduce_keepdims(ReduceOp::Sum, axes)
    }

    #[track_caller]
    fn try_reduce(self, op: ReduceOp, axes: &[isize], keepdims: bool) -> Result<Var<'g>> {
        let location = Location::caller();
        let axes = self.axes(op.name(), axes)?;
        // A max or min over no elements has no value (as in NumPy and
        // PyTorch); a sum over none is 0.
        let shape = self.shape();
        let folded: usize = axes.iter().map(|&a| shape.0[a]).product();
        if op != ReduceOp::Sum && folded == 0 && reduced_shape(&shape, &axes).numel() > 0 {
            return Err(Error::Argument {
                op: op.name(),
                detail: format!(
                    "axes {axes:?} of shape {shape} hold no elements, and a {} over none has no value",
                    op.name()
                ),
                location,
            });
        }
        let kept = self.reduce_keepdims(op, &axes);
        if keepdims {
            return Ok(kept);
        }
        let shape = self.shape();
        let dims: Vec<usize> = (0..shape.rank())
            .filter(|k| !axes.contains(k))
            .map(|k| shape.0[k])
            .collect();
        Ok(kept.reshape(dims))
    }

    fn all_axes(self) -> Vec<isize> {
        (0..self.shape().rank() as isize).collect()
    }

    /// Sum of all elements (a scalar).
    #[track_caller]
    pub fn sum(self) -> Var<'g> {
        self.sum_axes(&self.all_axes(), false)
    }
    /// Mean of all elements (a scalar).
    #[track_caller]
    pub fn mean(self) -> Var<'g> {
        self.mean_axes(&self.all_axes(), false)
    }
    /// Largest element (a scalar); the gradient splits equally between ties.
    #[track_caller]
    pub fn max_all(self) -> Var<'g> {
        self.max_axes(&self.all_axes(), false)
    }
    /// Smallest element (a scalar); the gradient splits equally between ties.
    #[track_caller]
    pub fn min_all(self) -> Var<'g> {
        self.min_axes(&self.all_axes(), false)
    }
    /// `log(sum(exp(x)))` over all elements, computed stably.
    #[track_caller]
    pub fn logsumexp(self) -> Var<'g> {
        self.logsumexp_axes(&self.all_axes(), false)
    }

    /// Sum over `axes` (negative axes count from the end).
    #[track_caller]
    pub fn sum_axes(self, axes: &[isize], keepdims: bool) -> Var<'g> {
        self.try_sum_axes(axes, keepdims)
            .unwrap_or_else(|e| panic!("{e}"))
    }
    /// `sum_axes`, or an error for a bad or repeated axis.
    #[track_caller]
    pub fn try_sum_axes(self, axes: &[isize], keepdims: bool) -> Result<Var<'g>> {
        self.try_reduce(ReduceOp::Sum, axes, keepdims)
    }
    /// Largest element over `axes`; the gradient splits equally between ties.
    #[track_caller]
    pub fn max_axes(self, axes: &[isize], keepdims: bool) -> Var<'g> {
        self.try_max_axes(axes, keepdims)
            .unwrap_or_else(|e| panic!("{e}"))
    }
    /// `max_axes`, or an error for a bad or repeated axis.
    #[track_caller]
    pub fn try_max_axes(self, axes: &[isize], keepdims: bool) -> Result<Var<'g>> {
        self.try_reduce(ReduceOp::Max, axes, keepdims)
    }
    /// Smallest element over `axes`; the gradient splits equally between ties.
    #[track_caller]
    pub fn min_axes(self, axes: &[isize], keepdims: bool) -> Var<'g> {
        self.try_min_axes(axes, keepdims)
            .unwrap_or_else(|e| panic!("{e}"))
    }
    /// `min_axes`, or an error for a bad or repeated axis.
    #[track_caller]
    pub fn try_min_axes(self, axes: &[isize], keepdims: bool) -> Result<Var<'g>> {
        self.try_reduce(ReduceOp::Min, axes, keepdims)
    }
    /// Mean over `axes`.
    #[track_caller]
    pub fn mean_axes(self, axes: &[isize], keepdims: bool) -> Var<'g> {
        self.try_mean_axes(axes, keepdims)
            .unwrap_or_else(|e| panic!("{e}"))
    }
    /// `mean_axes`, or an error for a bad or repeated axis. The mean over
    /// no elements is NaN (0 / 0).
    #[track_caller]
    pub fn try_mean_axes(self, axes: &[isize], keepdims: bool) -> Result<Var<'g>> {
        let s = self.try_sum_axes(axes, keepdims)?;
        let shape = self.shape();
        let count: usize = self
            .axes("mean", axes)?
            .iter()
            .map(|&a| shape.0[a])
            .product();
        Ok(s / count as f64)
    }
    /// `log(sum(exp(x)))` over `axes`, shifted by the (detached) maximum so
    /// that no exponential overflows.
    #[track_caller]
    pub fn logsumexp_axes(self, axes: &[isize], keepdims: bool) -> Var<'g> {
        self.try_logsumexp_axes(axes, keepdims)
            .unwrap_or_else(|e| panic!("{e}"))
    }
    /// `logsumexp_axes`, or an error for a bad or repeated axis, or axes
    /// that hold no elements (its shift, the maximum, has no value there).
    #[track_caller]
    pub fn try_logsumexp_axes(self, axes: &[isize], keepdims: bool) -> Result<Var<'g>> {
        let m = self.try_max_axes(axes, true)?.detach();
        let shape = self.shape();
        let lse = (self - m.broadcast_to(&shape))
            .exp()
            .sum_axes(axes, true)
            .log()
            + m;
        if keepdims {
            return Ok(lse);
        }
        let axes = self.axes("logsumexp", axes)?;
        let dims: Vec<usize> = (0..shape.rank())
            .filter(|k| !axes.contains(k))
            .map(|k| shape.0[k])
            .collect();
        Ok(lse.reshape(dims))
    }
}
