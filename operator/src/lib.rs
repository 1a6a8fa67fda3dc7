//! Earshot's operator: RecordingPolicies into recorder workloads, storage
//! retention and status. The binary `earshot-operator` wraps this library.
#![forbid(unsafe_code)]

pub mod build;
pub mod config;
pub mod error;
pub mod metrics;
pub mod rbac;
pub mod reconcile;
pub mod render;
pub mod run;
pub mod storage;
