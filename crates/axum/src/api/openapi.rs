//! The router's routes and the OpenAPI document generated from them, completed with the
//! problem responses every operation can give.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, Operation, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApi, Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::templates::DeletionMode;
use super::types::{OrderName, RoleName, SortName, StatusName};
use super::{audit, invitations, outbox, templates, tenant, users};
use crate::Guard;
use crate::problem::{PROBLEM_JSON, Problem};

/// The documented routes, before state, fallbacks and layers.
pub(crate) fn routes() -> OpenApiRouter<Guard> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(tenant::me))
        .routes(routes!(tenant::memberships))
        .routes(routes!(tenant::tenant))
        .routes(routes!(tenant::rename))
        .routes(routes!(tenant::seats))
        .routes(routes!(tenant::set_limit))
        .routes(routes!(users::list_users))
        .routes(routes!(users::inactive_users))
        .routes(routes!(
            users::get_user,
            users::edit_user,
            users::delete_user
        ))
        .routes(routes!(users::attribution))
        .routes(routes!(users::set_identity))
        .routes(routes!(invitations::invite))
        .routes(routes!(invitations::invite_many))
        .routes(routes!(invitations::resend))
        .routes(routes!(invitations::expired))
        .routes(routes!(invitations::purge))
        .routes(routes!(invitations::accept))
        .routes(routes!(outbox::outbox))
        .routes(routes!(outbox::outbox_message))
        .routes(routes!(
            templates::list_templates,
            templates::create_template
        ))
        .routes(routes!(
            templates::get_template,
            templates::edit_template,
            templates::delete_template
        ))
        .routes(routes!(templates::template_users))
        .routes(routes!(audit::audit_log))
        .routes(routes!(audit::audit_feed))
}

/// The document, computed once.
pub(crate) fn document() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(|| complete(routes().into_openapi()))
}

/// This document (OpenAPI 3.1).
#[utoipa::path(
    get, path = "/openapi.json", tag = "meta", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API",
        body = Object, content_type = "application/json")),
)]
pub(crate) async fn openapi_json() -> impl IntoResponse {
    static TEXT: OnceLock<String> = OnceLock::new();
    let text = TEXT.get_or_init(|| document().to_json().unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], text.as_str())
}

/// The problem responses, by status: the component name and its description.
const PROBLEMS: &[(u16, &str, &str)] = &[
    (
        400,
        "BadRequest",
        "Malformed request: a path id, query value, cursor or JSON body that does not parse",
    ),
    (401, "Unauthorized", "Nobody known is calling"),
    (
        403,
        "Forbidden",
        "A product rule refused: a missing permission (`needed_permission`), admin only, escalation (`missing_permissions`, `missing_crm`), own access, self change",
    ),
    (
        404,
        "NotFound",
        "No such user, template, invitation or tenant (an id of another tenant looks the same)",
    ),
    (
        409,
        "Conflict",
        "A conflict with current state: address, name or identity id taken, last admin, template in use (`users`), not invited, seat limit reached (`seats_used`, `seat_limit`)",
    ),
    (413, "PayloadTooLarge", "The body is over 64 KiB"),
    (
        415,
        "UnsupportedMediaType",
        "A change without `Content-Type: application/json` (the CSRF rule)",
    ),
    (
        422,
        "UnprocessableEntity",
        "Well-formed but invalid input: JSON of the wrong shape or with unknown fields, an invalid address, name or identity id, an unknown permission, a page size out of range, a cursor of another sort order, a wrong sign-up address (`attempts_left`)",
    ),
    (
        429,
        "TooManyRequests",
        "Rate limited: too many resends; `retry_at`, `retry_after_seconds` and `Retry-After` say when",
    ),
    (500, "InternalServerError", "The service failed"),
    (
        503,
        "ServiceUnavailable",
        "The store is unavailable or the tenant kept changing; try again (`Retry-After`)",
    ),
];

