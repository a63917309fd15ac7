// One pass of a deterministic reduction: a workgroup tree, no atomics.
//
// The reduction's outputs each fold the same number of elements, taken in
// tiles of WG: thread `lid` takes element `lid` of each tile it folds.
// Each output is cut into GROUPS chunks: chunk c folds tiles c, c + GROUPS,
// c + 2 GROUPS, …, so the workgroups sweep the tensor together (a compact
// window of pages at any time, not a stream per workgroup). slot = output *
// GROUPS + chunk, and each workgroup folds the slots FIRST_SLOT + wid.x,
// + nwg.x, … below END_SLOT into dst[slot]; with GROUPS > 1 a second pass
// of this same template folds the chunks (or, for one output on a device
// with device-scope fences, this dispatch's last workgroup: LAST). One
// dispatch covers all slots
// and the elements FOLD_START..FOLD_END of each fold: all of them, or a
// window when the tensors take more bindings than one dispatch may have
// (then each window's chunks are partials too). Every thread folds a fixed set of elements in a fixed
// order and the tree (tree.wgsl) has a fixed shape, so the same inputs give
// the same bits on every run; STORE writes the fold, `total`.
//
// FOLD is how a thread folds its elements of a chunk into `acc`:
// reduce_fold.wgsl (one element of each tile at a time) or, where each
// output's elements are consecutive from a multiple of 4, reduce_fold_vec.wgsl
// (tiles of WG vec4s, one vec4 of each).
//
// The code generator fills in the holes in double braces: BASE is the first
// source index of output `o`; STORE stores `total`; LAST is empty or
// reduce_last.wgsl (the partials folded in this dispatch); the fold's own
// holes are in its file.
{{PRELUDE}}
{{BINDINGS}}

const WG: u32 = 256u;
const FIRST_SLOT: u32 = {{FIRST_SLOT}}u;
const END_SLOT: u32 = {{END_SLOT}}u;
const GROUPS: u32 = {{GROUPS}}u;
const FOLD_START: u32 = {{FOLD_START}}u;
const FOLD_END: u32 = {{FOLD_END}}u;

{{TREE}}

fn combine(acc: f32, x: f32) -> f32 {
    return {{COMBINE}};
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    for (var slot: u32 = FIRST_SLOT + wid.x; slot < END_SLOT; slot += nwg.x) {
        let o = slot / GROUPS;
        let base: u32 = {{BASE}};
        var acc: f32 = {{IDENTITY}};
{{FOLD}}
        let total = tree(lid, array<f32, 1u>(acc))[0];
        if (lid == 0u) {
            {{STORE}}
        }
{{LAST}}
    }
}
