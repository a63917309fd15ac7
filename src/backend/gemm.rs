//! Matrix products on the CPU fast path, in packed blocks.
//!
//! A reduction of `matmul_form` (a `matmul` or one of its gradients) is
//! not folded element by element there: `Σ_k p·q` over the broadcast
//! product visits M·N·K terms, each a strided load of both factors. Here
//! the factors are read as strided views of stored values (a transpose,
//! a reshape or a broadcast moves no data), copied block by block into
//! panels laid out for a register tile of `MR` × `NR` outputs, which
//! takes one broadcast element of `p` and one vector of `q` per term.
//!
//! Each output is a sum over k in order, in f32 partials of `DEPTH` terms
//! (fused multiply-adds) that go into an f64 accumulator, as every fast-path
//! reduction does: the same bits on any machine, whatever its cores,
//! vector width or the blocks' sizes.

use super::cpu_fast::DEPTH;
use super::MatmulForm;
use crate::graph::{Node, NodeId};
use crate::ops::Op;
use rayon::prelude::*;
use std::ops::Range;

/// Rows of the register tile; its columns are two vectors' lanes (16 with
/// AVX2, 32 with AVX-512): 12 of 16 (AVX2) or 32 vector registers.
const MR: usize = 6;
/// Terms of k per packed block: a block of `q` (`KC` × `NC`, 256 KiB)
/// and one of `p` (`MC` × `KC`, 480 KiB) stay in a core's L2 cache (2 MiB
/// on this project's machines), a tile's column panel (`KC` × `NR`) in L1.
/// A multiple of `DEPTH`, so that the f32 partials start at the same k
/// whatever the blocks. `MC` of 480 rather than 96: a task reads each term
/// of a transposed factor (X's columns, in the weights' gradient) as a
/// longer run, and packs `q`'s blocks fewer times (1024 × 4096 × 128 went
/// from 140-163 to 174-193 GFLOP/s, a network's step at 2^22 from 17 to
/// 15.6 ms).
const KC: usize = 256;
const NC: usize = 256;
const MC: usize = 480;

/// A factor of a product: a stored node read through strides, and the
/// offset of each row (along m or n), each term (along k) and each batch.
struct Factor {
    node: NodeId,
    rows: Vec<usize>,
    terms: Vec<usize>,
    batches: Vec<usize>,
}

/// A task's outputs: `rows` × `cols` of one batch.
struct Block {
    batch: usize,
    rows: Range<usize>,
    cols: Range<usize>,
}

/// A task's buffers, kept for its thread's next task: the accumulators,
/// and the packed blocks of both factors.
#[derive(Default)]
struct Scratch {
    acc: Vec<f64>,
    pa: Vec<f32>,
    qa: Vec<f32>,
}

thread_local! {
    /// Each thread's, kept between runs: fresh buffers every run were
    /// page faults (an eighth of a small product's time).
    static SCRATCH: std::cell::RefCell<Scratch> = Default::default();
}

/// A matrix product computed by blocks, `out[b, i, j] = Σ_k p[b, i, k] · q[b, j, k]`.
pub(crate) struct Product {
    pub node: NodeId,
    p: Factor,
    q: Factor,
    /// Offsets of the output's rows, columns and batches in its buffer.
    out_rows: usize,
    out_cols: usize,
    out_batches: Vec<usize>,
}

impl Product {
    /// The product `form` of node `id`, reading its factors from stored
    /// nodes (`stored`); else the node whose storing would let it
    /// (`Err`): the first value under a factor's layout ops.
    pub(crate) fn new(
        nodes: &[Node],
        id: NodeId,
        form: &MatmulForm,
        stored: impl Fn(NodeId) -> bool,
    ) -> Result<Product, NodeId> {
        let dims = &form.shape.0;
        let factor = |f: NodeId, along: usize| {
            let (node, strides, offset) = view(nodes, f, &stored)?;
            let batches = offsets(dims, &form.batch, &strides);
            Ok(Factor {
                node,
                rows: offsets(dims, &[along], &strides),
                terms: offsets(dims, &form.ks, &strides),
                batches: batches.into_iter().map(|o| o + offset).collect(),
            })
        };
        let (p, q) = (factor(form.p, form.m)?, factor(form.q, form.n)?);
        // The reduction keeps the summed axes as ones: its buffer is the
        // product's shape, row-major, with strides of 0 along them.
        let mut out = nodes[id.index()].shape.strides();
        for &k in &form.ks {
            out[k] = 0;
        }
        let (out_rows, out_cols) = (out[form.m], out[form.n]);
        // Where the output's columns are its rows' axis (a gradient's
        // product, transposed), the factors swap: the same sums, each in
        // the same order (a·b + c = b·a + c), written in order.
        let (p, q, out_rows, out_cols) = match out_rows == 1 && out_cols != 1 {
            true => (q, p, out_cols, out_rows),
            false => (p, q, out_rows, out_cols),
        };
        Ok(Product {
            node: id,
            p,
            q,
            out_rows,
            out_cols,
            out_batches: offsets(dims, &form.batch, &out),
        })
    }

