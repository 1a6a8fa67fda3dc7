//! Earshot's recordings console: a read-only web page and a CLI over one
//! policy's recordings in its object store (the MP3s and JSON sidecars the
//! recorder writes, `docs/recordings.md`). Nothing here can change or
//! delete a recording.
#![forbid(unsafe_code)]

pub mod access;
pub mod catalog;
pub mod cli;
pub mod metrics;
pub mod web;
pub mod zip;
