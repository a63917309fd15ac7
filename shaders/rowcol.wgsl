// Two reductions over one tensor in one read: a row reduction, then a
// column reduction whose operand uses each row's result (the forward and
// backward halves of a matrix-vector product, as in a logistic-regression
// step: z = X·v, then ∇v = Xᵀ·g(z)).
//
// The tensor is viewed as rows of ROW_LEN elements, of which one dispatch
// takes rows ROW_START..ROW_END (all of them, or a window when the tensors
// take more bindings than one dispatch may have), in blocks of TREE_N
// rows. Workgroup `group` takes blocks group, group + GROUPS, …, so
// that the workgroups sweep the tensor together (a compact window of pages
// at any time, not a stream per workgroup), a block at a time; thread `lid`
// takes the row elements lid, lid + WG, … of each. The
// code generator writes the folds out in straight lines, one block per row
// and column, so that every load of a block of rows is in flight at once
// and the accumulators are registers: ROW_FOLDS folds the first operand
// (at source index `idx`) into acc0, acc1, …; one tree gives the rows'
// results (their trees share their barriers); STORES stores them (and any
// epilogue); COLUMN_FOLDS folds the second operand, with the row's result in
// `total` and recomputed at the same indices (which the caches still hold),
// into the column accumulators col0, col1, …. A row past the last, or an
// element past the row's end, reads a valid neighbour and is left out of
// the fold by a select. Each workgroup then writes its column partials
// (STORE_PARTIALS, those of a window's groups after the earlier windows');
// a second pass of reduce.wgsl folds them. Fixed orders
// throughout: the same bits on every run.
{{PRELUDE}}
{{BINDINGS}}

const WG: u32 = 256u;
const ROW_START: u32 = {{ROW_START}}u;
const ROW_END: u32 = {{ROW_END}}u;
const ROW_LEN: u32 = {{ROW_LEN}}u;
const GROUPS: u32 = {{GROUPS}}u;

{{TREE}}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    for (var group: u32 = wid.x; group < GROUPS; group += nwg.x) {
{{COLS}}
        // Blocks of TREE_N rows: block `group`, then `group + GROUPS`, …
        for (var block: u32 = ROW_START + group * TREE_N; block < ROW_END; block += GROUPS * TREE_N) {
            let last = min(block + TREE_N, ROW_END);
{{ROW_FOLDS}}
            let totals = tree(lid, array<f32, TREE_N>({{ACCS}}));
{{STORES}}
{{COLUMN_FOLDS}}
        }
{{STORE_PARTIALS}}
    }
}
