use super::*;
use crate::config::parse;

fn catalog(config: &str, keys: &[(&str, &str)]) -> Catalog {
    let config = parse("test.toml", config).expect("valid config");
    let keys: HashMap<String, String> = keys
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Catalog::build(&config, |name| keys.get(name).cloned())
}

#[test]
fn builtin_catalog_loads_and_is_sane() {
    let c = catalog("", &[]);
    let names: Vec<_> = c.providers().iter().map(|p| p.name.as_str()).collect();
    for expected in [
        "openai",
        "anthropic",
        "google",
        "deepseek",
        "groq",
        "mistral",
        "together",
        "fireworks",
        "xai",
        "cerebras",
        "perplexity",
        "openrouter",
        "ollama",
    ] {
        assert!(names.contains(&expected), "missing provider {expected}");
    }
    for model in &BUILTIN.models {
        model
            .check_prices()
            .expect("built-in prices are per million tokens");
        assert!(builtin_provider(model.provider.get_ref()).is_some());
    }
}

/// SPEC section 13: every chat model of the built-in catalog is mapped
/// to an Arena name that the built-in copy rates overall, or says
/// explicitly that its quality is estimated.
#[test]
fn every_chat_model_is_measured_or_says_it_is_estimated() {
    let board = arena::builtin();
    let c = catalog("", &[]);
    for entry in &BUILTIN.models {
        let caps = entry.capabilities.as_deref().unwrap_or_default();
        if caps.contains(&Capability::Embeddings) {
            continue;
        }
        let name = format!("{}/{}", entry.provider.get_ref(), entry.id);
        match (&entry.arena, entry.quality_source) {
            (Some(arena_name), None) => {
                let ratings = board.ratings(arena_name).unwrap_or_else(|| {
                    panic!("{name}: the Arena copy has no `{arena_name}`")
                });
                assert!(
                    ratings.get(arena::Category::Overall).is_some(),
                    "{name}: `{arena_name}` has no overall rating"
                );
                let model = c
                    .find_on(entry.provider.get_ref(), &entry.id)
                    .expect("in the catalog");
                assert_eq!(model.quality_source, QualitySource::Arena, "{name}");
            }
            (None, Some(StatedSource::Estimated)) => {
                let model = c
                    .find_on(entry.provider.get_ref(), &entry.id)
                    .expect("in the catalog");
                assert_eq!(model.quality_source, QualitySource::Estimated, "{name}");
                assert!(model.ratings.is_none(), "{name}");
            }
            (arena_name, source) => panic!(
                "{name} needs `arena = \"<its Arena name>\"` or `quality_source = \"estimated\"` in builtin.toml (has arena {arena_name:?}, quality_source {source:?})"
            ),
        }
    }
}

#[test]
fn a_price_change_in_the_config_keeps_the_measured_quality() {
    let c = catalog(
        "[[models]]\nid = \"claude-haiku-4-5\"\nprovider = \"anthropic\"\ninput_per_mtok = 0.9\noutput_per_mtok = 4\n",
        &[],
    );
    let haiku = c.find("claude-haiku-4-5").expect("haiku");
    assert_eq!(haiku.cost_source, "config");
    assert_eq!(haiku.quality_source, QualitySource::Arena);
    assert!(haiku.rating(arena::Category::Coding).is_some());
    // A config that names a quality of its own is the config's.
    let c = catalog(
        "[[models]]\nid = \"claude-haiku-4-5\"\nprovider = \"anthropic\"\nquality = 50\n",
        &[],
    );
    let haiku = c.find("claude-haiku-4-5").expect("haiku");
    assert_eq!(haiku.quality_source, QualitySource::Config);
    assert!(haiku.ratings.is_none());
}

/// Anthropic bills prompt-cache writes at 1.25 (five minutes) and 2
/// (one hour) times the input price; other providers' writes cost the
/// input price unless the entry says otherwise.
#[test]
fn anthropic_cache_writes_have_their_own_rates() {
    let c = catalog("", &[]);
    let claude = c
        .find("claude-haiku-4-5")
        .and_then(|m| m.price)
        .expect("priced");
    let input = claude.input.to_dollars();
    assert!((claude.cache_write.to_dollars() - input * 1.25).abs() < 1e-9);
    assert!((claude.cache_write_1h.to_dollars() - input * 2.0).abs() < 1e-9);
    let gpt = c.find("gpt-4o-mini").and_then(|m| m.price).expect("priced");
    assert_eq!(gpt.cache_write, gpt.input);
    assert_eq!(gpt.cache_write_1h, gpt.input);
}

