//! URL-encoded form bodies and query strings as name/value pairs (repeated names allowed,
//! as the permission grid sends them).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use tenantry_service::{Permissions, TemplateId};

/// The fields of a form (or of a query string).
#[derive(Debug, Clone, Default)]
pub(super) struct Fields(Vec<(String, String)>);

impl Fields {
    /// Parses `application/x-www-form-urlencoded` bytes; what cannot be decoded is replaced,
    /// never refused here (the page then finds the field invalid).
    pub(super) fn parse(bytes: &[u8]) -> Self {
        Fields(form_urlencoded::parse(bytes).into_owned().collect())
    }

    /// The query string of a request URI.
    pub(super) fn query(uri: &axum::http::Uri) -> Self {
        Self::parse(uri.query().unwrap_or("").as_bytes())
    }

    /// The first value of `name`.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, trimmed, when not empty.
    pub(super) fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }

    /// Whether a checkbox was checked.
    pub(super) fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// The checked permission boxes ([permission set (D4)](tenantry_core::Rule::PermissionSet):
    /// an unknown one is an error).
    pub(super) fn permissions(&self) -> Result<Permissions, String> {
        Permissions::parse_list(
            self.0
                .iter()
                .filter(|(k, _)| k == "perm")
                .map(|(_, v)| v.as_str()),
        )
        .map_err(|e| format!("Permissions: {e}."))
    }

    /// A role template field: required; `""` is "no template".
    pub(super) fn template(&self, name: &str) -> Result<Option<TemplateId>, String> {
        match self.get(name).map(str::trim) {
            None => Err("The role template field is missing.".to_owned()),
            Some("") => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| "That role template does not exist.".to_owned()),
        }
    }
}

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        // The gate has read the body already (within the limit); this only re-reads it.
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Fields::parse(&bytes))
    }
}
