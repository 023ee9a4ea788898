//! The conformance suite (D1–D26) on the in-memory store.

use std::sync::Arc;

use tenantry_conformance::StoreFactory;
use tenantry_store::{InMemoryStore, Store};

fn memory_factory() -> StoreFactory {
    Arc::new(|| Box::pin(async { Arc::new(InMemoryStore::new()) as Arc<dyn Store> }))
}

tenantry_conformance::suite!(memory_factory());
