//! A tiny seeded generator for synthetic data, test schedules and fixtures: the same seed
//! gives the same numbers on every machine and in every version, which `rand`'s generators
//! do not promise. Not for anything secret or statistical.
//!
//! ```
//! use bikeshare_types::xorshift::XorShift64;
//!
//! let mut a = XorShift64::from_seed(7);
//! let mut b = XorShift64::from_seed(7);
//! assert_eq!(a.next_u64(), b.next_u64());
//! assert!(a.below(10) < 10);
//! assert!((0.0..1.0).contains(&a.unit_f32()));
//! ```

/// Marsaglia's xorshift64 (shifts 13, 7, 17).
#[derive(Debug, Clone)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// The generator whose state is `state` (a zero state, which xorshift never leaves, is
    /// replaced by a fixed non-zero one).
    pub const fn new(state: u64) -> Self {
        Self(if state == 0 {
            0x2545_f491_4f6c_dd1d
        } else {
            state
        })
    }

    /// A small seed (0, 1, 2, ...) spread over the state first, so nearby seeds start far
    /// apart.
    pub const fn from_seed(seed: u64) -> Self {
        Self::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// In `[0, n)` (`n` > 0; modulo bias is negligible for the small `n` it serves).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`, 24 bits.
    pub fn unit_f32(&mut self) -> f32 {
        crate::unit::f32_of(self.next_u64())
    }

    /// Uniform in `[0, 1)`, 53 bits.
    pub fn unit_f64(&mut self) -> f64 {
        crate::unit::f64_of(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_marsaglias_xorshift64() {
        // Marsaglia (2003), "Xorshift RNGs", the 64-bit example: its seed and first outputs.
        let mut r = XorShift64::new(88_172_645_463_325_252);
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(
            first,
            [
                8_748_534_153_485_358_512,
                3_040_900_993_826_735_515,
                3_453_997_556_048_239_312
            ]
        );
    }

    #[test]
    fn a_zero_state_does_not_stick_and_ranges_hold() {
        let mut r = XorShift64::new(0);
        assert_ne!(r.next_u64(), 0);
        for _ in 0..10_000 {
            assert!(r.below(7) < 7);
            assert!((0.0..1.0).contains(&r.unit_f32()));
            assert!((0.0..1.0).contains(&r.unit_f64()));
        }
        assert_eq!(r.below(0), 0);
    }
}
