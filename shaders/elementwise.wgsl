// A fused element-wise kernel: each output is computed at its own flat index
// `idx`, for idx in START..END (all of its elements, or one window of them
// when its tensors take more bindings than one dispatch may have), by the
// generated BODY (which loads operands, recomputes any fused producers, and
// stores). A window of a block of rows by columns (BLOCK) runs its threads'
// `t` over START..END instead, and the generated code maps each to its idx.
// Each thread takes UNROLL elements a workgroup apart, written out by the
// code generator (UNROLLED; CHECKED where the last ones may be past the
// end), so that their loads are in flight together. A grid-stride loop
// covers any range with at most the adapter's number of workgroups per
// dimension.
{{PRELUDE}}
{{BINDINGS}}

{{BLOCK}}
const START: u32 = {{START}}u;
const END: u32 = {{END}}u;
const WG: u32 = 256u;
const UNROLL: u32 = {{UNROLL}}u;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let stride = nwg.x * WG * UNROLL;
    for (var first: u32 = START + wid.x * WG * UNROLL + lid; first < END; first += stride) {
        if (first + (UNROLL - 1u) * WG < END) {
{{UNROLLED}}
        } else {
{{CHECKED}}
        }
    }
}
