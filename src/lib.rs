//! p402: a local reverse proxy for OpenAI-format LLM traffic that routes each
//! request to the cheapest suitable model, reports what it cost and saved,
//! and (as it grows) caches and enforces budgets.
//!
//! The request path, in the order a request meets it:
//! [`server`] (accept, dispatch) -> [`auth`] -> [`chat`] (read body) ->
//! [`request`] (parse) -> [`router`] (choose) -> [`providers`] +
//! [`upstream`] (call, with fallback) -> [`stream`] or a buffered answer ->
//! [`metadata`] (cost, savings).

pub mod api;
pub mod auth;
pub mod body;
pub mod boundary;
pub mod budget;
pub mod cache;
pub mod catalog;
pub mod commands;
pub mod config;
pub mod cost;
pub mod door;
pub mod embed;
pub mod error;
pub mod ids;
pub mod limits;
pub mod logging;
pub mod metadata;
pub mod metrics;
pub mod mode;
pub mod money;
pub mod pipeline;
pub mod probe;
pub mod provider_health;
pub mod providers;
pub mod replay;
pub mod report;
pub mod request;
pub mod request_log;
pub mod router;
pub mod serve;
pub mod server;
pub mod sessions;
pub mod state;
pub mod store;
pub mod systemd;
pub mod tokens;
pub mod upstream;
