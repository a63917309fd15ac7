//! Shapes, row-major strides, NumPy broadcasting, and the index maps of the
//! layout ops (broadcast, permute, slice, pad). The CPU backend applies these
//! maps directly; the WGSL code generator emits the same arithmetic.

use std::fmt;

/// The dimensions of a tensor, outermost first (row-major). `[]` is a scalar.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    /// The shape of a scalar.
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }
    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    /// The most elements a tensor may have: its values in f64 (the
    /// reference's) take at most `isize::MAX` bytes, as one allocation may.
    pub const MAX_NUMEL: usize = isize::MAX as usize / 8;

    /// Number of elements (1 for a scalar). A shape the graph holds has at
    /// most `MAX_NUMEL` (and so does the product of its non-empty axes);
    /// any other whose count overflows gives `usize::MAX`.
    pub fn numel(&self) -> usize {
        self.checked_numel().unwrap_or(usize::MAX)
    }

    /// Number of elements, or `None` where the count overflows `usize`.
    pub fn checked_numel(&self) -> Option<usize> {
        if self.0.contains(&0) {
            return Some(0);
        }
        self.0.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }
    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    /// Row-major strides, in elements.
    pub fn strides(&self) -> Vec<usize> {
        let mut s = vec![1; self.rank()];
        for k in (0..self.rank().saturating_sub(1)).rev() {
            s[k] = s[k + 1] * self.0[k + 1];
        }
        s
    }
    /// The shape both `a` and `b` broadcast to under NumPy's rules, if any.
    pub fn broadcast(a: &Shape, b: &Shape) -> Option<Shape> {
        let r = a.rank().max(b.rank());
        let mut out = vec![0; r];
        for (k, o) in out.iter_mut().enumerate() {
            let da = dim_from_right(a, r - 1 - k);
            let db = dim_from_right(b, r - 1 - k);
            *o = match (da, db) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => return None,
            };
        }
        Some(Shape(out))
    }
    /// Whether `self` can be broadcast to `target` (right-aligned, size-1 or equal dims).
    pub fn broadcasts_to(&self, target: &Shape) -> bool {
        self.rank() <= target.rank()
            && (0..self.rank()).all(|k| {
                let d = dim_from_right(self, k);
                d == 1 || d == dim_from_right(target, k)
            })
    }
}

/// The k-th dimension counted from the right, 1 past the rank.
fn dim_from_right(s: &Shape, k: usize) -> usize {
    if k < s.rank() {
        s.0[s.rank() - 1 - k]
    } else {
        1
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Shape {
        Shape(d.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Shape {
        Shape(d.to_vec())
    }
}
impl<const N: usize> From<&[usize; N]> for Shape {
    fn from(d: &[usize; N]) -> Shape {
        Shape(d.to_vec())
    }
}
impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Shape {
        Shape(d)
    }
}
impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Shape {
        s.clone()
    }
}

/// How an output element of a layout op finds its source element: for each
/// output axis, the source stride it contributes (0 where broadcast), plus a
/// constant offset. Broadcast, permute and slice are all of this form; pad is
/// a slice whose source exists only on part of the axis (see [`PadMap`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StridedMap {
    /// The output's dimensions.
    pub out_dims: Vec<usize>,
    /// Source stride for each output axis.
    pub src_strides: Vec<usize>,
    /// Source offset of output element 0.
    pub offset: usize,
}

impl StridedMap {
    /// `input` broadcast (right-aligned) to `out`.
    pub fn broadcast(input: &Shape, out: &Shape) -> StridedMap {
        let ins = input.strides();
        let shift = out.rank() - input.rank();
        let src_strides = (0..out.rank())
            .map(|k| {
                if k < shift || input.0[k - shift] == 1 {
                    0
                } else {
                    ins[k - shift]
                }
            })
            .collect();
        StridedMap {
            out_dims: out.0.clone(),
            src_strides,
            offset: 0,
        }
    }
    /// Output axis `k` is input axis `perm[k]`.
    pub fn permute(input: &Shape, perm: &[usize]) -> StridedMap {
        let ins = input.strides();
        StridedMap {
            out_dims: perm.iter().map(|&p| input.0[p]).collect(),
            src_strides: perm.iter().map(|&p| ins[p]).collect(),
            offset: 0,
        }
    }
    /// `len` elements from `start` along `axis`.
    pub fn slice(input: &Shape, axis: usize, start: usize, len: usize) -> StridedMap {
        let ins = input.strides();
        let mut out_dims = input.0.clone();
        out_dims[axis] = len;
        StridedMap {
            out_dims,
            src_strides: ins.clone(),
            offset: start * ins[axis],
        }
    }
    /// Where each element of `input` lands in the kept-dims result of a
    /// reduction over `axes` (shape `out`): read as a map from input index
    /// to output index.
    pub fn reduce_to(input: &Shape, axes: &[usize], out: &Shape) -> StridedMap {
        let out_strides = out.strides();
        StridedMap {
            out_dims: input.0.clone(),
            src_strides: (0..input.rank())
                .map(|k| if axes.contains(&k) { 0 } else { out_strides[k] })
                .collect(),
            offset: 0,
        }
    }