    /// The stored nodes it reads.
    pub(crate) fn factors(&self) -> [NodeId; 2] {
        [self.p.node, self.q.node]
    }

    /// Compute the product from its factors' values into `out`.
    pub(crate) fn run(&self, p: &[f32], q: &[f32], out: &mut [f32]) {
        let (m, n, batches) = (self.p.rows.len(), self.q.rows.len(), self.out_batches.len());
        let in_order = (self.out_batches.iter().enumerate()).all(|(b, &at)| at == b * m * n);
        if in_order && self.out_rows == n && self.out_cols == 1 {
            return self.run_in_order(p, q, out);
        }
        // The product's axes in another order (a batch axis last):
        // computed in order, then placed.
        let mut tmp = vec![0.0; batches * m * n];
        self.run_in_order(p, q, &mut tmp);
        for (at, &x) in tmp.iter().enumerate() {
            let (b, i, j) = (at / (m * n), at / n % m, at % n);
            out[self.out_batches[b] + i * self.out_rows + j * self.out_cols] = x;
        }
    }

    /// `run` into `out` laid out as [batches, rows, columns], in tasks of
    /// at most `MC` rows of one batch, enough of them to keep every core
    /// busy; each writes its rows.
    fn run_in_order(&self, p: &[f32], q: &[f32], out: &mut [f32]) {
        let (m, n) = (self.p.rows.len(), self.q.rows.len());
        let split = m.div_ceil(2 * rayon::current_num_threads());
        let mc = MC.min(split.div_ceil(MR) * MR).max(MR);
        let mut tasks: Vec<(usize, usize, &mut [f32])> = (out.chunks_mut(m * n).enumerate())
            .flat_map(|(batch, o)| {
                let rows = o.chunks_mut(mc * n).enumerate();
                rows.map(move |(r, rows)| (batch, r * mc, rows))
            })
            .collect();
        let task = |(batch, i, rows): (usize, usize, &mut [f32])| {
            SCRATCH.with_borrow_mut(|scratch| {
                for j in (0..n).step_by(NC) {
                    let block = Block {
                        batch,
                        rows: i..i + rows.len() / n,
                        cols: j..n.min(j + NC),
                    };
                    self.tile(scratch, p, q, &block, rows);
                }
            })
        };
        match tasks.len() {
            1 => task(tasks.pop().expect("one task")),
            _ => tasks.into_par_iter().for_each(task),
        }
    }

