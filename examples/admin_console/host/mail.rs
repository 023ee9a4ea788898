//! The example's mailers: SMTP (with credentials from the environment, never the command
//! line) and a mail folder (lettre's file transport through `tenantry_smtp::LettreMailer`),
//! where the demo's invitations land as `.eml` files a person can open to accept.
#![cfg_attr(
    test,
    allow(
        dead_code,
        reason = "each test binary that includes the host uses part of it"
    )
)]

use std::path::Path;
use std::sync::Arc;

use lettre::{AsyncFileTransport, Tokio1Executor};
use tenantry::Mailer;
use tenantry_smtp::{Credentials, LettreMailer, SmtpConfig, SmtpMailer, TlsMode};

/// The environment variable holding the SMTP user name.
pub(crate) const USER_VAR: &str = "ADMIN_CONSOLE_SMTP_USER";
/// The environment variable holding the SMTP password.
pub(crate) const PASSWORD_VAR: &str = "ADMIN_CONSOLE_SMTP_PASSWORD";

/// SMTP settings from the command line (everything but the credentials).
#[derive(Debug, Clone)]
pub(crate) struct SmtpArgs {
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    pub(crate) tls: String,
    pub(crate) from: String,
}

/// Credentials from the two variables' values: both set, or neither. An empty value counts
/// as unset. The error never holds the password.
pub(crate) fn credentials(
    user: Option<String>,
    password: Option<String>,
) -> Result<Option<Credentials>, String> {
    let user = user.filter(|u| !u.is_empty());
    let password = password.filter(|p| !p.is_empty());
    match (user, password) {
        (Some(u), Some(p)) => Ok(Some(Credentials::new(u, p))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(format!("{USER_VAR} is set but {PASSWORD_VAR} is not")),
        (None, Some(_)) => Err(format!("{PASSWORD_VAR} is set but {USER_VAR} is not")),
    }
}

/// The SMTP mailer for `args`, authenticating with `credentials` when given (which needs
/// TLS: the mailer refuses to send a password over a plain connection).
pub(crate) fn smtp(
    args: &SmtpArgs,
    credentials: Option<Credentials>,
) -> Result<(Arc<dyn Mailer>, String), String> {
    let tls = match args.tls.as_str() {
        "none" => TlsMode::None,
        "starttls" => TlsMode::StartTls,
        "implicit" => TlsMode::Implicit,
        other => {
            return Err(format!(
                "--smtp-tls {other:?}: use none, starttls or implicit"
            ));
        }
    };
    let port = args.port.unwrap_or_else(|| tls.default_port());
    let auth = credentials
        .as_ref()
        .map(|c| format!(", as {}", c.user()))
        .unwrap_or_default();
    let mut config = SmtpConfig::new(args.host.clone(), args.from.clone())
        .with_tls(tls)
        .with_port(port);
    if let Some(c) = credentials {
        config = config.with_credentials(c);
    }
    let mailer = SmtpMailer::new(config).map_err(|e| format!("SMTP settings: {e}"))?;
    let label = format!("SMTP to {}:{port} ({tls}{auth})", args.host);
    Ok((Arc::new(mailer), label))
}

/// A mailer writing each message as an `.eml` file into `dir` (created if missing).
pub(crate) fn folder(dir: &Path, from: &str) -> Result<(Arc<dyn Mailer>, String), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("--mail-dir {}: {e}", dir.display()))?;
    let mailer = LettreMailer::new(AsyncFileTransport::<Tokio1Executor>::new(dir), from)
        .map_err(|e| format!("--smtp-from: {e}"))?;
    let label = format!(
        "into {} (one .eml file per message; open one to accept an invitation)",
        dir.display()
    );
    Ok((Arc::new(mailer), label))
}
