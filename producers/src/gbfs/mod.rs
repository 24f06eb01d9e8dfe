//! gbfs: being written in this change.
