//! The tenant's webhook endpoints (feature `webhooks`): the list with each endpoint's
//! delivery state, and the forms to register one, rotate its secret, enable, disable and
//! remove it. For active admins only; [`tenantry_webhooks::Webhooks`] checks the actor and
//! records every change in the audit log (a refused one too).
//!
//! A secret is shown once: on the page answering the register or rotate form that made it.
//! No other page, no redirect, no log line and no error holds it.

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use maud::{Markup, html};
use tenantry_service::{Action, AuditAction, Role};
use tenantry_webhooks::{
    DeliveryStatus, Endpoint, EndpointId, EndpointUpdate, WebhookError, Webhooks, event_kind,
};

use super::super::Console;
use super::super::ctx::{Ctx, Viewer, sentence};
use super::super::form::Fields;
use super::super::html::{self, Tone};
use super::users::viewer;

/// The event kinds an endpoint can ask for (none checked: all of them).
const KINDS: [AuditAction; 16] = [
    AuditAction::TenantCreated,
    AuditAction::UserLimitChanged,
    AuditAction::TenantRenamed,
    AuditAction::UserInvited,
    AuditAction::InvitationResent,
    AuditAction::InvitationAccepted,
    AuditAction::AcceptAttemptFailed,
    AuditAction::SignedIn,
    AuditAction::UserEdited,
    AuditAction::UserDeleted,
    AuditAction::TemplateCreated,
    AuditAction::TemplateEdited,
    AuditAction::TemplateDeleted,
    AuditAction::WebhookEndpointAdded,
    AuditAction::WebhookEndpointChanged,
    AuditAction::WebhookEndpointRemoved,
];

/// The page's own style rules (covered by the page's CSP hash).
const CSS: &str = "
.secret{display:block;margin:8px 0;padding:8px 10px;font-size:14px;word-break:break-all;background:#fffbeb;border:1px solid #fcd34d}
fieldset.kinds{display:flex;flex-wrap:wrap;gap:4px 18px}
fieldset.kinds label{font-weight:normal;white-space:nowrap}
td.url{word-break:break-all;max-width:360px}
";

/// The webhook routes, added when the host gave the console a [`Webhooks`].
pub(in crate::console) fn routes(router: axum::Router<Console>) -> axum::Router<Console> {
    router
        .route("/webhooks", get(list).post(register))
        .route("/webhooks/{id}/rotate", post(rotate))
        .route("/webhooks/{id}/enable", post(enable))
        .route("/webhooks/{id}/disable", post(disable))
        .route("/webhooks/{id}/remove", post(remove))
}

/// What a POST did, as the fixed code its redirect carries (`?done=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Enabled,
    Disabled,
    Removed,
}

impl Done {
    fn code(self) -> &'static str {
        match self {
            Done::Enabled => "enabled",
            Done::Disabled => "disabled",
            Done::Removed => "removed",
        }
    }

    fn parse(code: &str) -> Option<Done> {
        [Done::Enabled, Done::Disabled, Done::Removed]
            .into_iter()
            .find(|d| d.code() == code)
    }

    fn text(self) -> &'static str {
        match self {
            Done::Enabled => {
                "The endpoint was enabled. Its failures were cleared; delivery resumes after the \
                 last event it received."
            }
            Done::Disabled => {
                "The endpoint was disabled. Nothing is sent to it until it is enabled."
            }
            Done::Removed => "The endpoint was removed. Nothing more is sent to it.",
        }
    }
}

/// A secret to show this once, with what made it.
struct Fresh<'a> {
    /// The endpoint's URL.
    url: &'a str,
    /// The secret's text.
    secret: &'a str,
    /// Until when the replaced secret keeps signing (a rotation with a grace period).
    previous_until: Option<time::OffsetDateTime>,
}

/// What the register form holds (kept when it is shown again with an error).
#[derive(Default)]
struct Draft {
    url: String,
    kinds: Vec<AuditAction>,
}

/// The admin use cases, when the host configured them (the routes exist only then).
fn admin(console: &Console) -> Option<&Webhooks> {
    console.config.webhooks.as_ref()
}

/// An error of the webhooks crate as the console shows refusals: the status and a sentence
/// (`None`: a failure page instead, for a store that failed).
fn refusal(error: &WebhookError) -> Option<(StatusCode, String)> {
    let status = match error {
        WebhookError::NotAllowed => StatusCode::FORBIDDEN,
        WebhookError::NotFound => StatusCode::NOT_FOUND,
        WebhookError::InvalidUrl { .. } | WebhookError::NegativeGrace => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        _ => return None,
    };
    Some((status, sentence(&error.to_string())))
}

