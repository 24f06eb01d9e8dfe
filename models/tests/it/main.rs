//! The `bikeshare-models`'s integration tests, in one test binary: one link of the dependency graph instead of one per
//! file. Each module is one former `tests/*.rs` file; shared helpers are modules too.

mod registry_support;
mod support;

mod drift_healthy;
mod endpoint_client;
mod external_memory;
mod hotswap;
mod linking;
mod parity;
mod promote_gate;
mod registry_roundtrip;
#[cfg(feature = "sagemaker-registry")]
mod sagemaker_registry;
mod serving_contract;
mod training;
