//! Starting the systems under test: the bench's own upstream and forwarder
//! (this binary run again in another role), the release p402 with a
//! generated config, and LiteLLM's proxy from a pinned PyPI install.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::generator::Generator;
use crate::procs::Server;

/// The LiteLLM release measured. `litellm[proxy]` pins its helper packages
/// exactly; 1.108.0 is the newest release whose pins all resolve on PyPI
/// here (later ones name `litellm-proxy-extras`/`litellm-enterprise`
/// versions that are not published).
pub const LITELLM_VERSION: &str = "1.108.0";

/// The key variables of the built-in providers: removed from p402's
/// environment so that no real key can ever see bench traffic.
const REAL_KEY_VARS: &[&str] = &[
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "DEEPSEEK_API_KEY",
    "GROQ_API_KEY",
    "MISTRAL_API_KEY",
    "TOGETHER_API_KEY",
    "FIREWORKS_API_KEY",
    "XAI_API_KEY",
    "CEREBRAS_API_KEY",
    "PERPLEXITY_API_KEY",
    "OPENROUTER_API_KEY",
];

/// This bench binary, started again in `role`.
fn own_role(role: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("own path"));
    command.args(["--role", role]);
    command
}

pub fn start_upstream() -> (Server, SocketAddr) {
    let mut server = Server::spawn("upstream", own_role("upstream"));
    let addr = server.wait_listening(Duration::from_secs(10));
    (server, addr)
}

pub fn start_forwarder(upstream: SocketAddr) -> (Server, SocketAddr) {
    let mut command = own_role("forwarder");
    command.arg(upstream.to_string());
    let mut server = Server::spawn("forwarder", command);
    let addr = server.wait_listening(Duration::from_secs(10));
    (server, addr)
}

/// One p402 configuration under test.
pub struct P402Setup {
    pub routing_mode: &'static str,
    /// A `[budgets.global]` every request is reserved against and charged to.
    pub budget: bool,
    /// The cache on, with the embedding model from `embedder` when it is there.
    pub cache: bool,
    /// An Anthropic provider on the same upstream, for the Messages door.
    pub anthropic: bool,
}

/// Starts `target/release/p402 serve` on a fresh data dir under `work`.
pub fn start_p402(
    work: &Path,
    name: &str,
    upstream: SocketAddr,
    setup: &P402Setup,
    embedder: &Path,
) -> (Server, SocketAddr) {
    start_p402_with(work, name, upstream, setup, embedder, "")
}

/// The same, with its `[budgets.global]` shared in the Redis at `redis_url`.
pub fn start_p402_team(
    work: &Path,
    name: &str,
    upstream: SocketAddr,
    setup: &P402Setup,
    embedder: &Path,
    redis_url: &str,
) -> (Server, SocketAddr) {
    let team = format!("shared = true\n\n[team]\nredis_url = {redis_url:?}\nprefix = {name:?}\n");
    start_p402_with(work, name, upstream, setup, embedder, &team)
}

fn start_p402_with(
    work: &Path,
    name: &str,
    upstream: SocketAddr,
    setup: &P402Setup,
    embedder: &Path,
    team: &str,
) -> (Server, SocketAddr) {
    let dir = work.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("p402 work dir");
    let mut config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n\n[routing]\ndefault_mode = {:?}\n\n",
        dir.join("data").display().to_string(),
        setup.routing_mode
    );
    if setup.cache {
        config.push_str(&format!(
            "[cache]\nenabled = true\nmodel_dir = {:?}\n\n",
            embedder.display().to_string()
        ));
    } else {
        config.push_str("[cache]\nenabled = false\n\n");
    }
    config.push_str(&format!(
        "[providers.openai]\nbase_url = \"http://{upstream}/v1\"\napi_key_env = \"OPENAI_API_KEY\"\n\n"
    ));
    if setup.anthropic {
        config.push_str(&format!(
        "[providers.anthropic]\nbase_url = \"http://{upstream}/v1\"\napi_key_env = \"ANTHROPIC_API_KEY\"\n\n"
        ));
    }
    if setup.budget {
        config.push_str("[budgets.global]\nbudget_usd = 1000000\nperiod = \"month\"\n");
        config.push_str(team);
        config.push('\n');
    }
    let path = dir.join("p402.toml");
    std::fs::write(&path, config).expect("write p402.toml");

    let mut command = Command::new(env!("CARGO_BIN_EXE_p402"));
    for var in REAL_KEY_VARS {
        command.env_remove(var);
    }
    command
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--log-format", "text"])
        // p402's default: one log line per request.
        .env("RUST_LOG", "info")
        .env("OPENAI_API_KEY", "sk-load-bench-upstream")
        .env("ANTHROPIC_API_KEY", "sk-ant-load-bench-upstream")
        .env_remove("P402_CONFIG");
    let mut server = Server::spawn(&format!("p402 ({name})"), command);
    let addr = server.wait_listening(Duration::from_secs(60));
    (server, addr)
}

