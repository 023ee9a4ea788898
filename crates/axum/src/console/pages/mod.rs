//! The pages, by family; and what they share: the fallbacks and the fixed messages a POST
//! redirects with.

pub(super) mod accept;
pub(super) mod audit;
pub(super) mod templates;
pub(super) mod tenant;
pub(super) mod users;
#[cfg(feature = "webhooks")]
pub(super) mod webhooks;

use axum::http::StatusCode;
use axum::response::Response;
use maud::Markup;
use tenantry_service::{Attribution, TemplateId, UserId};

use super::ctx::{Ctx, Viewer};
use super::form::Fields;
use super::html::{self, Tone};

/// `GET /`: the Users page.
pub(in crate::console) async fn root(ctx: Ctx) -> Response {
    ctx.see_other("/users")
}

/// Any path the console does not have.
pub(in crate::console) async fn not_found(ctx: Ctx) -> Response {
    ctx.error_page(
        None,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page in the console.",
    )
}

/// A method a path does not take.
pub(in crate::console) async fn method_not_allowed(ctx: Ctx) -> Response {
    ctx.error_page(
        None,
        StatusCode::METHOD_NOT_ALLOWED,
        "Not possible here",
        "This page cannot be used that way.",
    )
}

/// What a POST did, as the fixed code its redirect carries (`?done=…`): the page says it
/// in its own words, with names read from the store, never text from the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Done {
    Invited,
    Saved,
    Unchanged,
    Resent,
    Deleted,
    TemplateCreated,
    TemplateSaved,
    TemplateDeleted,
    TenantRenamed,
    IdentitySaved,
}

impl Done {
    const ALL: [Done; 10] = [
        Done::Invited,
        Done::Saved,
        Done::Unchanged,
        Done::Resent,
        Done::Deleted,
        Done::TemplateCreated,
        Done::TemplateSaved,
        Done::TemplateDeleted,
        Done::TenantRenamed,
        Done::IdentitySaved,
    ];

    pub(super) fn code(self) -> &'static str {
        match self {
            Done::Invited => "invited",
            Done::Saved => "saved",
            Done::Unchanged => "unchanged",
            Done::Resent => "resent",
            Done::Deleted => "deleted",
            Done::TemplateCreated => "template_created",
            Done::TemplateSaved => "template_saved",
            Done::TemplateDeleted => "template_deleted",
            Done::TenantRenamed => "tenant_renamed",
            Done::IdentitySaved => "identity_saved",
        }
    }

    fn parse(code: &str) -> Option<Done> {
        Done::ALL.into_iter().find(|d| d.code() == code)
    }
}

/// The message for the `done` code of the query, if any.
pub(super) async fn notice(ctx: &Ctx, viewer: &Viewer, query: &Fields) -> Option<Markup> {
    let done = Done::parse(query.get("done")?)?;
    let app = ctx.app();
    let user = query.get("user").and_then(|u| u.parse::<UserId>().ok());
    let email = match user {
        Some(id) => match app.attribution(viewer.tenant, id).await {
            Ok(Some(Attribution::User(u))) => Some(u.email.as_str().to_owned()),
            Ok(Some(Attribution::Deleted(t))) => Some(t.email.as_str().to_owned()),
            _ => None,
        },
        None => None,
    };
    let who = email.unwrap_or_else(|| "the user".to_owned());
    let template = match query
        .get("template")
        .and_then(|t| t.parse::<TemplateId>().ok())
    {
        Some(id) => app
            .template(viewer.tenant, viewer.actor(), id)
            .await
            .ok()
            .map(|t| t.name.as_str().to_owned()),
        None => None,
    };
    let named = template.map_or_else(
        || "The role template".to_owned(),
        |n| format!("The role template {n}"),
    );
    let moved = query
        .get("moved")
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let text = match done {
        Done::Invited => format!(
            "Invitation sent to {who}. They appear as invited until they accept the link in their email."
        ),
        Done::Saved => format!("Saved {who}. Permission changes apply at their next action."),
        Done::Unchanged => format!("No changes to {who}."),
        Done::Resent => {
            format!("A fresh invitation was sent to {who}; earlier links no longer work.")
        }
        Done::Deleted => format!("Deleted {who}. A seat was freed."),
        Done::TemplateCreated => {
            format!("{named} was created. It is now in the Role template dropdown.")
        }
        Done::TemplateSaved => {
            format!("{named} was saved. Its users hold the new permissions at their next action.")
        }
        Done::TemplateDeleted if moved > 0 => {
            format!("The role template was deleted; {moved} user(s) were updated.")
        }
        Done::TemplateDeleted => "The role template was deleted.".to_owned(),
        Done::TenantRenamed => {
            "The tenant was renamed. Every user sees the new name at once.".to_owned()
        }
        Done::IdentitySaved => format!("Saved the sign-in identity of {who}."),
    };
    Some(html::message(Tone::Ok, &text))
}
