//! e^x, ln x, ln(1 + x), tanh x, sin x and cos x in f32 for the CPU fast
//! path: Cephes' polynomials, written without branches or tables so that the fast path's
//! loop over a register of them compiles to vector instructions. libm's
//! are a call per element: `tanhf`, `expm1f` and `expf` were three
//! quarters of a layer-norm step's time. Against f64 over a sweep of every
//! exponent, the worst errors are 0.94 ulp (exp), 0.79 (ln), 2.4 (ln_1p)
//! and 1.25 (tanh); at the edges (infinities, NaN, zero, overflow) they
//! give libm's values. Results below f32's least normal are computed
//! through two scalings, not flushed to zero. `sin` and `cos` reduce by
//! π/4 in three parts (Cody and Waite): within 2 ulp, except near their
//! zeros away from 0, where the reduction's own error leaves up to 1e-9
//! absolute (hundreds of ulps of a tiny result); past |x| = 8192 they are
//! libm's.

/// 1.5 · 2^23: adding and subtracting it rounds an f32 below 2^22 to an
/// integer, ties to even, with no rounding instruction (SSE2 has none).
const ROUND: f32 = 12_582_912.0;
/// ln 2 in two parts (Cody and Waite): `n · LN2_HI` is exact for |n| < 2^15.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `x · 2^n` for an integer `n` in [-252, 254], through two normal
/// factors (2^n itself may be infinite or subnormal where `x · 2^n` is not).
#[inline(always)]
fn times_pow2(x: f32, n: f32) -> f32 {
    let half = (n * 0.5 + ROUND) - ROUND;
    // k + 1.5 · 2^23 holds the integer k in its low bits: 2^k's exponent
    // field from integer adds and a shift (`k as i32` checks for NaN and
    // saturates, a scalar conversion per element).
    let pow = |k: f32| {
        let biased = (k + ROUND).to_bits().wrapping_sub(ROUND.to_bits() - 127);
        f32::from_bits(biased << 23)
    };
    x * pow(half) * pow(n - half)
}

/// e^x.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Past these the result is infinite, or below the least subnormal.
    const HI: f32 = 88.722_84;
    const LO: f32 = -103.972_08;
    let c = x.clamp(LO, HI);
    // e^x = 2^n · e^r, |r| ≤ ln 2 / 2.
    let n = (c * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = c - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 5e-1;
    let v = times_pow2(p * (r * r) + r + 1.0, n);
    if x > HI {
        f32::INFINITY
    } else if x < LO {
        0.0
    } else {
        v
    }
}

/// ln x.
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    // Subnormals scaled up by 2^23 first.
    let tiny = x < f32::MIN_POSITIVE;
    let scaled = if tiny { x * 8_388_608.0 } else { x };
    let bits = scaled.to_bits() as i32;
    // x = m · 2^e with m in [√½, √2).
    let m = f32::from_bits(((bits & 0x007f_ffff) | 0x3f80_0000) as u32);
    let high = m > std::f32::consts::SQRT_2;
    let m = if high { m * 0.5 } else { m };
    let e = ((bits >> 23) & 0xff) - 127 + i32::from(high) - if tiny { 23 } else { 0 };
    let (f, e) = (m - 1.0, e as f32);
    let z = f * f;
    let p = ((((((((7.037_683_6e-2 * f - 1.151_461e-1) * f + 1.167_699_9e-1) * f
        - 1.242_014_1e-1)
        * f
        + 1.424_932_3e-1)
        * f
        - 1.666_805_8e-1)
        * f
        + 2.000_071_4e-1)
        * f
        - 2.499_999_4e-1)
        * f
        + 3.333_333e-1)
        * f
        * z;
    let v = f + (p + e * LN2_LO - 0.5 * z) + e * LN2_HI;
    if x.is_nan() || x < 0.0 {
        f32::NAN
    } else if x == 0.0 {
        f32::NEG_INFINITY
    } else if x == f32::INFINITY {
        f32::INFINITY
    } else {
        v
    }
}

