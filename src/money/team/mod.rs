//! Team budgets (SPEC §11): budgets marked `shared = true` live in Redis,
//! so that one cap holds across every p402 of a team.
//!
//! Each step is one Lua script that Redis runs atomically (`scripts.rs`):
//! reserving checks every shared account of a request and holds the amount
//! on all of them, or on none; settling swaps the hold for the actual cost,
//! once per request id, and appends the charge to the team ledger (a Redis
//! stream). A hold carries a lease that its p402 renews while the request
//! runs, so a crashed instance's holds lapse by themselves.
//!
//! p402 never waits long on Redis: connecting and each command time out,
//! and while Redis cannot be reached a request charged to a shared budget
//! is refused (503 `team_store_unavailable`) rather than let through
//! uncounted. A settlement that cannot be written is kept and written when
//! Redis is back: the provider was paid, and settling is idempotent, so
//! writing one twice counts it once.

mod scripts;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Client;

use crate::config::TeamConfig;
use crate::money::account::Account;
use crate::money::Usd;
use crate::ops::metrics::{TeamLabels, TeamMetrics};
use crate::store::LedgerEntry;

/// How long one Redis command may take before the team store counts as
/// unreachable: a request waits at most this on a dead Redis.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a running p402 checks Redis (and writes kept settlements).
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// How long a settled request id is remembered, so a settlement written
/// again after an outage is not counted twice.
const SETTLED_MARKER_SECONDS: u64 = 7 * 24 * 3600;
/// Settlements kept while Redis is down; beyond this the oldest are only
/// in the local ledger (and logged).
const MAX_PENDING: usize = 100_000;

/// Why the team store could not do what was asked. `Unreachable` refuses
/// the request (503) rather than let it through uncounted.
#[derive(Debug, thiserror::Error)]
pub enum TeamError {
    /// Redis did not answer (connecting, or a command timed out).
    #[error("the team budget store (Redis at {url}) cannot be reached: {reason}")]
    Unreachable {
        /// The Redis URL without its password.
        url: String,
        /// What the connection or command failed with.
        reason: String,
    },
    /// A budget is marked shared but `[team]` has no Redis to share it in.
    #[error("budget `{0}` is shared, but no [team] redis_url is set")]
    NotConfigured(String),
    /// `[team] redis_url` does not parse.
    #[error("[team] redis_url: {0}")]
    Url(String),
    /// The CA certificate file for Redis over TLS cannot be read or used.
    #[error("[team] ca_file {path}: {reason}")]
    CaFile {
        /// The file as configured.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Redis or a script answered in a shape p402 does not expect.
    #[error("the team store answered something p402 did not expect: {0}")]
    Reply(String),
}

/// Whether Redis answered lately, for `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// No command has finished yet.
    Connecting,
    /// The last command succeeded.
    Connected,
    /// The last command failed, for this reason.
    Unreachable(String),
}

impl Reach {
    pub(crate) fn word(&self) -> &'static str {
        match self {
            Reach::Connecting => "connecting",
            Reach::Connected => "connected",
            Reach::Unreachable(_) => "unreachable",
        }
    }
}

/// Money held in Redis for one request on its shared accounts.
#[derive(Debug, Clone)]
pub struct Hold {
    id: String,
    keys: Vec<String>,
    /// The money held on each of the shared accounts.
    pub amount: Usd,
}

/// The reservation could not be made: which shared account stands in the
/// way (its index among those asked for) and what it has left.
#[derive(Debug, Clone, Copy)]
pub struct Short {
    pub(crate) index: usize,
    /// That account's limit less what is settled and held on it.
    pub remaining: Usd,
}

/// A hold tied to the request it pays for: renewed while the request
/// runs, settled with it, or given back when the request ends without an
/// answer (dropped unsettled).
pub struct TeamHold {
    store: Arc<TeamStore>,
    hold: Option<Hold>,
    renewal: Option<tokio::task::AbortHandle>,
}

impl TeamHold {
    /// Ties `hold` to its request and starts renewing its lease.
    pub(crate) fn new(store: Arc<TeamStore>, hold: Hold) -> Self {
        let renewal = store.keep_alive(&hold);
        TeamHold {
            store,
            hold: Some(hold),
            renewal,
        }
    }

    /// The money held; zero once the hold is settled or given back.
    pub(crate) fn amount(&self) -> Usd {
        self.hold.as_ref().map_or(Usd::ZERO, |h| h.amount)
    }

