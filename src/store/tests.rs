use super::*;

fn entry(id: &str, cost: i64) -> LedgerEntry {
    LedgerEntry {
        door: None,
        cost_nanos: cost,
        direct_nanos: cost * 2,
        ..tests_support::entry(id)
    }
}

/// sled's `flush_async` once deadlocked against ledger transactions
/// under concurrent settlements (sled#1308), blocking both tokio
/// workers for good: with any store, every one of these must finish,
/// each counted once.
/// The workload runs on a runtime of its own so that a hang fails the
/// test instead of stalling it.
#[test]
fn concurrent_settlements_all_finish_and_count_once() {
    const TASKS: usize = 64;
    const EACH: usize = 200;
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path()).expect("open");
    let accounts = vec!["session:a".to_string(), "budget:g:total".to_string()];
    let (done, finished) = std::sync::mpsc::channel();
    let workload = store.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let mut tasks = Vec::new();
            for _ in 0..TASKS {
                let store = workload.clone();
                let accounts = accounts.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in 0..EACH {
                        let id = crate::server::ids::RequestId::new().to_string();
                        store
                            .record(&entry(&id, 3), &accounts)
                            .await
                            .expect("record");
                    }
                }));
            }
            for task in tasks {
                task.await.expect("task");
            }
        });
        let _ = done.send(());
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("settlements stopped finishing (deadlock)");
    let totals = store.totals("session:a").expect("totals");
    assert_eq!(totals.requests, (TASKS * EACH) as u64);
    assert_eq!(totals.cost_nanos, (TASKS * EACH * 3) as i64);
    assert_eq!(store.ledger_len(), TASKS * EACH);
}

/// A store closed while another open waits for the lock is opened;
/// one that stays open makes the other fail, naming the lock.
#[test]
fn open_waits_for_a_lock_that_is_being_released() {
    let dir = tempfile::tempdir().expect("dir");
    let held = Store::open(dir.path()).expect("open");
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    });
    let reopened = Store::open(dir.path());
    release.join().expect("released");
    assert!(reopened.is_ok(), "{:?}", reopened.err());
    drop(reopened);

    let _kept = Store::open(dir.path()).expect("open");
    let started = Instant::now();
    let refused = Store::open(dir.path()).err().expect("the lock is held");
    assert!(refused.to_string().contains("another p402"), "{refused}");
    assert!(started.elapsed() >= LOCK_WAIT);
}

/// A free entry is queued, not awaited: readers that wait for
/// `caught_up` see it, and closing the store writes what is queued.
#[tokio::test]
async fn free_entries_are_written_in_order_and_kept_at_close() {
    let dir = tempfile::tempdir().expect("dir");
    let accounts = vec!["session:a".to_string()];
    let ids: Vec<String> = (0..50)
        .map(|_| crate::server::ids::RequestId::new().to_string())
        .collect();
    {
        let store = Store::open(dir.path()).expect("open");
        for id in &ids {
            let free = LedgerEntry {
                door: None,
                direct_nanos: 4,
                ..tests_support::entry(id)
            };
            store.record_queued(&free, &accounts).expect("queued");
        }
        store.caught_up().await.expect("caught up");
        assert!(store.entry(&ids[49]).expect("read").is_some());
        assert_eq!(store.totals("session:a").expect("totals").requests, 50);
        // Queued after the read: written when the store closes.
        store
            .record_queued(&tests_support::entry("req_last"), &accounts)
            .expect("queued");
    }
    let store = Store::open(dir.path()).expect("reopen");
    assert!(store.entry("req_last").expect("read").is_some());
    assert_eq!(
        store.totals("session:a").expect("totals"),
        Totals {
            cost_nanos: 0,
            direct_nanos: 200,
            requests: 51
        }
    );
}

/// A settlement written again (kept through a failed commit that had in
/// fact reached the disk) is counted once.
#[tokio::test]
async fn a_settlement_written_twice_counts_once() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path()).expect("open");
    let accounts = vec!["session:a".to_string()];
    let once = entry("req_once", 5);
    store.record(&once, &accounts).await.expect("record");
    store.record(&once, &accounts).await.expect("again");
    store.record_queued(&once, &accounts).expect("queued");
    store.caught_up().await.expect("caught up");
    assert_eq!(
        store.totals("session:a").expect("totals"),
        Totals {
            cost_nanos: 5,
            direct_nanos: 10,
            requests: 1
        }
    );
}

/// A database file cut short (a copy that stopped, a disk that lost its
/// tail) is reported as damaged, with the way out, never as a lock or
/// a panic.
#[test]
fn a_truncated_file_is_reported_as_damaged() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let store = Store::open(dir.path()).expect("open");
        for n in 0..100 {
            let write = Write {
                ops: vec![Op::Put(Table::Cache, vec![n], vec![1; 300])],
                only_if_present: None,
            };
            store.write_blocking(write, true).expect("write");
        }
    }
    let file = dir.path().join(FILE);
    let len = std::fs::metadata(&file).expect("file").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_len(len / 3))
        .expect("truncate");
    let error = Store::open(dir.path()).err().expect("refused");
    assert!(matches!(error, StoreError::Damaged { .. }), "{error}");
    assert!(error.to_string().contains(".damaged"), "{error}");
}

