//! GBFS: discovery, typed parsing for every version, validation and polling.

pub mod rules;
