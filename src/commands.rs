//! The command-line subcommands other than `serve`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::catalog::Catalog;
use crate::config::{self, Discovered, LoadedConfig};

/// `p402 check`: validates the config and shows what it resolves to.
pub fn check(explicit: Option<&Path>) -> ExitCode {
    let loaded = match config::discover(explicit) {
        Discovered::Defaults => {
            println!("no config file found; built-in defaults are in force");
            LoadedConfig::defaults()
        }
        Discovered::File { path, .. } => match LoadedConfig::from_file(&path) {
            Ok(loaded) => {
                println!("{}: ok", path.display());
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
    println!("listen: {}", config.server.listen);
    println!("data_dir: {}", crate::serve::data_dir(config).display());
    println!(
        "local api keys: {}",
        if config.server.api_keys.is_empty() {
            "none (open to loopback callers)".to_string()
        } else {
            config.server.api_keys.len().to_string()
        }
    );
    println!("default mode: {}", config.routing.default_mode);
    println!("\nproviders:");
    for provider in catalog.providers() {
        let state = match provider.unusable_reason() {
            None => "usable".to_string(),
            Some(reason) => format!("not usable: {reason}"),
        };
        println!(
            "  {:<12} {:<55} {}",
            provider.name, provider.base_url, state
        );
    }
    println!("\nmodels ({}):", catalog.models().len());
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
        println!("  {:<12} {:<32} {}", model.provider, model.id, price);
    }
    if !config.budgets.is_empty() {
        println!("\nbudgets:");
        for (name, budget) in &config.budgets {
            println!(
                "  {:<12} ${} per {:?}",
                name.get_ref(),
                budget.budget_usd.get_ref(),
                budget.period
            );
        }
    }
    ExitCode::SUCCESS
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
