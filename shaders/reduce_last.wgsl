// The LAST of reduce.wgsl where one dispatch folds all the chunks of one
// output (GROUPS of them) and the device has device-scope fences
// (GpuLimits::device_fences): the workgroup that finishes the last chunk
// folds the chunks' partials, so no second dispatch is needed.
//
// Each workgroup stores its chunk's partial (STORE), then passes a storage
// barrier (a device-scope release) and counts the chunk done in COUNTER;
// the one that counts last passes another (the acquire) and reads every
// partial. It folds them as a second pass of reduce.wgsl would (thread
// `lid` takes chunks lid, lid + WG, …, then the tree), so the bits are
// those of two dispatches, and leaves COUNTER at 0 for the next run.
// PARTIAL loads chunk `r`'s partial; FINAL stores `total` at the output's
// index `slot` (and runs the reduction's epilogue there).
        storageBarrier();
        if (lid == 0u) {
            is_last = u32(atomicAdd(&{{COUNTER}}, 1u) == GROUPS - 1u);
        }
        if (workgroupUniformLoad(&is_last) == 1u) {
            storageBarrier();
            var acc: f32 = {{IDENTITY}};
            for (var r: u32 = lid; r < GROUPS; r += WG) {
                acc = combine(acc, {{PARTIAL}});
            }
            let total = tree(lid, array<f32, 1u>(acc))[0];
            if (lid == 0u) {
                let slot: u32 = 0u;
                {{FINAL}}
                atomicStore(&{{COUNTER}}, 0u);
            }
        }
