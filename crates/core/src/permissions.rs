//! Fine-grained permissions ([permission set (D4)](crate::Rule::PermissionSet)): six categories × five actions in one bit set.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A permission category ([permission set (D4)](crate::Rule::PermissionSet)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// Chat, voice and email conversations.
    Conversations,
    /// Configuration areas such as branding, channels and organisation settings.
    Settings,
    /// User management: invite, edit and remove users, manage role templates.
    Users,
    /// Analytics dashboards and reports.
    Analytics,
    /// CRM connections and other third-party integrations.
    Integrations,
    /// Experiments and testing features.
    Experiments,
}

/// An action within a category ([permission set (D4)](crate::Rule::PermissionSet)). No action implies another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Read access.
    View,
    /// Create new things.
    Create,
    /// Change existing things.
    Edit,
    /// Remove things.
    Delete,
    /// Manage-level access (configuration of the category itself).
    Manage,
}

impl Category {
    /// Every category, in display order.
    pub const ALL: [Category; 6] = [
        Category::Conversations,
        Category::Settings,
        Category::Users,
        Category::Analytics,
        Category::Integrations,
        Category::Experiments,
    ];

    /// The wire name (`"users"`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Conversations => "conversations",
            Category::Settings => "settings",
            Category::Users => "users",
            Category::Analytics => "analytics",
            Category::Integrations => "integrations",
            Category::Experiments => "experiments",
        }
    }

    /// The display label (`"Users"`).
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Category::Conversations => "Conversations",
            Category::Settings => "Settings",
            Category::Users => "Users",
            Category::Analytics => "Analytics",
            Category::Integrations => "Integrations",
            Category::Experiments => "Experiments",
        }
    }

    const fn index(self) -> u32 {
        self as u32
    }
}

impl Action {
    /// Every action, in display order.
    pub const ALL: [Action; 5] = [
        Action::View,
        Action::Create,
        Action::Edit,
        Action::Delete,
        Action::Manage,
    ];

    /// The wire name (`"edit"`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::Create => "create",
            Action::Edit => "edit",
            Action::Delete => "delete",
            Action::Manage => "manage",
        }
    }

    /// The display label (`"Edit"`).
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Action::View => "View",
            Action::Create => "Create",
            Action::Edit => "Edit",
            Action::Delete => "Delete",
            Action::Manage => "Manage",
        }
    }

    const fn index(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a permission string was refused ([permission set (D4)](crate::Rule::PermissionSet): unknown strings are errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown permission {input:?}; expected \"category:action\" with category one of conversations, settings, users, analytics, integrations, experiments and action one of view, create, edit, delete, manage"
)]
pub struct PermissionParseError {
    /// The text that was refused (cut to 64 characters).
    pub input: String,
}

impl FromStr for Category {
    type Err = PermissionParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| PermissionParseError {
                input: s.chars().take(64).collect(),
            })
    }
}

impl FromStr for Action {
    type Err = PermissionParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| PermissionParseError {
                input: s.chars().take(64).collect(),
            })
    }
}

/// One permission: a category and an action, written `"category:action"` on the wire.
///
/// ```
/// use tenantry_core::{Action, Category, Permission, Permissions};
/// let p: Permission = "users:edit".parse()?;
/// assert_eq!(p, Permission::new(Category::Users, Action::Edit));
/// assert_eq!(Permissions::from(p), Permissions::USERS_EDIT);
/// # Ok::<(), tenantry_core::PermissionParseError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    /// The category.
    pub category: Category,
    /// The action.
    pub action: Action,
}

impl Permission {
    /// Builds a permission.
    #[must_use]
    pub const fn new(category: Category, action: Action) -> Self {
        Self { category, action }
    }

    /// The single flag of this permission.
    #[must_use]
    pub const fn flag(self) -> Permissions {
        Permissions::from_bits_retain(1 << (self.category.index() * 5 + self.action.index()))
    }

    /// Every permission, category by category.
    pub fn all() -> impl Iterator<Item = Permission> {
        Category::ALL
            .into_iter()
            .flat_map(|c| Action::ALL.into_iter().map(move |a| Permission::new(c, a)))
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.category, self.action)
    }
}

impl FromStr for Permission {
    type Err = PermissionParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PermissionParseError {
            input: s.chars().take(64).collect(),
        };
        let (c, a) = s.split_once(':').ok_or_else(err)?;
        Ok(Permission::new(
            c.parse().map_err(|_| err())?,
            a.parse().map_err(|_| err())?,
        ))
    }
}