/// The venv holding the pinned LiteLLM, installed with pip on first use.
pub fn ensure_litellm(venv: &Path) -> Result<PathBuf, String> {
    let python = venv.join("bin/python");
    let installed = Command::new(&python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if installed.as_deref() == Some(LITELLM_VERSION) {
        return Ok(venv.join("bin/litellm"));
    }
    eprintln!(
        "load: installing litellm[proxy]=={LITELLM_VERSION} into {} (once; a few minutes)",
        venv.display()
    );
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(venv)
        .status()
        .map_err(|e| format!("python3 -m venv: {e}"))?;
    if !status.success() {
        return Err("python3 -m venv failed".to_string());
    }
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("litellm[proxy]=={LITELLM_VERSION}"))
        .status()
        .map_err(|e| format!("pip: {e}"))?;
    if !status.success() {
        return Err(format!(
            "pip install litellm[proxy]=={LITELLM_VERSION} failed"
        ));
    }
    Ok(venv.join("bin/litellm"))
}

/// LiteLLM's proxy with one `openai/` model whose `api_base` is the
/// upstream, one uvicorn worker per core (as LiteLLM advises for
/// production; its default is one), a master key (it refuses to start
/// without one), no database, default logging.
pub fn start_litellm(
    litellm: &Path,
    work: &Path,
    upstream: SocketAddr,
    workers: usize,
    generator: &Generator,
    probe_body: &str,
) -> (Server, SocketAddr) {
    let dir = work.join("litellm");
    std::fs::create_dir_all(&dir).expect("litellm work dir");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n      model: openai/gpt-4o-mini\n      api_base: http://{upstream}/v1\n      api_key: sk-load-bench-upstream\nlitellm_settings:\n  telemetry: false\ngeneral_settings:\n  master_key: {}\n",
            crate::generator::CLIENT_KEY
        ),
    )
    .expect("write litellm config");
    let port = free_port();
    let mut command = Command::new(litellm);
    command
        .arg("--config")
        .arg(&config)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--num_workers", &workers.to_string()])
        // A worker takes longer than uvicorn's default 5 s to import
        // LiteLLM on a busy 2-core machine, and is killed and restarted
        // for ever unless it may.
        .args(["--timeout_worker_healthcheck", "120"])
        .current_dir(&dir)
        // The price list ships in the package; do not fetch it at start.
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env_remove("DATABASE_URL");
    for var in REAL_KEY_VARS {
        command.env_remove(var);
    }
    let mut server = Server::spawn("litellm", command);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let uri = format!("http://{addr}/v1/chat/completions")
        .parse()
        .expect("uri");
    let deadline = Instant::now() + Duration::from_secs(180);
    // Every worker must answer: ask until a run of answers succeeds.
    let mut good = 0;
    while good < 20 {
        server.check_alive();
        if Instant::now() > deadline {
            panic!("LiteLLM did not start:\n{}", server.tail());
        }
        match generator.fetch("POST", &uri, probe_body) {
            Ok((200, _)) => good += 1,
            _ => {
                good = 0;
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
    (server, addr)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}