/// ln(1 + x), accurate for small x: ln u · x / (u − 1) with u = 1 + x
/// rounded (the quotient corrects u's rounding).
#[inline(always)]
pub fn ln_1p(x: f32) -> f32 {
    let u = 1.0 + x;
    let v = ln(u) * (x / (u - 1.0));
    if u == 1.0 || x == f32::INFINITY {
        x
    } else {
        v
    }
}

/// tanh x.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    // Near 0 an odd polynomial; past it 1 − 2 / (e^{2|x|} + 1), which is
    // 1 from |x| ≈ 9 on (and for infinities).
    let z = x * x;
    let small =
        ((((-5.704_988_7e-3 * z + 2.063_909e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z
            - 3.333_328e-1)
            * z
            * x
            + x;
    let large = (1.0 - 2.0 / (exp(2.0 * a) + 1.0)).copysign(x);
    if a < 0.625 {
        small
    } else {
        large
    }
}

/// Whether `sin` and `cos` reduce `x` themselves: |x| up to 8192 (Cephes'
/// bound, past which the reduction by π/4 in three parts loses digits;
/// not NaN).
#[inline(always)]
fn reducible(x: f32) -> bool {
    x.abs() <= 8192.0
}

/// sin x where `reducible` (elsewhere, any value): x reduced by the
/// nearest even multiple of π/4 below, then Cephes' polynomials.
#[inline(always)]
pub fn sin_reduced(x: f32) -> f32 {
    let (r, octant) = reduce(x.abs());
    in_octant(r, octant, x.is_sign_negative())
}

/// cos x where `reducible` (elsewhere, any value): cos |x| = sin(|x| + π/2),
/// two octants on.
#[inline(always)]
pub fn cos_reduced(x: f32) -> f32 {
    let (r, octant) = reduce(x.abs());
    in_octant(r, (octant + 2) & 7, false)
}

/// sin(r + j·π/4) for an even octant j, negated if `negative`: octants 2
/// and 6 take the cosine's polynomial, 4 and 6 change the sign.
#[inline(always)]
fn in_octant(r: f32, octant: u32, negative: bool) -> f32 {
    let v = if octant & 2 != 0 {
        cos_poly(r)
    } else {
        sin_poly(r)
    };
    if (octant & 4 != 0) != negative {
        -v
    } else {
        v
    }
}

/// sin x: `sin_reduced`, or libm's where not `reducible`.
#[inline(always)]
pub fn sin(x: f32) -> f32 {
    match reducible(x) {
        true => sin_reduced(x),
        false => x.sin(),
    }
}

/// cos x: `cos_reduced`, or libm's where not `reducible`.
#[inline(always)]
pub fn cos(x: f32) -> f32 {
    match reducible(x) {
        true => cos_reduced(x),
        false => x.cos(),
    }
}

/// `f` (`sin` or `cos`) of each of `x` into `out`: the reduced form in
/// one loop that vectorizes, then libm's where not `reducible` (the same
/// values as `f` element by element).
#[inline(always)]
pub fn trig_over(x: &[f32], out: &mut [f32], reduced: fn(f32) -> f32, libm: fn(f32) -> f32) {
    for (o, &a) in out.iter_mut().zip(x) {
        *o = reduced(a);
    }
    for (o, &a) in out.iter_mut().zip(x) {
        if !reducible(a) {
            *o = libm(a);
        }
    }
}

/// `a` (≥ 0) as r + j·π/4 with j even and |r| ≤ π/4: (r, j mod 8).
#[inline(always)]
fn reduce(a: f32) -> (f32, u32) {
    const FOUR_OVER_PI: f32 = 4.0 * std::f32::consts::FRAC_1_PI;
    let q = a * FOUR_OVER_PI;
    // The integer part of q (rounded, then one less where that rounded up).
    let near = (q + ROUND) - ROUND;
    let t = if near > q { near - 1.0 } else { near };
    // An odd t moves up to the next even one.
    let odd = ((t + ROUND).to_bits() & 1) as f32;
    let j = t + odd;
    let octant = (j + ROUND).to_bits() & 7;
    let r = ((a - j * 0.785_156_25) - j * 2.418_756_5e-4) - j * 3.774_895e-8;
    (r, octant)
}

#[inline(always)]
fn sin_poly(r: f32) -> f32 {
    let z = r * r;
    ((-1.951_529_6e-4 * z + 8.332_161e-3) * z - 1.666_665_5e-1) * z * r + r
}

#[inline(always)]
fn cos_poly(r: f32) -> f32 {
    let z = r * r;
    ((2.443_315_7e-5 * z - 1.388_731_6e-3) * z + 4.166_664_6e-2) * z * z - 0.5 * z + 1.0
}

#[cfg(test)]
mod tests {
    /// The largest error, in units of the last place of the f64 result
    /// rounded to f32, of `f` against `want` at `xs`.
    fn worst_ulps(f: fn(f32) -> f32, want: fn(f64) -> f64, xs: &[f32]) -> (f64, f32) {
        let mut worst = (0.0, 0.0);
        for &x in xs {
            let (got, w) = (f(x), want(x as f64));
            let rounded = w as f32;
            let ulp = match rounded.abs() {
                a if a < f32::MIN_POSITIVE => f32::from_bits(1) as f64,
                a => (f32::from_bits(a.to_bits() + 1) - a) as f64,
            };
            let err = match got == rounded || got.is_nan() && w.is_nan() {
                true => 0.0,
                false => (got as f64 - w).abs() / ulp,
            };
            if err > worst.0 || err.is_nan() {
                worst = (err, x);
            }
        }
        worst
    }

    /// Every 997th f32 bit pattern of either sign: every exponent, 16,000
    /// mantissas of each.
    fn sweep() -> Vec<f32> {
        (0..u32::MAX / 997)
            .map(|k| f32::from_bits(k * 997))
            .filter(|x| x.is_finite())
            .flat_map(|x| [x, -x])
            .collect()
    }

    #[test]
    fn each_is_within_two_and_a_half_ulps_everywhere() {
        let xs = sweep();
        type Case = (&'static str, fn(f32) -> f32, fn(f64) -> f64);
        let cases: [Case; 4] = [
            ("exp", super::exp, f64::exp),
            ("ln", super::ln, f64::ln),
            ("ln_1p", super::ln_1p, f64::ln_1p),
            ("tanh", super::tanh, f64::tanh),
        ];
        for (name, f, want) in cases {
            let (ulps, at) = worst_ulps(f, want, &xs);
            assert!(ulps <= 2.5, "{name}: {ulps} ulps at {at:e}");
        }
    }

    #[test]
    fn sin_and_cos_are_within_two_ulps_or_a_hair() {
        // Every exponent up to the limit and past it, and near multiples
        // of π/2, where the results are small: there the reduction's own
        // error (π/4 in three f32 parts) bounds the absolute error.
        let mut xs: Vec<f32> = sweep().into_iter().filter(|x| x.abs() <= 3e4).collect();
        xs.extend((1..20_000).map(|k| (k as f64 * std::f64::consts::FRAC_PI_2) as f32));
        for (name, f, want) in [
            (
                "sin",
                super::sin as fn(f32) -> f32,
                f64::sin as fn(f64) -> f64,
            ),
            ("cos", super::cos, f64::cos),
        ] {
            for &x in &xs {
                let (got, w) = (f(x) as f64, want(x as f64));
                let ulp = f32::EPSILON as f64 * w.abs();
                let err = (got - w).abs();
                assert!(
                    err <= 2.0 * ulp || err <= 1e-9,
                    "{name}({x:e}) = {got:e}, f64 {w:e}"
                );
            }
        }
    }

    #[test]
    fn the_edges_are_libms() {
        let edges = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            f32::MAX,
            -f32::MAX,
            88.7,
            88.8,
            -103.9,
            -104.0,
        ];
        let same = |a: f32, b: f32| {
            a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 4e-7 * b.abs()
        };
        for x in edges {
            for (name, got, want) in [
                ("sin", super::sin(x), x.sin()),
                ("cos", super::cos(x), x.cos()),
                ("exp", super::exp(x), x.exp()),
                ("ln", super::ln(x), x.ln()),
                ("ln_1p", super::ln_1p(x), x.ln_1p()),
                ("tanh", super::tanh(x), x.tanh()),
            ] {
                assert!(same(got, want), "{name}({x:e}) = {got:e}, libm {want:e}");
            }
        }
    }
}
