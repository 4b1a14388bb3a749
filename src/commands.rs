//! The command-line subcommands other than `serve`.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::catalog::Catalog;
use crate::config::{self, Discovered, LoadedConfig};

/// `p402 check`: validates the config and shows what it resolves to.
pub fn check(explicit: Option<&Path>) -> ExitCode {
    let mut out = String::new();
    let loaded = match config::discover(explicit) {
        Discovered::Defaults => {
            let _ = writeln!(out, "no config file found; built-in defaults are in force");
            LoadedConfig::defaults()
        }
        Discovered::File { path, .. } => match LoadedConfig::from_file(&path) {
            Ok(loaded) => {
                let _ = writeln!(out, "{}: ok", path.display());
                loaded
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        },
    };
    let config = &loaded.config;
    let catalog = Catalog::build(config, |name| std::env::var(name).ok());
    let _ = writeln!(out, "listen: {}", config.server.listen);
    let _ = writeln!(
        out,
        "data_dir: {}",
        crate::serve::data_dir(config).display()
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
            let _ = writeln!(
                out,
                "  {:<12} ${} per {:?}",
                name.get_ref(),
                budget.budget_usd.get_ref(),
                budget.period
            );
        }
    }
    emit(&out)
}

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
    let catalog = Catalog::build(&loaded.config, |name| std::env::var(name).ok());
    let rows: Vec<(String, &crate::catalog::Model)> = catalog
        .models()
        .iter()
        .map(|m| {
            let state = match catalog.provider(&m.provider) {
                Some(p) if p.unusable_reason().is_some() => "no key".to_string(),
                Some(p) if p.api_key_env.is_none() => "local".to_string(),
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
                    "capabilities": m.capabilities, "quality": m.quality, "speed_tps": m.speed_tps,
                    "routable": state, "cost_source": m.cost_source,
                })
            })
            .collect();
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({"as_of": crate::catalog::as_of(), "data": data})
        );
        return ExitCode::SUCCESS;
    }
    let _ = writeln!(
        out,
        "{:<11} {:<34} {:>9} {:>9} {:>9} {:>9} {:>4} {:>6}  ROUTABLE",
        "PROVIDER", "MODEL", "IN $/M", "CACHED", "OUT $/M", "CONTEXT", "QUAL", "TOK/S"
    );
    let price = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |d| format!("{d:.3}"));
    for (state, m) in &rows {
        let _ = writeln!(
            out,
            "{:<11} {:<34} {:>9} {:>9} {:>9} {:>9} {:>4} {:>6}  {}",
            m.provider,
            m.id,
            price(m.price.map(|p| p.input.to_dollars())),
            price(m.price.map(|p| p.cached_input.to_dollars())),
            price(m.price.map(|p| p.output.to_dollars())),
            m.context.map_or_else(|| "-".to_string(), |c| c.to_string()),
            m.quality.map_or_else(|| "-".to_string(), |q| q.to_string()),
            m.speed_tps
                .map_or_else(|| "-".to_string(), |s| format!("{s:.0}")),
            state
        );
    }
    let _ = writeln!(
        out,
        "\nprices: USD per million tokens, catalog as of {}",
        crate::catalog::as_of()
    );
    emit(&out)
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
