//! What every page handler needs: the service, where the console is mounted, who is calling
//! and what they hold, the CSRF token for its forms, and the shared refusal and error pages.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use tenantry_service::{
    Action, ActorRef, Category, Error, Permission, Permissions, Reason, Role, TenantId, Tenantry,
    UserId,
};

use crate::problem::Problem;
use crate::reason_text;

use super::Console;
use super::csrf;
use super::gate::Visit;
use super::html::{self, Chrome, Tone};

/// The request context of a page.
pub(super) struct Ctx {
    console: Console,
    visit: Visit,
}

impl FromRequestParts<Console> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        match parts.extensions.get::<Visit>() {
            Some(visit) => Ok(Ctx {
                console: console.clone(),
                visit: visit.clone(),
            }),
            // Only reachable if a route escaped the gate: a wiring mistake, never data.
            None => {
                Err((StatusCode::INTERNAL_SERVER_ERROR, "console gate missing").into_response())
            }
        }
    }
}

/// The signed-in user a page is shown to, allowed to see it.
pub(super) struct Viewer {
    /// The tenant.
    pub(super) tenant: TenantId,
    /// The user.
    pub(super) user: UserId,
    /// Their address.
    pub(super) email: String,
    /// Their role.
    pub(super) role: Role,
    /// What they hold now.
    pub(super) holds: Permissions,
    /// The tenant's name.
    pub(super) tenant_name: String,
}

impl Viewer {
    /// Whether they hold `users:<action>` now.
    pub(super) fn may(&self, action: Action) -> bool {
        self.holds.has(Permission::new(Category::Users, action))
    }

    /// Them, as a reader.
    pub(super) fn actor(&self) -> ActorRef {
        ActorRef::User(self.user)
    }
}

impl Ctx {
    /// The service.
    pub(super) fn app(&self) -> &Tenantry {
        self.console.guard.tenantry()
    }