    /// A block of outputs into `out` (the block's rows, whole): `tile_body` compiled for the widest
    /// fused multiply-adds this CPU has, with its register tile (the same
    /// operations in the same order for every output: the same bits).
    fn tile(&self, scratch: &mut Scratch, p: &[f32], q: &[f32], block: &Block, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") {
                // SAFETY: this CPU has AVX-512, checked just above.
                return unsafe { self.tile_avx512(scratch, p, q, block, out) };
            }
            if has!("avx2") && has!("fma") {
                // SAFETY: this CPU has AVX2 and FMA, checked just above.
                return unsafe { self.tile_avx2(scratch, p, q, block, out) };
            }
        }
        self.tile_body::<16>(scratch, p, q, block, out, micro::<16>)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn tile_avx512(
        &self,
        scratch: &mut Scratch,
        p: &[f32],
        q: &[f32],
        block: &Block,
        out: &mut [f32],
    ) {
        // SAFETY: AVX-512 is enabled here, and `tile_body` checks the lengths.
        let kernel = |kc, pp: &[f32], qp: &[f32], acc: &mut [f64], ld| unsafe {
            micro_avx512(kc, pp, qp, acc, ld)
        };
        self.tile_body::<32>(scratch, p, q, block, out, kernel)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn tile_avx2(
        &self,
        scratch: &mut Scratch,
        p: &[f32],
        q: &[f32],
        block: &Block,
        out: &mut [f32],
    ) {
        // SAFETY: AVX2 and FMA are enabled here, and `tile_body` checks the lengths.
        let kernel = |kc, pp: &[f32], qp: &[f32], acc: &mut [f64], ld| unsafe {
            micro_avx2(kc, pp, qp, acc, ld)
        };
        self.tile_body::<16>(scratch, p, q, block, out, kernel)
    }

    /// The outputs `rows` × `cols` of batch `b`, by blocks of `KC` terms
    /// packed into panels of `MR` rows of `p` and `NR` of `q`, each tile
    /// computed by `kernel` (`micro`'s contract).
    #[inline(always)]
    fn tile_body<const NR: usize>(
        &self,
        scratch: &mut Scratch,
        p: &[f32],
        q: &[f32],
        block: &Block,
        out: &mut [f32],
        kernel: impl Fn(usize, &[f32], &[f32], &mut [f64], usize),
    ) {
        let Block { batch, rows, cols } = block;
        let (m, n) = (rows.len(), cols.len());
        let (mp, np) = (m.div_ceil(MR), n.div_ceil(NR));
        let (k, ld) = (self.p.terms.len(), np * NR);
        let Scratch { acc, pa, qa } = scratch;
        acc.clear();
        acc.resize(mp * MR * ld, 0.0);
        // Packing writes every value the kernels read.
        pa.resize(mp * MR * KC, 0.0);
        qa.resize(np * NR * KC, 0.0);
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            pack::<MR>(pa, p, &self.p, *batch, rows.clone(), k0..k0 + kc);
            pack::<NR>(qa, q, &self.q, *batch, cols.clone(), k0..k0 + kc);
            for jp in 0..np {
                let qp = &qa[jp * NR * kc..][..NR * kc];
                for ip in 0..mp {
                    let pp = &pa[ip * MR * kc..][..MR * kc];
                    let tile = &mut acc[ip * MR * ld + jp * NR..][..(MR - 1) * ld + NR];
                    kernel(kc, pp, qp, tile, ld);
                }
            }
        }
        let width = self.q.rows.len();
        for (r, row) in out.chunks_mut(width).enumerate() {
            let sums = &acc[r * ld..][..n];
            for (x, &sum) in row[cols.start..cols.end].iter_mut().zip(sums) {
                *x = sum as f32;
            }
        }
    }
}

/// Copy the factor's rows `rows` and terms `ks` into panels of `W` rows,
/// each term's `W` values together (rows past the end are zeros).
#[inline(always)]
fn pack<const W: usize>(
    dst: &mut [f32],
    src: &[f32],
    f: &Factor,
    b: usize,
    rows: Range<usize>,
    ks: Range<usize>,
) {
    let kc = ks.len();
    let base = f.batches[b];
    let terms = &f.terms[ks];
    let at = &f.rows[rows];
    let panels = at.len().div_ceil(W);
    let dst = &mut dst[..panels * W * kc];
    if !at.len().is_multiple_of(W) {
        dst[(panels - 1) * W * kc..].fill(0.0);
    }
    if steps_by_one(at) {
        // Each term's rows are consecutive (a row-major matrix's columns):
        // read along them, every panel's `W` at once, copies of a constant
        // length (a call to `memcpy` per copy took a third of a small
        // product's time; a panel at a time, a strided walk down the matrix).
        let whole = at.len() / W;
        for (t, &term) in terms.iter().enumerate() {
            let run = &src[base + term + at[0]..][..at.len()];
            let (full, rest) = run.split_at(whole * W);
            for (panel, values) in full.chunks_exact(W).enumerate() {
                let values: &[f32; W] = values.try_into().expect("W values");
                dst[panel * W * kc + t * W..][..W].copy_from_slice(values);
            }
            for (r, &x) in rest.iter().enumerate() {
                dst[whole * W * kc + t * W + r] = x;
            }
        }
    } else if steps_by_one(terms) {
        // Each row's terms are consecutive (a row-major matrix's rows):
        // a panel's `W` rows read side by side, each term's `W` values
        // written together (a row at a time compiled to scatters).
        let row = |r: usize| &src[base + r + terms[0]..][..kc];
        for (dst, rows) in dst.chunks_exact_mut(W * kc).zip(at.chunks(W)) {
            match <&[usize; W]>::try_from(rows) {
                Ok(rows) => {
                    let from = rows.map(row);
                    for (t, to) in dst.chunks_exact_mut(W).enumerate() {
                        for (x, row) in to.iter_mut().zip(&from) {
                            *x = row[t];
                        }
                    }
                }
                Err(_) => {
                    for (r, &at) in rows.iter().enumerate() {
                        for (t, &x) in row(at).iter().enumerate() {
                            dst[t * W + r] = x;
                        }
                    }
                }
            }
        }
    } else {
        for (dst, rows) in dst.chunks_exact_mut(W * kc).zip(at.chunks(W)) {
            for (t, &term) in terms.iter().enumerate() {
                for (r, &row) in rows.iter().enumerate() {
                    dst[t * W + r] = src[base + term + row];
                }
            }
        }
    }
}