impl Serialize for Permission {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

bitflags::bitflags! {
    /// A set of permissions: 30 flags, one per category × action ([permission set (D4)](crate::Rule::PermissionSet)).
    ///
    /// On the wire (serde, SQL, JSON) a set is a sorted list of `"category:action"`
    /// strings, never raw bits; an unknown string is an error.
    ///
    /// ```
    /// use tenantry_core::{Category, Permissions};
    /// let set = Permissions::USERS_VIEW | Permissions::ANALYTICS_VIEW;
    /// assert_eq!(set.to_strings(), vec!["analytics:view", "users:view"]);
    /// assert_eq!(Permissions::parse_list(["users:view", "analytics:view"])?, set);
    /// assert_eq!(Permissions::category(Category::Users).iter_permissions().count(), 5);
    /// # Ok::<(), tenantry_core::PermissionParseError>(())
    /// ```
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
    pub struct Permissions: u32 {
        /// `conversations:view`
        const CONVERSATIONS_VIEW = 1 << 0;
        /// `conversations:create`
        const CONVERSATIONS_CREATE = 1 << 1;
        /// `conversations:edit`
        const CONVERSATIONS_EDIT = 1 << 2;
        /// `conversations:delete`
        const CONVERSATIONS_DELETE = 1 << 3;
        /// `conversations:manage`
        const CONVERSATIONS_MANAGE = 1 << 4;
        /// `settings:view`
        const SETTINGS_VIEW = 1 << 5;
        /// `settings:create`
        const SETTINGS_CREATE = 1 << 6;
        /// `settings:edit`
        const SETTINGS_EDIT = 1 << 7;
        /// `settings:delete`
        const SETTINGS_DELETE = 1 << 8;
        /// `settings:manage`
        const SETTINGS_MANAGE = 1 << 9;
        /// `users:view`
        const USERS_VIEW = 1 << 10;
        /// `users:create`
        const USERS_CREATE = 1 << 11;
        /// `users:edit`
        const USERS_EDIT = 1 << 12;
        /// `users:delete`
        const USERS_DELETE = 1 << 13;
        /// `users:manage`
        const USERS_MANAGE = 1 << 14;
        /// `analytics:view`
        const ANALYTICS_VIEW = 1 << 15;
        /// `analytics:create`
        const ANALYTICS_CREATE = 1 << 16;
        /// `analytics:edit`
        const ANALYTICS_EDIT = 1 << 17;
        /// `analytics:delete`
        const ANALYTICS_DELETE = 1 << 18;
        /// `analytics:manage`
        const ANALYTICS_MANAGE = 1 << 19;
        /// `integrations:view`
        const INTEGRATIONS_VIEW = 1 << 20;
        /// `integrations:create`
        const INTEGRATIONS_CREATE = 1 << 21;
        /// `integrations:edit`
        const INTEGRATIONS_EDIT = 1 << 22;
        /// `integrations:delete`
        const INTEGRATIONS_DELETE = 1 << 23;
        /// `integrations:manage`
        const INTEGRATIONS_MANAGE = 1 << 24;
        /// `experiments:view`
        const EXPERIMENTS_VIEW = 1 << 25;
        /// `experiments:create`
        const EXPERIMENTS_CREATE = 1 << 26;
        /// `experiments:edit`
        const EXPERIMENTS_EDIT = 1 << 27;
        /// `experiments:delete`
        const EXPERIMENTS_DELETE = 1 << 28;
        /// `experiments:manage`
        const EXPERIMENTS_MANAGE = 1 << 29;
    }
}

impl Permissions {
    /// Every permission of one category.
    #[must_use]
    pub const fn category(category: Category) -> Self {
        Self::from_bits_retain(0b1_1111 << (category.index() * 5))
    }

    /// Whether the set holds one permission.
    #[must_use]
    pub const fn has(self, permission: Permission) -> bool {
        self.contains(permission.flag())
    }

    /// The permissions in the set, category by category, action by action.
    pub fn iter_permissions(self) -> impl Iterator<Item = Permission> {
        Permission::all().filter(move |p| self.has(*p))
    }

    /// The wire form: the sorted list of `"category:action"` strings ([permission set (D4)](crate::Rule::PermissionSet)).
    #[must_use]
    pub fn to_strings(self) -> Vec<String> {
        let mut out: Vec<String> = self.iter_permissions().map(|p| p.to_string()).collect();
        out.sort_unstable();
        out
    }

    /// Reads the wire form. Order and repeats do not matter; an unknown string is an error.
    ///
    /// # Errors
    /// [`PermissionParseError`] naming the first unknown string.
    pub fn parse_list<I, S>(items: I) -> Result<Self, PermissionParseError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        items.into_iter().try_fold(Self::empty(), |acc, s| {
            s.as_ref().parse::<Permission>().map(|p| acc | p.flag())
        })
    }
}

impl From<Permission> for Permissions {
    fn from(p: Permission) -> Self {
        p.flag()
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<T: IntoIterator<Item = Permission>>(iter: T) -> Self {
        iter.into_iter()
            .fold(Self::empty(), |acc, p| acc | p.flag())
    }
}

impl fmt::Display for Permissions {
    /// A comma-separated list in wire order, e.g. `analytics:view,users:view`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_strings().join(","))
    }
}

impl FromStr for Permissions {
    type Err = PermissionParseError;
    /// Reads a comma-separated list (white space around items is ignored; empty is the
    /// empty set).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_list(s.split(',').map(str::trim).filter(|s| !s.is_empty()))
    }
}

impl Serialize for Permissions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.to_strings())
    }
}

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let items = Vec::<String>::deserialize(deserializer)?;
        Self::parse_list(items).map_err(serde::de::Error::custom)
    }
}
