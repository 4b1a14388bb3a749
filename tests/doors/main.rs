//! The doors and the request path end to end: a real p402 on loopback in front of fake providers that speak each API's wire format, SSE included.
//!
//! One test binary of four (one link each on a 2-core CI); each module
//! is one subject, sharing the harness in `tests/common`.

#[path = "../common/mod.rs"]
mod common;

mod anthropic;
mod boundary;
mod cache;
mod catalog;
mod door_cache;
mod embeddings;
mod faults;
mod forward;
mod hangups;
mod local_models;
mod messages;
mod proxy;
mod quality;
mod responses;
mod routing;
