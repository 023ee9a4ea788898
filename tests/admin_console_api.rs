//! The Settings → Users flow through the JSON API of the running example host: real TCP, a
//! hyper client, the demo sign-in's cookie for who is calling. List users, invite, resend,
//! accept (the public endpoint, the link from the recorded mail), edit with a template,
//! suspend, reactivate, delete, seats and the audit log; and the refusals (nobody, a viewer,
//! a user without access), each with its status and problem document.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../examples/admin_console/host/mod.rs"]
mod host;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Method, Request, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tenantry::InMemoryMailer;

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("tenantry-api-flow-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An answer: status, content type, the body as JSON (`Null` when empty or not JSON) and
/// the raw text.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    json: Value,
    text: String,
    set_cookie: Vec<String>,
}

struct Api {
    client: Client<HttpConnector, Body>,
    base: String,
    mail: InMemoryMailer,
    /// Every body the API answered, to check that none holds a token.
    seen: std::sync::Mutex<Vec<String>>,
}

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let response = self.client.request(req.body(body).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let set_cookie = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let bytes = axum::body::to_bytes(Body::new(response.into_body()), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        self.seen.lock().unwrap().push(text.clone());
        Answer {
            status,
            content_type,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
            set_cookie,
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        self.call(Method::GET, path, cookie, None).await
    }

    /// Signs in through the host's demo sign-in (a form post); the `Cookie` header value.
    async fn sign_in(&self, user_id: &str) -> Answer {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/signin", self.base))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("user={user_id}")))
            .unwrap();
        let response = self.client.request(req).await.unwrap();
        let set_cookie = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        Answer {
            status: response.status().as_u16(),
            content_type: String::new(),
            json: Value::Null,
            text: String::new(),
            set_cookie,
        }
    }

    async fn cookie_of(&self, user_id: &str) -> String {
        let a = self.sign_in(user_id).await;
        assert_eq!(a.status, 303, "sign-in of {user_id}");
        let set = a
            .set_cookie
            .iter()
            .find(|c| c.starts_with(host::signin::COOKIE))
            .expect("the sign-in cookie");
        set.split(';').next().unwrap().to_owned()
    }

    /// The token of the newest mail recorded for `to`, checking its link is the console's
    /// accept page.
    fn token_for(&self, to: &str) -> String {
        let mail = self
            .mail
            .sent()
            .into_iter()
            .rev()
            .find(|m| m.to.contains(to))
            .unwrap_or_else(|| panic!("no mail for {to}"));
        let token = tenantry::token_from_link(&mail.text).unwrap();
        assert!(
            mail.text
                .contains(&format!("{}{}?token={token}", self.base, host::ACCEPT)),
            "the link points at the console's accept page"
        );
        token
    }

    fn mails_to(&self, to: &str) -> usize {
        self.mail
            .sent()
            .iter()
            .filter(|m| m.to.contains(to))
            .count()
    }
}

fn user_by_email<'a>(page: &'a Value, email: &str) -> Option<&'a Value> {
    page["items"]
        .as_array()?
        .iter()
        .find(|u| u["email"] == email)
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

