//! The host's own identity id of a person ([one person, several tenants (D28)](crate::Rule::OnePersonSeveralTenants)).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::is_format_char;

/// The longest identity id, in bytes (OpenID Connect's limit for a subject).
pub const MAX_IDENTITY_LEN: usize = 255;

/// Why a text is not an identity id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The text is empty.
    #[error("an identity id cannot be empty")]
    Empty,
    /// The text is longer than [`MAX_IDENTITY_LEN`] bytes.
    #[error("an identity id is at most {max} bytes, this one has {len}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The text starts or ends with white space (a copy-paste slip that would make the
    /// same person two identities).
    #[error("an identity id cannot start or end with white space")]
    SurroundingSpace,
    /// The text holds a control (Unicode Cc) or format (Unicode Cf) character.
    #[error("an identity id cannot hold the character U+{code:04X} (at character {position})")]
    ForbiddenCharacter {
        /// The character's code point.
        code: u32,
        /// Its position, counted in characters from 0.
        position: usize,
    },
}

/// The id a host's own sign-in gives a person (for example the OpenID Connect `sub`
/// claim), attached to a tenantry user ([one person, several tenants (D28)](crate::Rule::OnePersonSeveralTenants)).
///
/// It is opaque and compared byte for byte (case matters, nothing is trimmed): 1 to
/// [`MAX_IDENTITY_LEN`] bytes, no white space at either end, no control or format
/// characters. It is unique per tenant; the same person may hold it in several tenants.
///
/// ```
/// use tenantry_core::{IdentityError, IdentityId};
/// let sub = IdentityId::parse("auth0|6543a1")?;
/// assert_eq!(sub.as_str(), "auth0|6543a1");
/// assert_eq!(IdentityId::parse(""), Err(IdentityError::Empty));
/// assert_eq!(IdentityId::parse(" x"), Err(IdentityError::SurroundingSpace));
/// assert!(matches!(IdentityId::parse("a\u{200b}b"), Err(IdentityError::ForbiddenCharacter { code: 0x200b, position: 1 })));
/// # Ok::<(), IdentityError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdentityId(Arc<str>);

impl IdentityId {
    /// Checks `text` and wraps it.
    ///
    /// # Errors
    /// [`IdentityError`] naming what is wrong.
    pub fn parse(text: &str) -> Result<Self, IdentityError> {
        if text.is_empty() {
            return Err(IdentityError::Empty);
        }
        if text.len() > MAX_IDENTITY_LEN {
            return Err(IdentityError::TooLong {
                len: text.len(),
                max: MAX_IDENTITY_LEN,
            });
        }
        if text.starts_with(char::is_whitespace) || text.ends_with(char::is_whitespace) {
            return Err(IdentityError::SurroundingSpace);
        }
        if let Some((position, c)) = text
            .chars()
            .enumerate()
            .find(|(_, c)| c.is_control() || is_format_char(*c))
        {
            return Err(IdentityError::ForbiddenCharacter {
                code: u32::from(c),
                position,
            });
        }
        Ok(Self(Arc::from(text)))
    }

    /// Wraps a value read back from storage, which only ever holds checked ids.
    #[must_use]
    pub fn from_stored(text: &str) -> Self {
        Self(Arc::from(text))
    }

    /// The id's text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdentityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdentityId").field(&&*self.0).finish()
    }
}

impl fmt::Display for IdentityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for IdentityId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for IdentityId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IdentityId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}
