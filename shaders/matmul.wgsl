// A tiled matrix product with its operands fused in.
//
// The code generator recognises a sum over one axis (k) of a product p·q
// where p does not vary along one other axis (n) and q not along another
// (m): out[b, i, j] = Σ_k p[b, i, k] · q[b, k, j] for every batch index b.
// Each workgroup computes a TILE × TILE block of one batch's output: it
// stages TILE × TILE blocks of p and q in workgroup memory, where the
// generated A_BODY / B_BODY compute the operands' elements (loads, and any
// element-wise producers, fused) at index `idx` of each operand (not of the
// product, which may have 2^32 elements or more). Tiles are visited by
// a grid-stride loop, so any size fits the adapter's workgroup limit.
// One dispatch takes the tiles FIRST_TILE..END_TILE and the terms
// K_START..K_END of each sum: all of them, or a window when the tensors take
// more bindings than one dispatch may have (then each window of k stores
// partial sums, which a second pass folds in order).
// The k-order of the sum is fixed: the same bits on every run.
{{PRELUDE}}
{{BINDINGS}}

const TILE: u32 = 16u;
const M: u32 = {{M}}u;
const N: u32 = {{N}}u;
const FIRST_TILE: u32 = {{FIRST_TILE}}u;
const END_TILE: u32 = {{END_TILE}}u;
const K_START: u32 = {{K_START}}u;
const K_END: u32 = {{K_END}}u;
const TILES_M: u32 = (M + TILE - 1u) / TILE;
const TILES_N: u32 = (N + TILE - 1u) / TILE;

var<workgroup> tile_a: array<array<f32, 16>, 16>;
var<workgroup> tile_b: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    for (var t: u32 = FIRST_TILE + wid.x; t < END_TILE; t += nwg.x) {
        let batch = t / (TILES_M * TILES_N);
        let row = ((t / TILES_N) % TILES_M) * TILE + lid.y;
        let col = (t % TILES_N) * TILE + lid.x;
        let base_a: u32 = {{A_BATCH}};
        let base_b: u32 = {{B_BATCH}};
        var acc: f32 = 0.0;
        for (var k0: u32 = K_START; k0 < K_END; k0 += TILE) {
            var va: f32 = 0.0;
            let ka = k0 + lid.x;
            if (row < M && ka < K_END) {
                let idx: u32 = base_a + {{A_OFFSET}};
{{A_BODY}}
                va = {{A_VALUE}};
            }
            tile_a[lid.y][lid.x] = va;
            var vb: f32 = 0.0;
            let kb = k0 + lid.y;
            if (kb < K_END && col < N) {
                let idx: u32 = base_b + {{B_OFFSET}};
{{B_BODY}}
                vb = {{B_VALUE}};
            }
            tile_b[lid.y][lid.x] = vb;
            workgroupBarrier();
            for (var q: u32 = 0u; q < TILE; q++) {
                acc = acc + tile_a[lid.y][q] * tile_b[q][lid.x];
            }
            workgroupBarrier();
        }
        if (row < M && col < N) {
            {{STORE}}
        }
    }
}
