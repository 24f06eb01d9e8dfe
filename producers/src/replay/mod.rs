//! replay: being written in this change.
