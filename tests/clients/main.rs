//! Real client programs against p402: the SDKs, LangChain, the Agents SDK, Codex CLI, Claude Code, the dashboard in a real browser, and the p402 command line.
//!
//! One test binary of four (one link each on a 2-core CI); each module
//! is one subject, sharing the harness in `tests/common`.

#[path = "../common/mod.rs"]
mod common;

mod agents;
mod cli;
mod clients;
mod dashboard;
mod polarity;
mod wordnet;
