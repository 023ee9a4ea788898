//! The admin console: the Settings → Users page of a demo tenant, in your browser, and
//! the same through the JSON API.
//!
//! Host glue only: the library serves the pages (`tenantry_axum::console`, nested at
//! `/console`) and the API (`tenantry_axum::api`, nested at `/api`, its OpenAPI document at
//! `/api/openapi.json`). This example brings what a host brings: the SQLite store (created
//! and seeded with a demo tenant on first start), the mailer, a demo sign-in of its own
//! (a signed cookie, no server sessions) with the `Identify` that reads it, and a server
//! with connection limits.
//!
//! ```text
//! cargo run --example admin_console -- [--db PATH] [--listen ADDR] [--public-url URL]
//!     [--header-timeout SECS] [--request-timeout SECS] [--body-limit BYTES]
//!     [--mailer memory|smtp] [--smtp-host HOST] [--smtp-port PORT]
//!     [--smtp-tls none|starttls|implicit] [--smtp-from ADDRESS]
//! ```
//!
//! `--mailer smtp` needs the `smtp` feature too (`--features smtp`). No page shows an
//! invitation's accept link (it is a secret for the invitee alone): to play the invited
//! person, deliver over SMTP to a local mail catcher and open the link from the mail.
//!
//! A host serving the console must limit its connections as this one does: a header-read
//! timeout, a request timeout and a body limit (see `host::serve`); without them a few
//! thousand half-sent requests hold every connection slot.

mod host;

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tenantry::Mailer;

const USAGE: &str = "usage: admin_console [--db PATH] [--listen ADDR] [--public-url URL] \
[--header-timeout SECS] [--request-timeout SECS] [--body-limit BYTES] [--mailer memory|smtp] \
[--smtp-host HOST] [--smtp-port PORT] [--smtp-tls none|starttls|implicit] [--smtp-from ADDRESS]

Serves the demo tenant's Settings -> Users page (the library console at /console/), the JSON
API (at /api, its OpenAPI document at /api/openapi.json) and a demo sign-in (/signin) whose
choice is kept in a signed cookie (HttpOnly, SameSite=Lax, Secure behind https).

  --db PATH        SQLite database file (default admin_console.db; created and seeded if new:
                   Acme Support, 5 seats, admin ada, templates Support agent and Sales
                   manager, erin with users:view, bob without access, carol invited)
  --listen ADDR    address to serve on (default 127.0.0.1:8080; port 0 picks a free one)
  --public-url URL the site's URL as browsers see it (default http://<listen address>);
                   invitation links point at URL/console/accept; https:// marks the
                   cookies Secure
  --header-timeout SECS  time a client has to send a request header (default 10)
  --request-timeout SECS time a whole request may take (default 30; then 408)
  --body-limit BYTES     largest request body (default 1048576; then 413)
  --mailer KIND    memory (default): invitations are recorded in this process only and no
                   page shows them (accept links are secrets); smtp: delivered over SMTP
                   (needs --features smtp), e.g. to a local mail catcher
  --smtp-host      SMTP server (default localhost)
  --smtp-port      SMTP port (default: 25, 587 or 465 by --smtp-tls)
  --smtp-tls       none, starttls (default) or implicit
  --smtp-from      sender mailbox (default \"Acme Support <no-reply@acme.test>\")

Restarting signs everyone out (the signing keys are made at start). Hosts serving the
console must set limits like these three (header-read and request timeouts, a body limit):
without them, a few thousand half-sent requests make a server unreachable.";

struct Args {
    db: PathBuf,
    listen: SocketAddr,
    public_url: Option<String>,
    limits: host::Limits,
    mailer: String,
    smtp_host: String,
    smtp_port: Option<u16>,
    smtp_tls: String,
    smtp_from: String,
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
        smtp_host: "localhost".to_owned(),
        smtp_port: None,
        smtp_tls: "starttls".to_owned(),
        smtp_from: "Acme Support <no-reply@acme.test>".to_owned(),
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
                if v != "memory" && v != "smtp" {
                    return Err(format!("--mailer {v:?}: use memory or smtp"));
                }
                args.mailer = v;
            }
            "--smtp-host" => args.smtp_host = value()?,
            "--smtp-port" => {
                let v = value()?;
                args.smtp_port = Some(
                    v.parse()
                        .map_err(|_| format!("--smtp-port {v:?} is not a port number"))?,
                );
            }
            "--smtp-tls" => args.smtp_tls = value()?,
            "--smtp-from" => args.smtp_from = value()?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

#[cfg(feature = "smtp")]
fn smtp_mailer(args: &Args) -> Result<(Arc<dyn Mailer>, String), String> {
    use tenantry::smtp::{SmtpConfig, SmtpMailer, TlsMode};
    let tls = match args.smtp_tls.as_str() {
        "none" => TlsMode::None,
        "starttls" => TlsMode::StartTls,
        "implicit" => TlsMode::Implicit,
        other => {
            return Err(format!(
                "--smtp-tls {other:?}: use none, starttls or implicit"
            ));
        }
    };
    let port = args.smtp_port.unwrap_or_else(|| tls.default_port());
    let mailer = SmtpMailer::new(
        SmtpConfig::new(args.smtp_host.clone(), args.smtp_from.clone())
            .with_tls(tls)
            .with_port(port),
    )
    .map_err(|e| format!("SMTP settings: {e}"))?;
    let label = format!("SMTP to {}:{port} ({tls})", args.smtp_host);
    Ok((Arc::new(mailer), label))
}

#[cfg(not(feature = "smtp"))]
fn smtp_mailer(_args: &Args) -> Result<(Arc<dyn Mailer>, String), String> {
    Err("--mailer smtp needs the smtp feature: cargo run --features smtp --example admin_console -- --mailer smtp".to_owned())
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
    let (mail, mailer_label) = if args.mailer == "smtp" {
        match smtp_mailer(&args) {
            Ok((m, label)) => (host::Mail::Transport(m), label),
            Err(e) => {
                eprintln!("admin_console: {e}");
                std::process::exit(2);
            }
        }
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
    println!("  Ctrl-C stops.");

    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    host::serve(listener, opened.host, args.limits, shutdown).await?;
    Ok(())
}