/// The page for an error that is not shown in a form.
fn failure(ctx: &Ctx, v: &Viewer, error: &WebhookError) -> Response {
    if let Some((status, text)) = refusal(error) {
        return ctx.error_page(Some(v), status, super::super::ctx::title_of(status), &text);
    }
    // A store failed or the random source did: the detail (never a secret: the crate's
    // errors hold none) goes to the log, the page says only that it is unavailable.
    tracing::error!(target: "tenantry_axum::console", error = %error, "webhook request failed");
    ctx.error_page(
        Some(v),
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "The webhook settings are unavailable right now. Nothing was changed. Try again shortly.",
    )
}

/// `403` for a signed-in user who is not an active admin.
fn not_admin(ctx: &Ctx, v: &Viewer) -> Response {
    ctx.error_page(
        Some(v),
        StatusCode::FORBIDDEN,
        "403 · Only admins manage webhooks",
        "Only an active admin of the tenant manages its webhooks.",
    )
}

/// The tenant's endpoints with their delivery state, oldest first.
async fn load(
    hooks: &Webhooks,
    v: &Viewer,
) -> Result<Vec<(Endpoint, DeliveryStatus)>, WebhookError> {
    let endpoints = hooks.list(v.tenant, v.actor()).await?;
    let mut rows = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        match hooks.endpoint_status(v.tenant, endpoint.id).await {
            Ok((endpoint, status)) => rows.push((endpoint, status)),
            // Removed meanwhile.
            Err(WebhookError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(rows)
}

/// `GET /webhooks`: the endpoints and the register form.
pub(in crate::console) async fn list(
    State(console): State<Console>,
    ctx: Ctx,
    uri: Uri,
) -> Response {
    let v = viewer!(ctx, Action::View);
    let Some(hooks) = admin(&console) else {
        return super::not_found(ctx).await;
    };
    if v.role != Role::Admin {
        return not_admin(&ctx, &v);
    }
    let q = Fields::query(&uri);
    let done = q.get("done").and_then(Done::parse);
    let notice = done.map(|d| html::message(Tone::Ok, d.text()));
    match load(hooks, &v).await {
        Ok(rows) => render(
            &ctx,
            &v,
            StatusCode::OK,
            &rows,
            notice,
            None,
            &Draft::default(),
            None,
        ),
        Err(e) => failure(&ctx, &v, &e),
    }
}

/// The checked event kinds of the register form (`event-<kind>` boxes).
fn kinds(fields: &Fields) -> Vec<AuditAction> {
    KINDS
        .into_iter()
        .filter(|k| fields.checked(&format!("event-{}", event_kind(*k))))
        .collect()
}

/// `POST /webhooks`: registers an endpoint; the answer shows its secret, once.
pub(in crate::console) async fn register(
    State(console): State<Console>,
    ctx: Ctx,
    fields: Fields,
) -> Response {
    let v = viewer!(ctx, Action::View);
    let Some(hooks) = admin(&console) else {
        return super::not_found(ctx).await;
    };
    let draft = Draft {
        url: fields.get("url").unwrap_or("").trim().to_owned(),
        kinds: kinds(&fields),
    };
    match hooks
        .register(v.tenant, v.actor(), &draft.url, &draft.kinds)
        .await
    {
        Ok(made) => {
            let rows = match load(hooks, &v).await {
                Ok(rows) => rows,
                Err(e) => return failure(&ctx, &v, &e),
            };
            let fresh = Fresh {
                url: &made.endpoint.url,
                secret: made.secret.expose(),
                previous_until: None,
            };
            render(
                &ctx,
                &v,
                StatusCode::CREATED,
                &rows,
                None,
                None,
                &Draft::default(),
                Some(&fresh),
            )
        }
        // A bad URL is shown in the form, which keeps what was typed.
        Err(e @ WebhookError::InvalidUrl { .. }) => match load(hooks, &v).await {
            Ok(rows) => render(
                &ctx,
                &v,
                StatusCode::UNPROCESSABLE_ENTITY,
                &rows,
                None,
                Some(&sentence(&e.to_string())),
                &draft,
                None,
            ),
            Err(e) => failure(&ctx, &v, &e),
        },
        Err(e) => failure(&ctx, &v, &e),
    }
}

/// The endpoint id of a path (`None`: not one, so no such endpoint).
fn endpoint_id(text: &str) -> Option<EndpointId> {
    text.parse().ok()
}

/// `POST /webhooks/{id}/rotate`: a new secret, shown once; the old one keeps signing for
/// the configured grace period.
pub(in crate::console) async fn rotate(
    State(console): State<Console>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Response {
    let v = viewer!(ctx, Action::View);
    let Some(hooks) = admin(&console) else {
        return super::not_found(ctx).await;
    };
    let Some(id) = endpoint_id(&id) else {
        return failure(&ctx, &v, &WebhookError::NotFound);
    };
    let grace = console.config.rotation_grace;
    let secret = match hooks.rotate_secret(v.tenant, v.actor(), id, grace).await {
        Ok(s) => s,
        Err(e) => return failure(&ctx, &v, &e),
    };
    let rows = match load(hooks, &v).await {
        Ok(rows) => rows,
        Err(e) => return failure(&ctx, &v, &e),
    };
    let url = rows
        .iter()
        .find(|(e, _)| e.id == id)
        .map_or("the endpoint", |(e, _)| e.url.as_str());
    let fresh = Fresh {
        url,
        secret: secret.expose(),
        previous_until: grace.is_positive().then(|| ctx.app().now() + grace),
    };
    render(
        &ctx,
        &v,
        StatusCode::OK,
        &rows,
        None,
        None,
        &Draft::default(),
        Some(&fresh),
    )
}

async fn set_enabled(console: &Console, ctx: Ctx, id: &str, enabled: bool) -> Response {
    let v = viewer!(ctx, Action::View);
    let Some(hooks) = admin(console) else {
        return super::not_found(ctx).await;
    };
    let Some(id) = endpoint_id(id) else {
        return failure(&ctx, &v, &WebhookError::NotFound);
    };
    let update = EndpointUpdate {
        enabled: Some(enabled),
        ..EndpointUpdate::default()
    };
    match hooks.update(v.tenant, v.actor(), id, &update).await {
        Ok(_) => {
            let done = if enabled {
                Done::Enabled
            } else {
                Done::Disabled
            };
            ctx.see_other(&format!("/webhooks?done={}", done.code()))
        }
        Err(e) => failure(&ctx, &v, &e),
    }
}

/// `POST /webhooks/{id}/enable`: delivers to the endpoint again (its failures cleared).
pub(in crate::console) async fn enable(
    State(console): State<Console>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Response {
    set_enabled(&console, ctx, &id, true).await
}

/// `POST /webhooks/{id}/disable`: stops delivering to the endpoint.
pub(in crate::console) async fn disable(
    State(console): State<Console>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Response {
    set_enabled(&console, ctx, &id, false).await
}

/// `POST /webhooks/{id}/remove`: removes the endpoint.
pub(in crate::console) async fn remove(
    State(console): State<Console>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Response {
    let v = viewer!(ctx, Action::View);
    let Some(hooks) = admin(&console) else {
        return super::not_found(ctx).await;
    };
    let Some(id) = endpoint_id(&id) else {
        return failure(&ctx, &v, &WebhookError::NotFound);
    };
    match hooks.remove(v.tenant, v.actor(), id).await {
        Ok(()) => ctx.see_other(&format!("/webhooks?done={}", Done::Removed.code())),
        Err(e) => failure(&ctx, &v, &e),
    }
}

/// The event kinds of an endpoint, in words.
fn kinds_text(events: &[AuditAction]) -> Markup {
    html! {
        @if events.is_empty() {
            "all events"
        } @else {
            @for (i, k) in events.iter().enumerate() {
                @if i > 0 { ", " }
                code { (event_kind(*k)) }
            }
        }
    }
}

/// Where an endpoint's delivery stands, never a body or a secret.
fn delivery(endpoint: &Endpoint, status: &DeliveryStatus) -> Markup {
    html! {
        ul.plain.small {
            li {
                "Delivered up to audit event "
                span.delivered { "#" (status.delivered_seq) }
            }
            @if status.attempts > 0 {
                li { "Failed attempts in a row: " (status.attempts) }
            }
            @if let Some(error) = &status.last_error {
                li.last-error { "Last error: " (error) }
            }
            @if let Some(since) = status.failing_since {
                li { "Failing since " (html::when(Some(since))) }
            }
            @if endpoint.enabled {
                @if let Some(next) = status.next_attempt_at {
                    li.next-attempt { "Next attempt " (html::when(Some(next))) }
                }
            } @else if let Some(at) = status.disabled_at {
                li.disabled-reason {
                    "Disabled automatically " (html::when(Some(at)))
                    " after failing too long; enable it to retry the backlog."
                }
            } @else {
                li.disabled-reason { "Disabled by an admin." }
            }
        }
    }
}

/// The page: the endpoints, then the register form; `fresh`: a secret to show this once.
#[allow(clippy::too_many_arguments)]
fn render(
    ctx: &Ctx,
    v: &Viewer,
    status: StatusCode,
    rows: &[(Endpoint, DeliveryStatus)],
    notice: Option<Markup>,
    error: Option<&str>,
    draft: &Draft,
    fresh: Option<&Fresh<'_>>,
) -> Response {
    let token = ctx.csrf();
    let body = html! {
        h1 { "Webhooks" }
        div.crumb { a href=(ctx.url("/users")) { "Settings → Users" } " → Webhooks" }
        p.muted {
            "Each endpoint receives the tenant's audit events as signed POST requests "
            "(Standard Webhooks: " code { "webhook-id" } ", " code { "webhook-timestamp" } ", "
            code { "webhook-signature" } ")."
        }
        @if let Some(n) = &notice { (n) }
        @if let Some(f) = fresh {
            div.card #fresh-secret {
                h2 { "Signing secret for " (f.url) }
                p { strong { "Copy it now: it is shown only this once." }
                    " Give it to the receiver to check the " code { "webhook-signature" } " header." }
                code.secret #new-secret { (f.secret) }
                @if let Some(until) = f.previous_until {
                    p.hint { "The previous secret keeps signing beside it until "
                        (html::when(Some(until))) ", so the receiver can switch without refusing a delivery." }
                }
            }
        }
        @if let Some(e) = error { (html::message(Tone::Error, e)) }
        @if rows.is_empty() {
            p #no-endpoints { "No endpoint is registered." }
        } @else {
            table #endpoints {
                caption { "Endpoints" }
                thead {
                    tr {
                        th scope="col" { "URL" }
                        th scope="col" { "Events" }
                        th scope="col" { "State" }
                        th scope="col" { "Delivery" }
                        th scope="col" { "Actions" }
                    }
                }
                tbody {
                    @for (endpoint, state) in rows {
                        @let base = ctx.url(&format!("/webhooks/{}", endpoint.id));
                        tr data-endpoint=(endpoint.id) {
                            td.url { (endpoint.url) }
                            td.events { (kinds_text(&endpoint.events)) }
                            td.state {
                                @if endpoint.enabled {
                                    span.badge.active { "enabled" }
                                } @else {
                                    span.badge.suspended { "disabled" }
                                }
                            }
                            td.delivery { (delivery(endpoint, state)) }
                            td.actions {
                                form method="post" action={(base) "/rotate"} {
                                    (html::csrf_field(&token))
                                    button.link.rotate type="submit" {
                                        "Rotate secret"
                                        span.visually-hidden { " of " (endpoint.url) }
                                    }
                                }
                                @if endpoint.enabled {
                                    form method="post" action={(base) "/disable"} {
                                        (html::csrf_field(&token))
                                        button.link.disable type="submit" {
                                            "Disable"
                                            span.visually-hidden { " " (endpoint.url) }
                                        }
                                    }
                                } @else {
                                    form method="post" action={(base) "/enable"} {
                                        (html::csrf_field(&token))
                                        button.link.enable type="submit" {
                                            "Enable"
                                            span.visually-hidden { " " (endpoint.url) }
                                        }
                                    }
                                }
                                form method="post" action={(base) "/remove"} {
                                    (html::csrf_field(&token))
                                    button.link.remove type="submit" {
                                        "Remove"
                                        span.visually-hidden { " " (endpoint.url) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        div.card {
            h2 { "Register an endpoint" }
            form #register-form.stack method="post" action=(ctx.url("/webhooks")) {
                (html::csrf_field(&token))
                label.field for="url" { "URL" }
                input #url type="text" name="url" value=(draft.url) autocomplete="off"
                    inputmode="url" maxlength="2000" aria-describedby="url-hint";
                p.hint #url-hint { "An absolute http or https URL, without a user or password in it." }
                fieldset.kinds {
                    legend { "Event kinds (none checked: all events)" }
                    @for k in KINDS {
                        @let name = event_kind(k);
                        label for={"event-" (name)} {
                            input #{"event-" (name)} type="checkbox" name={"event-" (name)}
                                checked[draft.kinds.contains(&k)];
                            " " (name)
                        }
                    }
                }
                div.actions-row {
                    button #register.primary type="submit" { "Register" }
                }
            }
        }
    };
    ctx.page(Some(v), status, "Webhooks", CSS, body)
}
