#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! D28: identity ids.
use tenantry_core::{IdentityError, IdentityId};

#[test]
fn d28_identity_ids_are_checked() {
    assert!(IdentityId::parse("a").is_ok());
    assert!(IdentityId::parse(&"x".repeat(255)).is_ok());
    assert_eq!(
        IdentityId::parse(&"x".repeat(256)),
        Err(IdentityError::TooLong { len: 256, max: 255 })
    );
    assert_eq!(
        IdentityId::parse("a "),
        Err(IdentityError::SurroundingSpace)
    );
    assert_eq!(
        IdentityId::parse("ab\u{7}"),
        Err(IdentityError::ForbiddenCharacter {
            code: 7,
            position: 2
        })
    );
    assert_eq!(IdentityId::parse("Sub").unwrap().as_str(), "Sub");
    assert_ne!(
        IdentityId::parse("Sub").unwrap(),
        IdentityId::parse("sub").unwrap()
    );
    let json = serde_json::to_string(&IdentityId::parse("a|b").unwrap()).unwrap();
    assert_eq!(json, "\"a|b\"");
    assert!(serde_json::from_str::<IdentityId>("\"\"").is_err());
}
