// A reduction whose outputs each fold few elements (REDUCE_LEN, at most
// a few dozen): one thread per output folds them in order, with no tree
// and no barriers, where a workgroup per output would leave most of its
// threads idle. The holes are reduce.wgsl's (with one chunk per output,
// each fold whole); a grid-stride loop covers the slots
// FIRST_SLOT..END_SLOT. A fixed order, so the
// same inputs give the same bits on every run.
{{PRELUDE}}
{{BINDINGS}}

const FIRST_SLOT: u32 = {{FIRST_SLOT}}u;
const END_SLOT: u32 = {{END_SLOT}}u;
const REDUCE_LEN: u32 = {{REDUCE_LEN}}u;

fn combine(acc: f32, x: f32) -> f32 {
    return {{COMBINE}};
}

@compute @workgroup_size(256)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let stride = nwg.x * 256u;
    for (var slot: u32 = FIRST_SLOT + gid.x; slot < END_SLOT; slot += stride) {
        let o = slot;
        let base: u32 = {{BASE}};
        var acc: f32 = {{IDENTITY}};
        for (var r: u32 = 0u; r < REDUCE_LEN; r++) {
            let idx: u32 = base + {{OFFSET}};
{{BODY}}
            acc = combine(acc, {{VALUE}});
        }
        let total = acc;
        {{STORE}}
    }
}
