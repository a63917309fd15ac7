// rowcol.wgsl's two reductions over one tensor in one read (a row
// reduction, then a column reduction whose operand uses each row's result),
// for a device with subgroup operations: each subgroup takes a row at a
// time, so a row's fold is one subgroup operation and the main loop has no
// workgroup barrier.
//
// The tensor is viewed as rows of ROW_LEN elements, of which one dispatch
// takes rows ROW_START..ROW_END. Workgroup `group` takes the rows of steps
// group, group + GROUPS, … of `nsg` rows each, one per subgroup (the
// workgroups sweep the tensor together), its subgroup `sg` the row `sg` of
// each step. Lane
// `lane` of a subgroup of `sg_size` lanes takes the row elements lane +
// j·sg_size for j < COLS_PER_LANE (COLS_PER_LANE · the adapter's smallest
// subgroup ≥ ROW_LEN), and keeps each column's running fold in a register
// (col0, col1, …) and each loaded element in one (x0_*, x1_*, …) between
// the row fold and the column fold. ROW folds the first operand into
// `acc`; the subgroup's fold of the lanes' `acc` is the row's result
// (`total`); PER_ROW computes what the column operand reads once per row;
// COLUMN_FOLDS folds the second operand; STORES stores the row's result
// (first lane; and any epilogue). A row past the last or an element past
// the row's end reads a valid neighbour and is left out of the folds by a
// select, so that the subgroup operation sees all its lanes.
//
// After its rows, each workgroup folds its subgroups' columns, subgroup 0
// first, into `scratch` and writes them as its column partials
// (STORE_PARTIALS, those of a window's groups after the earlier windows');
// a second pass of reduce.wgsl folds them. Every fold has a fixed order
// (a subgroup's fold is the device's own, the same on every run), so the
// same inputs give the same bits on every run of a device.
// (No `enable subgroups;`: naga 30 takes subgroup built-ins without it, and
// rejects it.)
{{PRELUDE}}
{{BINDINGS}}

const WG: u32 = 256u;
const ROW_START: u32 = {{ROW_START}}u;
const ROW_END: u32 = {{ROW_END}}u;
const ROW_LEN: u32 = {{ROW_LEN}}u;
const GROUPS: u32 = {{GROUPS}}u;
const MAX_SUBGROUPS: u32 = {{MAX_SUBGROUPS}}u;

var<workgroup> scratch: array<f32, ROW_LEN>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(num_subgroups) nsg: u32,
) {
    for (var group: u32 = wid.x; group < GROUPS; group += nwg.x) {
{{COLS}}
        for (var first: u32 = ROW_START + group * nsg; first < ROW_END; first += GROUPS * nsg) {
            let row_kept = first + sg < ROW_END;
            let slot = min(first + sg, ROW_END - 1u);
{{ROW}}
{{COLUMN_FOLDS}}
            if (lane == 0u && row_kept) {
{{STORES}}
            }
        }
        // The subgroups' columns, in order of subgroup (at most
        // MAX_SUBGROUPS, those of the smallest subgroups).
        for (var s: u32 = 0u; s < MAX_SUBGROUPS; s++) {
            if (sg == s) {
{{SCRATCH}}
            }
            workgroupBarrier();
        }
        for (var col: u32 = lid; col < ROW_LEN; col += WG) {
            let value = scratch[col];
{{STORE_PARTIALS}}
        }
        workgroupBarrier();
    }
}
