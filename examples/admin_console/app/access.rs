//! The demo sign-in (a stand-in for the host's authentication), the accept page that
//! completes signup, the signed-in user's own access, and the outbox.

use std::fmt::Write as _;

use axum::extract::RawQuery;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use tenantry::prelude::*;
use tenantry::{DeliveryState, UserId};
use tenantry_axum::{GuardRejection, Identified, Require, perm};

use super::html::{self, esc};
use super::session::{Flash, cookie_header};
use super::{Ctx, Fields, error_text, query_pairs};

/// `GET /`: the Users page when signed in, else the demo sign-in.
pub(crate) async fn root(ctx: Ctx) -> Response {
    if ctx.viewer.is_some() {
        Redirect::to("/users").into_response()
    } else {
        Redirect::to("/signin").into_response()
    }
}

/// `GET /signin`: pick who you are.
pub(crate) async fn signin_page(ctx: Ctx) -> Response {
    signin_html(&ctx, None, StatusCode::OK).await
}

async fn signin_html(ctx: &Ctx, error: Option<&str>, status: StatusCode) -> Response {
    let users = ctx
        .app()
        .list_users(
            ctx.tenant(),
            ActorRef::System,
            &UserQuery {
                limit: 200,
                ..UserQuery::default()
            },
        )
        .await
        .map(|p| p.items)
        .unwrap_or_default();
    let mut body = String::new();
    body.push_str(r#"<h1>Demo sign-in</h1><div class="crumb">A stand-in for your application's real authentication</div>"#);
    body.push_str(&ctx.flash_html());
    if let Some(e) = error {
        body.push_str(&html::message("error", e));
    }
    body.push_str(r#"<div class="card"><p>tenantry does not authenticate anyone: the host application does, and tells tenantry who is calling. In this demo you simply pick a user of the tenant. Signing in records a last login (D14); invited and suspended users are refused.</p>
<table id="signin-users"><thead><tr><th>Email</th><th>Role</th><th>Status</th><th></th></tr></thead><tbody>"#);
    for u in &users {
        let _ = write!(
            body,
            r#"<tr><td>{email}</td><td>{role}</td><td>{status}</td><td><form method="post" action="/signin">{csrf}<input type="hidden" name="user" value="{id}"><button type="submit" class="primary" data-email="{email}">Sign in as {email}</button></form></td></tr>"#,
            email = esc(u.email.as_str()),
            role = html::role_badge(u.role),
            status = html::status_badge(u.status),
            csrf = html::csrf_field(&ctx.csrf),
            id = u.id,
        );
    }
    body.push_str("</tbody></table></div>");
    ctx.page(status, "Demo sign-in", &body)
}

/// Replaces the session by a signed-in one and goes to `to`.
fn signed_in(ctx: &Ctx, user: UserId, flash: Flash, to: &str) -> Response {
    match ctx.console.sessions.sign_in(&ctx.sid, user, flash) {
        Some(id) => {
            let mut response = Redirect::to(to).into_response();
            if let Some(v) = cookie_header(&id) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
            response
        }
        None => ctx.error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in failed",
            "The operating system's random number source failed; try again.",
        ),
    }
}

/// `POST /signin`: records the sign-in (D14) and remembers the user in the session.
pub(crate) async fn signin(ctx: Ctx, fields: Fields) -> Response {
    let Ok(id) = fields.text("user").parse::<UserId>() else {
        return signin_html(&ctx, Some("Pick a user."), StatusCode::UNPROCESSABLE_ENTITY).await;
    };
    match ctx.app().record_sign_in(ctx.tenant(), id).await {
        Ok(user) => {
            let flash = Flash {
                kind: "ok",
                text: format!("Signed in as {}.", user.email),
            };
            signed_in(&ctx, user.id, flash, "/users")
        }
        Err(e) => {
            signin_html(
                &ctx,
                Some(&error_text(&e)),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

/// `POST /signout`.
pub(crate) async fn signout(ctx: Ctx, _fields: Fields) -> Response {
    ctx.console.sessions.sign_out(&ctx.sid);
    ctx.flash("ok", "Signed out.");
    Redirect::to("/signin").into_response()
}

/// `GET /me`: what the signed-in user holds now (every signed-in user may look).
pub(crate) async fn me(ctx: Ctx, who: Result<Identified, GuardRejection>) -> Response {
    let who = guarded!(ctx, who);
    let Some(user) = ctx.viewer.clone().filter(|v| v.id == who.user) else {
        return ctx.error_page(
            StatusCode::UNAUTHORIZED,
            "Your account is gone",
            "The user you signed in as no longer exists. Pick another one on the demo sign-in page.",
        );
    };
    let (holds, crm) = ctx
        .app()
        .effective_permissions(ctx.tenant(), user.id)
        .await
        .unwrap_or((Permissions::empty(), false));
    let mut body = String::new();
    body.push_str(r#"<h1>My access</h1><div class="crumb">What you can do right now</div>"#);
    body.push_str(&ctx.flash_html());
    let _ = write!(
        body,
        r#"<div class="card"><p>Signed in as <strong id="me-email">{}</strong> · {} · <span id="me-status">{}</span> · last login {}</p>
<p>Permissions now: {}</p><p>CRM access: {}</p>"#,
        esc(user.email.as_str()),
        html::role_badge(user.role),
        html::status_badge(user.status),
        html::when(user.last_login),
        html::permission_list(holds),
        if crm { "yes" } else { "no" },
    );
    if ctx.may(Action::View) {
        body.push_str(
            r#"<p><a class="button primary" href="/users">Open Settings → Users</a></p>"#,
        );
    } else {
        body.push_str(r#"<p class="muted">You cannot open Settings → Users: that needs the admin role or the <code>users:view</code> permission.</p>"#);
    }
    body.push_str("</div>");
    ctx.page(StatusCode::OK, "My access", &body)
}

fn accept_html(ctx: &Ctx, token: &str, email: &str, error: Option<&str>) -> String {
    let mut body = String::new();
    body.push_str(
        r#"<h1>Complete your sign-up</h1><div class="crumb">Invitation</div><div class="card">"#,
    );
    if let Some(e) = error {
        body.push_str(&html::message("error", e));
    }
    let _ = write!(
        body,
        r#"<p>You were invited to join this workspace. In a real application this is where you would set a password or sign in with your identity provider; here, enter the email address you sign up with. It must be the invited address.</p>
<form method="post" action="/accept" class="stack" id="accept-form">{}
<input type="hidden" name="token" value="{}">
<label class="field" for="email">Email you sign up with</label>
<input type="text" id="email" name="email" value="{}" autocomplete="off">
<div class="actions-row"><button type="submit" class="primary" id="complete-signup">Complete sign-up</button></div></form></div>"#,
        html::csrf_field(&ctx.csrf),
        esc(token),
        esc(email),
    );
    body
}

/// `GET /accept?token=…`: the page an invitation link opens.
pub(crate) async fn accept_page(ctx: Ctx, RawQuery(raw): RawQuery) -> Response {
    let params = query_pairs(raw.as_deref());
    let token = params
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if token.is_empty() {
        return ctx.error_page(
            StatusCode::BAD_REQUEST,
            "No invitation",
            "This link has no invitation token. Open the link from the invitation email.",
        );
    }
    let body = accept_html(&ctx, token, "", None);
    ctx.page(StatusCode::OK, "Complete your sign-up", &body)
}

/// `POST /accept`: accepts the invitation (D10); the new user is signed in.
pub(crate) async fn accept(ctx: Ctx, fields: Fields) -> Response {
    let token = fields.text("token");
    let email = fields.text("email");
    match ctx.app().accept_invitation(token, email).await {
        Ok(user) => {
            let flash = Flash {
                kind: "ok",
                text: format!("Welcome, {}! Your account is active.", user.email),
            };
            signed_in(&ctx, user.id, flash, "/me")
        }
        Err(e) => {
            let body = accept_html(&ctx, token, email, Some(&error_text(&e)));
            ctx.page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Complete your sign-up",
                &body,
            )
        }
    }
}

/// The accept link inside a delivered message, rebuilt from the configured base URL.
fn accept_link(ctx: &Ctx, text: &str) -> Option<String> {
    let token = tenantry::token_from_link(text)?;
    let base = &ctx.app().settings().base_url;
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}token={token}"))
}

/// `GET /outbox`: invitation mail with its delivery state (D17) and, for messages this
/// console delivered, the accept link. Needs `users:create` (the links are secrets).
pub(crate) async fn outbox(
    ctx: Ctx,
    auth: Result<Require<perm::UsersCreate>, GuardRejection>,
) -> Response {
    let _auth = guarded!(ctx, auth);
    let records = or_error_page!(ctx, ctx.app().outbox(ctx.tenant(), false, 100).await);
    let delivered = ctx.console.outbox.sent();
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<h1>Outbox</h1><div class="crumb"><a href="/users">Settings → Users</a> → Outbox</div>
<div class="card"><p>Invitation emails, newest first, with their delivery state. Mail goes through: <strong>{}</strong>. The accept links of messages delivered since this console started are shown so you can play the invited person (open one in a private window, or sign out first).</p></div>
<table id="outbox"><thead><tr><th>To</th><th>Subject</th><th>Queued</th><th>Delivery</th><th>Accept link</th></tr></thead><tbody>"#,
        esc(&ctx.console.mailer_label)
    );
    if records.is_empty() {
        body.push_str(r#"<tr><td colspan="5" class="muted">No invitations sent yet.</td></tr>"#);
    }
    for r in &records {
        let state = match &r.state {
            DeliveryState::Pending => match &r.last_error {
                Some(e) => format!("pending (attempt {}, last error: {})", r.attempts, esc(e)),
                None => "pending".to_owned(),
            },
            DeliveryState::Sent { at } => format!("sent {}", html::when(Some(*at))),
            DeliveryState::Failed { reason, .. } => format!("failed: {}", esc(reason)),
        };
        let link = delivered
            .iter()
            .find(|m| m.id == r.message.id)
            .and_then(|m| accept_link(&ctx, &m.text))
            .map_or_else(
                || r#"<span class="muted">—</span>"#.to_owned(),
                |l| {
                    format!(
                        r#"<a class="accept-link" data-to="{to}" href="{href}">Open accept page</a>"#,
                        to = esc(&r.message.to),
                        href = esc(&l)
                    )
                },
            );
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.message.to),
            esc(&r.message.subject),
            html::when(Some(r.created_at)),
            state,
            link
        );
    }
    body.push_str("</tbody></table>");
    ctx.page(StatusCode::OK, "Outbox", &body)
}
