//! The small read-only endpoints: health and the model list.

pub(crate) mod dashboard;
pub(crate) mod visibility;

use chrono::{SecondsFormat, Utc};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::api::visibility::Viewer;
use crate::money::team::Reach;
use crate::ops::report;
use crate::ops::state::{AppState, Runtime};
use crate::server::body::{self, Body};
use crate::server::error::{ApiError, ErrorKind};
use crate::server::ids::RequestId;
use crate::store::Condition;

pub fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(body::full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `GET /health`: 200 while serving, with the config's state so that an
/// invalid file on disk is visible even though the old config still runs.
pub fn health(state: &AppState) -> Response<Body> {
    let runtime = state.runtime();
    let status = state.config_status();
    // Open to all, so it says that a reload failed and where, never the
    // error itself: that can quote a value from the file (a key).
    let error = status.error.as_ref().map(|_| {
        "the config file was refused and the previous config stays in force; the full error is in the log and at GET /api/v2/config (with a local key)"
    });
    let config = json!({
        "status": if status.error.is_some() { "error" } else { "ok" },
        "path": status.path.as_ref().map(|p| p.display().to_string()),
        "source": if status.path.is_some() { "file" } else { "built-in defaults" },
        "loaded_at": status.loaded_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "reloads": status.reloads,
        "error": error,
        "error_at": status.error_at,
        // Valid, but probably not what was meant (an orphan budget).
        "warnings": runtime.config().warnings(),
    });
    // A stalled store answers 503, so that the systemd watchdog and any
    // other probe restart a p402 whose writes are stuck; a failing one
    // (disk full) says so but stays up, since a restart would not help
    // and unbudgeted requests still go through.
    let (store, healthy, code) = match state.book().store().condition() {
        Condition::Ok => (json!({"state": "ok"}), true, StatusCode::OK),
        Condition::Failing(reason) => (
            json!({"state": "failing", "reason": reason,
                "message": "the last database write failed; budgeted requests are refused until a write succeeds, which p402 retries by itself"}),
            false,
            StatusCode::OK,
        ),
        Condition::Stalled(for_) => (
            json!({"state": "stalled", "stuck_ms": u64::try_from(for_.as_millis()).unwrap_or(u64::MAX),
                "message": "a database write has not finished within its deadline; budgeted requests are refused"}),
            false,
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    };
    let mut body = json!({
            "status": if healthy { "healthy" } else { "unhealthy" },
            "store": store,
            "version": env!("CARGO_PKG_VERSION"),
            "providers": state.routable_providers(&runtime),
            "cache": state.cache().mode(&runtime.config().cache),
            "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            "uptime_seconds": state.uptime().as_secs(),
            "config": config,
    });
    // The team store (SPEC §11): shared budgets fail closed while Redis is
    // unreachable, and everything else goes on, so it does not make p402
    // unhealthy.
    if let Some(team) = state.book().team() {
        let reach = team.reach();
        body["team"] = json!(reach.word());
        body["team_store"] = json!({
            "redis": team.shown_url(),
            "error": match &reach { Reach::Unreachable(reason) => Some(reason.clone()), _ => None },
            "settlements_waiting": team.pending(),
        });
    }
    json_response(code, &body)
}

/// `GET /api/v2/config`: how the last config load went, with the full
/// error of a refused reload. Behind the local key, unlike `/health`.
pub fn config(state: &AppState) -> Response<Body> {
    let status = state.config_status();
    json_response(
        StatusCode::OK,
        &json!({
            "object": "config.status",
            "status": if status.error.is_some() { "error" } else { "ok" },
            "path": status.path.as_ref().map(|p| p.display().to_string()),
            "loaded_at": status.loaded_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            "reloads": status.reloads,
            "error": status.error,
            "error_at": status.error_at,
        }),
    )
}

/// `GET /v1/models`: the catalog models that can be routed to now, in
/// OpenAI's list shape so SDKs' `models.list()` works.
/// An Anthropic client (it sends `anthropic-version`, as Claude Code does
/// when it probes its base URL) gets the list in Anthropic's shape.
pub fn models(state: &AppState, anthropic: bool) -> Response<Body> {
    let runtime = state.runtime();
    let usable = runtime.catalog.models().iter().filter(|m| {
        runtime
            .catalog
            .provider(&m.provider)
            .is_some_and(|p| p.is_usable())
    });
    if anthropic {
        let data: Vec<Value> = usable
            .map(|m| {
                json!({
                    "type": "model",
                    "id": m.id,
                    "display_name": m.id,
                    "created_at": "1970-01-01T00:00:00Z",
                })
            })
            .collect();
        let first = data.first().map(|m| m["id"].clone());
        let last = data.last().map(|m| m["id"].clone());
        return json_response(
            StatusCode::OK,
            &json!({"data": data, "has_more": false, "first_id": first, "last_id": last}),
        );
    }
    let data: Vec<Value> = usable
        .map(|m| {
            json!({
                "id": m.id,
                "object": "model",
                "created": 0,
                "owned_by": m.provider,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

/// `GET /api/v2/models`: the whole catalog with prices, limits,
/// capabilities, and whether each model can be routed to now.
pub fn catalog(state: &AppState) -> Response<Body> {
    let runtime = state.runtime();
    let router = state.router(&runtime);
    let data: Vec<Value> = runtime
        .catalog
        .models()
        .iter()
        .map(|m| {
            let provider = runtime.catalog.provider(&m.provider);
            let usable = provider.is_some_and(|p| router.provider_usable(p));
            let local = provider.is_some_and(|p| p.is_local());
            let has_model = state.health().has_model(&m.provider, &m.upstream_id, local);
            let routable = usable && has_model;
            let reason =
                match provider {
                    None => Some("unknown provider".to_string()),
                    Some(p) if !usable => Some(p.unusable_reason().unwrap_or_else(|| {
                        format!("local server at {} did not answer", p.base_url)
                    })),
                    Some(p) if !has_model && local => Some(format!(
                        "not installed on the local server at {} (pull it to use it)",
                        p.base_url
                    )),
                    Some(_) if !has_model => {
                        Some("the provider said it does not have this model".to_string())
                    }
                    Some(_) => None,
                };
            // Whether a local server lists the model; not known for others.
            let installed = (local && usable).then_some(has_model);
            json!({
                "id": m.id,
                "object": "model",
                "provider": m.provider,
                "upstream_id": m.upstream_id,
                "aliases": m.aliases,
                "input_per_mtok": m.price.map(|p| p.input.to_dollars()),
                "cached_input_per_mtok": m.price.map(|p| p.cached_input.to_dollars()),
                "output_per_mtok": m.price.map(|p| p.output.to_dollars()),
                "context": m.context,
                "max_output": m.max_output,
                "capabilities": m.capabilities,
                "quality": m.quality,
                "quality_estimated": m.quality_estimated(),
                "quality_source": m.quality_source,
                "arena": m.arena,
                "ratings": crate::catalog::arena::ratings_json(m.ratings.as_deref()),
                "speed_tps": m.speed_tps,
                "cost_source": m.cost_source,
                "local": local,
                "installed": installed,
                "routable": routable,
                "unroutable_reason": reason,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "as_of": crate::catalog::as_of(),
            "ratings_source": runtime.catalog.arena().describe(),
            "data": data,
        }),
    )
}

/// `GET /api/v2/providers`: every provider, configured or not, with live
/// health (circuit breaker, recent errors, latency).
pub fn providers(state: &AppState) -> Response<Body> {
    let runtime = state.runtime();
    let router = state.router(&runtime);
    let data: Vec<Value> = runtime
        .catalog
        .providers()
        .iter()
        .map(|p| {
            let models = runtime
                .catalog
                .models()
                .iter()
                .filter(|m| m.provider == p.name)
                .count();
            json!({
                "name": p.name,
                "api": p.api,
                "base_url": p.base_url,
                "api_key_env": p.api_key_env,
                "configured": p.api_key.is_some() || p.api_key_env.is_none(),
                "enabled": p.enabled,
                "routable": router.provider_usable(p),
                "unusable_reason": p.unusable_reason(),
                "models": models,
                "health": state.health().view(&p.name),
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

/// `/api/v2/sessions[/{id}]`: create, list, read, extend and end sessions.
pub async fn sessions(
    state: &AppState,
    runtime: &Runtime,
    request: Request<Incoming>,
    rest: &str,
    request_id: &RequestId,
    caller: Option<&str>,
) -> Response<Body> {
    let method = request.method().clone();
    let id = rest
        .strip_prefix('/')
        .filter(|id| !id.is_empty() && !id.contains('/'));
    let book = state.book();
    let sessions = state.sessions();
    // The rate and concurrency limits guard these writes like requests.
    let _permit = match method {
        Method::POST | Method::PATCH | Method::DELETE => {
            match state.limiter().admit(&runtime.config().limits) {
                Ok(permit) => Some(permit),
                Err(error) => return error.into_response(request_id),
            }
        }
        _ => None,
    };
    let result = match (method, rest, id) {
        (Method::POST, "", _) => match read_small_body(request, runtime).await {
            Ok(bytes) => {
                let max = runtime.config().limits.max_active_sessions_per_key;
                sessions
                    .create(book, &bytes, caller, max)
                    .await
                    .map(|v| (StatusCode::CREATED, v))
                    .map_err(ApiError::from)
            }
            Err(error) => Err(error),
        },
        (Method::GET, "", _) => sessions
            .list(book, caller)
            .map(|v| (StatusCode::OK, v))
            .map_err(ApiError::from),
        (Method::GET, _, Some(id)) => sessions
            .get(book, id, caller)
            .map(|v| (StatusCode::OK, v))
            .map_err(ApiError::from),
        (Method::PATCH, _, Some(id)) => match read_small_body(request, runtime).await {
            Ok(bytes) => sessions
                .patch(book, id, &bytes, caller)
                .await
                .map(|v| (StatusCode::OK, v))
                .map_err(ApiError::from),
            Err(error) => Err(error),
        },
        (Method::DELETE, _, Some(id)) => sessions
            .end(book, id, caller)
            .await
            .map(|v| (StatusCode::OK, v))
            .map_err(ApiError::from),
        (_, "", _) | (_, _, Some(_)) => Err(ApiError::new(
            ErrorKind::MethodNotAllowed,
            "method_not_allowed",
            "sessions accept POST and GET; a session accepts GET, PATCH and DELETE",
        )),
        _ => Err(ApiError::new(
            ErrorKind::NotFound,
            "not_found",
            format!("no such endpoint: /api/v2/sessions{rest}"),
        )),
    };
    match result {
        Ok((status, value)) => json_response(status, &value),
        Err(error) => error.into_response(request_id),
    }
}

/// `POST /api/v2/providers/compare`: what this chat request would cost on
/// every model that could serve it, cheapest first. Nothing is sent upstream.
pub async fn compare(
    state: &AppState,
    runtime: &Runtime,
    request: Request<Incoming>,
    request_id: RequestId,
) -> Response<Body> {
    let result = async {
        let (parts, body) = request.into_parts();
        let server = &runtime.config().server;
        let bytes = crate::pipeline::read::body(body, &parts.headers, server).await?;
        let _permit = state.limiter().admit(&runtime.config().limits)?;
        let chat = crate::wire::request::parse(&bytes, &parts.headers)?;
        let input_tokens = crate::pipeline::route::count_input_tokens(&chat).await?;
        let quotes = state.router(runtime).quotes(&chat, input_tokens);
        Ok::<_, ApiError>(json!({
            "object": "list",
            "requested_model": chat.model,
            "input_tokens": input_tokens,
            "data": quotes,
        }))
    }
    .await;
    match result {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(error) => error.into_response(&request_id),
    }
}

/// `POST /api/v2/route/explain[?door=chat|messages|responses]`: how a
/// model call would be routed, without calling a provider. The body is one
/// a door takes; which door is `door`, else read from the request: an
/// `anthropic-version` header is a Messages body, one with `input` and no
/// `messages` a Responses body, anything else Chat Completions.
pub async fn explain(
    state: &AppState,
    runtime: &Runtime,
    request: Request<Incoming>,
    query: Option<&str>,
    request_id: RequestId,
) -> Response<Body> {
    let result = async {
        let (parts, body) = request.into_parts();
        let server = &runtime.config().server;
        let bytes = crate::pipeline::read::body(body, &parts.headers, server).await?;
        let _permit = state.limiter().admit(&runtime.config().limits)?;
        let door = explain_door(query, &parts.headers, &bytes)?;
        let chat = door.parse(&bytes, &parts.headers)?;
        let input_tokens = crate::pipeline::route::count_input_tokens(&chat).await?;
        let explanation = state.router(runtime).explain(&chat, input_tokens)?;
        let mut value = serde_json::to_value(&explanation)
            .map_err(|e| ApiError::internal(format!("explanation: {e}")))?;
        if let Some(object) = value.as_object_mut() {
            object.insert("object".into(), json!("route.explanation"));
            object.insert("door".into(), json!(door.name()));
            object.insert(
                "ratings_source".into(),
                json!(runtime.catalog.arena().describe()),
            );
        }
        Ok::<_, ApiError>(value)
    }
    .await;
    match result {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(error) => error.into_response(&request_id),
    }
}

fn explain_door(
    query: Option<&str>,
    headers: &http::HeaderMap,
    bytes: &[u8],
) -> Result<crate::endpoint::Door, ApiError> {
    use crate::endpoint::Door;
    let named = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("door="));
    match named {
        Some("chat") => return Ok(Door::Chat),
        Some("messages") => return Ok(Door::Messages),
        Some("responses") => return Ok(Door::Responses),
        Some(other) => {
            return Err(ApiError::invalid(
                "invalid_query",
                format!("door `{other}` must be chat, messages or responses"),
            ))
        }
        None => {}
    }
    if headers.contains_key("anthropic-version") {
        return Ok(Door::Messages);
    }
    let body: Option<serde_json::Map<String, Value>> = serde_json::from_slice(bytes).ok();
    Ok(match body {
        Some(b) if b.contains_key("input") && !b.contains_key("messages") => Door::Responses,
        _ => Door::Chat,
    })
}

async fn read_small_body(
    request: Request<Incoming>,
    runtime: &Runtime,
) -> Result<bytes::Bytes, ApiError> {
    let (parts, body) = request.into_parts();
    Ok(crate::pipeline::read::body(body, &parts.headers, &runtime.config().server).await?)
}

/// `GET /api/v2/report?since=7d&by=provider`: spend, direct cost and
/// savings from the ledger.
pub fn report(
    state: &AppState,
    query: Option<&str>,
    request_id: &RequestId,
    viewer: &Viewer,
) -> Response<Body> {
    let mut since = "7d".to_string();
    let mut by = "provider".to_string();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("since", value)) => since = value.to_string(),
            Some(("by", value)) => by = value.to_string(),
            _ => {}
        }
    }
    let result = (|| {
        let since = report::parse_since(&since, chrono::Utc::now()).ok_or_else(|| {
            ApiError::invalid(
                "invalid_query",
                format!("since `{since}` is not a span (7d, 24h) or a date"),
            )
        })?;
        let by = report::GroupBy::parse(&by).ok_or_else(|| {
            ApiError::invalid(
                "invalid_query",
                format!("by `{by}` must be provider, model, day, session, client_session, door, budget or instance"),
            )
        })?;
        report::build(state.book().store(), since, by)
            .map(|report| hide_foreign_sessions(report, viewer))
            .map_err(|e| ApiError::internal(format!("ledger: {e}")))
    })();
    match result
        .and_then(|r| serde_json::to_value(r).map_err(|e| ApiError::internal(e.to_string())))
    {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(error) => error.into_response(request_id),
    }
}

/// A report by session shows the caller's sessions one by one, and other
/// keys' sessions only together, as one row: the total stays whole.
fn hide_foreign_sessions(mut report: report::Report, viewer: &Viewer) -> report::Report {
    if report.by != report::GroupBy::Session {
        return report;
    }
    let (rows, foreign): (Vec<report::Row>, Vec<report::Row>) = report
        .rows
        .into_iter()
        .partition(|row| viewer.sees(Some(&row.key)));
    report.rows = rows;
    if let Some(first) = foreign.first() {
        let mut others = report::Row {
            key: "(other keys' sessions)".to_string(),
            ..first.clone()
        };
        for row in &foreign[1..] {
            others.requests += row.requests;
            others.cost_usd += row.cost_usd;
            others.direct_cost_usd += row.direct_cost_usd;
            others.savings_usd += row.savings_usd;
            others.cache_savings_usd += row.cache_savings_usd;
            others.cached_requests += row.cached_requests;
            others.estimated_requests += row.estimated_requests;
            others.input_tokens += row.input_tokens;
            others.output_tokens += row.output_tokens;
        }
        report.rows.push(others);
    }
    report
}

/// `GET /api/v2/budgets`: the file-declared budgets with this period's spend.
/// Shared budgets are read from the team store, so every p402 of a team
/// shows the same spend.
pub async fn budgets(
    state: &AppState,
    runtime: &Runtime,
    request_id: &RequestId,
) -> Response<Body> {
    let shared = report::shared_balances(state.book(), runtime.config()).await;
    match report::budgets(state.book(), runtime.config(), &shared) {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(e) => ApiError::internal(format!("ledger: {e}")).into_response(request_id),
    }
}

/// `GET /api/v2/requests/{id}`: one settled request as the ledger has it,
/// to audit a charge.
pub fn ledger_entry(
    state: &AppState,
    id: &str,
    request_id: &RequestId,
    viewer: &Viewer,
) -> Response<Body> {
    let entry = state.book().store().entry(id);
    // Another key's session's request is not there for this key.
    let entry = entry.map(|e| e.filter(|e| viewer.sees(e.session.as_deref())));
    match entry {
        Ok(Some(entry)) => match serde_json::to_value(&entry) {
            Ok(value) => json_response(StatusCode::OK, &value),
            Err(e) => ApiError::internal(e.to_string()).into_response(request_id),
        },
        Ok(None) => ApiError::new(
            ErrorKind::NotFound,
            "request_not_found",
            format!("no settled request `{id}` in the ledger"),
        )
        .into_response(request_id),
        Err(e) => ApiError::internal(format!("ledger: {e}")).into_response(request_id),
    }
}

/// `GET /api/v2/cache/stats` and `POST /api/v2/cache/clear`. Clearing
/// waits for a durable commit, so it runs on a blocking thread, never on an
/// async worker.
pub async fn cache(
    state: &AppState,
    runtime: &Runtime,
    clear: bool,
    request_id: &RequestId,
) -> Response<Body> {
    if !clear {
        return json_response(
            StatusCode::OK,
            &state.cache().stats(&runtime.config().cache),
        );
    }
    let cache = state.cache().clone();
    let cleared = tokio::task::spawn_blocking(move || cache.clear())
        .await
        .map_err(|e| e.to_string())
        .and_then(|cleared| cleared.map_err(|e| e.to_string()));
    match cleared {
        Ok(removed) => json_response(
            StatusCode::OK,
            &json!({"object": "cache.cleared", "removed": removed}),
        ),
        Err(e) => ApiError::internal(format!("cache: {e}")).into_response(request_id),
    }
}

/// `GET /metrics`: Prometheus (OpenMetrics) text. Gauges that mirror other
/// state are refreshed first, so a scrape never reads a stale one.
pub async fn metrics(state: &AppState, runtime: &Runtime, viewer: &Viewer) -> Response<Body> {
    use crate::ops::metrics::{NameLabels, ProviderLabels};
    // The remaining budgets are rebuilt for each scrape, with only the
    // sessions this caller may see: one scrape at a time, so that one
    // key's sessions never show in another's.
    static SCRAPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = SCRAPE.lock().await;
    let metrics = state.metrics();
    metrics.budget_remaining_usd.clear();
    let stats = state.cache().stats(&runtime.config().cache);
    metrics
        .cache_entries
        .set(stats["entries"].as_i64().unwrap_or(0));
    for provider in runtime.catalog.providers() {
        let open = i64::from(state.health().is_open(&provider.name));
        metrics
            .circuit_open
            .get_or_create(&ProviderLabels {
                provider: provider.name.clone(),
            })
            .set(open);
    }
    let shared = report::shared_balances(state.book(), runtime.config()).await;
    if let Ok(budgets) = report::budgets(state.book(), runtime.config(), &shared) {
        for budget in budgets["data"].as_array().into_iter().flatten() {
            let name = budget["name"].as_str().unwrap_or("-").to_string();
            // A shared budget the team store cannot tell about now keeps
            // its last value.
            let Some(left) = budget["budget"]["remaining_usd"].as_f64() else {
                continue;
            };
            metrics
                .budget_remaining_usd
                .get_or_create(&NameLabels { name })
                .set(left);
        }
    }
    if let Ok(sessions) = state
        .book()
        .store()
        .sessions::<crate::money::sessions::Session>()
    {
        let now = chrono::Utc::now();
        let shown = sessions
            .iter()
            .filter(|s| s.status(now) == "active" && viewer.sees(Some(&s.id)));
        for session in shown {
            if let Ok(left) = state.book().remaining(&session.account()) {
                let name = format!("session:{}", session.id);
                metrics
                    .budget_remaining_usd
                    .get_or_create(&NameLabels { name })
                    .set(left.max(crate::money::Usd::ZERO).to_dollars());
            }
        }
    }
    let mut response = Response::new(body::full(metrics.encode()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// `GET /api/v2/alerts`: the budget alerts raised, newest first, with
/// where each one's webhook POST stands (the dashboard's banner). A
/// session's alerts are shown only to the key that owns the session.
pub fn alerts(state: &AppState, caller: Option<&str>, request_id: &RequestId) -> Response<Body> {
    let store = state.book().store();
    let records = match crate::ops::alerts::list(store, 100) {
        Ok(records) => records,
        Err(e) => return ApiError::internal(format!("alerts: {e}")).into_response(request_id),
    };
    let visible =
        |record: &crate::ops::alerts::Record| match record.alert.budget.strip_prefix("session:") {
            None => true,
            Some(id) => matches!(
                store.session::<crate::money::sessions::Session>(id),
                Ok(Some(session)) if session.belongs_to(caller)
            ),
        };
    let data: Vec<Value> = records
        .iter()
        .filter(|r| visible(r))
        .map(|r| {
            let mut item = json!(r.alert);
            item["message"] = json!(crate::ops::alerts::deliver::headline(&r.alert));
            item["webhook"] = json!(r.webhook);
            item["webhook_attempts"] = json!(r.attempts);
            item["webhook_error"] = json!(r.last_error);
            item
        })
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}
