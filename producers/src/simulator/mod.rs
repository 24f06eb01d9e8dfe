//! simulator: being written in this change.
