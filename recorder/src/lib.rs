//! The shell of the Earshot recorder as a library: its config file (which
//! the operator renders and tests against), recording pipeline, storage and
//! runtime. The binary `earshot-recorder` is a thin `main` around it.
// No unsafe code but one: registering the relay sockets with the runtime
// (`runtime::rtp::register`), whose contract is spelled out there.
#![deny(unsafe_code)]

pub mod config;
pub mod events;
pub mod metrics;
pub mod prompt;
pub mod recording;
pub mod runtime;
pub mod spool;
pub mod store;
