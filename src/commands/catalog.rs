//! What the catalog and the router say, without a provider called:
//! `p402 models` (prices, keys, quality and its source) and
//! `p402 route --explain` (how a request would be routed, and why).

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::catalog::Catalog;
use crate::config::{self, Discovered, LoadedConfig};

use super::{ask_server, emit, load_config};

/// `p402 models`: the catalog with prices, and which models have a key.
/// Without the server running, keyless local servers show as "local" (they
/// are routed to once they answer the server's probe).
pub fn models(explicit: Option<&Path>, as_json: bool) -> ExitCode {
    let mut out = String::new();
    let loaded = match config::discover(explicit) {
        Discovered::Defaults => LoadedConfig::defaults(),
        Discovered::File { path, .. } => match LoadedConfig::from_file(&path) {
            Ok(loaded) => loaded,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        },
    };
    let map = crate::catalog::map::load(&crate::config::data_dir(&loaded.config));
    let catalog = Catalog::build_stored(
        &crate::config::data_dir(&loaded.config),
        &loaded.config,
        |name| std::env::var(name).ok(),
    );
    // Which local models are installed only a running p402 knows (it
    // probes the local servers); without one they show as `local`.
    let live: std::collections::HashMap<(String, String), serde_json::Value> =
        ask_server(&loaded.config, "/api/v2/models")
            .ok()
            .flatten()
            .and_then(|v| v.get("data").and_then(|d| d.as_array()).cloned())
            .into_iter()
            .flatten()
            .filter_map(|m| {
                let key = (
                    m["provider"].as_str()?.to_string(),
                    m["id"].as_str()?.to_string(),
                );
                Some((key, m))
            })
            .collect();
    let rows: Vec<(String, &crate::catalog::Model)> = catalog
        .models()
        .iter()
        .map(|m| {
            let seen = live.get(&(m.provider.clone(), m.id.clone()));
            let state = match catalog.provider(&m.provider) {
                Some(p) if p.unusable_reason().is_some() => "no key".to_string(),
                Some(p) if p.is_local() => match seen.map(|s| &s["installed"]) {
                    Some(serde_json::Value::Bool(true)) => "local, installed".to_string(),
                    Some(serde_json::Value::Bool(false)) => "local, not installed".to_string(),
                    Some(_) => "local, server not answering".to_string(),
                    None => "local".to_string(),
                },
                Some(_) => "yes".to_string(),
                None => "unknown provider".to_string(),
            };
            (state, m)
        })
        .collect();
    if as_json {
        let data: Vec<serde_json::Value> = rows
            .iter()
            .map(|(state, m)| {
                serde_json::json!({
                    "provider": m.provider, "id": m.id,
                    "input_per_mtok": m.price.map(|p| p.input.to_dollars()),
                    "cached_input_per_mtok": m.price.map(|p| p.cached_input.to_dollars()),
                    "output_per_mtok": m.price.map(|p| p.output.to_dollars()),
                    "context": m.context, "max_output": m.max_output,
                    "capabilities": m.capabilities, "quality": m.quality,
                    "quality_estimated": m.quality_estimated(), "speed_tps": m.speed_tps,
                    "quality_source": m.quality_source, "arena": m.arena,
                    "ratings": crate::catalog::arena::ratings_json(m.ratings.as_deref()),
                    "routable": state, "cost_source": m.cost_source,
                })
            })
            .collect();
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({
                "as_of": crate::catalog::as_of(),
                "ratings_source": catalog.arena().describe(),
                "data": data,
            })
        );
        return emit(&out);
    }
    let _ = writeln!(
        out,
        "{:<11} {:<34} {:>9} {:>9} {:>9} {:>9} {:>4} {:<9} {:>7} {:>6} {:>6} {:>6} {:>6}  {:<22} PRICE SOURCE",
        "PROVIDER", "MODEL", "IN $/M", "CACHED", "OUT $/M", "CONTEXT", "QUAL", "SOURCE", "OVERALL", "CODING", "MATH", "WRITE", "TOK/S", "ROUTABLE"
    );
    use crate::catalog::arena::Category;
    let rating = |m: &crate::catalog::Model, c: Category| {
        m.rating(c)
            .map_or_else(|| "-".to_string(), |r| format!("{:.0}", r.rating))
    };
    let price = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |d| format!("{d:.3}"));
    for (state, m) in &rows {
        let _ = writeln!(
            out,
            "{:<11} {:<34} {:>9} {:>9} {:>9} {:>9} {:>4} {:<9} {:>7} {:>6} {:>6} {:>6} {:>6}  {:<22} {}",
            m.provider,
            m.id,
            price(m.price.map(|p| p.input.to_dollars())),
            price(m.price.map(|p| p.cached_input.to_dollars())),
            price(m.price.map(|p| p.output.to_dollars())),
            m.context.map_or_else(|| "-".to_string(), |c| c.to_string()),
            m.quality.map_or_else(|| "-".to_string(), |q| q.to_string()),
            m.quality_source.as_str(),
            rating(m, Category::Overall),
            rating(m, Category::Coding),
            rating(m, Category::Math),
            rating(m, Category::CreativeWriting),
            m.speed_tps
                .map_or_else(|| "-".to_string(), |s| format!("{s:.0}")),
            state,
            m.cost_source
        );
    }
    let _ = writeln!(
        out,
        "\nprices: USD per million tokens; built-in catalog as of {}{}\nQUAL: a 0-100 score (Artificial Analysis's index, or an estimate); OVERALL..WRITE: Arena ratings ({}, CC BY 4.0)",
        crate::catalog::as_of(),
        map.as_ref().map_or_else(String::new, |m| format!(
            ", over it LiteLLM's map ({})",
            m.cost_source()
        )),
        catalog.arena().describe()
    );
    emit(&out)
}

