// One pass of a deterministic reduction: a workgroup tree, no atomics.
//
// The reduction has OUT outputs, each folding REDUCE_LEN elements. They are
// cut into GROUPS chunks of CHUNK elements; slot = output * GROUPS + chunk,
// and each workgroup folds the slots wid.x, wid.x + nwg.x, … into dst[slot].
// With GROUPS > 1 a second pass of this same template folds the chunks.
// Every thread folds a fixed, strided set of elements and the tree
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
        var acc: f32 = {{IDENTITY}};
        for (var r: u32 = lo + lid; r < hi; r += WG) {
            let idx: u32 = base + {{OFFSET}};
{{BODY}}
            acc = combine(acc, {{VALUE}});
        }
        let total = tree(lid, array<f32, 1u>(acc))[0];
        if (lid == 0u) {
            {{STORE}}
        }
    }
}
