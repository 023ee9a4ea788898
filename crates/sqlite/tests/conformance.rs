//! The whole conformance suite (scenarios, concurrency scenarios and the model-based test)
//! on SQLite database files — a fresh file per test, never `:memory:` — twice: on an owning
//! store (lock file and cache, the default) and on a shared one (no cache).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tenantry_conformance::{StoreFactory, StoreFuture};
use tenantry_sqlite::SqliteStore;

static NEXT: AtomicU64 = AtomicU64::new(0);

fn factory(shared: bool) -> StoreFactory {
    Arc::new(move || -> StoreFuture {
        Box::pin(async move {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            // Files live under the target directory, one folder per run; the first call
            // sweeps the folders earlier runs left.
            let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sqlite-conformance");
            let dir = root.join(std::process::id().to_string());
            if n == 0 {
                for old in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                    if old.path() != dir {
                        let _ = std::fs::remove_dir_all(old.path());
                    }
                }
            }
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("t{n}.db"));
            let _ = std::fs::remove_file(&path);
            let store = if shared {
                SqliteStore::open_shared(&path).await
            } else {
                SqliteStore::open(&path).await
            };
            Arc::new(store.unwrap()) as Arc<dyn tenantry_store::Store>
        })
    })
}

mod owned {
    tenantry_conformance::suite!(super::factory(false));
}

mod shared {
    tenantry_conformance::suite!(super::factory(true));
}
