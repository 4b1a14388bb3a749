//! Laying out a scope that grew large as IVF ([`super::ivf`]), on a thread
//! of its own, so that neither a store nor loading waits for the training.
//!
//! The index lock is held only to copy rows and to install the result, a
//! chunk of rows at a time, so lookups and stores go on meanwhile; and the
//! thread holds only a weak reference in between, so a cache shut down is
//! not kept open by it. Until a scope's first layout is installed, its
//! lookups scan the whole scope; a retraining replaces the old layout only
//! once the new one is ready.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use super::scope::Scope;
use super::{ivf, Cache, Inner};

/// Rows copied per read-lock while filing a scope into its IVF lists.
const FILE_CHUNK: usize = 4096;

impl Cache {
    /// Lays out `scope` as IVF on a thread of its own. The caller has
    /// claimed the build ([`super::index::Index::claim_ivf_build`]); it ends
    /// installed or, if it cannot finish, abandoned, so a later store can
    /// claim it again.
    pub(super) fn spawn_ivf_build(&self, scope: Scope) {
        let weak = Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("p402-cache-ivf".into())
            .spawn(move || {
                if build_ivf(&weak, scope).is_none() {
                    if let Some(inner) = weak.upgrade() {
                        Cache { inner }.index_mut().abandon(&scope);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the cache index builder: {e}");
            self.index_mut().abandon(&scope);
        }
    }
}

/// Trains and files the IVF layout of `scope`; `None` if the cache went
/// away or the scope emptied meanwhile.
fn build_ivf(weak: &Weak<Inner>, scope: Scope) -> Option<()> {
    let cache = || weak.upgrade().map(|inner| Cache { inner });
    let started = Instant::now();
    let n = cache()?.index().scope_len(&scope);
    let lists = ivf::lists_for(n);
    let sample = cache()?
        .index()
        .training_sample(&scope, ivf::sample_size(lists))?;
    let centroids = ivf::train(&sample, lists);
    let mut filed = HashMap::with_capacity(n);
    let mut start = 0;
    loop {
        let rows = cache()?.index().rows(&scope, start, FILE_CHUNK);
        if rows.is_empty() {
            break;
        }
        for (id, row) in &rows {
            filed.insert(*id, centroids.nearest(row));
        }
        start += rows.len();
    }
    cache()?.index_mut().install(&scope, centroids, &filed);
    tracing::info!(
        entries = n,
        lists,
        ms = started.elapsed().as_millis() as u64,
        "cache scope indexed for fast lookup"
    );
    Some(())
}
