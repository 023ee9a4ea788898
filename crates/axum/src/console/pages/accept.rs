//! The public page an invitation link opens. It never turns a signed-in visitor into
//! someone else: identified requests are refused, and an accepted invitation links the
//! host's sign-in page (the console signs nobody in).

use axum::http::{StatusCode, Uri};
use axum::response::Response;
use maud::html;
use tenantry_service::ActorRef;

use super::super::ctx::Ctx;
use super::super::form::Fields;
use super::super::html::{self, Tone};
use super::users::form_error;

/// `409`: someone is signed in; the invitation is not touched.
async fn signed_in(ctx: &Ctx) -> Response {
    let email = match ctx.who() {
        Some(w) => ctx
            .app()
            .user(w.tenant, ActorRef::System, w.user)
            .await
            .ok()
            .map(|u| u.email.as_str().to_owned()),
        None => None,
    };
    ctx.page(
        None,
        StatusCode::CONFLICT,
        "Sign out first",
        "",
        html! {
            h1 #refused { "Sign out first" }
            @match &email {
                Some(e) => p #signed-in-now { "You are signed in as " strong { (e) } "." },
                None => p #signed-in-now { "You are signed in." },
            }
            (html::message(Tone::Error, "An invitation is accepted by the person it was sent to, signed out. \
                Nothing was accepted. Sign out, then open the link from the invitation email again \
                (or open it in a private window)."))
        },
    )
}

fn form_page(
    ctx: &Ctx,
    status: StatusCode,
    token: &str,
    email: &str,
    error: Option<&str>,
) -> Response {
    ctx.page(
        None,
        status,
        "Accept the invitation",
        "",
        html! {
            h1 { "Accept the invitation" }
            div.card {
                @if let Some(e) = error { (html::message(Tone::Error, e)) }
                p { "You were invited to join this workspace. Enter the email address the invitation was sent to." }
                form #accept-form.stack method="post" action=(ctx.url("/accept")) {
                    (html::csrf_field(&ctx.csrf()))
                    input type="hidden" name="token" value=(token);
                    label.field for="email" { "Your email address" }
                    input #email type="text" name="email" value=(email) autocomplete="email";
                    div.actions-row {
                        button #complete-signup.primary type="submit" { "Accept invitation" }
                    }
                }
            }
        },
    )
}

/// `GET /accept?token=…`.
pub(crate) async fn accept_page(ctx: Ctx, uri: Uri) -> Response {
    if ctx.who().is_some() {
        return signed_in(&ctx).await;
    }
    let q = Fields::query(&uri);
    match q.non_empty("token") {
        Some(token) => form_page(&ctx, StatusCode::OK, token, "", None),
        None => ctx.error_page(
            None,
            StatusCode::BAD_REQUEST,
            "No invitation",
            "This link has no invitation token. Open the link from the invitation email.",
        ),
    }
}

/// `POST /accept`: accepts the invitation; the account is active and the visitor signs in
/// through the host.
pub(crate) async fn accept(ctx: Ctx, fields: Fields) -> Response {
    if ctx.who().is_some() {
        return signed_in(&ctx).await;
    }
    let token = fields.get("token").unwrap_or("").trim();
    let email = fields.get("email").unwrap_or("");
    if token.is_empty() || fields.get("email").is_none() {
        return form_page(
            &ctx,
            StatusCode::UNPROCESSABLE_ENTITY,
            token,
            email,
            Some("The form is incomplete. Open the link from the invitation email again."),
        );
    }
    match ctx.app().accept_invitation(token, email).await {
        Ok(user) => {
            let sign_in = ctx.sign_in_url().to_owned();
            ctx.page(
                None,
                StatusCode::OK,
                "Invitation accepted",
                "",
                html! {
                    h1 { "Invitation accepted" }
                    (html::message(Tone::Ok, &format!("Welcome, {}! Your account is active.", user.email)))
                    p { "Sign in to start." }
                    p { a #sign-in.button.primary href=(sign_in) { "Sign in" } }
                },
            )
        }
        Err(e) => match form_error(&e) {
            Some((status, text)) => form_page(&ctx, status, token, email, Some(&text)),
            None => ctx.failure(None, &e),
        },
    }
}
