//! Authorization checks ([current access (D6)](tenantry_core::Rule::CurrentAccess)).

use super::*;

impl Tenantry {
    /// Decides a request for a user on current state ([current access (D6)](tenantry_core::Rule::CurrentAccess)): the user's row and its
    /// template's permissions are read now, so edits apply at the very next check. An
    /// unknown or deleted user, or one of another tenant, is denied.
    ///
    /// # Errors
    /// Store failures only; every answer is a [`Decision`].
    pub async fn authorize(
        &self,
        tenant: TenantId,
        user: UserId,
        request: Request,
    ) -> Result<Decision, Error> {
        let Some(subject) = self.inner.store.subject(tenant, user).await? else {
            return Ok(Decision::unknown_user());
        };
        Ok(tenantry_core::authorize_subject(&subject, request))
    }

    /// What a user holds now ([current access (D6)](tenantry_core::Rule::CurrentAccess)), with its CRM access.
    ///
    /// # Errors
    /// [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation) for an unknown user, store failures.
    pub async fn effective_permissions(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<(Permissions, bool), Error> {
        let user = self.target(tenant, user).await?;
        let template = self.template_of(tenant, &user).await?;
        Ok((
            tenantry_core::effective_permissions(&user, template.as_ref()),
            tenantry_core::effective_crm(&user),
        ))
    }
}