/// What `p402 route --explain` explains: a request body, or a prompt.
pub struct RouteQuestion<'a> {
    /// A request body (`-` for standard input), in any door's dialect.
    pub body: Option<&'a Path>,
    /// Or the model and prompt of a one-message Chat Completions request.
    pub model: &'a str,
    /// The user message, when no body is given.
    pub prompt: Option<&'a str>,
    /// The routing mode to ask for (`--mode`); the config's default when
    /// absent.
    pub mode: Option<crate::router::mode::Mode>,
    /// chat, messages or responses; read from the body when absent.
    pub door: Option<&'a str>,
}

/// `p402 route --explain`: how a request would be routed under this config
/// and environment, without calling a provider (the same account as
/// `POST /api/v2/route/explain`; local servers count as not answering, since
/// only a running p402 probes them).
pub fn route_explain(explicit: Option<&Path>, question: &RouteQuestion, as_json: bool) -> ExitCode {
    match explain_offline(explicit, question) {
        Ok(value) if as_json => emit(&format!("{value}\n")),
        Ok(value) => emit(&explanation_table(&value)),
        Err(e) => {
            eprintln!("p402: {e}");
            ExitCode::from(1)
        }
    }
}

fn explain_offline(
    explicit: Option<&Path>,
    question: &RouteQuestion,
) -> Result<serde_json::Value, String> {
    use crate::endpoint::Door;
    let loaded = load_config(explicit)?;
    let config = &loaded.config;
    let catalog = Catalog::build_stored(&config::data_dir(config), config, |name| {
        std::env::var(name).ok()
    });
    let bytes: bytes::Bytes = match (question.body, question.prompt) {
        (Some(path), _) if path == Path::new("-") => {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("cannot read the request from standard input: {e}"))?;
            text.into()
        }
        (Some(path), _) => std::fs::read(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .into(),
        (None, Some(prompt)) => {
            let mut body = serde_json::json!({
                "model": question.model,
                "messages": [{"role": "user", "content": prompt}],
            });
            if let Some(mode) = question.mode {
                body["p402"] = serde_json::json!({"mode": mode});
            }
            body.to_string().into()
        }
        (None, None) => return Err("give a prompt, or a request body with --body FILE".into()),
    };
    let door = match question.door {
        None | Some("chat") => Door::Chat,
        Some("messages") => Door::Messages,
        Some("responses") => Door::Responses,
        Some(other) => {
            return Err(format!(
                "--door `{other}` must be chat, messages or responses"
            ))
        }
    };
    let door = match (
        question.door,
        serde_json::from_slice::<serde_json::Value>(&bytes),
    ) {
        (None, Ok(body)) if body.get("input").is_some() && body.get("messages").is_none() => {
            Door::Responses
        }
        _ => door,
    };
    let mut chat = door
        .parse(&bytes, &http::HeaderMap::new())
        .map_err(|e| format!("the request is not valid: {e}"))?;
    if let (Some(mode), Some(_)) = (question.mode, question.body) {
        chat.options.mode = Some(crate::router::mode::ModeChoice::Named(mode));
    }
    let input_tokens = crate::wire::tokens::count_input(&chat.body);
    let health = crate::ops::provider_health::ProviderHealth::default();
    let sticky = crate::router::Sticky::default();
    let router = crate::router::Router {
        catalog: &catalog,
        config: &config.routing,
        health: &health,
        sticky: &sticky,
    };
    let explanation = router
        .explain(&chat, input_tokens)
        .map_err(|e| format!("the request cannot be routed: {e}"))?;
    let mut value = serde_json::to_value(&explanation).map_err(|e| e.to_string())?;
    if let Some(object) = value.as_object_mut() {
        object.insert("door".into(), serde_json::json!(door.name()));
        object.insert(
            "ratings_source".into(),
            serde_json::json!(catalog.arena().describe()),
        );
    }
    Ok(value)
}

