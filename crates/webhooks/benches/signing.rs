//! What signing and building a webhook cost, each beside its floor (the bare engine doing
//! the same work in the same run): `Secret::sign` against HMAC-SHA256 + base64 by hand over
//! the same bytes, and `body` against `serde_json::to_vec` of the same audit record.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tenantry_core::{
    ActorRef, AuditAction, AuditEvent, AuditRecord, AuditTarget, Field, FieldChange, Outcome,
    TenantId, UserId, Value,
};
use tenantry_webhooks::{Secret, body, webhook_id};

fn record() -> AuditRecord {
    let tenant = TenantId::from_parts(1_767_225_600_000, [1; 10]);
    let user = UserId::from_parts(1_767_225_600_000, [2; 10]);
    AuditRecord {
        seq: 4242,
        event: AuditEvent {
            tenant_id: tenant,
            actor: ActorRef::User(user),
            action: AuditAction::UserEdited,
            target: AuditTarget::User(user),
            at: time::macros::datetime!(2026-03-02 09:00 UTC),
            outcome: Outcome::Success,
            changes: vec![
                FieldChange {
                    field: Field::CrmAccess,
                    before: Value::Bool(true),
                    after: Value::Bool(false),
                },
                FieldChange {
                    field: Field::Email,
                    before: Value::Text("ada@acme.test".into()),
                    after: Value::Text("ada.lovelace@acme.test".into()),
                },
            ],
        },
    }
}

fn bench(c: &mut Criterion) {
    let secret = Secret::generate().unwrap();
    let key = STANDARD
        .decode(secret.expose().trim_start_matches("whsec_"))
        .unwrap();
    let record = record();
    let payload = body(&record).unwrap();
    let id = webhook_id(record.event.tenant_id, record.seq);
    let ts = 1_767_225_600_i64;

    let mut g = c.benchmark_group("sign");
    g.bench_function("floor: hmac-sha256 + base64", |b| {
        b.iter(|| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            mac.update(black_box(id.as_bytes()));
            mac.update(b".");
            mac.update(ts.to_string().as_bytes());
            mac.update(b".");
            mac.update(black_box(&payload));
            black_box(format!(
                "v1,{}",
                STANDARD.encode(mac.finalize().into_bytes())
            ))
        });
    });
    g.bench_function("Secret::sign", |b| {
        b.iter(|| black_box(secret.sign(black_box(&id), ts, black_box(&payload))));
    });
    g.finish();

    let mut g = c.benchmark_group("body");
    g.bench_function("floor: serde_json::to_vec(record)", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&record)).unwrap()));
    });
    g.bench_function("tenantry_webhooks::body", |b| {
        b.iter(|| black_box(body(black_box(&record)).unwrap()));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
