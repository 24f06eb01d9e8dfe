//! The `[0, 1)` floats every seeded generator of this crate ([`crate::lcg`],
//! [`crate::splitmix`], [`crate::xorshift`]) makes from its 64-bit output, written once.

/// Uniform in `[0, 1)` from the top 24 bits of `bits` (an `f32`'s mantissa).
pub(crate) fn f32_of(bits: u64) -> f32 {
    (bits >> 40) as f32 / (1u64 << 24) as f32
}

/// Uniform in `[0, 1)` from the top 53 bits of `bits` (an `f64`'s mantissa).
pub(crate) fn f64_of(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}