    /// A reduction of `input` over `axes`, as two maps whose sum is the
    /// source index: one from the output's index (over the kept axes), one
    /// from the index among the elements folded (over `axes`, in order).
    pub fn reduction(input: &Shape, axes: &[usize]) -> (StridedMap, StridedMap) {
        let strides = input.strides();
        let over = |pick: &dyn Fn(usize) -> bool| {
            let ks: Vec<usize> = (0..input.rank()).filter(|&k| pick(k)).collect();
            StridedMap {
                out_dims: ks.iter().map(|&k| input.0[k]).collect(),
                src_strides: ks.iter().map(|&k| strides[k]).collect(),
                offset: 0,
            }
        };
        (over(&|k| !axes.contains(&k)), over(&|k| axes.contains(&k)))
    }

    /// The source index of output element `i`.
    pub fn source(&self, mut i: usize) -> usize {
        let mut src = self.offset;
        for k in (0..self.out_dims.len()).rev() {
            let d = self.out_dims[k];
            src += (i % d) * self.src_strides[k];
            i /= d;
        }
        src
    }
    /// The same map over the fewest axes: size-1 axes dropped, and an axis
    /// merged into the next where stepping off its end continues in order
    /// (so runs along the last axis are as long as they can be).
    pub fn simplified(&self) -> StridedMap {
        let (mut dims, mut strides): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
        for (&d, &s) in self.out_dims.iter().zip(&self.src_strides) {
            if d == 1 {
                continue;
            }
            match (dims.last_mut(), strides.last_mut()) {
                (Some(pd), Some(ps)) if *ps == s * d => {
                    *pd *= d;
                    *ps = s;
                }
                _ => {
                    dims.push(d);
                    strides.push(s);
                }
            }
        }
        StridedMap {
            out_dims: dims,
            src_strides: strides,
            offset: self.offset,
        }
    }
    /// Bounds on the source indices of output elements `lo..=hi`: the least
    /// and the greatest, each axis bounded on its own (so a bound need not
    /// be attained, but no source index falls outside it).
    pub fn source_range(&self, lo: usize, hi: usize) -> (usize, usize) {
        let m = self.simplified();
        // A map over no elements has no sources (code reading through it
        // is never reached).
        if m.out_dims.contains(&0) {
            return (m.offset, m.offset);
        }
        let out_strides = Shape(m.out_dims.clone()).strides();
        let (mut least, mut most) = (m.offset, m.offset);
        for ((&dim, &src), &stride) in m.out_dims.iter().zip(&m.src_strides).zip(&out_strides) {
            let (a, b) = (lo / stride, hi / stride);
            // The axis's index runs from a % dim to b % dim unless it wraps.
            let (first, last) = if b - a >= dim || a % dim > b % dim {
                (0, dim - 1)
            } else {
                (a % dim, b % dim)
            };
            least += first * src;
            most += last * src;
        }
        (least, most)
    }
    /// Bounds on the source indices of a block of output elements: rows
    /// `rows` (a flat range over all axes but the last) by columns `cols`
    /// (of the last axis), both inclusive. A block of a transpose reaches a
    /// block of its source, where a flat range of whole rows reaches all of it.
    pub fn block_source_range(&self, rows: (usize, usize), cols: (usize, usize)) -> (usize, usize) {
        let Some(last) = self.out_dims.len().checked_sub(1) else {
            return (self.offset, self.offset);
        };
        let outer = StridedMap {
            out_dims: self.out_dims[..last].to_vec(),
            src_strides: self.src_strides[..last].to_vec(),
            offset: self.offset,
        };
        let (least, most) = outer.source_range(rows.0, rows.1);
        let stride = self.src_strides[last];
        (least + cols.0 * stride, most + cols.1 * stride)
    }
    /// Whether the map is the identity (the output reads the source in order).
    pub fn is_identity(&self) -> bool {
        self.offset == 0 && self.src_strides == Shape(self.out_dims.clone()).strides()
    }
}

