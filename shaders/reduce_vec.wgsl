// reduce.wgsl over vec4s, for folds of whole vec4s: each output's elements
// are consecutive (unit stride) from a first element that is a multiple of
// 4. Thread `lid` takes the four consecutive elements of vec4 `r4` of each
// tile of WG vec4s it folds, and each tensor read or written at the
// element's own index moves as one vec4 (see elementwise_vec.wgsl for
// LOADS, OUTS, LANES and STORES: here each lane also folds its element's
// VALUE into `acc`). Tiles, chunks, windows, the tree and STORE are as in
// reduce.wgsl; every thread folds a fixed set of elements in a fixed order,
// so the same inputs give the same bits on every run.
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
        for (var r4: u32 = FOLD_START / 4u + (slot % GROUPS) * WG + lid; 4u * r4 < FOLD_END; r4 += GROUPS * WG) {
            let q = base / 4u + r4;
{{LOADS}}
{{OUTS}}
            if (4u * r4 + 3u < FOLD_END) {
{{LANES}}
{{STORES}}
            } else {
{{CHECKED_LANES}}
{{CHECKED_STORES}}
            }
        }
        let total = tree(lid, array<f32, 1u>(acc))[0];
        if (lid == 0u) {
            {{STORE}}
        }
    }
}
