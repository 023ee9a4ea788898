//! Identifiers: newtypes over UUID version 7.
//!
//! Ids are never built from the system clock inside the core: the service passes the
//! time and the random bytes it got from its injected clock and randomness source.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a string could not be read as an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid id: {input:?}")]
pub struct IdError {
    /// The text that was refused (cut to 64 characters).
    pub input: String,
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps an existing UUID (for example one read back from storage).
            #[must_use]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// Builds a UUID v7 id from a Unix time in milliseconds and 10 random bytes.
            ///
            /// ```
            #[doc = concat!("use tenantry_core::", stringify!($name), ";")]
            #[doc = concat!("let id = ", stringify!($name), "::from_parts(1_700_000_000_000, [7; 10]);")]
            /// assert_eq!(id.as_uuid().get_version_num(), 7);
            /// ```
            #[must_use]
            pub fn from_parts(unix_millis: u64, random: [u8; 10]) -> Self {
                Self(uuid::Builder::from_unix_timestamp_millis(unix_millis, &random).into_uuid())
            }

            /// The UUID inside.
            #[must_use]
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| IdError {
                    input: s.chars().take(64).collect(),
                })
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }
    };
}

id_type!(
    /// Identifies a tenant (one customer organisation).
    TenantId
);
id_type!(
    /// Identifies a user row. Ids are never reused, not even after delete ([permanent delete (D11)](crate::Rule::PermanentDelete)).
    UserId
);
id_type!(
    /// Identifies a role template.
    TemplateId
);
id_type!(
    /// Identifies an outbox message (an invitation email waiting for delivery).
    MessageId
);
