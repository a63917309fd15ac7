// The FOLD of reduce.wgsl over vec4s, for folds of whole vec4s: each
// output's elements are consecutive (unit stride) from a first element
// that is a multiple of 4. Thread `lid` takes the four consecutive elements
// of vec4 `r4` of each tile of WG vec4s it folds, and each tensor read or
// written at the element's own index moves as one vec4 (see
// elementwise_vec.wgsl for LOADS, OUTS, LANES and STORES: here each lane
// also folds its element's value into `acc`). Each thread still folds a
// fixed set of elements in a fixed order.
        for (var r4: u32 = FOLD_START / 4u + (slot % GROUPS) * WG + lid; 4u * r4 < FOLD_END; r4 += GROUPS * WG) {
            let q = base / 4u + r4;
{{LOADS}}
{{OUTS}}
            if (4u * r4 + 3u < FOLD_END) {
{{LANES}}
{{STORES}}
            } else {
{{CHECKED_LANES}}
{{CHECKED_STORES}}
            }
        }
