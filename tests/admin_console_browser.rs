//! The admin console in a real browser: headless Chromium driven through chromedriver
//! (WebDriver, with fantoccini) over the console built by the example's own code, on a
//! temporary SQLite file and a free port.
//!
//! Flow: sign in as the admin, invite (row invited, seats +1, the limit warning and the
//! disabled invite action), resend, open the accept link from the outbox and complete the
//! signup (row active with a last login), apply a role template and check a permission,
//! suspend (sign-in refused) and reactivate, delete (seat freed), a viewer with only
//! `users:view`, and a user without it refused with 403. Saves a screenshot of the Users
//! page to `target/admin_console.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver`; `scripts/services.sh` installs them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../examples/admin_console/app/mod.rs"]
mod app;

use std::error::Error;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

type Result<T = ()> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "tenantry-console-test-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The chromedriver this test started; stopped (by its id) when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ensure(ok: bool, what: impl Into<String>) -> Result {
    if ok { Ok(()) } else { Err(what.into().into()) }
}

async fn wait_for(c: &Client, css: &str) -> Result<fantoccini::elements::Element> {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .map_err(|e| format!("waiting for {css}: {e}").into())
}

/// Whether a WebDriver error says the element went away (the page was replaced between
/// finding the element and using it: a form that had just been submitted navigating).
fn is_stale(e: &fantoccini::error::CmdError) -> bool {
    e.to_string().contains("stale element")
}

