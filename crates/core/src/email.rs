//! Email addresses as [unique email (D3)](crate::Rule::UniqueEmail) defines them.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest address [unique email (D3)](crate::Rule::UniqueEmail) accepts, in bytes (all accepted addresses are ASCII).
pub const MAX_EMAIL_LEN: usize = 254;
/// The longest local part [unique email (D3)](crate::Rule::UniqueEmail) accepts.
pub const MAX_LOCAL_LEN: usize = 64;
/// The longest domain label [unique email (D3)](crate::Rule::UniqueEmail) accepts.
pub const MAX_LABEL_LEN: usize = 63;

/// Why an address was refused ([unique email (D3)](crate::Rule::UniqueEmail)). Each variant says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum EmailError {
    /// Nothing but white space was given.
    #[error("the email address is empty")]
    Empty,
    /// A character outside ASCII (internationalised domains must use their `xn--` form).
    #[error(
        "the email address contains the non-ASCII character {ch:?} at position {position}; only ASCII is accepted (use the xn-- form for internationalised domains)"
    )]
    NonAscii {
        /// The offending character.
        ch: char,
        /// Its position in characters, counted in the trimmed address.
        position: usize,
    },
    /// Longer than [`MAX_EMAIL_LEN`].
    #[error("the email address is {len} characters long; at most {MAX_EMAIL_LEN} are allowed")]
    TooLong {
        /// The length that was given.
        len: usize,
    },
    /// No `@`.
    #[error("the email address has no '@'")]
    MissingAt,
    /// More than one `@`.
    #[error("the email address has more than one '@'")]
    MultipleAt,
    /// Nothing before the `@`.
    #[error("the part before '@' is empty")]
    EmptyLocalPart,
    /// Local part longer than [`MAX_LOCAL_LEN`].
    #[error("the part before '@' is {len} characters long; at most {MAX_LOCAL_LEN} are allowed")]
    LocalPartTooLong {
        /// The length that was given.
        len: usize,
    },
    /// A character that a dot-atom local part may not hold.
    #[error("the part before '@' contains {ch:?}, which is not allowed")]
    InvalidLocalChar {
        /// The offending character.
        ch: char,
    },
    /// A dot at the start or end of the local part, or two dots in a row.
    #[error("the part before '@' has a dot at its start or end, or two dots in a row")]
    MisplacedDot,
    /// Nothing after the `@`.
    #[error("the domain after '@' is empty")]
    EmptyDomain,
    /// An empty domain label (a leading, trailing or doubled dot).
    #[error("the domain has an empty label (a dot at its start or end, or two dots in a row)")]
    EmptyDomainLabel,
    /// A domain label longer than [`MAX_LABEL_LEN`].
    #[error("the domain label {label:?} is longer than {MAX_LABEL_LEN} characters")]
    DomainLabelTooLong {
        /// The label (ASCII).
        label: String,
    },
    /// A character a domain label may not hold.
    #[error("the domain contains {ch:?}; only letters, digits, hyphens and dots are allowed")]
    InvalidDomainChar {
        /// The offending character.
        ch: char,
    },
    /// A label that starts or ends with a hyphen.
    #[error("the domain label {label:?} starts or ends with a hyphen")]
    DomainLabelHyphen {
        /// The label (ASCII).
        label: String,
    },
}

/// A validated email address ([unique email (D3)](crate::Rule::UniqueEmail)).
///
/// It keeps the address as typed (trimmed) for display and an ASCII-lowercased key that
/// decides whether two addresses are the same.
///
/// ```
/// use tenantry_core::Email;
/// let a: Email = "  Ada.Lovelace@Example.COM ".parse()?;
/// assert_eq!(a.as_str(), "Ada.Lovelace@Example.COM");
/// assert_eq!(a.key(), "ada.lovelace@example.com");
/// assert!(a.same_as(&"ada.lovelace@example.com".parse()?));
/// assert!("ﬁle@example.com".parse::<Email>().is_err());
/// # Ok::<(), tenantry_core::EmailError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email {
    /// The address as typed, trimmed; shared, so clones and a store's indexes cost no copy.
    display: Arc<str>,
    /// The key when it differs from `display` (an address with upper-case letters); most
    /// addresses are typed in lower case, and then the one string serves as both.
    key: Option<Arc<str>>,
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