/// What the rows of `model` in the hour starting at `hour` add up to.
fn hour_sums(store: &Store, hour: DateTime<Utc>, model: &str) -> rollup::Sums {
    let mut sums = rollup::Sums::default();
    for part in store.period(hour).expect("period").parts {
        if part.time == hour && part.dims.model.as_deref() == Some(model) {
            sums.add(&part.sums);
        }
    }
    sums
}

/// The settlements of one group commit share their hour's rows, which
/// are written once per commit: each row still ends up with exactly
/// what its entries add, across commits too, and an entry sent twice
/// is added once.
#[tokio::test]
async fn a_group_commit_adds_each_entry_to_its_hour_once() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path()).expect("open");
    let at = Utc::now();
    let hour = rollup::hour_start(rollup::hour_of(at));
    let accounts = vec!["session:a".to_string()];
    let of = |n: i64, model: &str| LedgerEntry {
        time: at,
        model: Some(model.to_string()),
        input_tokens: 10,
        output_tokens: 1,
        cost_nanos: n,
        direct_nanos: 2 * n,
        cached: n % 5 == 0,
        ..entry(&tests_support::id_at(at), 0)
    };
    let mut expected = std::collections::HashMap::<&str, (u64, i64, u64)>::new();
    let mut twice = None;
    for round in 0..3 {
        for n in 1..=40 {
            let model = if n % 4 == 0 { "b" } else { "a" };
            let sent = of(n + round * 100, model);
            store.record_queued(&sent, &accounts).expect("queued");
            let row = expected.entry(model).or_default();
            row.0 += 1;
            row.1 += sent.cost_nanos;
            row.2 += u64::from(sent.cached);
            twice.get_or_insert(sent);
        }
        // Sent again within the same commit, and in later ones.
        let again = twice.as_ref().expect("an entry");
        store.record_queued(again, &accounts).expect("queued");
        store.caught_up().await.expect("caught up");
    }
    for (model, (requests, cost, cached)) in expected {
        let sums = hour_sums(&store, hour, model);
        assert_eq!(sums.requests, requests, "{model}");
        assert_eq!(sums.input_tokens, 10 * requests, "{model}");
        assert_eq!(sums.output_tokens, requests, "{model}");
        assert_eq!(sums.cost_nanos, cost, "{model}");
        assert_eq!(sums.direct_nanos, 2 * cost, "{model}");
        assert_eq!(sums.cached, cached, "{model}");
    }
    assert_eq!(store.totals("session:a").expect("totals").requests, 120);
    assert_eq!(store.ledger_len(), 120);
}

/// An hour's row that cannot be read fails the settlement that adds to
/// it, and only that one: the others of its commit are written, and
/// nothing of it is.
#[tokio::test]
async fn an_unreadable_hour_row_fails_only_its_own_settlement() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path()).expect("open");
    let at = Utc::now();
    let hour = rollup::hour_start(rollup::hour_of(at));
    let accounts = vec!["session:a".to_string()];
    let of = |model: &str| LedgerEntry {
        time: at,
        model: Some(model.to_string()),
        ..entry(&tests_support::id_at(at), 3)
    };
    // In an earlier hour than the others, so that the sums read back
    // below do not include the row that cannot be read.
    let broken = LedgerEntry {
        time: at - chrono::Duration::hours(2),
        ..of("broken")
    };
    let row = rollup::Addition::of(&broken)
        .expect("addition")
        .key()
        .to_vec();
    store
        .write_blocking(
            Write {
                ops: vec![Op::Put(Table::Rollup, row, vec![0; 12])],
                only_if_present: None,
            },
            true,
        )
        .expect("write");
    let before = of("fine");
    let after = of("fine");
    store.record_queued(&before, &accounts).expect("queued");
    let refused = store.record(&broken, &accounts).await;
    assert!(
        matches!(refused, Err(StoreError::Malformed(_))),
        "{refused:?}"
    );
    store.record_queued(&after, &accounts).expect("queued");
    store.caught_up().await.expect("caught up");
    assert!(store.entry(&broken.request_id).expect("read").is_none());
    assert!(store.entry(&before.request_id).expect("read").is_some());
    assert!(store.entry(&after.request_id).expect("read").is_some());
    assert_eq!(store.totals("session:a").expect("totals").requests, 2);
    let fine = hour_sums(&store, hour, "fine");
    assert_eq!((fine.requests, fine.cost_nanos), (2, 6));
}

#[tokio::test]
async fn records_survive_reopening() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let store = Store::open(dir.path()).expect("open");
        let accounts = vec!["session:a".to_string(), "budget:g:total".to_string()];
        store
            .record(
                &entry(&crate::server::ids::RequestId::new().to_string(), 5),
                &accounts,
            )
            .await
            .expect("record");
        store
            .record(
                &entry(&crate::server::ids::RequestId::new().to_string(), 7),
                &accounts[..1],
            )
            .await
            .expect("record");
    }
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(
        store.totals("session:a").expect("totals"),
        Totals {
            cost_nanos: 12,
            direct_nanos: 24,
            requests: 2
        }
    );
    assert_eq!(
        store.totals("budget:g:total").expect("totals").cost_nanos,
        5
    );
    assert_eq!(
        store
            .entries_since(Utc::now() - chrono::Duration::hours(1))
            .count(),
        2
    );
    assert_eq!(
        store
            .entries_since(Utc::now() + chrono::Duration::hours(1))
            .count(),
        0
    );
}
