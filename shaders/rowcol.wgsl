// Two reductions over one tensor in one read: a row reduction, then a
// column reduction whose operand uses each row's result (the forward and
// backward halves of a matrix-vector product, as in a logistic-regression
// step: z = X·v, then ∇v = Xᵀ·g(z)).
//
// The tensor is viewed as ROWS rows of ROW_LEN elements. Each workgroup
// takes ROWS_PER_GROUP consecutive rows, TREE_N at a time (their trees
// share barriers); for each row it folds the first
// operand (BODY1/VALUE1, at source index `idx`) into the row's result,
// stores it (STORE1, then any epilogue), and with the row's result in `total`
// folds the second operand (BODY2/VALUE2, recomputed at the same indices,
// which the caches still hold) into per-thread column accumulators. Each
// workgroup then writes its column partials (STORE_PARTIAL); a second pass
// of reduce.wgsl folds them. Fixed orders throughout: the same bits on
// every run.
{{PRELUDE}}
{{BINDINGS}}

const WG: u32 = 256u;
const ROWS: u32 = {{ROWS}}u;
const ROW_LEN: u32 = {{ROW_LEN}}u;
const ROWS_PER_GROUP: u32 = {{ROWS_PER_GROUP}}u;
const GROUPS: u32 = (ROWS + ROWS_PER_GROUP - 1u) / ROWS_PER_GROUP;
const COLS_PER_THREAD: u32 = {{COLS_PER_THREAD}}u;

{{TREE}}

fn combine1(acc: f32, x: f32) -> f32 {
    return {{COMBINE1}};
}

fn combine2(acc: f32, x: f32) -> f32 {
    return {{COMBINE2}};
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    for (var group: u32 = wid.x; group < GROUPS; group += nwg.x) {
        var cols: array<f32, COLS_PER_THREAD>;
        for (var k: u32 = 0u; k < COLS_PER_THREAD; k++) {
            cols[k] = {{IDENTITY2}};
        }
        let first = group * ROWS_PER_GROUP;
        let last = min(first + ROWS_PER_GROUP, ROWS);
        // TREE_N rows at a time: their trees share their barriers.
        for (var block: u32 = first; block < last; block += TREE_N) {
            var accs: array<f32, TREE_N>;
            for (var b: u32 = 0u; b < TREE_N; b++) {
                let slot = block + b;
                var acc: f32 = {{IDENTITY1}};
                if (slot < last) {
                    let base: u32 = {{BASE}};
                    for (var r: u32 = lid; r < ROW_LEN; r += WG) {
                        let idx: u32 = base + {{OFFSET}};
{{BODY1}}
                        acc = combine1(acc, {{VALUE1}});
                    }
                }
                accs[b] = acc;
            }
            var totals = tree(lid, accs);
            for (var b: u32 = 0u; b < TREE_N; b++) {
                let slot = block + b;
                if (slot < last) {
                    let total = totals[b];
                    let base: u32 = {{BASE}};
                    if (lid == 0u) {
                        {{STORE1}}
                    }
                    // Indexed by the loop's count, not by `r / WG`: a
                    // constant trip count lets `cols` stay in registers.
                    for (var k: u32 = 0u; k < COLS_PER_THREAD; k++) {
                        let r = lid + k * WG;
                        if (r < ROW_LEN) {
                            let idx: u32 = base + {{OFFSET}};
{{BODY2}}
                            cols[k] = combine2(cols[k], {{VALUE2}});
                        }
                    }
                }
            }
        }
        for (var k: u32 = 0u; k < COLS_PER_THREAD; k++) {
            let col = lid + k * WG;
            if (col < ROW_LEN) {
                {{STORE_PARTIAL}}
            }
        }
    }
}
