#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The operators' listing of tenants: a full page of 500 still names the next one.

use tenantry_service::{Email, InMemoryStore, Tenantry};

#[tokio::test]
async fn a_page_of_the_largest_size_names_the_next_page() {
    let app = Tenantry::builder(InMemoryStore::new()).build().unwrap();
    for i in 0..501 {
        app.create_tenant(
            &format!("T{i:03}"),
            None,
            Email::parse("ada@acme.test").unwrap(),
        )
        .await
        .unwrap();
    }
    let first = app.tenants(None, 500).await.unwrap();
    assert_eq!(first.items.len(), 500);
    let next = first.next.expect("a 501st tenant follows");
    let rest = app.tenants(Some(&next), 500).await.unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.items[0].tenant.name, "T500");
    assert!(rest.next.is_none());
}
