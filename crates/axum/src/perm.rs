//! One marker type per permission (30) plus [`Crm`], for [`Require<P>`](crate::Require)
//! and [`RequireLayer::of`](crate::RequireLayer::of).
//!
//! ```
//! use tenantry_axum::{Require, perm};
//! async fn analytics(_: Require<perm::AnalyticsView>) -> &'static str { "charts" }
//! async fn crm_records(_: Require<perm::Crm>) -> &'static str { "contacts" }
//! # let _ = (analytics, crm_records);
//! ```

use tenantry_service::{Action, Category, Permission, Request};

use crate::Requirement;

macro_rules! markers {
    ($($name:ident => $category:ident : $action:ident, $wire:literal;)*) => {
        $(
            #[doc = concat!("Requires the `", $wire, "` permission.")]
            ///
            /// ```
            #[doc = concat!("use tenantry_axum::{Requirement, perm::", stringify!($name), "};")]
            #[doc = concat!("let wire: tenantry_service::Permission = \"", $wire, "\".parse()?;")]
            #[doc = concat!("assert_eq!(", stringify!($name), "::REQUEST, tenantry_service::Request::Permission(wire));")]
            /// # Ok::<(), tenantry_core::PermissionParseError>(())
            /// ```
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
            pub struct $name;

            impl Requirement for $name {
                const REQUEST: Request =
                    Request::Permission(Permission::new(Category::$category, Action::$action));
            }
        )*
    };
}

markers! {
    ConversationsView => Conversations:View, "conversations:view";
    ConversationsCreate => Conversations:Create, "conversations:create";
    ConversationsEdit => Conversations:Edit, "conversations:edit";
    ConversationsDelete => Conversations:Delete, "conversations:delete";
    ConversationsManage => Conversations:Manage, "conversations:manage";
    SettingsView => Settings:View, "settings:view";
    SettingsCreate => Settings:Create, "settings:create";
    SettingsEdit => Settings:Edit, "settings:edit";
    SettingsDelete => Settings:Delete, "settings:delete";
    SettingsManage => Settings:Manage, "settings:manage";
    UsersView => Users:View, "users:view";
    UsersCreate => Users:Create, "users:create";
    UsersEdit => Users:Edit, "users:edit";
    UsersDelete => Users:Delete, "users:delete";
    UsersManage => Users:Manage, "users:manage";
    AnalyticsView => Analytics:View, "analytics:view";
    AnalyticsCreate => Analytics:Create, "analytics:create";
    AnalyticsEdit => Analytics:Edit, "analytics:edit";
    AnalyticsDelete => Analytics:Delete, "analytics:delete";
    AnalyticsManage => Analytics:Manage, "analytics:manage";
    IntegrationsView => Integrations:View, "integrations:view";
    IntegrationsCreate => Integrations:Create, "integrations:create";
    IntegrationsEdit => Integrations:Edit, "integrations:edit";
    IntegrationsDelete => Integrations:Delete, "integrations:delete";
    IntegrationsManage => Integrations:Manage, "integrations:manage";
    ExperimentsView => Experiments:View, "experiments:view";
    ExperimentsCreate => Experiments:Create, "experiments:create";
    ExperimentsEdit => Experiments:Edit, "experiments:edit";
    ExperimentsDelete => Experiments:Delete, "experiments:delete";
    ExperimentsManage => Experiments:Manage, "experiments:manage";
}

/// Requires CRM access ([CRM access (D5)](tenantry_core::Rule::CrmAccess)): admins always, other active users by their CRM flag.
///
/// ```
/// use tenantry_axum::{Requirement, perm::Crm};
/// assert_eq!(Crm::REQUEST, tenantry_service::Request::Crm);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Crm;

impl Requirement for Crm {
    const REQUEST: Request = Request::Crm;
}