/// A problem document with this status.
fn assert_problem(a: &Answer, status: u16, what: &str) {
    assert_eq!(a.status, status, "{what}: {a:?}");
    assert!(
        a.content_type.starts_with("application/problem+json"),
        "{what}: content type {}",
        a.content_type
    );
    assert_eq!(a.json["status"], status, "{what}: {}", a.text);
    assert!(
        a.json["title"].is_string() && a.json["type"].is_string(),
        "{what}: {}",
        a.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_flow_through_the_json_api() {
    let tmp = TempDir::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let opened = host::open(host::Setup {
        db: tmp.0.join("api.db"),
        public_url: base.clone(),
        mail: host::Mail::Memory,
    })
    .await
    .unwrap();
    assert!(opened.seeded, "a new database is seeded");
    let mail = opened.recorded.clone().unwrap();
    // Who is who: the seeded users, read through the service (the API needs a caller).
    let ids: std::collections::HashMap<String, String> = opened
        .host
        .app
        .list_users(
            opened.host.tenant,
            tenantry::ActorRef::System,
            &tenantry::UserQuery::default(),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|u| (u.email.as_str().to_owned(), u.id.to_string()))
        .collect();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(host::serve(
        listener,
        opened.host,
        host::Limits::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let api = Api {
        client: Client::builder(TokioExecutor::new()).build_http(),
        base: base.clone(),
        mail,
        seen: std::sync::Mutex::new(Vec::new()),
    };
    let p = host::API;

    // Nobody signed in: 401 as a problem document.
    assert_problem(
        &api.get(&format!("{p}/users"), None).await,
        401,
        "no cookie",
    );

    // The document is served under the nest.
    let doc = api.get(&format!("{p}/openapi.json"), None).await;
    assert_eq!(doc.status, 200);
    assert!(
        doc.json["paths"]["/users"].is_object(),
        "the OpenAPI document"
    );

    let ada = api.cookie_of(&ids["ada@acme.test"]).await;

    // Me, the list and the seats.
    let me = api.get(&format!("{p}/me"), Some(&ada)).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.json["email"], "ada@acme.test");
    assert_eq!(me.json["role"], "admin");
    let list = api.get(&format!("{p}/users"), Some(&ada)).await;
    assert_eq!(list.status, 200, "{list:?}");
    assert!(list.content_type.starts_with("application/json"));
    let emails: Vec<&str> = list.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["email"].as_str())
        .collect();
    assert_eq!(
        emails,
        [
            "ada@acme.test",
            "bob@acme.test",
            "carol@acme.test",
            "erin@acme.test"
        ]
    );
    assert_eq!(
        user_by_email(&list.json, "carol@acme.test").unwrap()["status"],
        "invited"
    );
    let invited_only = api
        .get(&format!("{p}/users?status=invited"), Some(&ada))
        .await;
    assert_eq!(invited_only.json["items"].as_array().unwrap().len(), 1);
    let seats = api.get(&format!("{p}/seats"), Some(&ada)).await;
    assert_eq!(
        (seats.json["used"].as_u64(), seats.json["limit"].as_u64()),
        (Some(4), Some(5))
    );
    assert_eq!(seats.json["at_limit"], false);

    // Invite dana: 201, invited; the fifth seat; the next invite hits the limit (409).
    let invited = api
        .call(
            Method::POST,
            &format!("{p}/invitations"),
            Some(&ada),
            Some(json!({"email": "dana@acme.test", "crm_access": true})),
        )
        .await;
    assert_eq!(invited.status, 201, "{invited:?}");
    assert_eq!(invited.json["user"]["status"], "invited");
    assert_eq!(invited.json["user"]["email"], "dana@acme.test");
    let dana = str_of(&invited.json["user"]["id"]);
    let seats = api.get(&format!("{p}/seats"), Some(&ada)).await;
    assert_eq!(seats.json["used"], 5);
    assert_eq!(seats.json["at_limit"], true);
    let over = api
        .call(
            Method::POST,
            &format!("{p}/invitations"),
            Some(&ada),
            Some(json!({"email": "eve@acme.test"})),
        )
        .await;
    assert_problem(&over, 409, "an invite over the limit");
    assert_eq!(
        (
            over.json["seats_used"].as_u64(),
            over.json["seat_limit"].as_u64()
        ),
        (Some(5), Some(5))
    );

    // Resend: a fresh mail; the first link dies (D10).
    let first = api.token_for("dana@acme.test");
    let mails = api.mails_to("dana@acme.test");
    let resent = api
        .call(
            Method::POST,
            &format!("{p}/users/{dana}/resend"),
            Some(&ada),
            Some(json!({})),
        )
        .await;
    assert_eq!(resent.status, 200, "{resent:?}");
    assert!(resent.json["expires_at"].is_string() && resent.json["message_id"].is_string());
    assert_eq!(api.mails_to("dana@acme.test"), mails + 1);
    let second = api.token_for("dana@acme.test");
    assert_ne!(first, second);

    // Accept through the public endpoint (no cookie): the old token is refused, the new
    // one makes dana active (D3: the address may differ in case).
    let stale = api
        .call(
            Method::POST,
            &format!("{p}/invitations/accept"),
            None,
            Some(json!({"token": first, "email": "dana@acme.test"})),
        )
        .await;
    assert!(
        stale.status >= 400 && stale.status < 500,
        "a dead link: {stale:?}"
    );
    let accepted = api
        .call(
            Method::POST,
            &format!("{p}/invitations/accept"),
            None,
            Some(json!({"token": second, "email": "Dana@acme.test"})),
        )
        .await;
    assert_eq!(accepted.status, 200, "{accepted:?}");
    assert_eq!(accepted.json["status"], "active");
    assert_eq!(accepted.json["email"], "dana@acme.test");
    let again = api
        .call(
            Method::POST,
            &format!("{p}/invitations/accept"),
            None,
            Some(json!({"token": second, "email": "dana@acme.test"})),
        )
        .await;
    assert!(
        again.status >= 400 && again.status < 500,
        "a link works once: {again:?}"
    );

    // Edit with a template and a direct grant; dana holds both.
    let templates = api.get(&format!("{p}/templates"), Some(&ada)).await;
    assert_eq!(templates.status, 200, "{templates:?}");
    let agent = templates.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Support agent")
        .map(|t| str_of(&t["id"]))
        .expect("the Support agent template");
    let edited = api
        .call(
            Method::PATCH,
            &format!("{p}/users/{dana}"),
            Some(&ada),
            Some(json!({"template_id": agent, "grants": ["analytics:view"]})),
        )
        .await;
    assert_eq!(edited.status, 200, "{edited:?}");
    assert_eq!(edited.json["template_id"], agent.as_str());
    assert_eq!(edited.json["grants"], json!(["analytics:view"]));
    let dana_cookie = api.cookie_of(&dana).await;
    let dana_me = api.get(&format!("{p}/me"), Some(&dana_cookie)).await;
    assert_eq!(dana_me.status, 200, "{dana_me:?}");
    let holds: Vec<&str> = dana_me.json["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for p in ["conversations:view", "conversations:edit", "analytics:view"] {
        assert!(holds.contains(&p), "dana holds {p}: {holds:?}");
    }
    assert!(!holds.contains(&"users:view"));
    assert_problem(
        &api.get(&format!("{p}/users"), Some(&dana_cookie)).await,
        403,
        "dana may not list users",
    );

    // Suspend: dana's cookie no longer gets in, and she cannot sign in; reactivate.
    let suspended = api
        .call(
            Method::PATCH,
            &format!("{p}/users/{dana}"),
            Some(&ada),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(suspended.status, 200, "{suspended:?}");
    assert_eq!(suspended.json["status"], "suspended");
    // Her own access says so and holds nothing now (D6: no cache); the list refuses her.
    let locked = api.get(&format!("{p}/me"), Some(&dana_cookie)).await;
    assert_eq!(locked.json["status"], "suspended", "{locked:?}");
    assert_eq!(locked.json["permissions"], json!([]), "{locked:?}");
    assert_problem(
        &api.get(&format!("{p}/users"), Some(&dana_cookie)).await,
        403,
        "a suspended user listing",
    );
    assert_eq!(
        api.sign_in(&dana).await.status,
        422,
        "a suspended user's sign-in"
    );
    let active = api
        .call(
            Method::PATCH,
            &format!("{p}/users/{dana}"),
            Some(&ada),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(active.json["status"], "active", "{active:?}");
    assert_eq!(
        api.get(&format!("{p}/me"), Some(&dana_cookie)).await.status,
        200
    );

    // Delete: the seat is freed and dana is gone.
    let deleted = api
        .call(
            Method::DELETE,
            &format!("{p}/users/{dana}"),
            Some(&ada),
            Some(json!({})),
        )
        .await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(deleted.json["email"], "dana@acme.test");
    assert_eq!(deleted.json["user_id"], dana.as_str());
    let seats = api.get(&format!("{p}/seats"), Some(&ada)).await;
    assert_eq!(seats.json["used"], 4);
    assert_eq!(seats.json["at_limit"], false);
    assert_problem(
        &api.get(&format!("{p}/users/{dana}"), Some(&ada)).await,
        404,
        "a deleted user",
    );
    assert_eq!(
        api.get(&format!("{p}/me"), Some(&dana_cookie)).await.status,
        401
    );

    // The audit log tells the story of dana, oldest first.
    let audit = api.get(&format!("{p}/audit?limit=500"), Some(&ada)).await;
    assert_eq!(audit.status, 200, "{audit:?}");
    let about_dana: Vec<String> = audit.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.to_string().contains(&dana))
        .map(|r| str_of(&r["action"]))
        .collect();
    assert!(
        about_dana.len() >= 5,
        "dana's audit records: {about_dana:?}"
    );
    let seqs: Vec<u64> = audit.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {seqs:?}"
    );

    // A viewer reads but may not invite; a user without users:view is refused.
    let erin = api.cookie_of(&ids["erin@acme.test"]).await;
    assert_eq!(
        api.get(&format!("{p}/users"), Some(&erin)).await.status,
        200
    );
    let refused = api
        .call(
            Method::POST,
            &format!("{p}/invitations"),
            Some(&erin),
            Some(json!({"email": "frank@acme.test"})),
        )
        .await;
    assert_problem(&refused, 403, "erin inviting");
    assert_eq!(
        refused.json["needed_permission"], "users:create",
        "{}",
        refused.text
    );
    let bob = api.cookie_of(&ids["bob@acme.test"]).await;
    assert_problem(
        &api.get(&format!("{p}/users"), Some(&bob)).await,
        403,
        "bob listing",
    );

    // No answer ever held an invitation token (D26).
    let tokens: Vec<String> = api
        .mail
        .sent()
        .iter()
        .filter_map(|m| tenantry::token_from_link(&m.text))
        .collect();
    assert!(!tokens.is_empty());
    for body in api.seen.lock().unwrap().iter() {
        for t in &tokens {
            assert!(!body.contains(t.as_str()), "a token in an answer: {body}");
        }
        assert!(!body.contains("token="), "a link in an answer: {body}");
    }

    let _ = stop.send(());
    let _ = server.await;
}
