//! In-process counters a component keeps for its callers (`stats()`), and their plain copy.
//!
//! A [`Counter`] is a relaxed atomic: many writers, and readers that want a recent figure,
//! not one synchronised with anything else. [`counters!`](crate::counters!) declares a group
//! of them and its snapshot struct once, field by field:
//!
//! ```
//! bikeshare_types::counters! {
//!     /// What the sender did.
//!     pub struct SendCounters => pub struct SendStats {
//!         /// Calls made.
//!         calls,
//!         records_sent,
//!     }
//! }
//! let c = SendCounters::default();
//! c.calls.incr();
//! c.records_sent.add(3);
//! assert_eq!(c.snapshot(), SendStats { calls: 1, records_sent: 3 });
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

/// A count that only grows (relaxed ordering).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n` (a `usize` wider than 64 bits counts as `u64::MAX`; the sum wraps, as
    /// `AtomicU64::fetch_add` does: a counter would need centuries to reach it).
    pub fn add(&self, n: usize) {
        self.0
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Adds one.
    pub fn incr(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Declares a struct of [`Counter`]s, its snapshot struct with the same fields as `u64`
/// (`Debug, Default, Clone, Copy, PartialEq, Eq`), and `snapshot()`. Doc comments on a field
/// go to both. See the [module docs](crate::counters).
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident => $(#[$snap_meta:meta])* $snap_vis:vis struct $snap:ident {
            $($(#[$field_meta:meta])* $field:ident),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        $vis struct $name {
            $($(#[$field_meta])* pub $field: $crate::counters::Counter,)*
        }

        $(#[$snap_meta])*
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        $snap_vis struct $snap {
            $($(#[$field_meta])* pub $field: u64,)*
        }

        impl $name {
            /// A plain copy of the counters (each read on its own, relaxed).
            pub fn snapshot(&self) -> $snap {
                $snap {
                    $($field: self.$field.get(),)*
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Counter;

    crate::counters! {
        struct Two => struct TwoStats { a, b }
    }

    #[test]
    fn counters_add_and_the_snapshot_copies_each_field() {
        let c = Counter::default();
        c.add(2);
        c.incr();
        assert_eq!(c.get(), 3);
        let t = Two::default();
        t.a.add(5);
        t.b.incr();
        t.a.incr();
        assert_eq!(t.snapshot(), TwoStats { a: 6, b: 1 });
    }
}