/// Finds `css` and reads its text, finding it again when the page changed under it.
async fn text(c: &Client, css: &str) -> Result<String> {
    for _ in 0..50 {
        match wait_for(c, css).await?.text().await {
            Ok(t) => return Ok(t.trim().to_owned()),
            Err(e) if is_stale(&e) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(format!("{css} kept going stale").into())
}

/// Finds `css` and clicks it, finding it again when the page changed under it; then waits
/// (up to 5 s) for the click to replace the page, so that what is read next is read from
/// the new page, never from the one the click left.
async fn click(c: &Client, css: &str) -> Result {
    for _ in 0..50 {
        let old = c.find(Locator::Css("html")).await?;
        match wait_for(c, css).await?.click().await {
            Ok(()) => {
                for _ in 0..50 {
                    match old.tag_name().await {
                        Err(e) if is_stale(&e) => break,
                        _ => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                return Ok(());
            }
            Err(e) if is_stale(&e) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(format!("{css} kept going stale").into())
}

/// Waits for the flash message of the page a form redirected to, and returns it.
async fn flash(c: &Client) -> Result<String> {
    text(c, ".flash").await
}

async fn row_cell(c: &Client, email: &str, cell: &str) -> Result<String> {
    text(c, &format!("tr[data-email='{email}'] td.{cell}")).await
}

async fn sign_in_as(c: &Client, base: &str, email: &str) -> Result {
    c.goto(&format!("{base}/signin")).await?;
    click(c, &format!("button[data-email='{email}']")).await?;
    Ok(())
}

async fn seats(c: &Client) -> Result<String> {
    text(c, "#seats").await
}

/// The HTTP status of a same-origin GET made by the page itself (with its cookies).
async fn status_of(c: &Client, path: &str) -> Result<u64> {
    let v = c
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             fetch(arguments[0], {credentials: 'same-origin'}).then(r => done(r.status), () => done(0));",
            vec![serde_json::Value::String(path.to_owned())],
        )
        .await?;
    v.as_u64()
        .ok_or_else(|| format!("no status for {path}: {v}").into())
}

/// Whether any of the template marks `xpath` finds is shown.
async fn marked(c: &Client, xpath: &str) -> Result<bool> {
    for mark in c.find_all(Locator::XPath(xpath)).await? {
        if mark.is_displayed().await? {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn edit_user(c: &Client, email: &str) -> Result {
    click(c, &format!("tr[data-email='{email}'] a.edit")).await?;
    wait_for(c, "#edit-form").await?;
    Ok(())
}

async fn flow(c: &Client, base: &str, screenshot: &Path) -> Result {
    let new = "dana@acme.test";

    // Open the page as the admin.
    sign_in_as(c, base, "ada@acme.test").await?;
    wait_for(c, "table#users").await?;
    ensure(
        text(c, "#signed-in-as").await? == "ada@acme.test",
        "signed in as ada",
    )?;
    let before = seats(c).await?;
    ensure(
        before == "4 of 5 seats used",
        format!("seats before: {before}"),
    )?;

    // Invite: the CRM box is there for users and hidden for admins (D5).
    click(c, "#invite-user").await?;
    let form = wait_for(c, "#invite-form").await?;
    let role = form.find(Locator::Css("#role")).await?;
    let crm = form.find(Locator::Css("#crm")).await?;
    ensure(crm.is_displayed().await?, "CRM box shown for role user")?;
    role.select_by_value("admin").await?;
    ensure(!crm.is_displayed().await?, "CRM box hidden for admins")?;
    role.select_by_value("user").await?;
    ensure(crm.is_displayed().await?, "CRM box shown again")?;
    form.find(Locator::Css("#email"))
        .await?
        .send_keys(new)
        .await?;
    crm.click().await?;
    click(c, "#send-invite").await?;
    let f = flash(c).await?;
    ensure(f.contains("Invitation sent to dana@acme.test"), f)?;
    ensure(
        row_cell(c, new, "status").await? == "invited",
        "the new row is invited",
    )?;
    ensure(
        row_cell(c, new, "last-login").await? == "never",
        "never signed in",
    )?;
    let after = seats(c).await?;
    ensure(
        after == "5 of 5 seats used",
        format!("seats after invite: {after}"),
    )?;
    // At the limit: warning, and the invite action disabled (D9).
    wait_for(c, "#seat-warning").await?;
    let invite = wait_for(c, "#invite-user").await?;
    ensure(
        invite.attr("disabled").await?.is_some() && !invite.is_enabled().await?,
        "invite disabled at the limit",
    )?;

    // Resend the invitation of the seeded invited user (D10).
    click(c, "tr[data-email='carol@acme.test'] button.resend").await?;
    let f = flash(c).await?;
    ensure(
        f.contains("fresh invitation was sent to carol@acme.test"),
        f,
    )?;

    // The accept link from the outbox; complete the signup.
    c.goto(&format!("{base}/outbox")).await?;
    let link = wait_for(c, &format!("a.accept-link[data-to='{new}']"))
        .await?
        .attr("href")
        .await?
        .ok_or("the accept link has no href")?;
    ensure(
        link.starts_with(&format!("{base}/accept?token=")),
        link.clone(),
    )?;
    c.goto(&link).await?;
    wait_for(c, "#accept-form").await?;
    // D3: the address may differ in case from the invited one.
    wait_for(c, "#email")
        .await?
        .send_keys("Dana@acme.test")
        .await?;
    click(c, "#complete-signup").await?;
    ensure(text(c, "#me-status").await? == "active", "dana is active")?;
    ensure(text(c, "#me-email").await? == new, "signed in as dana")?;

    // Back as the admin: the row is active with a last login.
    sign_in_as(c, base, "ada@acme.test").await?;
    wait_for(c, "table#users").await?;
    ensure(row_cell(c, new, "status").await? == "active", "row active")?;
    let login = row_cell(c, new, "last-login").await?;
    ensure(
        login != "never" && login.ends_with("UTC"),
        format!("last login {login}"),
    )?;

    // Apply a role template and check a permission.
    edit_user(c, new).await?;
    let mark =
        "//input[@id='perm-conversations-view']/following-sibling::span[contains(@class,'via')]";
    ensure(
        !marked(c, mark).await?,
        "no template marks without a template",
    )?;
    wait_for(c, "#template")
        .await?
        .select_by_label("Support agent")
        .await?;
    ensure(
        marked(c, mark).await?,
        "the selected template's permissions are marked",
    )?;
    let analytics = wait_for(c, "#perm-analytics-view").await?;
    ensure(!analytics.is_selected().await?, "analytics:view unchecked")?;
    analytics.click().await?;
    click(c, "#save-user").await?;
    let f = flash(c).await?;
    ensure(f.contains("Saved dana@acme.test"), f)?;
    ensure(
        row_cell(c, new, "template").await? == "Support agent",
        "template column",
    )?;
    edit_user(c, new).await?;
    ensure(
        wait_for(c, "#perm-analytics-view")
            .await?
            .is_selected()
            .await?,
        "analytics:view saved",
    )?;
    ensure(
        marked(c, mark).await?,
        "template marks shown for the saved template",
    )?;

    // Suspend: sign-in is refused (D14); then reactivate.
    wait_for(c, "#status")
        .await?
        .select_by_value("suspended")
        .await?;
    click(c, "#save-user").await?;
    flash(c).await?;
    ensure(
        row_cell(c, new, "status").await? == "suspended",
        "row suspended",
    )?;
    c.goto(&format!("{base}/signin")).await?;
    click(c, &format!("button[data-email='{new}']")).await?;
    let refusal = flash(c).await?;
    ensure(refusal.contains("suspended"), refusal)?;
    c.goto(&format!("{base}/users")).await?;
    ensure(
        text(c, "#signed-in-as").await? == "ada@acme.test",
        "still ada",
    )?;
    edit_user(c, new).await?;
    wait_for(c, "#status")
        .await?
        .select_by_value("active")
        .await?;
    click(c, "#save-user").await?;
    flash(c).await?;
    ensure(row_cell(c, new, "status").await? == "active", "reactivated")?;

    // Delete, with the confirmation explaining the impact; the seat is freed.
    click(c, &format!("tr[data-email='{new}'] a.delete")).await?;
    let impact = text(c, "main .card").await?;
    for words in ["cannot sign back in", "remain", "seat is freed"] {
        ensure(
            impact.contains(words),
            format!("impact text lacks {words:?}"),
        )?;
    }
    click(c, "#confirm-delete").await?;
    let f = flash(c).await?;
    ensure(f.contains("Deleted dana@acme.test"), f)?;
    ensure(
        c.find_all(Locator::Css(&format!("tr[data-email='{new}']")))
            .await?
            .is_empty(),
        "the row is gone",
    )?;
    let freed = seats(c).await?;
    ensure(
        freed == "4 of 5 seats used",
        format!("seats after delete: {freed}"),
    )?;
    ensure(
        wait_for(c, "#invite-user").await?.is_enabled().await?,
        "invite enabled again",
    )?;

    // The picture of the page.
    let png = c.screenshot().await?;
    if let Some(dir) = screenshot.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(screenshot, png)?;

    // A viewer with only users:view sees the table but no management actions.
    sign_in_as(c, base, "erin@acme.test").await?;
    wait_for(c, "table#users").await?;
    ensure(
        c.find_all(Locator::Css("#invite-user")).await?.is_empty()
            && c.find_all(Locator::Css("a.edit")).await?.is_empty(),
        "no management actions for a viewer",
    )?;

    // A user without users:view is refused with 403 (D7).
    sign_in_as(c, base, "bob@acme.test").await?;
    let refused = text(c, "#refused").await?;
    ensure(refused.contains("403"), refused)?;
    ensure(
        c.find_all(Locator::Css("table#users")).await?.is_empty(),
        "no user table for bob",
    )?;
    let status = status_of(c, "/users").await?;
    ensure(status == 403, format!("GET /users as bob: {status}"))?;
    let status = status_of(c, "/outbox").await?;
    ensure(status == 403, format!("GET /outbox as bob: {status}"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_console_in_headless_chromium() {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: run `bash scripts/services.sh` (it installs Debian's chromium and chromium-driver)"
        );
    }
    let tmp = TempDir::new();

    // The console, exactly as the example builds it, on a temp database and a free port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let opened = app::open(app::Setup {
        db: tmp.0.join("console.db"),
        public_url: base.clone(),
        forward: None,
        mailer_label: "the in-memory mailer".to_owned(),
    })
    .await
    .unwrap();
    assert!(opened.seeded, "a new database is seeded");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app::serve(listener, opened.console, async {
        let _ = stopped.await;
    }));

    // chromedriver on a free port.
    let port = free_port();
    let log = std::fs::File::create(tmp.0.join("chromedriver.log")).unwrap();
    let driver = Driver(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let profile = tmp.0.join("chromium-profile");
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("cannot start headless Chromium through chromedriver: {e}"));

    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/admin_console.png");
    let outcome = flow(&client, &base, &screenshot).await;
    let page = if outcome.is_err() {
        client.source().await.unwrap_or_default()
    } else {
        String::new()
    };
    let _ = client.close().await;
    drop(driver);
    let _ = stop.send(());
    let _ = server.await;
    if let Err(e) = outcome {
        panic!("browser flow failed: {e}\n\n--- page source ---\n{page}");
    }
    assert!(screenshot.exists());
}
