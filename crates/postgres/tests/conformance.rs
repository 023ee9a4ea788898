//! The whole conformance suite (scenarios, concurrency scenarios and the model-based test)
//! on PostgreSQL: each test gets a fresh schema, dropped when the test ends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;

use tenantry_service::Store;

/// Fresh stores for the suite: a new schema each, with a pool of 8 connections.
fn factory() -> tenantry_conformance::StoreFactory {
    Arc::new(|| {
        Box::pin(async {
            let store: Arc<dyn Store> = Arc::new(common::GuardedStore::new(8).await);
            store
        })
    })
}

tenantry_conformance::suite!(factory());