    /// Swaps the hold for `entry`'s cost on every shared account.
    pub async fn settle(mut self, entry: &LedgerEntry) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        if let Some(hold) = self.hold.take() {
            let keys = hold.keys.clone();
            self.store.settle(Some(&hold), keys, entry).await;
        }
    }
}

impl Drop for TeamHold {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        if let Some(hold) = self.hold.take() {
            self.store.release(hold);
        }
    }
}

/// A settlement Redis did not take yet.
struct Pending {
    hold: Option<String>,
    keys: Vec<String>,
    entry: LedgerEntry,
}

/// The connection to the team's Redis, with the settlements it has not
/// taken yet; one per p402, replaced when a reload changes `[team]`.
pub struct TeamStore {
    config: TeamConfig,
    /// The URL as configured (from the file or the environment), to see
    /// whether a reload changed it.
    url: String,
    /// The URL without its password, for messages.
    shown: String,
    conn: ConnectionManager,
    instance: String,
    reach: Mutex<Reach>,
    pending: Mutex<VecDeque<Pending>>,
    metrics: TeamMetrics,
}

impl TeamStore {
    /// Sets up the connection to `config`'s Redis without waiting for it:
    /// p402 starts (and serves unshared traffic) while Redis is down.
    pub fn connect(
        config: &TeamConfig,
        metrics: TeamMetrics,
    ) -> Result<Option<Arc<Self>>, TeamError> {
        let Some(url) = config.url() else {
            return Ok(None);
        };
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
            .map_err(|e| TeamError::Url(e.to_string()))?;
        let shown = hide_password(&url);
        if url.starts_with("rediss://") {
            // rustls picks its process-wide provider; p402 uses ring.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = match &config.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| TeamError::CaFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
            None => Client::open(info),
        }
        .map_err(|e| TeamError::Url(e.to_string()))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| TeamError::Url(e.to_string()))?;
        Ok(Some(Arc::new(TeamStore {
            config: config.clone(),
            url,
            shown,
            conn,
            instance: config.instance.clone().unwrap_or_else(host_name),
            reach: Mutex::new(Reach::Connecting),
            pending: Mutex::new(VecDeque::new()),
            metrics,
        })))
    }

    /// The `[team]` settings it was connected with, to tell whether a
    /// reload changed them.
    pub(crate) fn config(&self) -> &TeamConfig {
        &self.config
    }

    pub(crate) fn reach(&self) -> Reach {
        lock(&self.reach).clone()
    }

    /// Settlements waiting for Redis.
    pub fn pending(&self) -> usize {
        lock(&self.pending).len()
    }

    /// The URL without its password.
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    /// The URL as configured, password included.
    pub fn url_source(&self) -> &str {
        &self.url
    }

    fn keys(&self, account: &str) -> [String; 3] {
        let prefix = &self.config.prefix;
        [
            format!("{prefix}:{account}"),
            format!("{prefix}:{account}:leases"),
            format!("{prefix}:{account}:holds"),
        ]
    }

    fn ledger_key(&self) -> String {
        format!("{}:ledger", self.config.prefix)
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(u64::from(self.config.lease_seconds))
    }

    /// Runs one script invocation with a deadline, recording its latency,
    /// errors and whether Redis answered.
    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, TeamError> {
        let started = Instant::now();
        let mut conn = self.conn.clone();
        let result = tokio::time::timeout(COMMAND_TIMEOUT * 2, invocation.invoke_async(&mut conn))
            .await
            .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))));
        self.observe(op, started, result.as_ref().err())?;
        result.map_err(|e| self.unreachable(e))
    }

    fn observe(
        &self,
        op: &'static str,
        started: Instant,
        error: Option<&redis::RedisError>,
    ) -> Result<(), TeamError> {
        let labels = TeamLabels { op };
        self.metrics
            .latency
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        let mut reach = lock(&self.reach);
        match error {
            None => *reach = Reach::Connected,
            Some(e) => {
                self.metrics.errors.get_or_create(&labels).inc();
                if is_connection_error(e) {
                    if *reach != Reach::Unreachable(e.to_string()) {
                        tracing::warn!("team store: Redis at {} unreachable: {e}", self.shown);
                    }
                    *reach = Reach::Unreachable(e.to_string());
                }
            }
        }
        Ok(())
    }

    fn unreachable(&self, e: redis::RedisError) -> TeamError {
        if is_connection_error(&e) {
            TeamError::Unreachable {
                url: self.shown.clone(),
                reason: e.to_string(),
            }
        } else {
            TeamError::Reply(e.to_string())
        }
    }

    /// Holds up to `wanted` (at least `minimum`) on every shared account at
    /// once, atomically across every p402 of the team.
    pub async fn reserve(
        &self,
        accounts: &[Account],
        wanted: Usd,
        minimum: Usd,
    ) -> Result<Result<Hold, Short>, TeamError> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let script = &*scripts::RESERVE;
        let mut invocation = script.prepare_invoke();
        let mut keys = Vec::new();
        for account in accounts {
            let key = account.key.clone().unwrap_or_default();
            for k in self.keys(&key) {
                invocation.key(k);
            }
            keys.push(key);
        }
        invocation
            .arg(&id)
            .arg(millis(self.lease()))
            .arg(wanted.nanos().max(0))
            .arg(minimum.nanos().max(0));
        for account in accounts {
            invocation
                .arg(account.limit.nanos())
                .arg(account.lifetime.map_or(0, millis));
        }
        let reply: Vec<redis::Value> = self.run("reserve", &invocation).await?;
        let number = |i: usize| -> Result<i64, TeamError> {
            reply
                .get(i)
                .and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok())
                .ok_or_else(|| TeamError::Reply(format!("reserve returned {reply:?}")))
        };
        if number(0)? == 1 {
            Ok(Ok(Hold {
                id,
                keys,
                amount: Usd::from_nanos(number(1)?),
            }))
        } else {
            let index = usize::try_from(number(1)? - 1).unwrap_or(0);
            Ok(Err(Short {
                index: index.min(accounts.len().saturating_sub(1)),
                remaining: Usd::from_nanos(number(2)?),
            }))
        }
    }

    /// Keeps `hold` alive while its request runs: renewed at a third of its
    /// lease, so two renewals can fail before it lapses.
    pub fn keep_alive(self: &Arc<Self>, hold: &Hold) -> Option<tokio::task::AbortHandle> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let store = Arc::clone(self);
        let (id, keys) = (hold.id.clone(), hold.keys.clone());
        let task = handle.spawn(async move {
            let every = store.lease() / 3;
            loop {
                tokio::time::sleep(every).await;
                let script = &*scripts::RENEW;
                let mut invocation = script.prepare_invoke();
                for key in &keys {
                    let [_, leases, _] = store.keys(key);
                    invocation.key(leases);
                }
                invocation.arg(&id).arg(millis(store.lease()));
                match store.run::<usize>("renew", &invocation).await {
                    Ok(n) if n < keys.len() => {
                        tracing::warn!("team store: a hold lapsed before its request ended; the request is still charged when it settles");
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("team store: could not renew a hold: {e}"),
                }
            }
        });
        Some(task.abort_handle())
    }

    /// Gives an unused hold back, in the background; if Redis cannot be
    /// reached, the lease gives it back.
    pub fn release(self: &Arc<Self>, hold: Hold) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = Arc::clone(self);
        handle.spawn(async move {
            let script = &*scripts::RELEASE;
            let mut invocation = script.prepare_invoke();
            for key in &hold.keys {
                for k in store.keys(key) {
                    invocation.key(k);
                }
            }
            invocation.arg(&hold.id);
            if let Err(e) = store.run::<i64>("release", &invocation).await {
                tracing::debug!("team store: hold left to lapse: {e}");
            }
        });
    }

    /// Settles a request on its shared accounts and appends it to the team
    /// ledger. Never fails outward: what Redis does not take now is kept
    /// and written by [`Self::watch`] once it answers again.
    pub async fn settle(&self, hold: Option<&Hold>, keys: Vec<String>, entry: &LedgerEntry) {
        let pending = Pending {
            hold: hold.map(|h| h.id.clone()),
            keys,
            entry: entry.clone(),
        };
        if let Err(e) = self.write(&pending).await {
            tracing::warn!(request_id = %entry.request_id, "team store: settlement kept until Redis answers: {e}");
            let mut queue = lock(&self.pending);
            if queue.len() >= MAX_PENDING {
                if let Some(lost) = queue.pop_front() {
                    tracing::error!(request_id = %lost.entry.request_id, "team store: too many settlements waiting; this one is only in the local ledger");
                }
            }
            queue.push_back(pending);
        }
    }

    async fn write(&self, pending: &Pending) -> Result<bool, TeamError> {
        let script = &*scripts::SETTLE;
        let mut invocation = script.prepare_invoke();
        invocation
            .key(format!(
                "{}:settled:{}",
                self.config.prefix, pending.entry.request_id
            ))
            .key(self.ledger_key());
        for key in &pending.keys {
            for k in self.keys(key) {
                invocation.key(k);
            }
        }
        let keep = Duration::from_secs(u64::from(self.config.ledger_days) * 86_400);
        let oldest = Utc::now()
            .timestamp_millis()
            .saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
        let entry = serde_json::to_string(&pending.entry)
            .map_err(|e| TeamError::Reply(format!("ledger entry: {e}")))?;
        invocation
            .arg(pending.hold.as_deref().unwrap_or(""))
            .arg(pending.entry.cost_nanos)
            .arg(SETTLED_MARKER_SECONDS)
            .arg(oldest.max(0))
            .arg(&self.instance)
            .arg(entry);
        let written: i64 = self.run("settle", &invocation).await?;
        Ok(written == 1)
    }

    /// Settled and held amounts of `accounts`, as every p402 of the team
    /// sees them.
    pub async fn balances(&self, accounts: &[Account]) -> Result<Vec<(Usd, Usd)>, TeamError> {
        let script = &*scripts::BALANCES;
        let mut invocation = script.prepare_invoke();
        for account in accounts {
            for k in self.keys(account.key.as_deref().unwrap_or_default()) {
                invocation.key(k);
            }
        }
        let reply: Vec<i64> = self.run("balances", &invocation).await?;
        if reply.len() != accounts.len() * 2 {
            return Err(TeamError::Reply(format!("balances returned {reply:?}")));
        }
        Ok(reply
            .chunks(2)
            .map(|pair| (Usd::from_nanos(pair[0]), Usd::from_nanos(pair[1])))
            .collect())
    }

    /// The team ledger since `since`: (instance, entry), oldest first.
    pub async fn ledger(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, LedgerEntry)>, TeamError> {
        use redis::streams::StreamRangeReply;
        let mut out = Vec::new();
        let mut start = format!("{}-0", since.timestamp_millis().max(0));
        loop {
            let started = Instant::now();
            let mut conn = self.conn.clone();
            let cmd = redis::cmd("XRANGE")
                .arg(self.ledger_key())
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(1000)
                .to_owned();
            let reply: Result<StreamRangeReply, _> =
                tokio::time::timeout(COMMAND_TIMEOUT * 5, cmd.query_async(&mut conn))
                    .await
                    .unwrap_or_else(|_| {
                        Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out")))
                    });
            self.observe("ledger", started, reply.as_ref().err())?;
            let reply = reply.map_err(|e| self.unreachable(e))?;
            let Some(last) = reply.ids.last().map(|e| e.id.clone()) else {
                break;
            };
            for item in &reply.ids {
                let instance: String = item.get("instance").unwrap_or_default();
                let text: String = item.get("entry").unwrap_or_default();
                match serde_json::from_str::<LedgerEntry>(&text) {
                    Ok(entry) => out.push((instance, entry)),
                    Err(e) => tracing::warn!("team ledger: entry {} unreadable: {e}", item.id),
                }
            }
            if reply.ids.len() < 1000 {
                break;
            }
            start = format!("({last}");
        }
        Ok(out)
    }

    /// Checks Redis every second while p402 runs, so `/health` says
    /// whether it answers, and writes the settlements kept during an
    /// outage once it does.
    pub async fn watch(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(WATCH_EVERY) => {}
            }
            let started = Instant::now();
            let mut conn = self.conn.clone();
            let ping: Result<String, _> = tokio::time::timeout(
                COMMAND_TIMEOUT * 2,
                redis::cmd("PING").query_async(&mut conn),
            )
            .await
            .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))));
            let _ = self.observe("ping", started, ping.as_ref().err());
            if ping.is_ok() {
                self.flush().await;
            }
        }
    }

    async fn flush(&self) {
        loop {
            let next = lock(&self.pending).pop_front();
            let Some(pending) = next else { return };
            if let Err(e) = self.write(&pending).await {
                tracing::debug!("team store: kept settlements wait: {e}");
                lock(&self.pending).push_front(pending);
                return;
            }
            tracing::info!(request_id = %pending.entry.request_id, "team store: kept settlement written");
        }
    }
}

fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// `redis://user:secret@host/0` → `redis://user:***@host/0`.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let shown = match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => authority.to_string(),
    };
    if rest.contains('/') {
        format!("{scheme}://{shown}/{path}")
    } else {
        format!("{scheme}://{shown}")
    }
}

/// This machine's name, for the team ledger.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_messages() {
        assert_eq!(
            hide_password("redis://:s3cret@10.0.0.5:6379/0"),
            "redis://:***@10.0.0.5:6379/0"
        );
        assert_eq!(
            hide_password("rediss://team:s3cret@redis.example.com"),
            "rediss://team:***@redis.example.com"
        );
        assert_eq!(
            hide_password("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
    }
}
