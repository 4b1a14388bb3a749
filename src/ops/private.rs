//! What p402 writes is private to the user it runs as.
//!
//! The data directory holds the ledger (who spent what, on which model),
//! sessions with their owners' key digests, cached answers (prompts and
//! what came back) and logs. Other users of the machine have no business
//! reading any of it, so the directory is 0700 and every file in it 0600:
//! the process creates files with a umask of 077, and at start-up the
//! directory and what is already in it are tightened, with a warning for
//! what cannot be (a directory owned by someone else).

use std::io;
use std::path::Path;

/// How deep under the data directory files are tightened (the catalog and
/// the embedder's model files sit one or two levels down).
const DEPTH: usize = 3;

/// Files the process creates from now on are its user's only. Called by
/// the binary before anything is written; a library caller keeps its own.
pub fn restrict_new_files() {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file-creation mask; it cannot
    // fail and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates `dir` (and its parents) owner-only, or tightens it and what is
/// in it if it exists with looser modes.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    tighten(dir);
    Ok(())
}

/// Creates (or truncates) `path` as a file only its owner can read.
pub fn create_file(path: &Path) -> io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    restrict(path, 0o600);
    Ok(file)
}

/// Makes `dir` 0700 and the files and directories in it 0600 and 0700,
/// warning about each that stays looser.
pub fn tighten(dir: &Path) {
    restrict(dir, 0o700);
    tighten_under(dir, DEPTH);
}

fn tighten_under(dir: &Path, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            restrict(&path, 0o700);
            if depth > 0 {
                tighten_under(&path, depth - 1);
            }
        } else if kind.is_file() {
            restrict(&path, 0o600);
        }
    }
}

/// Takes the group's and others' bits off `path` when it has any.
#[cfg(unix)]
fn restrict(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(metadata) = std::fs::metadata(path) else {
        return;
    };
    let current = metadata.permissions().mode() & 0o777;
    if current & 0o077 == 0 {
        return;
    }
    let tightened = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    match tightened {
        Ok(()) => tracing::info!(
            "{} was readable by other users ({current:o}); now {mode:o}",
            path.display()
        ),
        Err(e) => tracing::warn!(
            "{} is readable by other users ({current:o}) and could not be made {mode:o}: {e}; it holds spend records and cached answers",
            path.display()
        ),
    }
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) {}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn a_loose_directory_and_its_files_are_tightened() {
        let root = tempfile::tempdir().expect("dir");
        let dir = root.path().join("data");
        std::fs::create_dir(&dir).expect("dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let file = dir.join("p402.redb");
        std::fs::write(&file, b"x").expect("file");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let nested = dir.join("catalog");
        std::fs::create_dir(&nested).expect("dir");
        std::fs::write(nested.join("map.json"), b"{}").expect("file");
        std::fs::set_permissions(
            nested.join("map.json"),
            std::fs::Permissions::from_mode(0o666),
        )
        .expect("chmod");
        create_dir(&dir).expect("exists");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&nested), 0o700);
        assert_eq!(mode(&nested.join("map.json")), 0o600);
        // A fresh one is private from the start; so is a file made here.
        let fresh = root.path().join("a/b");
        create_dir(&fresh).expect("created");
        assert_eq!(mode(&fresh), 0o700);
        create_file(&fresh.join("log")).expect("file");
        assert_eq!(mode(&fresh.join("log")), 0o600);
    }
}
