//! p402: a local reverse proxy for LLM traffic that routes each request to
//! the cheapest suitable model, answers repeats from a semantic cache,
//! holds budgets as hard caps, and reports what each request cost and saved.
//!
//! The binary (`main.rs`) parses the command line and calls [`serve`] or
//! [`commands`]. A model call's path is `server` (accept, the boundary,
//! auth, dispatch) and then the `pipeline`: read, admit, parse (by the
//! client's `door`), charge, cache, route, failover over attempts through
//! [`providers`], and one finish. ARCHITECTURE.md draws it.
//!
//! Public are the modules the binary, the benches, the integration tests
//! and the fuzz targets use; the rest is private to the crate.

mod account;
mod alerts;
mod api;
mod auth;
mod background;
mod body;
mod boundary;
pub mod budget;
mod burn_rate;
pub mod cache;
pub mod catalog;
pub mod catalog_update;
pub mod commands;
pub mod config;
pub mod cost;
mod count_tokens;
mod dashboard;
mod door;
pub mod embed;
mod embeddings;
mod error;
pub mod export;
mod forward;
pub mod ids;
mod limits;
pub mod logging;
mod metadata;
pub mod metrics;
pub mod mode;
pub mod money;
mod paced;
mod pipeline;
pub mod private;
mod probe;
pub mod provider_health;
pub mod providers;
mod pypi;
mod quality_tally;
pub mod report;
pub mod request;
mod request_log;
pub mod router;
pub mod run;
pub mod serve;
mod server;
mod sessions;
mod state;
pub mod store;
mod strict_json;
mod systemd;
mod target;
pub mod team;
pub mod tokens;
mod upstream;
mod visibility;
