//! # tenantry-core
//!
//! The pure domain model of tenantry: the Settings → Users page of a multi-tenant product.
//! Ids, [`Email`], [`Role`], [`Status`], [`Permissions`], [`User`], [`RoleTemplate`],
//! [`Tenant`], the policy evaluator ([`authorize`]) and one pure decide function per use
//! case (module [`decide`]). No I/O, no async, no clock and no randomness of its own: the
//! service passes the time and fresh ids in.
//!
//! Every product rule lives here, once; each refusal is an [`Error`] that names its rule
//! ([roles (D1)](crate::Rule::Roles)–[one person, several tenants (D28)](crate::Rule::OnePersonSeveralTenants)) through [`Error::rule`].
//!
//! ```
//! use tenantry_core::*;
//! let t = TenantId::from_parts(1_700_000_000_000, [1; 10]);
//! let now = time::OffsetDateTime::UNIX_EPOCH;
//! let user = User {
//!     id: UserId::from_parts(1_700_000_000_000, [2; 10]), tenant_id: t,
//!     email: Email::parse("agent@example.com")?, role: Role::User, status: Status::Active,
//!     template_id: None, crm_access: true, grants: Permissions::CONVERSATIONS_VIEW,
//!     created_at: now, last_login: None, invite_expires_at: None,
//!     identity: None,
//! };
//! let view = Permission::new(Category::Conversations, Action::View);
//! assert_eq!(authorize(&user, None, view.into()), Decision::new(Reason::DirectGrant));
//! let manage = Permission::new(Category::Users, Action::Manage);
//! assert!(!authorize(&user, None, manage.into()).is_allowed());
//! # Ok::<(), EmailError>(())
//! ```

mod audit;
pub mod decide;
mod email;
mod error;
mod identity;
mod ids;
mod model;
mod permissions;
mod policy;

pub use audit::{
    AuditAction, AuditEvent, AuditRecord, AuditTarget, Field, FieldChange, Outcome, Rule, Value,
};
pub use decide::{Change, Write};
pub use email::{Email, EmailError, MAX_EMAIL_LEN, MAX_LABEL_LEN, MAX_LOCAL_LEN};
pub use error::{Error, ErrorKind};
pub use identity::{IdentityError, IdentityId, MAX_IDENTITY_LEN};
pub use ids::{IdError, MessageId, TemplateId, TenantId, UserId};
pub use model::{
    ActorRef, Counters, Invitation, InvitationKind, InvitationState, KeywordError,
    MAX_ACCEPT_ATTEMPTS, MAX_TEMPLATE_NAME_LEN, MAX_TENANT_NAME_LEN, NameError, Policy, Role,
    RoleTemplate, SeatUsage, Status, TemplateName, TemplateNameError, Tenant, TenantName,
    TenantState, TokenHash, Tombstone, User, check_name, is_format_char,
};
pub use permissions::{Action, Category, Permission, PermissionParseError, Permissions};
pub use policy::{
    Decision, Reason, Request, Subject, authorize, authorize_subject, effective_crm,
    effective_permissions, potential_permissions,
};
