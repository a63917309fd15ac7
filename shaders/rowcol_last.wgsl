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
// (thread `lid` takes columns lid, lid + WG, …; PARTIAL is group `g`'s
// partial of column `col`) into BLOCK_STORE, then counts the block done
// (COUNT_ALL). The one that counts the last of the BLOCKS blocks folds each
// column's block results in order (BLOCK_PARTIAL, block `b`) and stores
// the column's total at its index `slot` (FINAL, with the column
// reduction's epilogue). Fixed orders: the same bits on every run; each
// counter is back at 0 for the next run.
        storageBarrier();
        let blk = group / {{BLOCK}}u;
        if (lid == 0u) {
            let size = min({{BLOCK}}u, GROUPS - blk * {{BLOCK}}u);
            is_last = u32(atomicAdd(&{{COUNT}}, 1u) == size - 1u);
        }
        if (workgroupUniformLoad(&is_last) == 1u) {
            storageBarrier();
            for (var col: u32 = lid; col < ROW_LEN; col += WG) {
                var acc: f32 = {{IDENTITY}};
                for (var k: u32 = 0u; k < {{BLOCK}}u; k++) {
                    let g = blk * {{BLOCK}}u + k;
                    if (g < GROUPS) {
                        acc = {{FOLD_PARTIAL}};
                    }
                }
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
                    var acc: f32 = {{IDENTITY}};
                    for (var b: u32 = 0u; b < {{BLOCKS}}u; b++) {
                        acc = {{FOLD_BLOCK}};
                    }
                    let slot = col;
                    let total = acc;
                    {{FINAL}}
                }
                if (lid == 0u) {
                    atomicStore(&{{COUNT_ALL}}, 0u);
                }
            }
        }