/// Whether the offsets are consecutive.
fn steps_by_one(offsets: &[usize]) -> bool {
    offsets.windows(2).all(|o| o[1] == o[0] + 1)
}

/// `acc[i·ld + j] += Σ_k pp[k·MR + i] · qp[k·NR + j]` over `kc` terms
/// (`pp`, `qp` and `acc` hold exactly the values read), in f32 partials of
/// `DEPTH` fused multiply-adds. Where the CPU has them, `micro_avx2` and
/// `micro_avx512` do the same with intrinsics (a plain loop like this one
/// was compiled to 4-lane vectors, its partials spilled to the stack).
fn micro<const NR: usize>(kc: usize, pp: &[f32], qp: &[f32], acc: &mut [f64], ld: usize) {
    for k0 in (0..kc).step_by(DEPTH) {
        let mut part = [[0f32; NR]; MR];
        for k in k0..kc.min(k0 + DEPTH) {
            for (i, row) in part.iter_mut().enumerate() {
                for (j, x) in row.iter_mut().enumerate() {
                    *x = pp[k * MR + i].mul_add(qp[k * NR + j], *x);
                }
            }
        }
        for (i, row) in part.iter().enumerate() {
            for (x, &y) in acc[i * ld..][..NR].iter_mut().zip(row) {
                *x += f64::from(y);
            }
        }
    }
}

/// `micro::<16>` with AVX2: each row of the tile is two 8-lane vectors.
///
/// # Safety
/// The CPU has AVX2 and FMA; `pp`, `qp` and `acc` are as long as `micro` reads.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn micro_avx2(kc: usize, pp: &[f32], qp: &[f32], acc: &mut [f64], ld: usize) {
    use std::arch::x86_64::*;
    const NR: usize = 16;
    assert!(pp.len() == kc * MR && qp.len() == kc * NR && acc.len() == (MR - 1) * ld + NR);
    let (pp, qp, acc) = (pp.as_ptr(), qp.as_ptr(), acc.as_mut_ptr());
    for k0 in (0..kc).step_by(DEPTH) {
        let mut part = [[_mm256_setzero_ps(); 2]; MR];
        for k in k0..kc.min(k0 + DEPTH) {
            let b = [
                _mm256_loadu_ps(qp.add(k * NR)),
                _mm256_loadu_ps(qp.add(k * NR + 8)),
            ];
            for (i, row) in part.iter_mut().enumerate() {
                let a = _mm256_broadcast_ss(&*pp.add(k * MR + i));
                row[0] = _mm256_fmadd_ps(a, b[0], row[0]);
                row[1] = _mm256_fmadd_ps(a, b[1], row[1]);
            }
        }
        for (i, row) in part.iter().enumerate() {
            for (h, &v) in row.iter().enumerate() {
                let at = acc.add(i * ld + h * 8);
                let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
                let hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
                _mm256_storeu_pd(at, _mm256_add_pd(_mm256_loadu_pd(at), lo));
                _mm256_storeu_pd(at.add(4), _mm256_add_pd(_mm256_loadu_pd(at.add(4)), hi));
            }
        }
    }
}

