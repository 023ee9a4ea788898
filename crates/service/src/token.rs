//! Invitation tokens ([invitations (D10)](tenantry_core::Rule::Invitations)): `<tenant id, 32 hex>.<256 random bits, base64url>`.
//!
//! The tenant prefix lets the accept call find the tenant without a cross-tenant lookup;
//! only the SHA-256 hash of the whole token is stored.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tenantry_core::{TenantId, TokenHash};
use uuid::Uuid;

/// Random bytes in a token (256 bits).
pub(crate) const TOKEN_RANDOM_BYTES: usize = 32;

/// Builds the token text from the tenant and 32 random bytes.
pub(crate) fn format(tenant: TenantId, random: &[u8; TOKEN_RANDOM_BYTES]) -> String {
    format!(
        "{}.{}",
        tenant.as_uuid().simple(),
        URL_SAFE_NO_PAD.encode(random)
    )
}

/// The stored hash of a token.
pub(crate) fn hash(token: &str) -> TokenHash {
    TokenHash(Sha256::digest(token.as_bytes()).into())
}

/// The tenant a token names, if the token is well formed.
pub(crate) fn tenant_of(token: &str) -> Option<TenantId> {
    let (tenant, secret) = token.split_once('.')?;
    if tenant.len() != 32 || secret.len() != 43 {
        return None;
    }
    let decoded = URL_SAFE_NO_PAD.decode(secret).ok()?;
    if decoded.len() != TOKEN_RANDOM_BYTES {
        return None;
    }
    Uuid::try_parse(tenant).ok().map(TenantId::from_uuid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn d10_token_round_trip_and_rejects_garbage() {
        let t = TenantId::from_parts(5, [9; 10]);
        let tok = format(t, &[7; 32]);
        assert_eq!(tenant_of(&tok), Some(t));
        assert!(
            tok.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        );
        assert_ne!(hash(&tok), hash(&format(t, &[8; 32])));
        for bad in [
            "",
            ".",
            "abc.def",
            &tok[..tok.len() - 1],
            &format!("{tok}x"),
        ] {
            assert_eq!(tenant_of(bad), None, "{bad}");
        }
    }
}