/// The problem statuses one operation can answer, beyond 400, 500 and 503.
fn statuses(id: &str, method: HttpMethod, queried: bool) -> Vec<u16> {
    let mut out = vec![400];
    if id == "openapi" {
        return vec![500];
    }
    if id != "accept_invitation" {
        out.extend([401, 403]);
    }
    out.push(404);
    let changes = !matches!(method, HttpMethod::Get | HttpMethod::Head);
    let conflicts = [
        "invite",
        "edit_user",
        "delete_user",
        "resend_invitation",
        "create_template",
        "edit_template",
        "delete_template",
        "set_identity",
        "accept_invitation",
    ];
    if conflicts.contains(&id) {
        out.push(409);
    }
    if changes {
        out.extend([413, 415]);
    }
    // A page size out of range, a cursor of another sort order, a reassign without target.
    if changes || queried {
        out.push(422);
    }
    if id == "resend_invitation" {
        out.push(429);
    }
    out.extend([500, 503]);
    out
}

fn complete(mut doc: OpenApi) -> OpenApi {
    doc.info = InfoBuilder::new()
        .title("tenantry JSON API")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Tenant user management (the Settings → Users page) over HTTP: users, invitations, \
             role templates, seats, the audit log. Who calls is the host's `Identify`; every \
             failure is an RFC 9457 `application/problem+json` document. Every request that \
             changes something must carry `Content-Type: application/json` (the CSRF rule). \
             No response ever carries an invitation token or accept link (D26).",
        ))
        .build();
    doc.tags = Some(
        [
            ("users", "The user table: list, get, edit, delete"),
            (
                "invitations",
                "Invite, bulk invite, resend, expired, accept",
            ),
            ("templates", "Role templates"),
            (
                "tenant",
                "Seats, the caller's own permissions and its memberships in other tenants",
            ),
            ("audit", "The audit log and its feed"),
            ("meta", "This document"),
        ]
        .into_iter()
        .map(|(name, text)| TagBuilder::new().name(name).description(Some(text)).build())
        .collect(),
    );
    let mut components = doc
        .components
        .take()
        .unwrap_or_else(|| ComponentsBuilder::new().build());
    components.schemas.insert(
        <Problem as ToSchema>::name().into_owned(),
        Problem::schema(),
    );
    // Schemas only query parameters refer to: utoipa-axum collects body schemas only.
    for (name, schema) in [
        (SortName::name(), SortName::schema()),
        (OrderName::name(), OrderName::schema()),
        (DeletionMode::name(), DeletionMode::schema()),
        (StatusName::name(), StatusName::schema()),
        (RoleName::name(), RoleName::schema()),
    ] {
        components.schemas.insert(name.into_owned(), schema);
    }
    let retry_after = HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::Integer))
                .minimum(Some(0)),
        ))
        .description(Some("Seconds to wait before trying again"))
        .build();
    for (status, name, text) in PROBLEMS {
        let mut response = ResponseBuilder::new().description(*text).content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        );
        if matches!(status, 429 | 503) {
            response = response.header("Retry-After", retry_after.clone());
        }
        components
            .responses
            .insert((*name).to_owned(), RefOr::T(response.build()));
    }
    doc.components = Some(components);
    for item in doc.paths.paths.values_mut() {
        let ops: [(HttpMethod, &mut Option<Operation>); 5] = [
            (HttpMethod::Get, &mut item.get),
            (HttpMethod::Post, &mut item.post),
            (HttpMethod::Put, &mut item.put),
            (HttpMethod::Patch, &mut item.patch),
            (HttpMethod::Delete, &mut item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op.as_mut() else { continue };
            let id = op.operation_id.clone().unwrap_or_default();
            let queried = op
                .parameters
                .iter()
                .flatten()
                .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Query));
            for status in statuses(&id, method, queried) {
                if let Some((_, name, _)) = PROBLEMS.iter().find(|(s, _, _)| *s == status) {
                    op.responses.responses.insert(
                        status.to_string(),
                        RefOr::Ref(Ref::from_response_name(*name)),
                    );
                }
            }
        }
    }
    doc
}
