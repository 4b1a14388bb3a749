//! Running p402 day to day: the shared state a request sees
//! (`state`), what it leaves behind (the request log, `/metrics`), the
//! ledger's reports and exports, alerts, the providers' health and the
//! local servers' probe, logging, systemd, private files, and the pinned
//! downloads from PyPI.

pub(crate) mod alerts;
pub mod export;
pub mod logging;
pub mod metrics;
pub mod private;
pub(crate) mod probe;
pub mod provider_health;
pub(crate) mod pypi;
pub(crate) mod quality_tally;
pub mod report;
pub(crate) mod request_log;
pub(crate) mod resident;
pub(crate) mod state;
pub(crate) mod systemd;