/// The explanation as a table: the candidates tried, then the others.
fn explanation_table(value: &serde_json::Value) -> String {
    let mut out = String::new();
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let rated_in = match value.get("rated_in") {
        Some(c) if !c.is_null() => format!(", rated in {}", text(c)),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "{} ({} door, {} input tokens): category {}{}; requested rating {} ({}); mode {}; max_quality_drop {}",
        text(&value["requested_model"]),
        text(&value["door"]),
        text(&value["input_tokens"]),
        text(&value["category"]),
        rated_in,
        text(&value["requested_rating"]),
        text(&value["requested_source"]),
        text(&value["mode"]),
        text(&value["max_quality_drop"]),
    );
    if let Some(reason) = value.get("not_rewritten").filter(|v| !v.is_null()) {
        let _ = writeln!(out, "not rewritten: {}", text(reason));
    }
    let _ = writeln!(
        out,
        "\n{:>3} {:<11} {:<34} {:>11} {:>6} {:>11} {:<9} WHY NOT",
        "TRY", "PROVIDER", "MODEL", "EXPECTED $", "RATING", "INTERVAL", "SOURCE"
    );
    for c in value["candidates"].as_array().into_iter().flatten() {
        let interval = c["rating_interval"].as_array().map_or_else(
            || "-".to_string(),
            |i| format!("{}-{}", text(&i[0]), text(&i[1])),
        );
        let cost = c["expected_cost_usd"]
            .as_f64()
            .map_or_else(|| "-".to_string(), |d| format!("{d:.6}"));
        let _ = writeln!(
            out,
            "{:>3} {:<11} {:<34} {:>11} {:>6} {:>11} {:<9} {}",
            text(&c["attempt"]),
            text(&c["provider"]),
            text(&c["model"]),
            cost,
            text(&c["rating"]),
            interval,
            text(&c["source"]),
            c["passed_over"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(out, "\nratings: {}", text(&value["ratings_source"]));
    out
}
