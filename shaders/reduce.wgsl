// One pass of a deterministic reduction: a workgroup tree, no atomics.
//
// The reduction has OUT outputs, each folding REDUCE_LEN elements. They are
// cut into GROUPS chunks of CHUNK elements; slot = output * GROUPS + chunk,
// and each workgroup folds the slots wid.x, wid.x + nwg.x, … into dst[slot].
// With GROUPS > 1 a second pass of this same template folds the chunks.
// Every thread folds a fixed, strided set of elements (UNROLL at a time,
// into as many accumulators, then combined in a fixed order) and the tree
// (tree.wgsl) has a fixed shape, so the same inputs give the same bits on
// every run; STORE writes the fold, `total`.
//
// The code generator fills in the holes in double braces: BASE is the first source
// index of output `o`, OFFSET the source offset of element `r`,
// BODY the statements computing VALUE at source index `idx` (an element-wise
// expression fused into the reduction, and any element-wise outputs of the
// same extent written there too).
{{PRELUDE}}
{{BINDINGS}}

const WG: u32 = 256u;
const SLOTS: u32 = {{SLOTS}}u;
const GROUPS: u32 = {{GROUPS}}u;
const REDUCE_LEN: u32 = {{REDUCE_LEN}}u;
const CHUNK: u32 = {{CHUNK}}u;
const UNROLL: u32 = {{UNROLL}}u;

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
    for (var slot: u32 = wid.x; slot < SLOTS; slot += nwg.x) {
        let o = slot / GROUPS;
        let lo = (slot % GROUPS) * CHUNK;
        let hi = min(lo + CHUNK, REDUCE_LEN);
        let base: u32 = {{BASE}};
        // UNROLL elements at a time into as many accumulators (written out
        // by the code generator: acc0, acc1, …), so that their loads are in
        // flight together; the rest one at a time into acc0.
{{ACCS}}
        var r0: u32 = lo + lid;
        for (; r0 + (UNROLL - 1u) * WG < hi; r0 += UNROLL * WG) {
{{UNROLLED}}
        }
        for (; r0 < hi; r0 += WG) {
            let r = r0;
            let idx: u32 = base + {{OFFSET}};
{{BODY}}
            acc0 = combine(acc0, {{VALUE}});
        }
        let total = tree(lid, array<f32, 1u>({{ACC}}))[0];
        if (lid == 0u) {
            {{STORE}}
        }
    }
}
