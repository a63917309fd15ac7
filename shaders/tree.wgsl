// The workgroup's fold of one value per thread, as a tree of fixed shape
// (the same inputs give the same bits on every run). Every thread gets the
// result, and `scratch` is free again when it returns. Call it in uniform
// control flow: it has barriers.
var<workgroup> scratch: array<f32, WG>;

fn tree(lid: u32, value: f32) -> f32 {
    scratch[lid] = value;
    workgroupBarrier();
    for (var s: u32 = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            scratch[lid] = {{TREE_COMBINE}};
        }
        workgroupBarrier();
    }
    let total = scratch[0];
    workgroupBarrier();
    return total;
}
