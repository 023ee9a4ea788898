//! The stateless CSRF check: a random value in a cookie, and in each form that value's
//! HMAC-SHA256 under the configured secret, bound to who is calling.

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Identified;

use super::ConsoleConfig;

/// The cookie's name.
pub(super) const COOKIE: &str = "tenantry_csrf";
/// The form field carrying the token.
pub(super) const FIELD: &str = "csrf";
/// The random cookie value: 32 bytes, base64url without padding.
const VALUE_LEN: usize = 43;

type HmacSha256 = Hmac<Sha256>;

/// A fresh random cookie value, or `None` when the system's random source fails.
pub(super) fn new_value() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

fn well_formed(value: &str) -> bool {
    value.len() == VALUE_LEN
        && URL_SAFE_NO_PAD
            .decode(value)
            .is_ok_and(|bytes| bytes.len() == 32)
}

/// The console's cookie value in the request, if it is one the console could have made.
pub(super) fn read(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && well_formed(value))
        .map(|(_, value)| value.to_owned())
}

/// What a token is bound to: the identified caller, or nobody.
fn binding(who: Option<Identified>) -> String {
    match who {
        Some(w) => format!("user:{}/{}", w.tenant, w.user),
        None => "anonymous".to_owned(),
    }
}

fn mac(secret: &[u8; 32], cookie: &str, who: Option<Identified>) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(b"tenantry-console-csrf-v1\0");
    mac.update(cookie.as_bytes());
    mac.update(b"\0");
    mac.update(binding(who).as_bytes());
    Some(mac)
}

/// The form token for `cookie` and `who`.
pub(super) fn token(secret: &[u8; 32], cookie: &str, who: Option<Identified>) -> String {
    mac(secret, cookie, who)
        .map(|m| URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Whether `token` is the token of `cookie` for `who` (compared in constant time).
pub(super) fn verify(
    secret: &[u8; 32],
    cookie: &str,
    who: Option<Identified>,
    token: &str,
) -> bool {
    if !well_formed(cookie) {
        return false;
    }
    let Ok(given) = URL_SAFE_NO_PAD.decode(token) else {
        return false;
    };
    mac(secret, cookie, who).is_some_and(|m| m.verify_slice(&given).is_ok())
}

/// The `Set-Cookie` value for `value` on the console mounted at `mount` (`""` is the root);
/// `clear` makes it remove the cookie.
pub(super) fn cookie_header(
    value: &str,
    mount: &str,
    config: &ConsoleConfig,
    clear: bool,
) -> HeaderValue {
    let path = if mount.is_empty() { "/" } else { mount };
    let mut text = format!("{COOKIE}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if clear {
        text.push_str("; Max-Age=0");
    }
    if config.secure_cookies {
        text.push_str("; Secure");
    }
    // The value is base64url and the path was cleaned (see `gate::clean_mount`), so this
    // is a valid header; should it not be, a cookie scoped to the root still works.
    HeaderValue::from_str(&text).unwrap_or_else(|_| {
        HeaderValue::from_static("tenantry_csrf=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tenantry_service::{TenantId, UserId};

    #[test]
    fn a_token_verifies_only_for_its_cookie_and_caller() {
        let secret = [3u8; 32];
        let cookie = new_value().unwrap();
        let other = new_value().unwrap();
        let a = Some(Identified {
            tenant: TenantId::from_uuid(uuid::Uuid::from_u128(1)),
            user: UserId::from_uuid(uuid::Uuid::from_u128(2)),
        });
        let t = token(&secret, &cookie, a);
        assert!(verify(&secret, &cookie, a, &t));
        assert!(!verify(&secret, &other, a, &t));
        assert!(!verify(&secret, &cookie, None, &t));
        assert!(!verify(&[4u8; 32], &cookie, a, &t));
        assert!(!verify(&secret, "", a, &t));
        assert!(!verify(&secret, &cookie, a, "not base64!"));
    }

    #[test]
    fn reads_only_well_formed_values() {
        let value = new_value().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {COOKIE}=short; {COOKIE}={value}")).unwrap(),
        );
        assert_eq!(read(&headers), Some(value));
        let mut empty = HeaderMap::new();
        empty.insert(header::COOKIE, HeaderValue::from_static("tenantry_csrf="));
        assert_eq!(read(&empty), None);
    }
}
