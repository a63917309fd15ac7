// One pass of a deterministic reduction: a workgroup tree, no atomics.
//
// The reduction has OUT outputs, each folding REDUCE_LEN elements, taken in
// tiles of TILE = WG * UNROLL: thread `lid` takes elements lid, lid + WG, …
// of a tile, UNROLL of them at once into as many accumulators (written out
// by the code generator: acc0, acc1, …), so that their loads are in flight
// together. Each output is cut into GROUPS chunks: chunk c folds tiles c,
// c + GROUPS, c + 2 GROUPS, …, so the workgroups sweep the tensor together
// (a compact window of pages at any time, not a stream per workgroup).
// slot = output * GROUPS + chunk, and each workgroup folds the slots wid.x,
// wid.x + nwg.x, … into dst[slot]; with GROUPS > 1 a second pass of this
// same template folds the chunks. Every thread folds a fixed set of elements
// in a fixed order, its accumulators are combined in a fixed order, and the
// tree (tree.wgsl) has a fixed shape, so the same inputs give the same bits
// on every run; STORE writes the fold, `total`.
//
// The code generator fills in the holes in double braces: BASE is the first source
// index of output `o`, OFFSET the source offset of element `r`,
// BODY the statements computing VALUE at source index `idx` (an element-wise
// expression fused into the reduction, and any element-wise outputs of the
// same extent written there too); UNROLLED folds a whole tile's UNROLL
// elements, CHECKED those of a last, partial tile that are there.
{{PRELUDE}}
{{BINDINGS}}

const WG: u32 = 256u;
const SLOTS: u32 = {{SLOTS}}u;
const GROUPS: u32 = {{GROUPS}}u;
const REDUCE_LEN: u32 = {{REDUCE_LEN}}u;
const UNROLL: u32 = {{UNROLL}}u;
const TILE: u32 = WG * UNROLL;

{{TREE}}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    for (var slot: u32 = wid.x; slot < SLOTS; slot += nwg.x) {
        let o = slot / GROUPS;
        let base: u32 = {{BASE}};
{{ACCS}}
        var r0: u32 = (slot % GROUPS) * TILE + lid;
        for (; r0 + (UNROLL - 1u) * WG < REDUCE_LEN; r0 += GROUPS * TILE) {
{{UNROLLED}}
        }
{{CHECKED}}
        let total = tree(lid, array<f32, 1u>({{ACC}}))[0];
        if (lid == 0u) {
            {{STORE}}
        }
    }
}
