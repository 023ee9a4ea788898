//! The example host at the HTTP level, over real TCP: the regressions attack testing found
//! (a session flood signing every admin out, half-sent requests holding the server, sign-out
//! keeping the CSRF cookie) and the demo sign-in's signed cookie.
//!
//! Each test serves the host exactly as the example builds it (`host::open`, `host::serve`),
//! on a temporary SQLite file and a free port, with short limits (1 s header read, 2 s per
//! request) so that the timeouts are quick to see.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../examples/admin_console/host/mod.rs"]
mod host;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tenantry::prelude::*;
use tenantry::{TenantId, UserId};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("tenantry-host-test-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const LIMITS: host::Limits = host::Limits {
    header_read: Duration::from_secs(1),
    request: Duration::from_secs(2),
    body: 64 * 1024,
};

/// A served host; the server stops when this is dropped.
struct Served {
    addr: std::net::SocketAddr,
    app: Tenantry,
    tenant: TenantId,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _tmp: TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve_with(public_url: Option<&str>) -> Served {
    let tmp = TempDir::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let opened = host::open(host::Setup {
        db: tmp.0.join("host.db"),
        public_url: public_url.map_or_else(|| format!("http://{addr}"), str::to_owned),
        mail: host::Mail::Memory,
    })
    .await
    .unwrap();
    assert!(opened.seeded, "a new database is seeded");
    let app = opened.host.app.clone();
    let tenant = opened.host.tenant;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(host::serve(listener, opened.host, LIMITS, async {
        let _ = stopped.await;
    }));
    Served {
        addr,
        app,
        tenant,
        stop: Some(stop),
        _tmp: tmp,
    }
}

async fn serve() -> Served {
    serve_with(None).await
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value the response sets for cookie `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().into_iter().find_map(|c| {
            let first = c.split(';').next()?;
            let (n, v) = first.split_once('=')?;
            (n == name).then(|| v.to_owned())
        })
    }
}

fn parse(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Sends one request (with `Connection: close`) and reads the whole answer.
async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in extra {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within 10 s"))
        .unwrap();
    parse(&raw)
}

async fn user_id(s: &Served, email: &str) -> UserId {
    s.app
        .list_users(s.tenant, ActorRef::System, &UserQuery::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|u| u.email.as_str() == email)
        .unwrap_or_else(|| panic!("no user {email}"))
        .id
}

/// Signs in through the demo sign-in page; returns the `Cookie` header value.
async fn sign_in(s: &Served, email: &str) -> String {
    let id = user_id(s, email).await;
    let a = send(s.addr, "POST", "/signin", &[], &format!("user={id}")).await;
    assert_eq!(a.status, 303, "sign-in as {email}: {a:?}");
    assert_eq!(a.header("location"), Some(host::CONSOLE_HOME));
    let value = a.cookie(host::signin::COOKIE).expect("the sign-in cookie");
    format!("{}={value}", host::signin::COOKIE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_cookieless_requests_sign_nobody_out() {
    let s = serve().await;
    let ada = sign_in(&s, "ada@acme.test").await;
    let page = send(s.addr, "GET", "/console/users", &[("Cookie", &ada)], "").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("ada@acme.test"));

    // 10,000 visitors without a cookie, 20 at a time: each is nobody (401), none is given
    // anything to remember on the server.
    let addr = s.addr;
    let mut workers = Vec::new();
    for _ in 0..20 {
        workers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..500 {
                let path = if i % 2 == 0 {
                    "/console/users"
                } else {
                    "/signin"
                };
                statuses.push(send(addr, "GET", path, &[], "").await.status);
            }
            statuses
        }));
    }
    let mut count = 0;
    for w in workers {
        for status in w.await.unwrap() {
            assert!(
                status == 401 || status == 200,
                "a cookieless request got {status}"
            );
            count += 1;
        }
    }
    assert_eq!(count, 10_000);

    // The admin is still signed in and still manages users.
    let page = send(s.addr, "GET", "/console/users", &[("Cookie", &ada)], "").await;
    assert_eq!(page.status, 200, "after the flood: {page:?}");
    assert!(page.body.contains("ada@acme.test"));
    let api = send(s.addr, "GET", "/api/users", &[("Cookie", &ada)], "").await;
    assert_ne!(api.status, 401, "the API still knows the admin: {api:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_dropped_and_the_server_answers() {
    let s = serve().await;
    // 1,100 connections that send half a request header and then nothing.
    let mut held = Vec::new();
    for _ in 0..1_100 {
        let mut stream = TcpStream::connect(s.addr).await.unwrap();
        stream
            .write_all(b"GET /signin HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        held.push(stream);
    }
    // And 100 that send nothing at all, and 100 that finish one request and then idle.
    for _ in 0..100 {
        held.push(TcpStream::connect(s.addr).await.unwrap());
    }
    for _ in 0..100 {
        let mut stream = TcpStream::connect(s.addr).await.unwrap();
        stream
            .write_all(b"GET /signin HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    // A normal request is answered promptly meanwhile.
    let started = Instant::now();
    let page = send(s.addr, "GET", "/signin", &[], "").await;
    assert_eq!(page.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        started.elapsed()
    );
    // The server closes every half-sent, silent or idle connection once its header-read
    // time is up (1 s here): each read ends (EOF, a 408 or a reset) instead of waiting
    // forever.
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, mut stream) in held.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut buf = Vec::new();
        let read = tokio::time::timeout(left, stream.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "half-sent connection {i} still open 10 s later: no header-read timeout"
        );
    }
    let page = send(s.addr, "GET", "/signin", &[], "").await;
    assert_eq!(page.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_too_slowly_times_out_and_a_big_one_is_refused() {
    let s = serve().await;
    // Announces 100 bytes, sends 10: the request timeout (2 s) answers 408.
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(
            b"POST /signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nuser=01234",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("no answer to a stalled body within 10 s")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let a = parse(&raw);
    assert_eq!(a.status, 408, "{a:?}");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(a.header("x-content-type-options"), Some("nosniff"));

    // A body over the limit (64 KiB here) is refused with 413, with the security headers.
    let big = format!("user={}", "x".repeat(70 * 1024));
    let a = send(s.addr, "POST", "/signin", &[], &big).await;
    assert_eq!(a.status, 413, "{a:?}");
    assert_eq!(a.header("x-frame-options"), Some("DENY"));
    assert!(a.header("content-security-policy").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_clears_both_cookies() {
    let s = serve().await;
    let ada = sign_in(&s, "ada@acme.test").await;
    // A console page sets the console's CSRF cookie.
    let page = send(s.addr, "GET", "/console/users", &[("Cookie", &ada)], "").await;
    assert_eq!(page.status, 200);
    let csrf = page
        .cookie("tenantry_csrf")
        .expect("the console's CSRF cookie");
    assert!(!csrf.is_empty());

    let cookies = format!("{ada}; tenantry_csrf={csrf}");
    let out = send(s.addr, "POST", "/signout", &[("Cookie", &cookies)], "").await;
    assert_eq!(out.status, 303, "{out:?}");
    assert_eq!(out.header("location"), Some("/signin?signed_out=1"));
    let set = out.set_cookies();
    let signin = set
        .iter()
        .find(|c| c.starts_with(&format!("{}=;", host::signin::COOKIE)))
        .unwrap_or_else(|| panic!("the sign-in cookie is not cleared: {set:?}"));
    assert!(
        signin.contains("Max-Age=0") && signin.contains("Path=/"),
        "{signin}"
    );
    let console = set
        .iter()
        .find(|c| c.starts_with("tenantry_csrf=;"))
        .unwrap_or_else(|| panic!("the CSRF cookie is not cleared: {set:?}"));
    assert!(
        console.contains("Max-Age=0") && console.contains("Path=/console"),
        "{console}"
    );

    // The browser, having dropped both, is nobody again.
    let page = send(s.addr, "GET", "/console/users", &[], "").await;
    assert_eq!(page.status, 401);
    let signed_out = send(s.addr, "GET", "/signin?signed_out=1", &[], "").await;
    assert!(signed_out.body.contains("Signed out."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_cookie_is_signed_scoped_and_refused_when_forged() {
    let s = serve().await;
    let id = user_id(&s, "ada@acme.test").await;
    let a = send(s.addr, "POST", "/signin", &[], &format!("user={id}")).await;
    let set = a
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with(host::signin::COOKIE))
        .unwrap()
        .to_owned();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(!set.contains("Secure"), "no Secure over plain http: {set}");
    let value = a.cookie(host::signin::COOKIE).unwrap();
    let ok = format!("{}={value}", host::signin::COOKIE);
    assert_eq!(
        send(s.addr, "GET", "/console/users", &[("Cookie", &ok)], "")
            .await
            .status,
        200
    );
    assert_eq!(
        send(s.addr, "GET", "/", &[("Cookie", &ok)], "")
            .await
            .header("location"),
        Some(host::CONSOLE_HOME)
    );
    assert_eq!(
        send(s.addr, "GET", "/", &[], "").await.header("location"),
        Some("/signin")
    );

    // Someone else's id in ada's cookie, a changed tag, and garbage: nobody.
    let erin = user_id(&s, "erin@acme.test").await;
    let (payload, tag) = value.rsplit_once('.').unwrap();
    let swapped = payload.replace(&id.to_string(), &erin.to_string());
    let mut bad_tag = tag.to_owned();
    let last = if bad_tag.pop() == Some('A') { 'B' } else { 'A' };
    bad_tag.push(last);
    for forged in [
        format!("{swapped}.{tag}"),
        format!("{payload}.{bad_tag}"),
        format!("{payload}."),
        "x.y.z.w".to_owned(),
        String::new(),
    ] {
        let cookie = format!("{}={forged}", host::signin::COOKIE);
        let page = send(s.addr, "GET", "/console/users", &[("Cookie", &cookie)], "").await;
        assert_eq!(page.status, 401, "forged cookie {forged:?} was accepted");
    }

    // A key's cookie expires after its lifetime, and another key's is worthless.
    let key = host::signin::SigningKey::new([7; 32]);
    let now = 1_800_000_000;
    let fresh = key.sign(s.tenant, id, now).unwrap();
    assert_eq!(key.verify(&fresh, now + 60), Some((s.tenant, id)));
    assert_eq!(key.verify(&fresh, now + host::signin::LIFETIME_SECS), None);
    assert_eq!(
        key.verify(&key.sign(s.tenant, id, now + 3_600).unwrap(), now),
        None
    );
    assert_eq!(
        host::signin::SigningKey::new([8; 32]).verify(&fresh, now + 60),
        None
    );
    let cookie = format!("{}={fresh}", host::signin::COOKIE);
    assert_eq!(
        send(s.addr, "GET", "/console/users", &[("Cookie", &cookie)], "")
            .await
            .status,
        401,
        "a cookie signed with another key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_refuses_other_sites_and_users_who_may_not_sign_in() {
    let s = serve().await;
    let ada = user_id(&s, "ada@acme.test").await;
    let body = format!("user={ada}");
    for header in [
        ("Sec-Fetch-Site", "cross-site"),
        ("Origin", "https://evil.test"),
    ] {
        let a = send(s.addr, "POST", "/signin", &[header], &body).await;
        assert_eq!(a.status, 403, "{header:?}: {a:?}");
        assert!(a.cookie(host::signin::COOKIE).is_none());
    }
    let origin = format!("http://{}", s.addr);
    let a = send(s.addr, "POST", "/signin", &[("Origin", &origin)], &body).await;
    assert_eq!(a.status, 303, "same origin: {a:?}");

    // carol is still invited: refused, no cookie.
    let carol = user_id(&s, "carol@acme.test").await;
    let a = send(s.addr, "POST", "/signin", &[], &format!("user={carol}")).await;
    assert_eq!(a.status, 422, "{a:?}");
    assert!(a.cookie(host::signin::COOKIE).is_none());
    assert!(a.body.contains("signin-error"));
    let a = send(s.addr, "POST", "/signin", &[], "user=not-an-id").await;
    assert_eq!(a.status, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_https_the_cookies_are_secure_and_links_point_at_the_console() {
    let s = serve_with(Some("https://console.example")).await;
    assert_eq!(
        s.app.settings().base_url,
        format!("https://console.example{}", host::ACCEPT)
    );
    let id = user_id(&s, "ada@acme.test").await;
    let a = send(
        s.addr,
        "POST",
        "/signin",
        &[("Origin", "https://console.example")],
        &format!("user={id}"),
    )
    .await;
    assert_eq!(a.status, 303);
    let set = a.set_cookies();
    assert!(
        set.iter()
            .any(|c| c.starts_with(host::signin::COOKIE) && c.contains("Secure")),
        "{set:?}"
    );
    let cookie = format!(
        "{}={}",
        host::signin::COOKIE,
        a.cookie(host::signin::COOKIE).unwrap()
    );
    let out = send(s.addr, "POST", "/signout", &[("Cookie", &cookie)], "").await;
    assert!(
        out.set_cookies().iter().all(|c| c.contains("Secure")),
        "{:?}",
        out.set_cookies()
    );
}

/// `--mailer file`: the host's folder mailer (lettre's file transport through
/// `LettreMailer`) writes the invitation into the folder, and the link in it accepts.
#[tokio::test]
async fn the_mail_folder_receives_the_invitation_and_its_link_accepts() {
    let tmp = TempDir::new();
    let dir = tmp.0.join("mail");
    let (mailer, label) = host::mail::folder(&dir, "Acme Support <no-reply@acme.test>").unwrap();
    assert!(label.contains("mail"), "{label}");
    let opened = host::open(host::Setup {
        db: tmp.0.join("host.db"),
        public_url: "http://127.0.0.1:9".to_owned(),
        mail: host::Mail::Transport(mailer),
    })
    .await
    .unwrap();
    let app = opened.host.app.clone();
    let tenant = opened.host.tenant;
    let admins = app
        .list_users(
            tenant,
            ActorRef::System,
            &UserQuery {
                role: Some(Role::Admin),
                ..UserQuery::default()
            },
        )
        .await
        .unwrap();
    let admin = admins.items[0].id;
    let before = std::fs::read_dir(&dir).unwrap().count();
    app.invite(
        tenant,
        admin,
        &InviteRequest {
            email: Email::parse("dora@acme.test").unwrap(),
            role: Role::User,
            template_id: None,
            crm_access: false,
            grants: Permissions::empty(),
        },
    )
    .await
    .unwrap();
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), before + 1, "one .eml file per message");
    let newest = files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .find(|t| t.contains("dora@acme.test"))
        .expect("the invitation's file");
    // Undo quoted-printable soft breaks and the escaped '='.
    let text = newest.replace("=\r\n", "").replace("=3D", "=");
    let start = text
        .find("/console/accept?token=")
        .expect("the link points at the console's accept page");
    let token: String = text[start + "/console/accept?token=".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    let user = app
        .accept_invitation(&token, "dora@acme.test")
        .await
        .unwrap();
    assert_eq!(user.status, Status::Active);
}

/// SMTP credentials come from the environment, both or neither; the error never holds the
/// password, and a password without TLS is refused by the mailer.
#[test]
fn smtp_credentials_come_as_a_pair_and_need_tls() {
    use host::mail::{SmtpArgs, credentials, smtp};
    assert!(credentials(None, None).unwrap().is_none());
    assert!(
        credentials(Some(String::new()), Some(String::new()))
            .unwrap()
            .is_none()
    );
    let pair = credentials(Some("relay-user".into()), Some("s3cret-pw".into()))
        .unwrap()
        .unwrap();
    assert_eq!(pair.user(), "relay-user");
    let lone = credentials(None, Some("s3cret-pw".into())).unwrap_err();
    assert!(
        lone.contains(host::mail::USER_VAR) && !lone.contains("s3cret-pw"),
        "{lone}"
    );
    assert!(credentials(Some("relay-user".into()), None).is_err());

    let args = |tls: &str| SmtpArgs {
        host: "127.0.0.1".into(),
        port: Some(2525),
        tls: tls.into(),
        from: "a@acme.test".into(),
    };
    let plain = smtp(&args("none"), Some(pair.clone())).unwrap_err();
    assert!(
        plain.contains("TLS") && !plain.contains("s3cret-pw"),
        "{plain}"
    );
    let (_, label) = smtp(&args("starttls"), Some(pair)).unwrap();
    assert!(
        label.contains("as relay-user") && !label.contains("s3cret-pw"),
        "{label}"
    );
    assert!(smtp(&args("bogus"), None).is_err());
}

/// The second demo tenant and the users of ada and gil there.
async fn second_tenant(s: &Served) -> (TenantId, UserId, UserId) {
    let globex = s
        .app
        .tenants(None, 10)
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|t| t.tenant.name == host::SECOND_TENANT)
        .expect("the seed makes a second tenant")
        .tenant
        .id;
    let users = s
        .app
        .list_users(globex, ActorRef::System, &UserQuery::default())
        .await
        .unwrap()
        .items;
    let id = |email: &str| users.iter().find(|u| u.email.as_str() == email).unwrap().id;
    (globex, id("ada@acme.test"), id("gil@globex.test"))
}

/// Who the API says a sign-in cookie names: tenant id, user id and role.
async fn me(s: &Served, cookie: &str) -> (String, String, String) {
    let a = send(s.addr, "GET", "/api/me", &[("Cookie", cookie)], "").await;
    assert_eq!(a.status, 200, "{a:?}");
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let field = |k: &str| v[k].as_str().unwrap().to_owned();
    (field("tenant_id"), field("user_id"), field("role"))
}

fn signed_in_cookie(a: &Answer) -> String {
    assert_eq!(a.status, 303, "{a:?}");
    assert_eq!(a.header("location"), Some(host::CONSOLE_HOME));
    let value = a.cookie(host::signin::COOKIE).expect("the sign-in cookie");
    format!("{}={value}", host::signin::COOKIE)
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

#[tokio::test]
async fn d28_an_address_in_two_tenants_gets_the_picker_and_signs_in_to_the_chosen_one() {
    let s = serve().await;
    let (globex, ada_g, _) = second_tenant(&s).await;
    let ada_a = user_id(&s, "ada@acme.test").await;
    let page = send(s.addr, "GET", "/signin", &[], "").await;
    assert!(
        page.body.contains(r#"<form id="signin-email""#),
        "{}",
        page.body
    );

    // The address (in any case) is a user of both demo tenants: the picker lists them by
    // name, each with its role and status there.
    let picker = send(
        s.addr,
        "POST",
        "/signin",
        &[],
        &form(&[("email", "Ada@Acme.test")]),
    )
    .await;
    assert_eq!(picker.status, 200, "{}", picker.body);
    assert!(picker.set_cookies().is_empty(), "nobody is signed in yet");
    assert!(
        picker.body.contains(r#"<table id="tenant-picker">"#),
        "{}",
        picker.body
    );
    let acme_row = picker
        .body
        .find(&format!(r#"data-tenant="{}""#, s.tenant))
        .unwrap();
    let globex_row = picker
        .body
        .find(&format!(r#"data-tenant="{globex}""#))
        .unwrap();
    assert!(acme_row < globex_row, "by tenant name");
    let row = |at: usize| &picker.body[at..at + picker.body[at..].find("</tr>").unwrap()];
    let acme = row(acme_row);
    assert!(
        acme.contains(r#"<td class="tenant">Acme Support</td>"#),
        "{acme}"
    );
    assert!(acme.contains(r#"<td class="role">admin</td>"#), "{acme}");
    assert!(acme.contains(r#"<td class="status">active</td>"#), "{acme}");
    let other = row(globex_row);
    assert!(
        other.contains(r#"<td class="tenant">Globex Sales</td>"#),
        "{other}"
    );
    assert!(other.contains(r#"<td class="role">user</td>"#), "{other}");
    assert_eq!(picker.body.matches("<tr data-tenant=").count(), 2);

    // Choosing a tenant signs in as that tenant's user.
    let chosen = send(
        s.addr,
        "POST",
        "/signin",
        &[],
        &form(&[("email", "ada@acme.test"), ("tenant", &globex.to_string())]),
    )
    .await;
    let cookie = signed_in_cookie(&chosen);
    assert_eq!(
        me(&s, &cookie).await,
        (globex.to_string(), ada_g.to_string(), "user".to_owned())
    );
    let page = send(s.addr, "GET", "/signin", &[("Cookie", &cookie)], "").await;
    assert!(
        page.body
            .contains(r#"<strong id="signed-in-tenant">Globex Sales</strong>"#),
        "{}",
        page.body
    );
    let chosen = send(
        s.addr,
        "POST",
        "/signin",
        &[],
        &form(&[
            ("email", "ada@acme.test"),
            ("tenant", &s.tenant.to_string()),
        ]),
    )
    .await;
    let cookie = signed_in_cookie(&chosen);
    assert_eq!(
        me(&s, &cookie).await,
        (s.tenant.to_string(), ada_a.to_string(), "admin".to_owned())
    );
    let last = s.app.user(globex, ActorRef::System, ada_g).await.unwrap();
    assert!(
        last.last_login.is_some(),
        "the sign-in was recorded in that tenant"
    );

    // One membership signs in directly; a tenant the address is not a user of, an unknown
    // address or no address at all is refused; so is a post from another site.
    let erin = send(
        s.addr,
        "POST",
        "/signin",
        &[],
        &form(&[("email", "erin@acme.test")]),
    )
    .await;
    let cookie = signed_in_cookie(&erin);
    assert_eq!(me(&s, &cookie).await.0, s.tenant.to_string());
    for (pairs, text) in [
        (
            vec![
                ("email", "erin@acme.test"),
                ("tenant", &*globex.to_string()),
            ],
            "That address is not a user of that tenant.",
        ),
        (
            vec![("email", "nobody@acme.test")],
            "No user has that address.",
        ),
        (
            vec![("email", "not an address")],
            "That is not an email address.",
        ),
        (vec![("email", "")], "Pick a user, or type an address."),
    ] {
        let a = send(s.addr, "POST", "/signin", &[], &form(&pairs)).await;
        assert_eq!(a.status, 422, "{pairs:?}: {a:?}");
        assert!(a.body.contains(text), "{pairs:?}: {}", a.body);
        assert!(a.cookie(host::signin::COOKIE).is_none());
    }
    let a = send(
        s.addr,
        "POST",
        "/signin",
        &[("Sec-Fetch-Site", "cross-site")],
        &form(&[("email", "ada@acme.test"), ("tenant", &globex.to_string())]),
    )
    .await;
    assert_eq!(a.status, 403);
}

#[tokio::test]
async fn d28_a_suspended_membership_is_listed_and_refused_a_deleted_one_is_gone() {
    let s = serve().await;
    let (globex, ada_g, gil) = second_tenant(&s).await;
    s.app
        .edit_user(
            globex,
            gil,
            ada_g,
            &UserEdit {
                status: Some(Status::Suspended),
                ..UserEdit::default()
            },
        )
        .await
        .unwrap();
    let before = s
        .app
        .user(globex, ActorRef::System, ada_g)
        .await
        .unwrap()
        .last_login;
    let picker = send(
        s.addr,
        "POST",
        "/signin",
        &[],
        &form(&[("email", "ada@acme.test")]),
    )
    .await;
    assert_eq!(picker.status, 200, "{}", picker.body);
    let at = picker
        .body
        .find(&format!(r#"data-tenant="{globex}""#))
        .unwrap();
    let row = &picker.body[at..at + picker.body[at..].find("</tr>").unwrap()];
    assert!(
        row.contains(r#"<td class="status">suspended</td>"#),
        "{row}"
    );
    // The service refuses a suspended user's sign-in (D27), and the page says so.
    let refused = send(
        s.addr,
        "POST",
        "/signin",
        &[],
        &form(&[("email", "ada@acme.test"), ("tenant", &globex.to_string())]),
    )
    .await;
    assert_eq!(refused.status, 422, "{refused:?}");
    assert!(refused.body.contains("Sign-in refused"), "{}", refused.body);
    assert!(refused.cookie(host::signin::COOKIE).is_none());
    let user = s.app.user(globex, ActorRef::System, ada_g).await.unwrap();
    assert_eq!(user.last_login, before, "no sign-in recorded");

    // Deleted: the membership is gone, so the address has one tenant left and signs in
    // there directly.
    s.app.delete_user(globex, gil, ada_g).await.unwrap();
    let direct = send(
        s.addr,
        "POST",
        "/signin",
        &[],
        &form(&[("email", "ada@acme.test")]),
    )
    .await;
    let cookie = signed_in_cookie(&direct);
    assert_eq!(me(&s, &cookie).await.0, s.tenant.to_string());
    let gone = send(
        s.addr,
        "POST",
        "/signin",
        &[],
        &form(&[("email", "ada@acme.test"), ("tenant", &globex.to_string())]),
    )
    .await;
    assert_eq!(gone.status, 422, "{gone:?}");
    assert!(
        gone.body
            .contains("That address is not a user of that tenant.")
    );
}

/// The `data-tenant` ids of the operators' tenant list's rows, in page order.
fn listed_ids(body: &str) -> Vec<String> {
    body.split("<tr data-tenant=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
}

/// The href of the page's "Next page" link, unescaped, if there is one.
fn next_link(body: &str) -> Option<String> {
    let (_, rest) = body.split_once(r#"id="next-page""#)?;
    let tag = rest.split('>').next().unwrap();
    let (_, href) = tag.split_once(r#"href=""#).unwrap();
    Some(href.split('"').next().unwrap().replace("&amp;", "&"))
}

/// The seed's two tenants and five more: a second "Acme Support" (same name: the id
/// decides), a lower-case name (after every upper-case one in byte order), a name past
/// ASCII, an unlimited one and one with markup in it.
async fn more_tenants(s: &Served) {
    for (name, limit, admin) in [
        ("acme lower", Some(2), "al@lower.test"),
        ("Zeta Corp", None, "zed@zeta.test"),
        ("Ärger GmbH", Some(9), "ae@aerger.test"),
        ("Beta <&> \"Co\"", Some(1), "b@beta.test"),
        ("Acme Support", Some(7), "twin@acme2.test"),
    ] {
        s.app
            .create_tenant(name, limit, Email::parse(admin).unwrap())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d18_the_operators_tenant_list_is_in_byte_order_and_pages_through_every_tenant_once() {
    let s = serve().await;
    more_tenants(&s).await;
    let ada = sign_in(&s, "ada@acme.test").await;
    let cookie = [("Cookie", ada.as_str())];

    // What the store holds, sorted here by name bytes, then id.
    let mut all = s.app.tenants(None, 100).await.unwrap().items;
    assert_eq!(all.len(), 7);
    all.sort_by(|a, b| {
        (a.tenant.name.as_bytes(), a.tenant.id).cmp(&(b.tenant.name.as_bytes(), b.tenant.id))
    });
    let expected: Vec<String> = all.iter().map(|t| t.tenant.id.to_string()).collect();
    let names: Vec<&str> = all.iter().map(|t| t.tenant.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Acme Support",
            "Acme Support",
            "Beta <&> \"Co\"",
            host::SECOND_TENANT,
            "Zeta Corp",
            "acme lower",
            "Ärger GmbH"
        ]
    );

    // One page (the default 20 holds them all): every tenant in that order, no Next link.
    let page = send(s.addr, "GET", host::tenants::PATH, &cookie, "").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'")
    );
    assert_eq!(listed_ids(&page.body), expected);
    assert_eq!(next_link(&page.body), None);
    for part in [
        r#"<table id="operator-tenants">"#,
        "<caption>",
        r#"<th scope="col">Seats used</th>"#,
        r#"<th scope="col">Seat limit</th>"#,
        r#"<th scope="row" class="name">"#,
    ] {
        assert!(page.body.contains(part), "no {part} in {}", page.body);
    }
    // The seeded tenant's row: id, 4 seats of 5, created in RFC 3339 (UTC).
    let acme = all.iter().find(|t| t.tenant.id == s.tenant).unwrap();
    let row = page
        .body
        .split(&format!("<tr data-tenant=\"{}\"", s.tenant))
        .nth(1)
        .unwrap()
        .split("</tr>")
        .next()
        .unwrap()
        .to_owned();
    let created = acme
        .tenant
        .created_at
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for cell in [
        format!("<code>{}</code>", s.tenant),
        r#"<td class="used">4</td>"#.to_owned(),
        r#"<td class="limit">5</td>"#.to_owned(),
        format!(r#"<time datetime="{created}">{created}</time>"#),
    ] {
        assert!(row.contains(&cell), "no {cell} in {row}");
    }
    assert!(
        created.ends_with('Z') && !created.contains('.'),
        "UTC, to the second: {created}"
    );
    assert!(page.body.contains(r#"<td class="limit">unlimited</td>"#));
    // Names are text, never markup; no address, user or link of a person is on the page.
    assert!(page.body.contains("Beta &lt;&amp;&gt; &quot;Co&quot;"));
    assert!(!page.body.contains("<&>"));
    for secret in ["@acme.test", "@globex.test", "token=", "/accept"] {
        assert!(!page.body.contains(secret), "the page shows {secret}");
    }

    // limit=1, then 2 and 3: following the Next links reads every tenant exactly once, in
    // order, and the links keep the page size.
    for limit in [1_usize, 2, 3] {
        let mut path = format!("{}?limit={limit}", host::tenants::PATH);
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let p = send(s.addr, "GET", &path, &cookie, "").await;
            assert_eq!(p.status, 200, "{path}: {p:?}");
            let ids = listed_ids(&p.body);
            assert!(!ids.is_empty() && ids.len() <= limit, "{path}: {ids:?}");
            seen.extend(ids);
            pages += 1;
            assert!(pages <= 7, "more pages than tenants");
            if pages > 1 {
                assert!(p.body.contains(r#"id="first-page""#), "a First page link");
            }
            match next_link(&p.body) {
                Some(next) => {
                    assert!(next.starts_with(&format!("{}?after=", host::tenants::PATH)));
                    assert!(next.ends_with(&format!("&limit={limit}")), "{next}");
                    path = next;
                }
                None => break,
            }
        }
        assert_eq!(seen, expected, "limit {limit}");
        assert_eq!(pages, expected.len().div_ceil(limit), "limit {limit}");
    }
    // limit=100 is the most.
    let p = send(
        s.addr,
        "GET",
        &format!("{}?limit=100", host::tenants::PATH),
        &cookie,
        "",
    )
    .await;
    assert_eq!(listed_ids(&p.body), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d18_a_bad_cursor_or_limit_on_the_operators_tenant_list_is_a_400_page() {
    let s = serve().await;
    let ada = sign_in(&s, "ada@acme.test").await;
    let cookie = [("Cookie", ada.as_str())];
    let good = send(s.addr, "GET", host::tenants::PATH, &cookie, "").await;
    assert_eq!(good.status, 200);
    let first = send(
        s.addr,
        "GET",
        &format!("{}?limit=1", host::tenants::PATH),
        &cookie,
        "",
    )
    .await;
    let next = next_link(&first.body).expect("two tenants, one per page");
    let cursor = next
        .split_once("after=")
        .unwrap()
        .1
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    for (query, says) in [
        ("after=nope", "cursor is not valid"),
        ("after=", "cursor is not valid"),
        ("after=t.zz.0", "cursor is not valid"),
        ("after=c.0.0", "cursor is not valid"),
        ("limit=0", "from 1 to 100"),
        ("limit=101", "from 1 to 100"),
        ("limit=-1", "from 1 to 100"),
        ("limit=ten", "from 1 to 100"),
        ("limit=", "from 1 to 100"),
        ("limit=1&limit=2", "once"),
        (&format!("after={cursor}&after={cursor}"), "once"),
    ] {
        let a = send(
            s.addr,
            "GET",
            &format!("{}?{query}", host::tenants::PATH),
            &cookie,
            "",
        )
        .await;
        assert_eq!(a.status, 400, "?{query}: {a:?}");
        assert!(a.header("content-type").unwrap().starts_with("text/html"));
        assert!(
            a.body.contains(r#"id="refused""#) && a.body.contains(says),
            "?{query}: {}",
            a.body
        );
        assert!(a.body.contains(r#"id="first-page""#), "a way back");
        assert!(listed_ids(&a.body).is_empty(), "no rows on a refusal");
    }
    // The good cursor still reads the second page.
    let second = send(s.addr, "GET", &next, &cookie, "").await;
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(listed_ids(&second.body).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d26_the_operators_tenant_list_is_for_active_admins_and_linked_for_them_only() {
    let s = serve().await;
    let path = host::tenants::PATH;
    // Nobody signed in, or a forged cookie: 401, and no tenant on the page.
    for cookie in [None, Some(format!("{}=x.y.z.w", host::signin::COOKIE))] {
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", c.as_str())).collect();
        let a = send(s.addr, "GET", path, &headers, "").await;
        assert_eq!(a.status, 401, "{a:?}");
        assert!(listed_ids(&a.body).is_empty());
        assert!(!a.body.contains(host::SECOND_TENANT), "{}", a.body);
    }
    // Users who are no admin (erin with users:view, bob without): 403.
    for email in ["erin@acme.test", "bob@acme.test"] {
        let cookie = sign_in(&s, email).await;
        let a = send(s.addr, "GET", path, &[("Cookie", &cookie)], "").await;
        assert_eq!(a.status, 403, "{email}: {a:?}");
        assert!(listed_ids(&a.body).is_empty());
        let signin = send(s.addr, "GET", "/signin", &[("Cookie", &cookie)], "").await;
        assert!(
            !signin.body.contains(r#"id="operator-tenants-link""#),
            "{email} gets no link"
        );
    }
    // An admin gets the page and the link on the sign-in page; the second tenant's admin
    // too (any tenant's, in this demo).
    let ada = sign_in(&s, "ada@acme.test").await;
    let signin = send(s.addr, "GET", "/signin", &[("Cookie", &ada)], "").await;
    assert!(
        signin
            .body
            .contains(&format!(r#"id="operator-tenants-link" href="{path}""#)),
        "{}",
        signin.body
    );
    assert_eq!(
        send(s.addr, "GET", path, &[("Cookie", &ada)], "")
            .await
            .status,
        200
    );
    let (globex, _, _) = second_tenant(&s).await;
    let gil = send(
        s.addr,
        "POST",
        "/signin",
        &[],
        &form(&[
            ("email", "gil@globex.test"),
            ("tenant", &globex.to_string()),
        ]),
    )
    .await;
    let gil_cookie = signed_in_cookie(&gil);
    let a = send(s.addr, "GET", path, &[("Cookie", &gil_cookie)], "").await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(listed_ids(&a.body).len(), 2);

    // An admin suspended after signing in is refused at once (the cookie is checked
    // against the store on every request).
    let ada_id = user_id(&s, "ada@acme.test").await;
    let erin = user_id(&s, "erin@acme.test").await;
    // Make erin an admin so that ada is not the last one, then suspend ada.
    s.app
        .edit_user(
            s.tenant,
            ada_id,
            erin,
            &UserEdit {
                role: Some(Role::Admin),
                ..UserEdit::default()
            },
        )
        .await
        .unwrap();
    s.app
        .edit_user(
            s.tenant,
            erin,
            ada_id,
            &UserEdit {
                status: Some(Status::Suspended),
                ..UserEdit::default()
            },
        )
        .await
        .unwrap();
    let a = send(s.addr, "GET", path, &[("Cookie", &ada)], "").await;
    assert_eq!(a.status, 403, "a suspended admin: {a:?}");
}
