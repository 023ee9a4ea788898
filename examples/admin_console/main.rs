//! The admin console: the Settings → Users page of a demo tenant, in your browser.
//!
//! An axum app on the tenantry service over the embedded SQLite store, guarded by
//! tenantry-axum. On first start it creates the database and seeds a demo tenant (Acme
//! Support, 5 seats) with its admin, two role templates, two active users and one pending
//! invitation. Then it prints the URL to open.
//!
//! ```text
//! cargo run --example admin_console -- [--db PATH] [--listen ADDR]
//!     [--mailer memory|smtp] [--smtp-host HOST] [--smtp-port PORT]
//!     [--smtp-tls none|starttls|implicit] [--smtp-from ADDRESS]
//! ```
//!
//! `--mailer smtp` needs the `smtp` feature too (`--features smtp`). With either
//! mailer the outbox page shows the accept links of the invitations sent since start.

mod app;

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tenantry::Mailer;

const USAGE: &str = "usage: admin_console [--db PATH] [--listen ADDR] [--mailer memory|smtp] \
[--smtp-host HOST] [--smtp-port PORT] [--smtp-tls none|starttls|implicit] [--smtp-from ADDRESS]

  --db PATH        SQLite database file (default admin_console.db; created and seeded if new)
  --listen ADDR    address to serve on (default 127.0.0.1:8080; port 0 picks a free one)
  --mailer KIND    memory (default): invitations are only recorded for the outbox page;
                   smtp: also delivered over SMTP (needs --features smtp)
  --smtp-host      SMTP server (default localhost)
  --smtp-port      SMTP port (default: 25, 587 or 465 by --smtp-tls)
  --smtp-tls       none, starttls (default) or implicit
  --smtp-from      sender mailbox (default \"Acme Support <no-reply@acme.test>\")";

struct Args {
    db: PathBuf,
    listen: SocketAddr,
    mailer: String,
    smtp_host: String,
    smtp_port: Option<u16>,
    smtp_tls: String,
    smtp_from: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        db: PathBuf::from("admin_console.db"),
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
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
    let (forward, mailer_label) = if args.mailer == "smtp" {
        match smtp_mailer(&args) {
            Ok((m, label)) => (Some(m), label),
            Err(e) => {
                eprintln!("admin_console: {e}");
                std::process::exit(2);
            }
        }
    } else {
        (
            None,
            "the in-memory mailer (nothing leaves this machine)".to_owned(),
        )
    };

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let mut shown = listener.local_addr()?;
    if shown.ip().is_unspecified() {
        shown.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let public_url = format!("http://{shown}");
    let opened = app::open(app::Setup {
        db: args.db.clone(),
        public_url: public_url.clone(),
        forward,
        mailer_label: mailer_label.clone(),
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
    println!("  Open {public_url}/ in your browser (Ctrl-C stops).");

    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    app::serve(listener, opened.console, shutdown).await?;
    Ok(())
}
