//! The one-time move of a data dir written by sled (p402 before issue 25)
//! into redb.
//!
//! Everything is copied into a new file beside the old database, which is
//! renamed into place only when the copy is complete and durable, so a
//! crash half-way leaves the sled database as it was and the next start
//! begins again. The sled directory is then kept, renamed, as a backup.

use std::path::Path;

use redb::ReadableDatabase;

use super::{StoreError, Table};

/// Where sled kept its database in a data dir.
const SLED_DIR: &str = "db";
/// What the sled directory is renamed to once migrated.
const SLED_BACKUP: &str = "db.sled-before-redb";
/// Records copied per transaction, so that a large cache does not hold its
/// whole copy in memory.
const CHUNK: usize = 10_000;

/// Migrates `dir`'s sled database into `target` when there is one and
/// `target` does not exist yet.
pub(super) fn from_sled_if_present(dir: &Path, target: &Path) -> Result<(), StoreError> {
    let old = dir.join(SLED_DIR);
    if target.exists() || !old.join("conf").exists() {
        return Ok(());
    }
    tracing::info!(
        "moving the database in {} from sled to redb (once)",
        dir.display()
    );
    let fail = |what: &str, e: &dyn std::fmt::Display| StoreError::Migrate(format!("{what}: {e}"));
    let partial = dir.join("p402.redb.migrating");
    if partial.exists() {
        std::fs::remove_file(&partial).map_err(|e| fail("removing an unfinished copy", &e))?;
    }
    let sled = sled::Config::new()
        .path(&old)
        .open()
        .map_err(|e| fail("opening the sled database", &e))?;
    let copied = copy(&sled, &partial).map_err(|e| match e {
        StoreError::Migrate(_) => e,
        e => fail("writing the new database", &e),
    })?;
    drop(sled);
    std::fs::rename(&partial, target).map_err(|e| fail("renaming the new database", &e))?;
    std::fs::rename(&old, dir.join(SLED_BACKUP))
        .map_err(|e| fail("keeping the sled database as a backup", &e))?;
    tracing::info!(
        records = copied,
        backup = %dir.join(SLED_BACKUP).display(),
        "the database is now redb; the sled one is kept as a backup and can be deleted"
    );
    Ok(())
}

/// Copies every table into a new redb file; returns the number of records.
fn copy(sled: &sled::Db, to: &Path) -> Result<usize, StoreError> {
    let db = redb::Database::create(to)?;
    let mut copied = 0;
    for table in Table::ALL {
        let tree = sled
            .open_tree(table.name())
            .map_err(|e| StoreError::Migrate(format!("reading {}: {e}", table.name())))?;
        let mut items = tree.iter().peekable();
        loop {
            let tx = db.begin_write()?;
            {
                let mut out = tx.open_table(table.definition())?;
                for item in items.by_ref().take(CHUNK) {
                    let (key, value) = item.map_err(|e| {
                        StoreError::Migrate(format!("reading {}: {e}", table.name()))
                    })?;
                    out.insert(key.as_ref(), value.as_ref())?;
                    copied += 1;
                }
            }
            tx.commit()?;
            if items.peek().is_none() {
                break;
            }
        }
    }
    // Check what was written before the old database is set aside.
    let tx = db.begin_read()?;
    let mut found = 0;
    for table in Table::ALL {
        found += redb::ReadableTableMetadata::len(&tx.open_table(table.definition())?)?;
    }
    if usize::try_from(found).ok() != Some(copied) {
        return Err(StoreError::Migrate(format!(
            "copied {copied} records but the new database holds {found}"
        )));
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::super::{LedgerEntry, Store, Totals};
    use super::*;

    /// A data dir as sled-era p402 left it opens as the same ledger,
    /// totals, sessions and cache records; the sled directory is kept
    /// aside, and a second open does not migrate again.
    #[test]
    fn a_sled_data_dir_is_migrated_once() {
        let dir = tempfile::tempdir().expect("dir");
        let entry = LedgerEntry {
            door: None,
            cost_nanos: 7,
            direct_nanos: 9,
            ..crate::store::tests_support::entry("req_0001")
        };
        {
            let sled = sled::Config::new()
                .path(dir.path().join(SLED_DIR))
                .open()
                .expect("sled");
            sled.open_tree("ledger")
                .and_then(|t| t.insert("req_0001", serde_json::to_vec(&entry).expect("json")))
                .expect("ledger");
            let totals = Totals {
                cost_nanos: 7,
                direct_nanos: 9,
                requests: 1,
            };
            sled.open_tree("spend")
                .and_then(|t| t.insert("session:s", serde_json::to_vec(&totals).expect("json")))
                .expect("spend");
            sled.open_tree("sessions")
                .and_then(|t| t.insert("ses_1", br#"{"id":"ses_1"}"#.as_slice()))
                .expect("sessions");
            let cache = sled.open_tree("cache").expect("cache");
            for id in 1..=25_000u64 {
                cache
                    .insert(id.to_be_bytes(), vec![1u8; 40])
                    .expect("cache");
            }
            sled.flush().expect("flush");
        }
        let store = Store::open(dir.path()).expect("migrated");
        assert_eq!(store.entry("req_0001").expect("read"), Some(entry));
        assert_eq!(store.totals("session:s").expect("totals").cost_nanos, 7);
        let session: Option<serde_json::Value> = store.session("ses_1").expect("session");
        assert_eq!(session, Some(serde_json::json!({"id": "ses_1"})));
        assert_eq!(store.len(Table::Cache).expect("len"), 25_000);
        assert!(!dir.path().join(SLED_DIR).exists());
        assert!(dir.path().join(SLED_BACKUP).join("conf").exists());
        drop(store);
        let store = Store::open(dir.path()).expect("reopened");
        assert_eq!(store.len(Table::Cache).expect("len"), 25_000);
    }
}