/// `micro::<32>` with AVX-512: each row of the tile is two 16-lane vectors.
///
/// # Safety
/// The CPU has AVX-512; `pp`, `qp` and `acc` are as long as `micro` reads.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn micro_avx512(kc: usize, pp: &[f32], qp: &[f32], acc: &mut [f64], ld: usize) {
    use std::arch::x86_64::*;
    const NR: usize = 32;
    assert!(pp.len() == kc * MR && qp.len() == kc * NR && acc.len() == (MR - 1) * ld + NR);
    let (pp, qp, acc) = (pp.as_ptr(), qp.as_ptr(), acc.as_mut_ptr());
    for k0 in (0..kc).step_by(DEPTH) {
        let mut part = [[_mm512_setzero_ps(); 2]; MR];
        for k in k0..kc.min(k0 + DEPTH) {
            let b = [
                _mm512_loadu_ps(qp.add(k * NR)),
                _mm512_loadu_ps(qp.add(k * NR + 16)),
            ];
            for (i, row) in part.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*pp.add(k * MR + i));
                row[0] = _mm512_fmadd_ps(a, b[0], row[0]);
                row[1] = _mm512_fmadd_ps(a, b[1], row[1]);
            }
        }
        for (i, row) in part.iter().enumerate() {
            for (h, &v) in row.iter().enumerate() {
                let at = acc.add(i * ld + h * 16);
                let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
                let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(
                    _mm512_castps_pd(v),
                    1,
                )));
                _mm512_storeu_pd(at, _mm512_add_pd(_mm512_loadu_pd(at), lo));
                _mm512_storeu_pd(at.add(8), _mm512_add_pd(_mm512_loadu_pd(at.add(8)), hi));
            }
        }
    }
}

/// The stored node that `id`'s values are read from, the strides of `id`'s
/// axes in its buffer and the offset of its first element; else (`Err`) the first node under `id`'s
/// layout ops that is not stored, or that a reshape cannot read as strides.
fn view(
    nodes: &[Node],
    id: NodeId,
    stored: impl Fn(NodeId) -> bool,
) -> Result<(NodeId, Vec<usize>, usize), NodeId> {
    let mut chain = Vec::new();
    let mut base = id;
    while !stored(base) {
        let node = &nodes[base.index()];
        match node.op {
            Op::Reshape | Op::Permute(_) | Op::Broadcast | Op::Slice { .. } => {
                chain.push(base);
                base = node.inputs[0];
            }
            _ => return Err(base),
        }
    }
    let mut dims = nodes[base.index()].shape.0.clone();
    let mut strides = nodes[base.index()].shape.strides();
    let mut offset = 0;
    for &at in chain.iter().rev() {
        let node = &nodes[at.index()];
        let new = &node.shape.0;
        strides = match &node.op {
            Op::Reshape => match reshaped(&dims, &strides, new) {
                Some(s) => s,
                None => return Err(node.inputs[0]),
            },
            Op::Permute(perm) => perm.iter().map(|&a| strides[a]).collect(),
            Op::Broadcast => {
                let shift = new.len() - dims.len();
                (0..new.len())
                    .map(|x| match x >= shift && dims[x - shift] == new[x] {
                        true => strides[x - shift],
                        false => 0,
                    })
                    .collect()
            }
            Op::Slice { axis, start } => {
                offset += start * strides[*axis];
                strides
            }
            _ => unreachable!("only layout ops are in the chain"),
        };
        dims = new.clone();
    }
    Ok((base, strides, offset))
}

/// The strides that read a view (`dims`, `strides`) as the same elements in
/// the same order with dimensions `new`, where there are (NumPy's rule:
/// each group of axes merged or split must be contiguous in the view).
fn reshaped(dims: &[usize], strides: &[usize], new: &[usize]) -> Option<Vec<usize>> {
    if dims.contains(&0) {
        return None;
    }
    let old: Vec<(usize, usize)> = (dims.iter().copied().zip(strides.iter().copied()))
        .filter(|&(d, _)| d != 1)
        .collect();
    let axes: Vec<usize> = (0..new.len()).filter(|&x| new[x] != 1).collect();
    let mut out = vec![0; new.len()];
    let (mut o, mut a) = (0, 0);
    while o < old.len() && a < axes.len() {
        let (mut oe, mut ae) = (o + 1, a + 1);
        let (mut op, mut np) = (old[o].0, new[axes[a]]);
        while op != np {
            if op < np {
                op *= old[oe].0;
                oe += 1;
            } else {
                np *= new[axes[ae]];
                ae += 1;
            }
        }
        if (o..oe - 1).any(|x| old[x].1 != old[x + 1].0 * old[x + 1].1) {
            return None;
        }
        let mut s = old[oe - 1].1;
        for &x in axes[a..ae].iter().rev() {
            out[x] = s;
            s *= new[x];
        }
        (o, a) = (oe, ae);
    }
    Some(out)
}

