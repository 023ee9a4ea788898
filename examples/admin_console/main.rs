//! The admin console: the Settings → Users page of a demo tenant, in your browser, and
//! the same through the JSON API.
//!
//! Host glue only: the library serves the pages (`tenantry_axum::console`, nested at
//! `/console`) and the API (`tenantry_axum::api`, nested at `/api`, its OpenAPI document at
//! `/api/openapi.json`). This example brings what a host brings: the SQLite store (created
//! and seeded with a demo tenant on first start, and a second tenant where ada is a user
//! too), the mailer, a demo sign-in of its own (an address, then a tenant picker when the
//! address is a user of several tenants; a signed cookie, no server sessions) with the
//! `Identify` that reads it, the operators' tenant list at `/operator/tenants` (every tenant,
//! paged by name; in this demo any active admin may open it, a real host puts its own
//! operator authentication in front), and a server with connection limits.
//!
//! ```text
//! cargo run --example admin_console -- [--db PATH] [--listen ADDR] [--public-url URL]
//!     [--header-timeout SECS] [--request-timeout SECS] [--body-limit BYTES]
//!     [--mailer memory|file|smtp] [--mail-dir DIR] [--smtp-host HOST] [--smtp-port PORT]
//!     [--smtp-tls none|starttls|implicit] [--smtp-from ADDRESS]
//! ```
//!
//! No page shows an invitation's accept link (it is a secret for the invitee alone): to
//! play the invited person, run with `--mailer file` and open the `.eml` file it writes
//! into `admin_console_mail/`, or deliver over SMTP (credentials from the environment:
//! `ADMIN_CONSOLE_SMTP_USER`, `ADMIN_CONSOLE_SMTP_PASSWORD`).
//!
//! A host serving the console must limit its connections as this one does: a header-read
//! timeout, a request timeout and a body limit (see `host::serve`); without them a few
//! thousand half-sent requests hold every connection slot.

mod host;

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

const USAGE: &str = "usage: admin_console [--db PATH] [--listen ADDR] [--public-url URL] \
[--header-timeout SECS] [--request-timeout SECS] [--body-limit BYTES] [--mailer memory|file|smtp] \
[--mail-dir DIR] [--smtp-host HOST] [--smtp-port PORT] [--smtp-tls none|starttls|implicit] \
[--smtp-from ADDRESS]

