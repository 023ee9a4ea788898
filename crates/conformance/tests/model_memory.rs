//! The model-based test (D1–D20) on the in-memory store.

use std::sync::Arc;

use tenantry_conformance::StoreFactory;
use tenantry_store::{InMemoryStore, Store};

#[test]
fn model_based_in_memory() {
    let factory: StoreFactory =
        Arc::new(|| Box::pin(async { Arc::new(InMemoryStore::new()) as Arc<dyn Store> }));
    tenantry_conformance::model::run(factory, 256, 50);
}
