// The LAST of rowcol.wgsl and rowcol_subgroup.wgsl where one dispatch
// takes all the rows and the device has device-scope fences
// (GpuLimits::device_fences): the groups' column partials are folded in the
// same dispatch, in blocks of BLOCK groups, by the workgroups that finish
// last, as reduce_last.wgsl folds a reduction's chunks.
//
// Each workgroup, its partials stored, passes a storage barrier (a
// device-scope release) and counts its group done in its block's counter
// (COUNT). The one that counts a block's last group passes another (the
// acquire) and folds each column's partials of the block's groups in order
// into `acc` (thread `lid` takes columns lid, lid + WG, …; FOLD_PARTIALS)
// and stores it (BLOCK_STORE), then counts the block done (COUNT_ALL). The
// one that counts the last of the BLOCKS blocks folds each column's block
// results in order (FOLD_BLOCKS) and stores the column's total at its index
// `slot` (FINAL, with the column reduction's epilogue). Fixed orders: the
// same bits on every run; each counter is back at 0 for the next run.
//
// The code generator writes each fold out in a straight line, every load
// before the first fold, so that a column's loads are in flight at once.
// (As a loop with the loads under a branch, each waited for the one before:
// on an H100 logreg's pass took 0.462 ms, against 0.387 + 0.014 for the
// pass and a second dispatch.)
        storageBarrier();
        let blk = group / {{BLOCK}}u;
        if (lid == 0u) {
            let size = min({{BLOCK}}u, GROUPS - blk * {{BLOCK}}u);
            is_last = u32(atomicAdd(&{{COUNT}}, 1u) == size - 1u);
        }
        if (workgroupUniformLoad(&is_last) == 1u) {
            storageBarrier();
            for (var col: u32 = lid; col < ROW_LEN; col += WG) {
{{FOLD_PARTIALS}}
                {{BLOCK_STORE}}
            }
            storageBarrier();
            if (lid == 0u) {
                atomicStore(&{{COUNT}}, 0u);
                is_last = u32(atomicAdd(&{{COUNT_ALL}}, 1u) == {{BLOCKS}}u - 1u);
            }
            if (workgroupUniformLoad(&is_last) == 1u) {
                storageBarrier();
                for (var col: u32 = lid; col < ROW_LEN; col += WG) {
{{FOLD_BLOCKS}}
                    let slot = col;
                    let total = acc;
                    {{FINAL}}
                }
                if (lid == 0u) {
                    atomicStore(&{{COUNT_ALL}}, 0u);
                }
            }
        }
