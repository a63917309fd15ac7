// The workgroup's folds of TREE_N values per thread (TREE_N independent
// folds at once, so they share their barriers), each a tree of fixed shape:
// the same inputs give the same bits on every run. Every thread gets the
// results, and `scratch` is free again when it returns. Call it in uniform
// control flow: it has barriers.
const TREE_N: u32 = {{TREE_N}}u;

var<workgroup> scratch: array<f32, WG * TREE_N>;

fn tree(lid: u32, values: array<f32, TREE_N>) -> array<f32, TREE_N> {
    var v = values;
    for (var b: u32 = 0u; b < TREE_N; b++) {
        scratch[b * WG + lid] = v[b];
    }
    workgroupBarrier();
    for (var s: u32 = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            for (var b: u32 = 0u; b < TREE_N; b++) {
                let k = b * WG + lid;
                scratch[k] = {{TREE_COMBINE}};
            }
        }
        workgroupBarrier();
    }
    var totals: array<f32, TREE_N>;
    for (var b: u32 = 0u; b < TREE_N; b++) {
        totals[b] = scratch[b * WG];
    }
    workgroupBarrier();
    return totals;
}
