// A fused element-wise kernel: every output of this kernel has LEN elements,
// and each is computed at its own flat index `idx` by the generated BODY
// (which loads operands, recomputes any fused producers, and stores).
// A grid-stride loop covers any LEN with at most the adapter's number of
// workgroups per dimension.
{{PRELUDE}}
{{BINDINGS}}

const LEN: u32 = {{LEN}}u;

@compute @workgroup_size(256)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let stride = nwg.x * 256u;
    for (var idx: u32 = gid.x; idx < LEN; idx += stride) {
{{BODY}}
    }
}