impl Email {
    /// Parses and validates an address by the rules of [unique email (D3)](crate::Rule::UniqueEmail).
    ///
    /// # Errors
    /// An [`EmailError`] that says which rule the text broke.
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if let Some((position, ch)) = trimmed.chars().enumerate().find(|(_, c)| !c.is_ascii()) {
            return Err(EmailError::NonAscii { ch, position });
        }
        if trimmed.len() > MAX_EMAIL_LEN {
            return Err(EmailError::TooLong { len: trimmed.len() });
        }
        let mut parts = trimmed.split('@');
        let local = parts.next().unwrap_or_default();
        let Some(domain) = parts.next() else {
            return Err(EmailError::MissingAt);
        };
        if parts.next().is_some() {
            return Err(EmailError::MultipleAt);
        }
        Self::check_local(local)?;
        Self::check_domain(domain)?;
        Ok(Self::of(trimmed.into()))
    }

    fn check_local(local: &str) -> Result<(), EmailError> {
        if local.is_empty() {
            return Err(EmailError::EmptyLocalPart);
        }
        if local.len() > MAX_LOCAL_LEN {
            return Err(EmailError::LocalPartTooLong { len: local.len() });
        }
        if let Some(b) = local.bytes().find(|&b| b != b'.' && !is_atext(b)) {
            return Err(EmailError::InvalidLocalChar { ch: char::from(b) });
        }
        if local.split('.').any(str::is_empty) {
            return Err(EmailError::MisplacedDot);
        }
        Ok(())
    }

    fn check_domain(domain: &str) -> Result<(), EmailError> {
        if domain.is_empty() {
            return Err(EmailError::EmptyDomain);
        }
        if let Some(b) = domain
            .bytes()
            .find(|&b| b != b'.' && b != b'-' && !b.is_ascii_alphanumeric())
        {
            return Err(EmailError::InvalidDomainChar { ch: char::from(b) });
        }
        for label in domain.split('.') {
            if label.is_empty() {
                return Err(EmailError::EmptyDomainLabel);
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(EmailError::DomainLabelTooLong {
                    label: label.to_owned(),
                });
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(EmailError::DomainLabelHyphen {
                    label: label.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// An address read back from a store that accepted it through [`Email::parse`] when it
    /// was written: the stored text is kept as it is, not validated again (a store's rows
    /// are what its writes made them, and a page of users would otherwise re-run every
    /// rule on every address). The key is derived from it as [`Email::parse`] does.
    ///
    /// For storage adapters only: an address that never went through [`Email::parse`] may
    /// break the rules an `Email` otherwise promises. Everything a host or user types goes
    /// through [`Email::parse`].
    ///
    /// ```
    /// use tenantry_core::Email;
    /// let stored = Email::parse("Ada@Example.com")?.as_str().to_owned();
    /// let back = Email::from_stored(stored);
    /// assert_eq!(back, Email::parse("Ada@Example.com")?);
    /// assert_eq!(back.key(), "ada@example.com");
    /// # Ok::<(), tenantry_core::EmailError>(())
    /// ```
    #[must_use]
    pub fn from_stored(display: String) -> Self {
        Self::of(display.into())
    }

    /// The address with its key, sharing the one string when they are equal.
    fn of(display: Arc<str>) -> Self {
        let key = display
            .bytes()
            .any(|b| b.is_ascii_uppercase())
            .then(|| Arc::from(display.to_ascii_lowercase()));
        Self { display, key }
    }

    /// The address as typed, trimmed of surrounding white space.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The canonical key: the trimmed address, ASCII-lowercased. Two addresses are the
    /// same user exactly when their keys are equal ([unique email (D3)](crate::Rule::UniqueEmail)).
    #[must_use]
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or(&self.display)
    }

    /// The canonical key as a shared string: a store can index by it without a copy.
    ///
    /// ```
    /// use tenantry_core::Email;
    /// let a = Email::parse("ada@acme.test")?;
    /// assert_eq!(&*a.shared_key(), "ada@acme.test");
    /// assert_eq!(&*Email::parse("Ada@Acme.test")?.shared_key(), "ada@acme.test");
    /// # Ok::<(), tenantry_core::EmailError>(())
    /// ```
    #[must_use]
    pub fn shared_key(&self) -> Arc<str> {
        Arc::clone(self.key.as_ref().unwrap_or(&self.display))
    }

    /// Whether two addresses name the same user (equal keys).
    #[must_use]
    pub fn same_as(&self, other: &Email) -> bool {
        self.key() == other.key()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({:?})", self.display)
    }
}

impl FromStr for Email {
    type Err = EmailError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for Email {
    type Error = EmailError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.display
    }
}

impl Serialize for Email {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.display)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Email::parse(&text).map_err(serde::de::Error::custom)
    }
}