Serves the demo tenant's Settings -> Users page (the library console at /console/), the JSON
API (at /api, its OpenAPI document at /api/openapi.json) and a demo sign-in (/signin: an
address, then a choice of tenant when that address is a user of several) whose choice is kept
in a signed cookie (HttpOnly, SameSite=Lax, Secure behind https), and the operators' tenant
list (/operator/tenants: every tenant by name, paged; in this demo any active admin may open
it, a real host puts its own operator sign-in in front).

  --db PATH        SQLite database file (default admin_console.db; created and seeded if new:
                   Acme Support, 5 seats, admin ada, templates Support agent and Sales
                   manager, erin with users:view, bob without access, carol invited; and
                   Globex Sales, admin gil, where ada is a user too)
  --listen ADDR    address to serve on (default 127.0.0.1:8080; port 0 picks a free one)
  --public-url URL the site's URL as browsers see it (default http://<listen address>);
                   invitation links point at URL/console/accept; https:// marks the
                   cookies Secure
  --header-timeout SECS  time a client has to send a request header (default 10)
  --request-timeout SECS time a whole request may take (default 30; then 408)
  --body-limit BYTES     largest request body (default 1048576; then 413)
  --mailer KIND    memory (default): invitations are recorded in this process only and no
                   page shows them (accept links are secrets); file: each message is
                   written as an .eml file into --mail-dir (open one to accept as the
                   invitee); smtp: delivered over SMTP
  --mail-dir DIR   where --mailer file writes (default admin_console_mail)
  --smtp-host      SMTP server (default localhost)
  --smtp-port      SMTP port (default: 25, 587 or 465 by --smtp-tls)
  --smtp-tls       none, starttls (default) or implicit
  --smtp-from      sender mailbox (default \"Acme Support <no-reply@acme.test>\")

SMTP credentials come from the environment only (never the command line, where other users
of the machine can read them): ADMIN_CONSOLE_SMTP_USER and ADMIN_CONSOLE_SMTP_PASSWORD, both
or neither. They need --smtp-tls starttls or implicit: the mailer never sends a password over
a plain connection.

Restarting signs everyone out (the signing keys are made at start). Hosts serving the
console must set limits like these three (header-read and request timeouts, a body limit):
without them, a few thousand half-sent requests make a server unreachable.";

struct Args {
    db: PathBuf,
    listen: SocketAddr,
    public_url: Option<String>,
    limits: host::Limits,
    mailer: String,
    smtp: host::mail::SmtpArgs,
    mail_dir: PathBuf,
}

fn seconds(flag: &str, v: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "{flag} {v:?}: give seconds, more than 0 and at most 86400"
        )),
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        db: PathBuf::from("admin_console.db"),
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        public_url: None,
        limits: host::Limits::default(),
        mailer: "memory".to_owned(),
        smtp: host::mail::SmtpArgs {
            host: "localhost".to_owned(),
            port: None,
            tls: "starttls".to_owned(),
            from: "Acme Support <no-reply@acme.test>".to_owned(),
        },
        mail_dir: PathBuf::from("admin_console_mail"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--db" => args.db = PathBuf::from(value()?),
            "--listen" => {
                let v = value()?;
                args.listen = v
                    .parse()
                    .map_err(|_| format!("--listen {v:?} is not an address like 127.0.0.1:8080"))?;
            }
            "--public-url" => {
                let v = value()?;
                if !(v.starts_with("http://") || v.starts_with("https://")) {
                    return Err(format!(
                        "--public-url {v:?}: start it with http:// or https://"
                    ));
                }
                args.public_url = Some(v.trim_end_matches('/').to_owned());
            }
            "--header-timeout" => args.limits.header_read = seconds(&flag, &value()?)?,
            "--request-timeout" => args.limits.request = seconds(&flag, &value()?)?,
            "--body-limit" => {
                let v = value()?;
                args.limits.body =
                    v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("--body-limit {v:?} is not a positive byte count")
                    })?;
            }
            "--mailer" => {
                let v = value()?;
                if !["memory", "file", "smtp"].contains(&v.as_str()) {
                    return Err(format!("--mailer {v:?}: use memory, file or smtp"));
                }
                args.mailer = v;
            }
            "--mail-dir" => args.mail_dir = PathBuf::from(value()?),
            "--smtp-host" => args.smtp.host = value()?,
            "--smtp-port" => {
                let v = value()?;
                args.smtp.port = Some(
                    v.parse()
                        .map_err(|_| format!("--smtp-port {v:?} is not a port number"))?,
                );
            }
            "--smtp-tls" => args.smtp.tls = value()?,
            "--smtp-from" => args.smtp.from = value()?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            // Ignore a closed pipe (`--help | head`).
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return Ok(());
        }
        Err(e) => {
            eprintln!("admin_console: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let transport = match args.mailer.as_str() {
        "smtp" => host::mail::credentials(
            std::env::var(host::mail::USER_VAR).ok(),
            std::env::var(host::mail::PASSWORD_VAR).ok(),
        )
        .and_then(|c| host::mail::smtp(&args.smtp, c))
        .map(Some),
        "file" => host::mail::folder(&args.mail_dir, &args.smtp.from).map(Some),
        _ => Ok(None),
    };
    let (mail, mailer_label) = if let Some((m, label)) = match transport {
        Ok(t) => t,
        Err(e) => {
            eprintln!("admin_console: {e}");
            std::process::exit(2);
        }
    } {
        (host::Mail::Transport(m), label)
    } else {
        (
            host::Mail::Memory,
            "in memory (nothing leaves this machine; no page shows the mail)".to_owned(),
        )
    };

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let mut shown = listener.local_addr()?;
    if shown.ip().is_unspecified() {
        shown.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{shown}"));
    let opened = host::open(host::Setup {
        db: args.db.clone(),
        public_url: public_url.clone(),
        mail,
    })
    .await?;

    println!("tenantry admin console: Settings → Users");
    println!(
        "  database: {}{}",
        args.db.display(),
        if opened.seeded {
            " (new: seeded with the demo tenant Acme Support)"
        } else {
            ""
        }
    );
    println!("  mail:     {mailer_label}");
    println!(
        "  demo users: ada@acme.test (admin), erin@acme.test (users:view only), bob@acme.test (no access to the page), carol@acme.test (invited)"
    );
    println!(
        "  ada@acme.test is also a user of Globex Sales (admin gil@globex.test): signing in with her address shows a tenant picker"
    );
    println!();
    println!(
        "  Console:  {public_url}/  (sign in, then Settings → Users at {public_url}{})",
        host::CONSOLE_HOME
    );
    println!(
        "  API:      {public_url}{}/  (OpenAPI document: {public_url}{}/openapi.json)",
        host::API,
        host::API
    );
    println!(
        "  Tenants:  {public_url}{}  (the operators' list; demo: signed in as an active admin)",
        host::tenants::PATH
    );
    println!("  Ctrl-C stops.");

    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    host::serve(listener, opened.host, args.limits, shutdown).await?;
    Ok(())
}