#[test]
fn keys_come_from_the_environment_only() {
    let c = catalog("", &[("OPENAI_API_KEY", "sk-test")]);
    let openai = c.provider("openai").expect("openai");
    assert_eq!(openai.api_key.as_ref().map(ApiKey::expose), Some("sk-test"));
    assert!(openai.is_usable());
    assert!(!c.provider("groq").expect("groq").is_usable());
    // Ollama needs no key.
    assert!(c.provider("ollama").expect("ollama").is_usable());
    assert!(!format!("{openai:?}").contains("sk-test"));
}

#[test]
fn config_overrides_and_extends() {
    let c = catalog(
        "[providers.openai]\nbase_url = \"http://127.0.0.1:9/v1/\"\napi_key_env = \"MY_KEY\"\n\
         [[models]]\nid = \"gpt-4o\"\nprovider = \"openai\"\ninput_per_mtok = 1\noutput_per_mtok = 2\n\
         [[models]]\nid = \"llama3.2\"\nprovider = \"ollama\"\ninput_per_mtok = 0\noutput_per_mtok = 0\n",
        &[("MY_KEY", "k")],
    );
    let openai = c.provider("openai").expect("openai");
    assert_eq!(openai.base_url, "http://127.0.0.1:9/v1");
    assert!(openai.is_usable());
    let gpt = c.find("gpt-4o").expect("gpt-4o");
    assert_eq!(gpt.price.map(|p| p.input), PerMTok::from_dollars(1.0));
    assert_eq!(gpt.cost_source, "config");
    let llama = c.find("llama3.2").expect("llama");
    assert!(llama
        .price
        .is_some_and(|p| p.input == PerMTok::default() && p.output == PerMTok::default()));
}

#[test]
fn an_unlisted_snapshot_costs_the_dearest_of_its_family() {
    let c = catalog("", &[]);
    let family = c.find("gpt-4o-2099-01-01").expect("its family");
    assert_eq!(family.id, "gpt-4o");
    let price = c.snapshot_price(family).expect("priced");
    assert_eq!(Some(price.input), PerMTok::from_dollars(5.0));
    assert_eq!(Some(price.output), PerMTok::from_dollars(15.0));
    // A listed snapshot is its own entry.
    let listed = c.find("gpt-4o-2024-05-13").expect("listed");
    assert_eq!(listed.id, "gpt-4o-2024-05-13");
    // A family with one entry keeps its price.
    let mini = c.find("gpt-4o-mini").expect("mini");
    assert_eq!(c.snapshot_price(mini), mini.price);
}

#[test]
fn finds_aliases_prefixed_and_dated_ids() {
    let c = catalog("", &[]);
    assert_eq!(
        c.find("openai/gpt-4o-mini").map(|m| m.id.as_str()),
        Some("gpt-4o-mini")
    );
    assert_eq!(
        c.find("gpt-4o-2024-08-06").map(|m| m.id.as_str()),
        Some("gpt-4o")
    );
    assert!(c.find("gpt-4o-2024-8-6").is_none());
    assert!(c.find("no-such-model").is_none());
    // Anthropic's snapshots are dated without dashes.
    assert_eq!(
        c.find("claude-haiku-4-5-20251001").map(|m| m.id.as_str()),
        Some("claude-haiku-4-5")
    );
    assert!(c.find("claude-haiku-4-5-2025100").is_none());
}

