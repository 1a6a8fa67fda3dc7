//! The reconcile pipeline, one step per file:
//! `validate` (no client) → `build` (no client, in `crate::build`).

pub mod validate;
