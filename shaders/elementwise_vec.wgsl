// An element-wise kernel over vec4s: each thread takes four consecutive
// elements at a time, and each tensor read or written at the kernel's own
// index moves as one vec4 (one 16-byte load or store instead of four). On
// an H100 the Rosenbrock step's kernel at 2^28 elements took 0.728 ms (2.95
// TB/s) so, against 0.820 (2.62 TB/s) for four f32s per thread
// (BENCHMARKS.md, eighth session).
//
// Elements START..END (START a multiple of 4): thread `lid` of workgroup
// `wid` takes vec4 q = START/4 + wid.x·WG + lid, then strides by the
// dispatch. LOADS loads the vec4s read at the element's own index (xv*),
// OUTS declares the vec4s it writes (ov*); each of LANES computes element
// 4q + lane from them (other reads, such as a neighbour's, are scalar
// loads) and sets its component of the outputs; STORES stores them. The
// last vec4 of the range, if END cuts it, takes only its elements below
// END (CHECKED_LANES, CHECKED_STORES). Buffers hold whole vec4s, so the
// last one loads whole.
{{PRELUDE}}
{{BINDINGS}}

const START: u32 = {{START}}u;
const END: u32 = {{END}}u;
const WG: u32 = 256u;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    for (var q: u32 = START / 4u + wid.x * WG + lid; 4u * q < END; q += nwg.x * WG) {
{{LOADS}}
{{OUTS}}
        if (4u * q + 3u < END) {
{{LANES}}
{{STORES}}
        } else {
{{CHECKED_LANES}}
{{CHECKED_STORES}}
        }
    }
}
