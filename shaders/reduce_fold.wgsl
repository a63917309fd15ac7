// The FOLD of reduce.wgsl over f32s: thread `lid` folds element `lid` of
// each tile of WG. OFFSET is the source offset of element `r` of a fold,
// BODY the statements computing VALUE at source index `idx` (an element-wise
// expression fused into the reduction, and any element-wise outputs of the
// same extent written there too).
//
// One element per thread at a time: on an H100, four at once (unrolled, in
// four accumulators) made the seed workload's sum 4% slower at 2^24 and
// 2^28 elements.
        for (var r: u32 = FOLD_START + (slot % GROUPS) * WG + lid; r < FOLD_END; r += GROUPS * WG) {
            let idx: u32 = base + {{OFFSET}};
{{BODY}}
            acc = combine(acc, {{VALUE}});
        }
