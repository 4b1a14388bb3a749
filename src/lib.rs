//! p402: a local reverse proxy for LLM traffic that routes each request to
//! the cheapest suitable model, answers repeats from a semantic cache,
//! holds budgets as hard caps, and reports what each request cost and saved.
//!
//! The binary (`main.rs`) parses the command line and calls
//! [`server::serve`] or [`commands`]. A call's path is [`server`] (accept,
//! the boundary, auth, the route table) and then the `pipeline`: read,
//! admit, parse (by the client's `endpoint`), charge, cache, route,
//! failover over attempts through the [`wire`], and one finish.
//! ARCHITECTURE.md draws it.
//!
//! Public are the 11 modules the binary, the benches, the integration
//! tests and the fuzz targets use; the rest is private to the crate.

#![warn(missing_docs)]

mod api;
pub mod cache;
pub mod catalog;
pub mod commands;
pub mod config;
pub mod embed;
mod endpoint;
pub mod money;
pub mod ops;
mod pipeline;
pub mod router;
pub mod server;
pub mod store;
pub mod wire;
