//! Ops recorded from the op table's: `matmul` (a product of broadcasts,
//! summed) and the losses.

use crate::error::{Error, Result};
use crate::graph::{IntoVar, Var};
use crate::shape::Shape;
use std::panic::Location;

impl<'g> Var<'g> {
    /// Matrix product over the last two axes; leading (batch) axes broadcast.
    #[track_caller]
    pub fn matmul(self, rhs: Var<'g>) -> Var<'g> {
        self.try_matmul(rhs).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `matmul`, or an error if the shapes do not fit.
    #[track_caller]
    pub fn try_matmul(self, rhs: Var<'g>) -> Result<Var<'g>> {
        let location = Location::caller();
        self.graph.own(std::iter::once(&rhs))?;
        let (a, b) = (self.shape(), rhs.shape());
        let err = |detail: &str| Error::Shape {
            op: "matmul",
            detail: detail.into(),
            lhs: a.clone(),
            rhs: b.clone(),
            location,
        };
        if a.rank() < 2 || b.rank() < 2 {
            return Err(err("both operands need rank >= 2"));
        }
        let (m, k) = (a.0[a.rank() - 2], a.0[a.rank() - 1]);
        let (k2, n) = (b.0[b.rank() - 2], b.0[b.rank() - 1]);
        if k != k2 {
            return Err(err("inner dimensions differ"));
        }
        let batch_a = Shape(a.0[..a.rank() - 2].to_vec());
        let batch_b = Shape(b.0[..b.rank() - 2].to_vec());
        let batch = Shape::broadcast(&batch_a, &batch_b)
            .ok_or_else(|| err("batch dimensions do not broadcast"))?;
        // out[..., i, j] = Σ_k a[..., i, k, 1] · b[..., 1, k, j]: a product fused into
        // the reduction over k, and every gradient is again of this form.
        let with = |s: &Shape, tail: [usize; 3]| {
            let mut d = s.0[..s.rank() - 2].to_vec();
            d.extend(tail);
            d
        };
        let a3 = self.reshape(with(&a, [m, k, 1]));
        let b3 = rhs.reshape(with(&b, [1, k, n]));
        let prod = a3.try_mul(b3)?;
        let r = prod.shape().rank();
        let mut out = batch.0;
        out.extend([m, n]);
        Ok(prod.sum_axes_keepdims(&[r - 2]).reshape(out))
    }

    /// Mean squared error between `self` and `target`.
    #[track_caller]
    pub fn mse(self, target: impl IntoVar<'g>) -> Var<'g> {
        self.try_mse(target).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `mse`, or an error if the shapes do not broadcast.
    #[track_caller]
    pub fn try_mse(self, target: impl IntoVar<'g>) -> Result<Var<'g>> {
        Ok(self.try_sub(target)?.square().mean())
    }

    /// `log(softmax(self))` along `axis`.
    #[track_caller]
    pub fn log_softmax(self, axis: isize) -> Var<'g> {
        self.try_log_softmax(axis).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `log_softmax`, or an error for a bad axis (a scalar has none) or an
    /// empty one.
    #[track_caller]
    pub fn try_log_softmax(self, axis: isize) -> Result<Var<'g>> {
        let lse = self.try_logsumexp_axes(&[axis], true)?;
        Ok(self - lse.broadcast_to(self.shape()))
    }

    /// Softmax along `axis`.
    #[track_caller]
    pub fn softmax(self, axis: isize) -> Var<'g> {
        self.try_softmax(axis).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `softmax`, or an error for a bad or empty axis.
    #[track_caller]
    pub fn try_softmax(self, axis: isize) -> Result<Var<'g>> {
        Ok(self.try_log_softmax(axis)?.exp())
    }

    /// Mean cross-entropy of logits `self` (classes along the last axis:
    /// `[classes]` for one example, `[batch, classes]`, or more leading
    /// axes) against target probabilities (for example one-hot rows) of the
    /// same shape: the mean over the examples of `-Σ target·log_softmax`.
    #[track_caller]
    pub fn cross_entropy(self, target: Var<'g>) -> Var<'g> {
        self.try_cross_entropy(target)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `cross_entropy`, or an error for a scalar or class-less `self` or a
    /// target of another shape.
    #[track_caller]
    pub fn try_cross_entropy(self, target: Var<'g>) -> Result<Var<'g>> {
        let location = Location::caller();
        self.graph.own(std::iter::once(&target))?;
        let (shape, t) = (self.shape(), target.shape());
        if shape != t {
            return Err(Error::Shape {
                op: "cross_entropy",
                detail: "logits and targets must have one shape".into(),
                lhs: shape,
                rhs: t,
                location,
            });
        }
        let log_p = self.try_log_softmax(-1)?;
        let classes = shape.0.last().copied().unwrap_or(1);
        let examples = shape.numel() / classes.max(1);
        Ok(-(target * log_p).sum() / examples as f64)
    }

    /// Mean logistic loss `softplus(-t · self)` for labels `t` in {-1, +1}.
    #[track_caller]
    pub fn logistic_loss(self, labels: impl IntoVar<'g>) -> Var<'g> {
        self.try_logistic_loss(labels)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `logistic_loss`, or an error if the shapes do not broadcast.
    #[track_caller]
    pub fn try_logistic_loss(self, labels: impl IntoVar<'g>) -> Result<Var<'g>> {
        Ok((-self.try_mul(labels)?).softplus().mean())
    }
}
