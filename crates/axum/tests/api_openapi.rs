//! The checked-in OpenAPI document (`crates/axum/openapi.json`) is the one the handlers
//! generate. Regenerate it with `UPDATE_OPENAPI=1 cargo test -p tenantry-axum --test api_openapi`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;

fn checked_in() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json")
}

fn generated() -> String {
    let mut text = tenantry_axum::api::openapi().to_pretty_json().unwrap();
    text.push('\n');
    text
}

#[test]
fn the_checked_in_document_is_the_generated_one() {
    let now = generated();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(checked_in(), &now).unwrap();
        eprintln!("wrote {}", checked_in().display());
        return;
    }
    let file = std::fs::read_to_string(checked_in()).unwrap_or_default();
    assert!(
        file == now,
        "crates/axum/openapi.json differs from the document the handlers generate; \
         regenerate it with `UPDATE_OPENAPI=1 cargo test -p tenantry-axum --test api_openapi` \
         and review the diff"
    );
}

#[test]
fn the_document_is_openapi_3_1_and_every_operation_documents_its_problems() {
    let doc: serde_json::Value = serde_json::from_str(&generated()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} documents no success"
            );
            if path != "/openapi.json" {
                for status in ["400", "404", "500", "503"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} lacks {status}"
                    );
                }
            }
            if method != "get" {
                for status in ["413", "415", "422"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} lacks {status}"
                    );
                }
            }
            if path != "/openapi.json" && path != "/invitations/accept" {
                assert!(responses.contains_key("401"), "{method} {path} lacks 401");
            }
        }
    }
    assert!(operations >= 24, "only {operations} operations");
    let problem =
        &doc["components"]["responses"]["Conflict"]["content"]["application/problem+json"];
    assert_eq!(problem["schema"]["$ref"], "#/components/schemas/Problem");
    let fields = doc["components"]["schemas"]["Problem"]["properties"]
        .as_object()
        .unwrap();
    for field in [
        "type",
        "title",
        "status",
        "detail",
        "seats_used",
        "retry_after_seconds",
    ] {
        assert!(fields.contains_key(field), "Problem lacks {field}");
    }
}
