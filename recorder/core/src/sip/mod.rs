//! SIP: message parsing and the stateful proxy.

pub mod message;

pub use message::{Message, ParseError, StartLine};
