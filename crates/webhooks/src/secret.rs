//! Endpoint secrets and Standard Webhooks signatures.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of every secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";

/// The number of random bytes in a secret tenantry generates.
pub const SECRET_BYTES: usize = 32;

/// Why a secret could not be generated or read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretError {
    /// The operating system's random source failed.
    #[error("the random source failed")]
    Random,
    /// The text is not `whsec_` followed by base64 of at least one byte.
    #[error("not a webhook secret (expected `whsec_` and base64)")]
    Malformed,
}

/// An endpoint's signing secret: `whsec_` and the base64 of its key bytes.
///
/// Its `Debug` form never shows the key; [`Secret::expose`] gives the text, which tenantry
/// shows the admin once, when the endpoint is registered or its secret rotated.
///
/// ```
/// use tenantry_webhooks::Secret;
/// let secret = Secret::generate()?;
/// assert!(secret.expose().starts_with("whsec_"));
/// assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
/// assert_eq!(Secret::parse(secret.expose())?, secret);
/// # Ok::<(), tenantry_webhooks::SecretError>(())
/// ```
#[derive(Clone)]
pub struct Secret {
    text: String,
    /// The HMAC keyed once: each signature starts from a clone of it.
    mac: Hmac<Sha256>,
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Secret {}

impl Secret {
    /// A new secret of [`SECRET_BYTES`] random bytes from the operating system.
    ///
    /// # Errors
    /// [`SecretError::Random`] when the random source fails.
    pub fn generate() -> Result<Self, SecretError> {
        let mut key = [0u8; SECRET_BYTES];
        getrandom::fill(&mut key).map_err(|_| SecretError::Random)?;
        Self::from_key(&key)
    }

    fn from_key(key: &[u8]) -> Result<Self, SecretError> {
        let text = format!("{SECRET_PREFIX}{}", STANDARD.encode(key));
        // An HMAC takes a key of any length: `new_from_slice` does not fail for it.
        let mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| SecretError::Malformed)?;
        Ok(Self { text, mac })
    }

    /// Reads a secret's text form (`whsec_` + base64, padded or not).
    ///
    /// # Errors
    /// [`SecretError::Malformed`] when the prefix is missing, the rest is not base64 or empty.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let b64 = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::Malformed)?;
        let key = STANDARD
            .decode(b64)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
            .map_err(|_| SecretError::Malformed)?;
        if key.is_empty() {
            return Err(SecretError::Malformed);
        }
        Self::from_key(&key)
    }

    /// The secret's text form, `whsec_…`: to show once, or to store.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The `v1,<base64>` signature of one message: HMAC-SHA256 keyed by the secret's bytes
    /// over `id.timestamp.body`.
    ///
    /// ```
    /// use tenantry_webhooks::Secret;
    /// // The example of the Standard Webhooks specification.
    /// let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
    /// let body = r#"{"test": 2432232314}"#;
    /// assert_eq!(
    ///     secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body.as_bytes()),
    ///     "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    /// );
    /// # Ok::<(), tenantry_webhooks::SecretError>(())
    /// ```
    #[must_use]
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The `webhook-signature` header's value: one signature per secret, space-separated (the
/// current secret first, then the previous one during a rotation's grace period).
///
/// ```
/// use tenantry_webhooks::{Secret, signature_header};
/// let old = Secret::generate()?;
/// let new = Secret::generate()?;
/// let header = signature_header(&[&new, &old], "evt_1", 1_700_000_000, b"{}");
/// let parts: Vec<&str> = header.split(' ').collect();
/// assert_eq!(parts, [new.sign("evt_1", 1_700_000_000, b"{}"), old.sign("evt_1", 1_700_000_000, b"{}")]);
/// # Ok::<(), tenantry_webhooks::SecretError>(())
/// ```
#[must_use]
pub fn signature_header(secrets: &[&Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}