/// Pad along an axis: where each output element's source is, if anywhere.
#[derive(Clone, Debug, PartialEq)]
pub struct PadMap {
    /// Elements after the axis (one step along it).
    inner: usize,
    /// The axis's length in the output and in the source.
    out_len: usize,
    len: usize,
    before: usize,
}

impl PadMap {
    /// `input` padded along `axis` with `before` zeros in front, to `out_len` there.
    pub fn new(input: &Shape, axis: usize, before: usize, out_len: usize) -> PadMap {
        PadMap {
            inner: input.0[axis + 1..].iter().product(),
            out_len,
            len: input.0[axis],
            before,
        }
    }
    /// The source index of output element `i`, or `None` where it is padding.
    pub fn source(&self, i: usize) -> Option<usize> {
        let outer = i / (self.out_len * self.inner);
        let a = (i / self.inner) % self.out_len;
        let r = i % self.inner;
        (a >= self.before && a < self.before + self.len)
            .then(|| (outer * self.len + (a - self.before)) * self.inner + r)
    }
    /// Bounds on the source indices of output elements `lo..=hi` that are
    /// not padding: from the step along the axis of `lo` (or the nearest
    /// one in the source) to that of `hi`, whole steps.
    pub fn source_range(&self, lo: usize, hi: usize) -> (usize, usize) {
        if self.len == 0 {
            return (0, 0);
        }
        // The source step of output element i, clamped into the source.
        let step = |i: usize| {
            let outer = i / (self.out_len * self.inner);
            let a =
                ((i / self.inner) % self.out_len).clamp(self.before, self.before + self.len - 1);
            outer * self.len + a - self.before
        };
        (step(lo) * self.inner, (step(hi) + 1) * self.inner - 1)
    }
    /// `source(i)`, and the end of the run from `i` on that is all padding
    /// or whose sources follow on consecutively.
    pub fn segment(&self, i: usize) -> (Option<usize>, usize) {
        let block = self.out_len * self.inner;
        let outer = i / block;
        let first = outer * block + self.before * self.inner;
        let last = first + self.len * self.inner;
        if i < first {
            (None, first)
        } else if i < last {
            (Some(outer * self.len * self.inner + i - first), last)
        } else {
            (None, first + block)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        let b = |a: &[usize], c: &[usize]| Shape::broadcast(&Shape::from(a), &Shape::from(c));
        assert_eq!(b(&[3, 1], &[4]), Some(Shape::from([3, 4])));
        assert_eq!(b(&[], &[2, 5]), Some(Shape::from([2, 5])));
        assert_eq!(b(&[2, 3], &[3, 2]), None);
        assert!(Shape::from([1, 3]).broadcasts_to(&Shape::from([4, 2, 3])));
        assert!(!Shape::from([2, 3]).broadcasts_to(&Shape::from([3, 3])));
    }

    #[test]
    fn strided_maps_find_sources() {
        // [[0,1,2],[3,4,5]] transposed: out[1][0] = in[0][1] = 1.
        let m = StridedMap::permute(&Shape::from([2, 3]), &[1, 0]);
        assert_eq!(
            (0..6).map(|i| m.source(i)).collect::<Vec<_>>(),
            [0, 3, 1, 4, 2, 5]
        );
        let s = StridedMap::slice(&Shape::from([2, 3]), 1, 1, 2);
        assert_eq!(
            (0..4).map(|i| s.source(i)).collect::<Vec<_>>(),
            [1, 2, 4, 5]
        );
        let b = StridedMap::broadcast(&Shape::from([3, 1]), &Shape::from([2, 3, 2]));
        assert_eq!(
            (0..4).map(|i| b.source(i)).collect::<Vec<_>>(),
            [0, 0, 1, 1]
        );
        let pad = PadMap::new(&Shape::from([2]), 0, 1, 4);
        let p: Vec<_> = (0..4).map(|i| pad.source(i)).collect();
        assert_eq!(p, [None, Some(0), Some(1), None]);
        // Simplified maps and pad segments agree with the maps they come from.
        for m in [
            StridedMap::broadcast(&Shape::from([3, 1]), &Shape::from([2, 3, 1, 4])),
            StridedMap::slice(&Shape::from([4, 5, 6]), 1, 1, 3),
            StridedMap::permute(&Shape::from([2, 1, 3]), &[1, 0, 2]),
            StridedMap::broadcast(&Shape::from([1]), &Shape::from([1, 5])),
        ] {
            let s = m.simplified();
            assert!(s.out_dims.len() <= m.out_dims.len());
            let n = m.out_dims.iter().product();
            assert_eq!(
                (0..n).map(|i| s.source(i)).collect::<Vec<_>>(),
                (0..n).map(|i| m.source(i)).collect::<Vec<_>>()
            );
        }
        // Source bounds hold every source of a range of outputs.
        let maps = [
            StridedMap::broadcast(&Shape::from([3, 1]), &Shape::from([2, 3, 4])),
            StridedMap::slice(&Shape::from([4, 5, 6]), 1, 1, 3),
            StridedMap::slice(&Shape::from([1000]), 0, 1, 999),
            StridedMap::permute(&Shape::from([3, 4, 5]), &[2, 0, 1]),
        ];
        for m in &maps {
            let n: usize = m.out_dims.iter().product();
            for (lo, hi) in [(0, n - 1), (0, 0), (3, 17), (n / 2, n - 1), (5, 5)] {
                let (least, most) = m.source_range(lo, hi);
                for i in lo..=hi {
                    let s = m.source(i);
                    assert!(least <= s && s <= most, "{m:?} {lo}..={hi} at {i}");
                }
            }
        }
        // Blocks of rows by columns, likewise.
        for m in &maps {
            let cols = *m.out_dims.last().unwrap();
            let rows = m.out_dims.iter().product::<usize>() / cols;
            for (r, c) in [
                ((0, rows - 1), (0, cols - 1)),
                ((0, 0), (1, 1)),
                ((rows / 2, rows - 1), (0, cols / 2)),
            ] {
                let (least, most) = m.block_source_range(r, c);
                for i in r.0..=r.1 {
                    for j in c.0..=c.1 {
                        let s = m.source(i * cols + j);
                        assert!(
                            least <= s && s <= most,
                            "{m:?} block {r:?} x {c:?} at {i}, {j}"
                        );
                    }
                }
            }
        }
        // A block of a transpose reaches a block of its source: two of 1000
        // rows of a 1000 x 1000 transpose, columns 10 to 19, are 10 of its
        // source's rows.
        let t = StridedMap::permute(&Shape::from([1000, 1000]), &[1, 0]);
        assert_eq!(
            t.block_source_range((5, 6), (10, 19)),
            (10 * 1000 + 5, 19 * 1000 + 6)
        );
        // On the contiguous windows the scheduler makes, the bounds are tight.
        assert_eq!(maps[2].source_range(100, 199), (101, 200));
        assert_eq!(maps[0].source_range(0, 23), (0, 2));
        let pad = PadMap::new(&Shape::from([2, 3, 2]), 1, 1, 5);
        for (lo, hi) in [(0, 19), (3, 12), (11, 11), (0, 1), (8, 11), (9, 13)] {
            let (least, most) = pad.source_range(lo, hi);
            for s in (lo..=hi).filter_map(|i| pad.source(i)) {
                assert!(least <= s && s <= most, "pad {lo}..={hi}: {s}");
            }
        }
        // A one-dimensional pad's bounds are its window, shifted.
        let pad = PadMap::new(&Shape::from([999]), 0, 1, 1000);
        assert_eq!(pad.source_range(100, 199), (99, 198));
        assert_eq!(pad.source_range(0, 0), (0, 0));
        for i in 0..2 * 5 * 2 {
            let (src, end) = pad.segment(i);
            assert_eq!(src, pad.source(i));
            for j in i..end {
                let expect = src.map(|s| s + j - i);
                assert_eq!(pad.source(j), expect, "segment from {i} at {j}");
            }
        }
    }
}