/// The offset `Σ strides[x] · i[x]` of every index `i` over `axes` of
/// `dims`, in row-major order.
fn offsets(dims: &[usize], axes: &[usize], strides: &[usize]) -> Vec<usize> {
    let mut out = vec![0];
    for &x in axes {
        out = out
            .iter()
            .flat_map(|&o| (0..dims[x]).map(move |i| o + i * strides[x]))
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::matmul_form;
    use crate::graph::Graph;

    #[test]
    fn reshapes_of_views_find_their_strides() {
        // Row-major [2, 3] read flat, and split again.
        assert_eq!(reshaped(&[2, 3], &[3, 1], &[6]), Some(vec![1]));
        assert_eq!(reshaped(&[4, 6], &[6, 1], &[2, 2, 6]), Some(vec![12, 6, 1]));
        // A transpose ([3, 2] over a [2, 3] buffer) gains and loses ones...
        assert_eq!(reshaped(&[3, 2], &[1, 3], &[3, 2, 1]), Some(vec![1, 3, 0]));
        assert_eq!(reshaped(&[1, 3, 2], &[0, 1, 3], &[3, 2]), Some(vec![1, 3]));
        // ...but is not read flat.
        assert_eq!(reshaped(&[3, 2], &[1, 3], &[6]), None);
        // A slice's rows keep their stride when split.
        assert_eq!(reshaped(&[2, 4], &[8, 1], &[2, 2, 2]), Some(vec![8, 2, 1]));
        assert_eq!(reshaped(&[2, 4], &[8, 1], &[8]), None);
    }

    /// The product `a·b` of `[m, k]` by `[k, n]`, planned on its inputs.
    fn product(m: usize, k: usize, n: usize) -> (Product, Vec<f32>, Vec<f32>) {
        let g = Graph::new();
        let c = g.input("a", [m, k]).matmul(g.input("b", [k, n]));
        let nodes = g.nodes();
        let sum = nodes[c.id().index()].inputs[0];
        let form = matmul_form(&nodes, sum).expect("a matrix product");
        let leaf = |id: NodeId| matches!(nodes[id.index()].op, Op::Input(_));
        let p = Product::new(&nodes, sum, &form, leaf).unwrap_or_else(|_| panic!("views"));
        // Values of many magnitudes, so that any change of order shows.
        let values = |len: usize, seed: usize| -> Vec<f32> {
            let wave = |i: usize| ((i * 7919 + seed) % 1009) as f32 / 1009.0 - 0.5;
            (0..len)
                .map(|i| wave(i) * 2f32.powi((i % 23) as i32 - 11))
                .collect()
        };
        (p, values(m * k, 1), values(k * n, 2))
    }

    #[test]
    fn every_kernel_and_tile_width_computes_the_same_bits() {
        // k past two blocks of `KC`, with a partial `DEPTH`; rows and
        // columns past whole panels.
        let (p, a, b) = product(17, 2 * KC + 45, 70);
        let block = Block {
            batch: 0,
            rows: 0..17,
            cols: 0..70,
        };
        let mut s = Scratch::default();
        let outputs = || vec![0.0; 17 * 70];
        let (mut portable, mut wide, mut best) = (outputs(), outputs(), outputs());
        p.tile_body::<16>(&mut s, &a, &b, &block, &mut portable, micro::<16>);
        p.tile_body::<32>(&mut s, &a, &b, &block, &mut wide, micro::<32>);
        p.tile(&mut s, &a, &b, &block, &mut best);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&portable), bits(&wide), "tile widths differ");
        assert_eq!(bits(&portable), bits(&best), "the vector kernel differs");
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: this CPU has AVX2 and FMA.
            let mut avx2 = outputs();
            unsafe { p.tile_avx2(&mut s, &a, &b, &block, &mut avx2) };
            assert_eq!(bits(&portable), bits(&avx2), "the AVX2 kernel differs");
        }
        // And the f64 dot products, to within the f32 partials' rounding.
        for (at, &got) in portable.iter().enumerate() {
            let (i, j) = (at / 70, at % 70);
            let k = 2 * KC + 45;
            let want: f64 = (0..k)
                .map(|t| a[i * k + t] as f64 * b[t * 70 + j] as f64)
                .sum();
            let scale: f64 = (0..k)
                .map(|t| (a[i * k + t] as f64 * b[t * 70 + j] as f64).abs())
                .sum();
            assert!(
                (got as f64 - want).abs() <= 1e-6 * scale,
                "({i}, {j}): {got} vs {want}"
            );
        }
    }
}
