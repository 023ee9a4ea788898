//! The audit log (paged) and the delivery state of invitation mail (never a link or a body).

use std::collections::HashMap;

use axum::http::{StatusCode, Uri};
use axum::response::Response;
use maud::html;
use tenantry_service::{
    Action, ActorRef, Attribution, AuditRecord, AuditTarget, DeliveryState, FieldChange, Outcome,
    RoleTemplate, TemplateId, UserId, Value,
};

use super::super::ctx::{Ctx, Viewer};
use super::super::form::Fields;
use super::super::html::{self, Tone};
use super::users::{ok_or_page, viewer};

/// Events per page of the audit log.
const AUDIT_PAGE: u32 = 50;
/// Messages the delivery page shows.
const DELIVERIES: u32 = 100;

/// A snake_case serde name in words (`user_invited` → `user invited`).
fn words<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_else(|| "other".to_owned())
}

/// Names of the users and templates a page of events mentions.
struct Names<'a> {
    users: HashMap<UserId, String>,
    templates: &'a [RoleTemplate],
}

impl Names<'_> {
    fn user(&self, id: UserId) -> String {
        self.users
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("user {id}"))
    }

    fn template(&self, id: TemplateId) -> String {
        self.templates.iter().find(|t| t.id == id).map_or_else(
            || "a deleted template".to_owned(),
            |t| t.name.as_str().to_owned(),
        )
    }

    fn actor(&self, actor: ActorRef) -> String {
        match actor {
            ActorRef::User(id) => self.user(id),
            ActorRef::System => "the application (system)".to_owned(),
        }
    }

    fn target(&self, target: AuditTarget) -> String {
        match target {
            AuditTarget::Tenant => "the tenant".to_owned(),
            AuditTarget::User(id) => self.user(id),
            AuditTarget::Template(id) => format!("template {}", self.template(id)),
        }
    }

    fn value(&self, value: &Value) -> String {
        match value {
            Value::None => "none".to_owned(),
            Value::Text(t) => t.clone(),
            Value::Role(r) => r.to_string(),
            Value::Status(s) => s.to_string(),
            Value::Template(id) => self.template(*id),
            Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
            Value::Permissions(p) => html::permission_list(*p),
            Value::Number(n) => n.to_string(),
            Value::Time(t) => html::when(Some(*t)),
            Value::Users(ids) => format!("{} user(s)", ids.len()),
            #[allow(unreachable_patterns)]
            _ => "(other)".to_owned(),
        }
    }

    fn change(&self, c: &FieldChange) -> String {
        format!(
            "{}: {} → {}",
            words(&c.field),
            self.value(&c.before),
            self.value(&c.after)
        )
    }
}

