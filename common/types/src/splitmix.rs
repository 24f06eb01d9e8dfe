//! SplitMix64 (Steele, Lea and Flood, 2014): a 64-bit mixing function, used as a hash of a
//! key ([`splitmix64`]) and as a seeded generator ([`SplitMix64`]) for baselines, synthetic
//! rows and test data that must give the same numbers on every machine and in every version.
//! Not for anything secret.
//!
//! ```
//! use bikeshare_types::splitmix::{SplitMix64, splitmix64};
//!
//! let mut a = SplitMix64::new(7);
//! assert_eq!(a.next_u64(), splitmix64(7));
//! assert!((0.0..1.0).contains(&a.unit_f32()));
//! ```

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The well-mixed hash of `x`: SplitMix64's output for the state `x`.
pub const fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The generator: each number is [`splitmix64`] of the state, which then moves on by the
/// golden gamma.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        let out = splitmix64(self.0);
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        out
    }

    /// Uniform in `[0, 1)`, 24 bits.
    pub fn unit_f32(&mut self) -> f32 {
        crate::unit::f32_of(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_splitmix64s() {
        // The reference implementation (Vigna's splitmix64.c) seeded with 1234567.
        let mut r = SplitMix64::new(1_234_567);
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(
            first,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423
            ]
        );
    }
}
