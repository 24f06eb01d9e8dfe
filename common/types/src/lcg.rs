//! Knuth's MMIX linear congruential generator: the seeded source of the models' test rows,
//! kept so that every test sees the numbers it was written against. Not for anything secret
//! or statistical (the low bits are weak; [`Lcg64::unit_f32`] and [`Lcg64::unit_f64`] use
//! the high ones).
//!
//! ```
//! use bikeshare_types::lcg::Lcg64;
//!
//! let mut a = Lcg64::new(5);
//! let mut b = Lcg64::new(5);
//! assert_eq!(a.unit_f32(), b.unit_f32());
//! assert!((0.0..1.0).contains(&a.unit_f64()));
//! ```

/// state ← state × 6364136223846793005 + 1442695040888963407 (mod 2⁶⁴).
#[derive(Debug, Clone)]
pub struct Lcg64(u64);

impl Lcg64 {
    /// The generator whose state is `seed`.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next state.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0
    }

    /// Uniform in `[0, 1)`: the state's top 24 bits.
    pub fn unit_f32(&mut self) -> f32 {
        crate::unit::f32_of(self.next_u64())
    }

    /// Uniform in `[0, 1)`: the state's top 53 bits.
    pub fn unit_f64(&mut self) -> f64 {
        crate::unit::f64_of(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_mmixs() {
        // 0 → the increment, then Knuth's recurrence by hand.
        let mut r = Lcg64::new(0);
        assert_eq!(r.next_u64(), 1_442_695_040_888_963_407);
        let second = 1_442_695_040_888_963_407u64
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        assert_eq!(r.next_u64(), second);
    }
}