async fn names<'a>(
    ctx: &Ctx,
    v: &Viewer,
    records: &[AuditRecord],
    templates: &'a [RoleTemplate],
) -> Names<'a> {
    let mut ids: Vec<UserId> = Vec::new();
    for r in records {
        if let ActorRef::User(id) = r.event.actor {
            ids.push(id);
        }
        if let AuditTarget::User(id) = r.event.target {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let mut users = HashMap::new();
    for id in ids {
        let email = match ctx.app().attribution(v.tenant, id).await {
            Ok(Some(Attribution::User(u))) => u.email.as_str().to_owned(),
            Ok(Some(Attribution::Deleted(t))) => format!("{} (deleted)", t.email),
            _ => continue,
        };
        users.insert(id, email);
    }
    Names { users, templates }
}

/// `GET /audit?after=<seq>`: the audit log, oldest first, a page at a time.
pub(crate) async fn audit(ctx: Ctx, uri: Uri) -> Response {
    let v = viewer!(ctx, Action::View);
    let q = Fields::query(&uri);
    let (after, note) = match q.non_empty("after").map(str::parse::<u64>) {
        None => (0, None),
        Some(Ok(n)) => (n, None),
        Some(Err(_)) => (
            0,
            Some("The page link is not valid; showing the first page."),
        ),
    };
    let app = ctx.app();
    let records = ok_or_page!(
        ctx,
        v,
        app.audit_log(v.tenant, v.actor(), after, AUDIT_PAGE).await
    );
    let templates = ok_or_page!(ctx, v, app.templates(v.tenant, v.actor()).await);
    let names = names(&ctx, &v, &records, &templates).await;
    let next = (records.len() == AUDIT_PAGE as usize)
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    let body = html! {
        h1 { "Audit log" }
        div.crumb { a href=(ctx.url("/users")) { "Settings → Users" } " → Audit log" }
        @if let Some(n) = note { (html::message(Tone::Warn, n)) }
        p.muted.small { "Every change and every refused attempt, oldest first. Records cannot be changed or removed." }
        table #audit {
            caption { "Audit events" }
            thead {
                tr {
                    th scope="col" { "#" }
                    th scope="col" { "When" }
                    th scope="col" { "Who" }
                    th scope="col" { "What" }
                    th scope="col" { "About" }
                    th scope="col" { "Outcome" }
                    th scope="col" { "Changes" }
                }
            }
            tbody {
                @if records.is_empty() {
                    tr { td.muted colspan="7" { "No events on this page." } }
                }
                @for r in &records {
                    tr.event data-action=(words(&r.event.action)) {
                        td { (r.seq) }
                        td { (html::when(Some(r.event.at))) }
                        td.actor { (names.actor(r.event.actor)) }
                        td.action { (words(&r.event.action)) }
                        td.target { (names.target(r.event.target)) }
                        td.outcome {
                            @match &r.event.outcome {
                                Outcome::Success => "done",
                                Outcome::Refused { rule, message } => {
                                    "refused (" (rule.name().replace('_', " ")) ", " (rule.id()) "): " (message)
                                }
                            }
                        }
                        td.changes.small {
                            @if r.event.changes.is_empty() { span.muted { "—" } }
                            @else {
                                ul.plain {
                                    @for c in &r.event.changes { li { (names.change(c)) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        nav.toolbar aria-label="Pages" {
            @if after > 0 {
                a #first-page.button href=(ctx.url("/audit")) { "First page" }
            }
            @if let Some(n) = next {
                a #next-page.button href=(ctx.url(&format!("/audit?after={n}"))) { "Next page →" }
            }
        }
    };
    ctx.page(Some(&v), StatusCode::OK, "Audit log", "", body)
}

/// A delivery error as the page may show it: anything that looks like an accept link's
/// token is hidden ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)).
fn without_tokens(text: &str) -> String {
    let mut parts = text.split("token=");
    let mut out = parts.next().unwrap_or("").to_owned();
    for rest in parts {
        out.push_str("token=[hidden]");
        out.push_str(rest.trim_start_matches(|c: char| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '%')
        }));
    }
    out
}

/// `GET /deliveries`: invitation mail with its delivery state: recipient, state, attempts,
/// last error. Never a link or a body.
pub(crate) async fn deliveries(ctx: Ctx) -> Response {
    let v = viewer!(ctx, Action::View);
    let records = ok_or_page!(ctx, v, ctx.app().outbox(v.tenant, false, DELIVERIES).await);
    let body = html! {
        h1 { "Invitation delivery" }
        div.crumb { a href=(ctx.url("/users")) { "Settings → Users" } " → Invitation delivery" }
        p.muted.small {
            "Invitation emails and whether they arrived. Accept links are secrets: they go to the \
             invited address only and are never shown here."
        }
        table #deliveries {
            caption { "Invitation emails" }
            thead {
                tr {
                    th scope="col" { "To" }
                    th scope="col" { "Queued" }
                    th scope="col" { "State" }
                    th scope="col" { "Attempts" }
                    th scope="col" { "Last error" }
                }
            }
            tbody {
                @if records.is_empty() {
                    tr { td.muted colspan="5" { "No invitations sent yet." } }
                }
                @for r in &records {
                    tr data-to=(r.message.to) {
                        td.to { (r.message.to) }
                        td { (html::when(Some(r.created_at))) }
                        td.state {
                            @match &r.state {
                                DeliveryState::Pending => "pending",
                                DeliveryState::Sent { at } => { "sent " (html::when(Some(*at))) }
                                DeliveryState::Failed { reason, .. } => { "failed: " (without_tokens(reason)) }
                            }
                        }
                        td.attempts { (r.attempts) }
                        td.last-error {
                            @match &r.last_error {
                                Some(e) => (without_tokens(e)),
                                None => span.muted { "—" },
                            }
                        }
                    }
                }
            }
        }
    };
    ctx.page(Some(&v), StatusCode::OK, "Invitation delivery", "", body)
}

#[cfg(test)]
mod tests {
    use super::without_tokens;

    #[test]
    fn tokens_are_hidden_from_errors() {
        let text = "550 rejected https://x.test/accept?token=abc.DEF-123_x body token=zz9 end";
        let shown = without_tokens(text);
        assert!(!shown.contains("abc.DEF-123_x"));
        assert!(!shown.contains("zz9"));
        assert_eq!(shown.matches("token=[hidden]").count(), 2);
        assert!(shown.starts_with("550 rejected") && shown.ends_with(" end"));
    }
}
