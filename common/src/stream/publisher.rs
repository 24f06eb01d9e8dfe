//! The batching publisher. Being written in this change.
