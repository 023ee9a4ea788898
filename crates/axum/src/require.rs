//! The [`Require<P>`] extractor.

use std::fmt;
use std::marker::PhantomData;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use tenantry_service::{Decision, Request, TenantId, UserId};

use crate::{Guard, GuardRejection};

/// What a route requires: one permission or CRM access. The markers in [`crate::perm`]
/// implement it; a host may add its own.
///
/// ```
/// use tenantry_service::Request;
/// use tenantry_axum::{Requirement, perm};
/// assert_eq!(perm::UsersView::REQUEST, Request::Permission("users:view".parse()?));
/// assert_eq!(perm::Crm::REQUEST, Request::Crm);
/// # Ok::<(), tenantry_core::PermissionParseError>(())
/// ```
pub trait Requirement: Send + Sync + 'static {
    /// The request the guard decides.
    const REQUEST: Request;
}

/// An extractor that lets the handler run only if the caller holds `P` now.
///
/// It identifies the caller with the host's [`Identify`](crate::Identify), then asks
/// [`Tenantry::authorize`](tenantry_service::Tenantry::authorize) on current state ([current access (D6)](tenantry_core::Rule::CurrentAccess): nothing is
/// cached, so a change to the user or its role template applies at the very next
/// request). Rejections: `401` when nobody known is calling, `403` with the decision's
/// reason as JSON when denied, `500` when the store failed. The [`Guard`] comes from the
/// state through [`FromRef`].
///
/// ```
/// use tenantry_axum::{Require, perm};
///
/// async fn invite_form(auth: Require<perm::UsersCreate>) -> String {
///     format!("{} may invite ({:?})", auth.user, auth.decision.reason())
/// }
/// # let _ = invite_form;
/// ```
///
/// Take `Result<Require<P>, GuardRejection>` to render your own refusal page:
///
/// ```
/// use tenantry_axum::{GuardRejection, Require, perm};
///
/// async fn page(auth: Result<Require<perm::UsersView>, GuardRejection>) -> String {
///     match auth {
///         Ok(_) => "the user table".to_owned(),
///         Err(refused) => format!("{}: {refused}", refused.status()),
///     }
/// }
/// # let _ = page;
/// ```
pub struct Require<P> {
    /// The caller's tenant.
    pub tenant: TenantId,
    /// The caller.
    pub user: UserId,
    /// The decision that allowed the request, with its reason.
    pub decision: Decision,
    marker: PhantomData<fn() -> P>,
}

impl<P> Require<P> {
    /// What was required.
    ///
    /// ```
    /// use tenantry_axum::{Require, perm};
    /// fn show(auth: &Require<perm::Crm>) -> tenantry_service::Request { auth.request() }
    /// # let _ = show;
    /// ```
    #[must_use]
    pub fn request(&self) -> Request
    where
        P: Requirement,
    {
        P::REQUEST
    }
}

impl<P> Clone for Require<P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P> Copy for Require<P> {}

impl<P> fmt::Debug for Require<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Require")
            .field("tenant", &self.tenant)
            .field("user", &self.user)
            .field("decision", &self.decision)
            .finish()
    }
}

impl<S, P> FromRequestParts<S> for Require<P>
where
    S: Send + Sync,
    Guard: FromRef<S>,
    P: Requirement,
{
    type Rejection = GuardRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let allowed = Guard::from_ref(state).check(parts, P::REQUEST).await?;
        Ok(Require {
            tenant: allowed.tenant,
            user: allowed.user,
            decision: allowed.decision,
            marker: PhantomData,
        })
    }
}
