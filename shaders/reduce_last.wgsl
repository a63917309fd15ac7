// The LAST of reduce.wgsl where one dispatch folds all the chunks of one
// output (GROUPS of them) and the device has device-scope fences
// (GpuLimits::device_fences): the chunks' partials are folded in the same
// dispatch, in blocks of WG chunks, by the workgroups that finish last.
//
// Each workgroup stores its chunk's partial (STORE), passes a storage
// barrier (a device-scope release) and counts the chunk done in its block's
// counter (COUNT). The one that counts a block's last chunk passes another
// (the acquire) and folds the block's partials (thread `lid` takes chunk
// blk·WG + lid, PARTIAL; then the tree) into BLOCK_STORE, then counts the
// block done (COUNT_ALL). The one that counts the last of the BLOCKS blocks
// folds the blocks' results (thread `lid` takes blocks lid, lid + WG, …,
// BLOCK_PARTIAL; then the tree) and stores the total at the output's index
// `slot` (FINAL, with the reduction's epilogue). The folds have a fixed
// shape, so the same inputs give the same bits on every run; each counter
// is back at 0 for the next run.
//
// Only thread 0 stores what another workgroup reads (a chunk's or a block's
// result), then fences and counts: a barrier is not known to order other
// threads' stores before thread 0's count on every driver (a row+column
// pass whose threads stored their columns' partials lost some on an H100).
// On the reading side thread 0's count is followed by two storage barriers:
// the first makes it an acquire of what the counted workgroups stored, the
// second hands that on to the workgroup's other threads, which read no
// counter themselves (in Vulkan's memory model one barrier's release
// precedes its own acquire, so one would not carry it).
//
// On an H100, the seed workload's pass over 2^28 elements took 2.266 ms in
// 4096 chunks, 2.199 in 65535 (fewer tiles per workgroup: a shorter tail),
// where one workgroup folding 65535 partials took 0.105 ms more.
        storageBarrier();
        let blk = slot / WG;
        if (lid == 0u) {
            let size = min(WG, GROUPS - blk * WG);
            is_last = u32(atomicAdd(&{{COUNT}}, 1u) == size - 1u);
        }
        if (workgroupUniformLoad(&is_last) == 1u) {
            storageBarrier();
            storageBarrier();
            var acc: f32 = {{IDENTITY}};
            let c = blk * WG + lid;
            if (c < GROUPS) {
                acc = combine(acc, {{PARTIAL}});
            }
            let total = tree(lid, array<f32, 1u>(acc))[0];
            if (lid == 0u) {
                {{BLOCK_STORE}}
                atomicStore(&{{COUNT}}, 0u);
            }
            storageBarrier();
            if (lid == 0u) {
                is_last = u32(atomicAdd(&{{COUNT_ALL}}, 1u) == {{BLOCKS}}u - 1u);
            }
            if (workgroupUniformLoad(&is_last) == 1u) {
                storageBarrier();
                storageBarrier();
                var acc: f32 = {{IDENTITY}};
                for (var b: u32 = lid; b < {{BLOCKS}}u; b += WG) {
                    acc = combine(acc, {{BLOCK_PARTIAL}});
                }
                let total = tree(lid, array<f32, 1u>(acc))[0];
                if (lid == 0u) {
                    let slot: u32 = 0u;
                    {{FINAL}}
                    atomicStore(&{{COUNT_ALL}}, 0u);
                }
            }
        }
