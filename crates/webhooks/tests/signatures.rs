#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Step 1: every delivered webhook verifies with the `standardwebhooks` package's own
//! `Webhook(secret).verify(body, headers)`, before and after a secret rotation (both
//! signatures sent during the grace period); a tampered body or an unknown secret does not.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::json;
use support::{Arrival, Receiver};
use tenantry_service::{ActorRef, Email, InviteRequest, Permissions, Role, UserEdit};
use tenantry_webhooks::{Dispatcher, DispatcherSettings, InMemoryEndpointStore, Secret, Webhooks};

fn verify(python: &std::path::Path, items: &[(String, &Arrival)], tamper: bool) -> Vec<String> {
    let input: Vec<_> = items
        .iter()
        .map(|(secret, a)| {
            let mut body = String::from_utf8(a.body.clone()).unwrap();
            if tamper {
                body = body.replacen("\"type\"", "\"type\" ", 1);
            }
            json!({
                "secret": secret,
                "body": body,
                "headers": {
                    "webhook-id": a.id,
                    "webhook-timestamp": a.timestamp,
                    "webhook-signature": a.signature,
                },
            })
        })
        .collect();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/verify_standardwebhooks.py"
    );
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the verifier failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_verifies_with_the_standard_webhooks_package_across_a_rotation() {
    let Some(python) = support::verifier_python() else {
        return;
    };
    // The verifier checks the timestamp against the real time: the clock starts now.
    let (app, clock, tenant, admin) = support::service(support::now()).await;
    let endpoints = Arc::new(InMemoryEndpointStore::new());
    let hooks = Webhooks::new(app.clone(), endpoints.clone());
    let receiver = Receiver::ok().await;
    let made = hooks
        .register(tenant, ActorRef::User(admin), &receiver.url("/hooks"), &[])
        .await
        .unwrap();
    let old_secret = made.secret.expose().to_owned();
    let dispatcher = Dispatcher::with_clock(
        &app,
        endpoints.clone(),
        DispatcherSettings::default(),
        Arc::new(clock.clone()),
    )
    .unwrap();

    let bob = app
        .invite(
            tenant,
            admin,
            &InviteRequest {
                email: Email::parse("bob@acme.test").unwrap(),
                role: Role::User,
                template_id: None,
                crm_access: true,
                grants: Permissions::CONVERSATIONS_VIEW,
            },
        )
        .await
        .unwrap();
    let report = dispatcher.run_once().await.unwrap();
    assert_eq!(report.delivered, 2, "{report:?}"); // endpoint added, user invited
    let before = receiver.arrivals();
    assert_eq!(before.len(), 2);
    assert_eq!(before[1].json()["type"], "user_invited");
    assert_eq!(before[1].json()["data"]["tenant_id"], tenant.to_string());
    assert_eq!(before[1].json()["data"]["actor"]["id"], admin.to_string());
    assert_eq!(
        before[1].json()["data"]["target"]["id"],
        bob.user.id.to_string()
    );
    assert_eq!(before[1].json()["data"]["outcome"]["outcome"], "success");
    assert!(
        !before[0].signature.contains(' '),
        "one secret, one signature"
    );

    let new_secret = hooks
        .rotate_secret(
            tenant,
            ActorRef::User(admin),
            made.endpoint.id,
            time::Duration::seconds(30),
        )
        .await
        .unwrap();
    let new_secret = new_secret.expose().to_owned();
    assert_ne!(new_secret, old_secret);
    clock.advance(time::Duration::seconds(1));
    let edit = UserEdit {
        crm_access: Some(false),
        ..UserEdit::default()
    };
    app.edit_user(tenant, admin, bob.user.id, &edit)
        .await
        .unwrap();
    let report = dispatcher.run_once().await.unwrap();
    assert_eq!(report.delivered, 2, "{report:?}"); // secret rotated, user edited
    let all = receiver.arrivals();
    let after = &all[2..];
    assert_eq!(after[0].json()["type"], "webhook_endpoint_changed");
    assert_eq!(after[1].json()["type"], "user_edited");
    let change = &after[1].json()["data"]["changes"][0];
    assert_eq!(change["field"], "crm_access");
    assert_eq!(
        (
            change["before"]["value"].clone(),
            change["after"]["value"].clone()
        ),
        (json!(true), json!(false))
    );
    for a in after {
        assert_eq!(
            a.signature.split(' ').count(),
            2,
            "both signatures in the grace period"
        );
    }

    let mut items: Vec<(String, &Arrival)> =
        before.iter().map(|a| (old_secret.clone(), a)).collect();
    for a in after {
        items.push((old_secret.clone(), a));
        items.push((new_secret.clone(), a));
    }
    let results = verify(&python, &items, false);
    assert_eq!(results, vec!["ok"; items.len()]);

    // The verifier is not a yes-machine: a changed body, or a secret nobody was given, fails.
    let tampered = verify(&python, &items, true);
    assert!(
        tampered.iter().all(|r| r.contains("No matching signature")),
        "{tampered:?}"
    );
    let stranger = Secret::generate().unwrap().expose().to_owned();
    let strangers: Vec<_> = all.iter().map(|a| (stranger.clone(), a)).collect();
    let results = verify(&python, &strangers, false);
    assert!(results.iter().all(|r| r != "ok"), "{results:?}");

    // After the grace period only the new secret signs, and the old one fails.
    // (A minute: well within the verifier's five minutes of skew.)
    clock.advance(time::Duration::minutes(1));
    app.edit_user(
        tenant,
        admin,
        bob.user.id,
        &UserEdit {
            crm_access: Some(true),
            ..UserEdit::default()
        },
    )
    .await
    .unwrap();
    dispatcher.run_once().await.unwrap();
    let last = receiver.arrivals().pop().unwrap();
    assert_eq!(last.json()["type"], "user_edited");
    assert!(!last.signature.contains(' '));
    let results = verify(&python, &[(new_secret, &last), (old_secret, &last)], false);
    assert_eq!(results[0], "ok");
    assert!(results[1].contains("No matching signature"), "{results:?}");
}
