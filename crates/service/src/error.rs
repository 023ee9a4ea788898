//! The service's error type.

use tenantry_core::{EmailError, ErrorKind, PermissionParseError, Rule, TemplateNameError};
use tenantry_store::StoreError;

/// Why a page request was refused.
///
/// ```
/// # use tenantry_service as tenantry;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tenantry::Error> {
/// use tenantry::prelude::*;
/// use tenantry::{Error, QueryError};
///
/// let app = Tenantry::builder(InMemoryStore::new()).build()?;
/// let (tenant, _) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
/// let too_big = UserQuery { limit: 1000, ..UserQuery::default() };
/// let refused = app.list_users(tenant, ActorRef::System, &too_big).await;
/// assert!(matches!(refused, Err(Error::Query(QueryError::LimitOutOfRange { limit: 1000 }))));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// [listing (D18)](tenantry_core::Rule::Listing): a page holds 1 to 500 rows.
    #[error("page size {limit} is out of range; it must be between 1 and 500")]
    LimitOutOfRange {
        /// The size asked for.
        limit: u32,
    },
    /// The cursor belongs to another sort order.
    #[error("the page cursor belongs to another sort order")]
    CursorMismatch,
}

/// Why the service was misconfigured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The accept-link base URL must be an absolute http(s) URL without a fragment.
    #[error(
        "the invitation base URL {url:?} must be an absolute http:// or https:// URL without spaces or '#'"
    )]
    BaseUrl {
        /// The refused URL.
        url: String,
    },
    /// A setting that must be positive was zero or negative.
    #[error("the setting {name} must be positive")]
    NotPositive {
        /// Which setting.
        name: &'static str,
    },
}

/// Everything a tenantry call can fail with. Nothing was changed when it fails.
///
/// Product-rule refusals are [`Error::Rule`] holding a [`RuleError`](crate::RuleError);
/// match on the variant where the host has something to say, and let `?` carry the rest:
///
/// ```
/// # use tenantry_service as tenantry;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tenantry::Error> {
/// use tenantry::prelude::*;
/// use tenantry::{Error, RuleError};
///
/// let app = Tenantry::builder(InMemoryStore::new()).build()?;
/// let (tenant, admin) = app.create_tenant("Acme", Some(1), Email::parse("ada@acme.test")?).await?;
/// let request = InviteRequest {
///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
///     crm_access: false, grants: Permissions::empty(),
/// };
/// let message = match app.invite(tenant, admin, &request).await {
///     Ok(invited) => format!("invited {}", invited.user.email),
///     Err(Error::Rule(RuleError::SeatLimitReached { used, limit })) => {
///         format!("all {used} of {limit} seats are taken; upgrade your plan")
///     }
///     Err(other) => return Err(other),
/// };
/// assert_eq!(message, "all 1 of 1 seats are taken; upgrade your plan");
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A product rule refused; [`Error::rule`] names it.
    #[error(transparent)]
    Rule(#[from] tenantry_core::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// [concurrency (D16)](tenantry_core::Rule::Concurrency): the tenant kept changing under this call; it gave up after `attempts` tries.
    #[error("the tenant is changing too fast; gave up after {attempts} attempts")]
    Contention {
        /// How many times the decision was retaken.
        attempts: u32,
    },
    /// A page request was malformed ([listing (D18)](tenantry_core::Rule::Listing)).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// A permission string was unknown ([permission set (D4)](tenantry_core::Rule::PermissionSet)).
    #[error(transparent)]
    Permission(#[from] PermissionParseError),
    /// The service was built with invalid settings.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The operating system's randomness source failed.
    #[error("the operating system's random number source failed: {0}")]
    Randomness(String),
}

impl Error {
    /// The rule (D-id) behind the error, where one applies. Store, settings and
    /// randomness failures follow no rule.
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::Rule;
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// // Ada is the only active admin: suspending her is refused.
    /// let suspend = UserEdit { status: Some(Status::Suspended), ..UserEdit::default() };
    /// let err = app.edit_user(tenant, admin, admin, &suspend).await.unwrap_err();
    /// assert_eq!(err.rule(), Some(Rule::LastAdmin));
    /// assert_eq!(Rule::LastAdmin.id(), "D8");
    /// assert_eq!(tenantry::Error::Contention { attempts: 64 }.rule(), Some(Rule::Concurrency));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn rule(&self) -> Option<Rule> {
        match self {
            Error::Rule(e) => Some(e.rule()),
            Error::Contention { .. } => Some(Rule::Concurrency),
            Error::Query(_) => Some(Rule::Listing),
            Error::Permission(_) => Some(Rule::PermissionSet),
            Error::Store(_) | Error::Settings(_) | Error::Randomness(_) => None,
        }
    }

    /// How a host should classify the error (for an HTTP status or a UI message).
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// use tenantry::{Error, ErrorKind};
    /// let e = Error::from(tenantry::RuleError::TemplateNotFound);
    /// assert_eq!(e.kind(), ErrorKind::NotFound);
    /// assert_eq!(Error::Contention { attempts: 8 }.kind(), ErrorKind::Unavailable);
    /// ```
    ///
    /// A host maps kinds to its responses in one place:
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// use tenantry::{Error, ErrorKind, RuleError};
    /// fn http_status(e: &Error) -> u16 {
    ///     match e.kind() {
    ///         ErrorKind::NotFound => 404,
    ///         ErrorKind::Forbidden => 403,
    ///         ErrorKind::Conflict | ErrorKind::LimitReached => 409,
    ///         ErrorKind::InvalidInput => 422,
    ///         ErrorKind::RateLimited => 429,
    ///         ErrorKind::Unavailable => 503,
    ///         _ => 500,
    ///     }
    /// }
    /// assert_eq!(http_status(&RuleError::SeatLimitReached { used: 5, limit: 5 }.into()), 409);
    /// assert_eq!(http_status(&RuleError::AdminOnly.into()), 403);
    /// ```
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Rule(e) => e.kind(),
            Error::Store(StoreError::NotFound) => ErrorKind::NotFound,
            Error::Store(StoreError::Conflict { .. }) => ErrorKind::Conflict,
            Error::Store(_) | Error::Contention { .. } => ErrorKind::Unavailable,
            Error::Query(_) | Error::Permission(_) => ErrorKind::InvalidInput,
            Error::Settings(_) | Error::Randomness(_) => ErrorKind::Internal,
        }
    }

    /// The product-rule error inside, if that is what this is.
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// use tenantry::{Error, RuleError};
    /// let e = Error::from(RuleError::LastAdmin);
    /// assert_eq!(e.as_rule(), Some(&RuleError::LastAdmin));
    /// assert_eq!(Error::Contention { attempts: 3 }.as_rule(), None);
    /// ```
    #[must_use]
    pub fn as_rule(&self) -> Option<&tenantry_core::Error> {
        match self {
            Error::Rule(e) => Some(e),
            _ => None,
        }
    }
}

impl From<EmailError> for Error {
    fn from(e: EmailError) -> Self {
        Error::Rule(tenantry_core::Error::InvalidEmail(e))
    }
}

impl From<TemplateNameError> for Error {
    fn from(e: TemplateNameError) -> Self {
        Error::Rule(tenantry_core::Error::InvalidTemplateName(e))
    }
}