    /// A console URL: `path` (starting with `/`) under the mount.
    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.visit.mount)
    }

    /// Who the host says is calling, unchecked.
    pub(super) fn who(&self) -> Option<crate::Identified> {
        self.visit.who
    }

    /// The host's sign-in page.
    pub(super) fn sign_in_url(&self) -> &str {
        &self.console.config.sign_in_url
    }

    /// The CSRF token for this page's forms.
    pub(super) fn csrf(&self) -> String {
        csrf::token(
            &self.console.config.csrf_secret,
            &self.visit.cookie,
            self.visit.who,
        )
    }

    /// The caller, if they hold `users:<action>` now ([current access
    /// (D6)](tenantry_core::Rule::CurrentAccess)); otherwise the page to answer with: `401`
    /// (nobody known), `403` (with the reason), `503` (the decision could not be made).
    pub(super) async fn viewer(&self, action: Action) -> Result<Viewer, Response> {
        let Some(who) = self.visit.who else {
            return Err(self.unauthenticated());
        };
        let needed = Permission::new(Category::Users, action);
        let decision = match self
            .app()
            .authorize(who.tenant, who.user, needed.into())
            .await
        {
            Ok(d) => d,
            Err(e) => return Err(self.failure(None, &e)),
        };
        if !decision.is_allowed() {
            if decision.reason() == Reason::UnknownUser {
                return Err(self.unauthenticated());
            }
            return Err(self.forbidden(who, needed, decision.reason()).await);
        }
        let app = self.app();
        let user = app
            .user(who.tenant, ActorRef::System, who.user)
            .await
            .map_err(|e| self.failure(None, &e))?;
        let (holds, _) = app
            .effective_permissions(who.tenant, who.user)
            .await
            .map_err(|e| self.failure(None, &e))?;
        let tenant_name = app
            .tenant(who.tenant)
            .await
            .map_err(|e| self.failure(None, &e))?
            .tenant
            .name
            .as_str()
            .to_owned();
        Ok(Viewer {
            tenant: who.tenant,
            user: who.user,
            email: user.email.as_str().to_owned(),
            role: user.role,
            holds,
            tenant_name,
        })
    }

    fn chrome<'a>(&'a self, viewer: Option<&'a Viewer>) -> Chrome<'a> {
        Chrome {
            mount: &self.visit.mount,
            tenant: viewer.map(|v| v.tenant_name.as_str()),
            who: viewer.map(|v| (v.email.as_str(), v.role)),
            webhooks: self.console.config.has_webhooks(),
        }
    }

    /// A page for `viewer` (or for nobody).
    pub(super) fn page(
        &self,
        viewer: Option<&Viewer>,
        status: StatusCode,
        title: &str,
        extra_css: &str,
        body: Markup,
    ) -> Response {
        html::page(status, title, &self.chrome(viewer), extra_css, body)
    }

    /// A page saying what went wrong, with a way back.
    pub(super) fn error_page(
        &self,
        viewer: Option<&Viewer>,
        status: StatusCode,
        title: &str,
        text: &str,
    ) -> Response {
        let back = self.url("/users");
        self.page(
            viewer,
            status,
            title,
            "",
            html! {
                h1 #refused { (title) }
                (html::message(Tone::Error, text))
                p { a href=(back) { "Back to the Users page" } }
            },
        )
    }

    /// The page for a service error, with the status and text of its [`Problem`] (a store
    /// failure says only that the service is unavailable; its detail goes to the log).
    pub(super) fn failure(&self, viewer: Option<&Viewer>, error: &Error) -> Response {
        let problem = Problem::from_error(error);
        let status = problem.status_code();
        let title = title_of(status);
        let mut response = self.error_page(viewer, status, title, &sentence(&problem.detail));
        if let Some(seconds) = problem.retry_after_seconds {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }

    /// `401`: nobody (known) is signed in.
    pub(super) fn unauthenticated(&self) -> Response {
        let sign_in = self.sign_in_url().to_owned();
        self.page(
            None,
            StatusCode::UNAUTHORIZED,
            "Sign in first",
            "",
            html! {
                h1 #refused { "Sign in first" }
                p { "You are not signed in. The Users settings are for admins and for users holding the "
                    code { "users:view" } " permission." }
                p { a.button.primary #sign-in href=(sign_in) { "Sign in" } }
            },
        )
    }

    async fn forbidden(
        &self,
        who: crate::Identified,
        needed: Permission,
        reason: Reason,
    ) -> Response {
        let email = self
            .app()
            .user(who.tenant, ActorRef::System, who.user)
            .await
            .map(|u| u.email.as_str().to_owned())
            .ok();
        let back = self.url("/users");
        let chrome = Chrome {
            mount: &self.visit.mount,
            tenant: None,
            who: None,
            webhooks: false,
        };
        html::page(
            StatusCode::FORBIDDEN,
            "You cannot open this page",
            &chrome,
            "",
            html! {
                h1 #refused { "403 · You cannot open this page" }
                @if let Some(email) = &email {
                    p { "You are signed in as " strong { (email) } "." }
                }
                p { "This needs the admin role or the " code { (needed) } " permission." }
                (html::message(Tone::Error, &format!("Denied: {}.", reason_text(&reason))))
                @if needed != Permission::new(Category::Users, Action::View) {
                    p { a href=(back) { "Back to the Users page" } }
                }
            },
        )
    }

    /// `303 See Other` to a console path (POST/redirect/GET).
    pub(super) fn see_other(&self, path_and_query: &str) -> Response {
        let target = self.url(path_and_query);
        let mut response = StatusCode::SEE_OTHER.into_response();
        if let Ok(v) = HeaderValue::from_str(&target) {
            response.headers_mut().insert(header::LOCATION, v);
        }
        response
    }
}

/// A title for a status.
pub(super) fn title_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Bad request",
        401 => "Sign in first",
        403 => "Not allowed",
        404 => "Not found",
        409 => "Not possible now",
        422 => "Please check the form",
        429 => "Try again later",
        503 => "Temporarily unavailable",
        _ => "Something went wrong",
    }
}

/// A message as a sentence: capitalised, ending with a period.
pub(super) fn sentence(text: &str) -> String {
    let mut chars = text.trim().chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}
