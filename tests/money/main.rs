//! Money end to end: sessions, budgets as a hard cap, team budgets on a real Redis, alerts and guards, the ledger, and what each key may see.
//!
//! One test binary of four (one link each on a 2-core CI); each module
//! is one subject, sharing the harness in `tests/common`.

#[path = "../common/mod.rs"]
mod common;

mod budget_holes;
mod budgets;
mod guards;
mod keys;
mod ledger;
mod secrets;
mod team;
