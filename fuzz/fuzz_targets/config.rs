//! `p402.toml`: the TOML parse and the validation that reports problems as
//! `file:line:col: message`, then the catalog built from a valid config
//! (`[[models]]` and `[providers.*]` merged over the built-in one).

#![no_main]

use libfuzzer_sys::fuzz_target;
use p402::catalog::Catalog;
use p402::config;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse("p402.toml", source) {
        Ok(config) => {
            let catalog = Catalog::build(&config, |_| Some("sk-fuzz".to_string()));
            for model in catalog.models() {
                assert!(catalog.find_on(&model.provider, &model.id).is_some());
            }
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.starts_with("p402.toml:"), "{text}");
            if let Some((line, col)) = e.position {
                let lines = source.split('\n').count();
                assert!(line >= 1 && line <= lines, "line {line} of {lines}: {text}");
                let width = source
                    .split('\n')
                    .nth(line - 1)
                    .map_or(0, |l| l.chars().count());
                assert!(col >= 1 && col <= width + 1, "col {col} of {width}: {text}");
            }
        }
    }
});
