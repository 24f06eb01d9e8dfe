//! weather: being written in this change.