#[test]
fn the_price_map_is_over_the_built_in_catalog_and_the_config_over_both() {
    let map = map::PriceMap {
        source: "litellm test".into(),
        fetched: "2026-12-02".into(),
        models: vec![
            map::Entry {
                provider: "openai".into(),
                id: "gpt-4o-mini".into(),
                input_per_mtok: 0.2,
                output_per_mtok: 0.8,
                cached_input_per_mtok: Some(0.1),
                cache_write_per_mtok: None,
                cache_write_1h_per_mtok: None,
                web_search_per_call: None,
                context: Some(100_000),
                max_output: Some(8_000),
                capabilities: vec![Capability::Tools, Capability::Streaming],
            },
            map::Entry {
                provider: "openai".into(),
                id: "gpt-4o-mini-2099-01-01".into(),
                input_per_mtok: 0.3,
                output_per_mtok: 0.9,
                cached_input_per_mtok: None,
                cache_write_per_mtok: None,
                cache_write_1h_per_mtok: None,
                web_search_per_call: None,
                context: None,
                max_output: None,
                capabilities: vec![Capability::Streaming],
            },
            map::Entry {
                provider: "groq".into(),
                id: "brand-new".into(),
                input_per_mtok: 0.05,
                output_per_mtok: 0.1,
                cached_input_per_mtok: None,
                cache_write_per_mtok: None,
                cache_write_1h_per_mtok: None,
                web_search_per_call: None,
                context: Some(8192),
                max_output: None,
                capabilities: vec![Capability::Streaming],
            },
        ],
    };
    let config = parse("test.toml", "").expect("config");
    let builtin = Catalog::build(&config, |_| None);
    let mapped = Catalog::build_with_map(Some(&map), &config, |_| None);
    let before = builtin.find("gpt-4o-mini").expect("built in");
    let after = mapped.find("gpt-4o-mini").expect("mapped");
    assert_eq!(after.price.map(|p| p.input.to_dollars()), Some(0.2));
    assert_eq!(after.price.map(|p| p.cached_input.to_dollars()), Some(0.1));
    assert_eq!(after.context, Some(100_000));
    assert_eq!(after.cost_source, "litellm test as of 2026-12-02");
    // What the map does not know stays the built-in catalog's.
    assert_eq!(after.quality, before.quality);
    assert_eq!(after.speed_tps, before.speed_tps);
    assert_eq!(after.aliases, before.aliases);
    // A dated snapshot takes its family's scores; a new model has none,
    // so it never stands in for another.
    let dated = mapped.find("gpt-4o-mini-2099-01-01").expect("dated");
    assert_eq!(dated.quality, before.quality);
    let new = mapped.find("brand-new").expect("new");
    assert_eq!(new.quality, None);
    assert_eq!(new.price.map(|p| p.output.to_dollars()), Some(0.1));
    // `[[models]]` win over the map.
    let config = parse(
        "test.toml",
        "[[models]]\nid = \"gpt-4o-mini\"\nprovider = \"openai\"\ninput_per_mtok = 0.11\noutput_per_mtok = 0.44\n",
    )
    .expect("config");
    let configured = Catalog::build_with_map(Some(&map), &config, |_| None);
    let model = configured.find("gpt-4o-mini").expect("configured");
    assert_eq!(model.price.map(|p| p.input.to_dollars()), Some(0.11));
    assert_eq!(model.cost_source, "config");
}

#[test]
fn cost_splits_cached_input() {
    let price = Price {
        input: PerMTok::from_dollars(2.5).expect("p"),
        cached_input: PerMTok::from_dollars(1.25).expect("p"),
        output: PerMTok::from_dollars(10.0).expect("p"),
        cache_write: PerMTok::from_dollars(3.125).expect("p"),
        cache_write_1h: PerMTok::from_dollars(5.0).expect("p"),
        web_search: Usd::from_dollars(0.01).expect("usd"),
    };
    let usage = Usage {
        input_tokens: 1000,
        cached_input_tokens: 400,
        cache_write_tokens: 0,
        cache_write_1h_tokens: 0,
        output_tokens: 200,
        reasoning_tokens: 50,
        web_searches: 0,
    };
    // 600 * 2.5 + 400 * 1.25 + 200 * 10 = 1500 + 500 + 2000 = 4000 $/M -> $0.004
    assert_eq!(price.cost(&usage), Usd::from_nanos(4_000_000));
    // Each web search is billed per call on top.
    let searched = Usage {
        web_searches: 3,
        ..usage
    };
    assert_eq!(price.cost(&searched), Usd::from_nanos(34_000_000));
    let written = Usage {
        cache_write_tokens: 200,
        ..usage
    };
    // 400 * 2.5 + 400 * 1.25 + 200 * 3.125 + 200 * 10 = 1000 + 500 + 625 + 2000
    assert_eq!(price.cost(&written), Usd::from_nanos(4_125_000));
    // Of those 200, 80 went to the one-hour cache: 120 * 3.125 + 80 * 5.
    let hour = Usage {
        cache_write_1h_tokens: 80,
        ..written
    };
    assert_eq!(price.cost(&hour), Usd::from_nanos(4_275_000));
}
