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

#[test]
fn d28_identity_length_is_counted_in_bytes_up_to_255() {
    assert_eq!(IdentityId::parse(""), Err(IdentityError::Empty));
    for len in [257, 1000] {
        assert_eq!(
            IdentityId::parse(&"x".repeat(len)),
            Err(IdentityError::TooLong { len, max: 255 })
        );
    }
    // 127 two-byte characters and one more byte: 128 characters, 255 bytes.
    let at_limit = format!("{}x", "é".repeat(127));
    assert_eq!(at_limit.len(), 255);
    assert_eq!(IdentityId::parse(&at_limit).unwrap().as_str(), at_limit);
    let over = "é".repeat(128);
    assert_eq!(
        IdentityId::parse(&over),
        Err(IdentityError::TooLong { len: 256, max: 255 })
    );
    assert_eq!(tenantry_core::MAX_IDENTITY_LEN, 255);
}

#[test]
fn d28_identity_white_space_is_refused_at_either_end_only() {
    for text in [" x", "x ", "\u{3000}x", "x\u{a0}", " ", "\tx", "x\n"] {
        assert_eq!(
            IdentityId::parse(text),
            Err(IdentityError::SurroundingSpace),
            "{text:?}"
        );
    }
    assert_eq!(IdentityId::parse("a b").unwrap().as_str(), "a b");
}

#[test]
fn d28_identity_control_and_format_characters_are_refused_where_they_stand() {
    let forbidden = |code, position| Err(IdentityError::ForbiddenCharacter { code, position });
    assert_eq!(IdentityId::parse("a\tb"), forbidden(9, 1));
    assert_eq!(IdentityId::parse("\u{0}a"), forbidden(0, 0));
    assert_eq!(IdentityId::parse("a\u{7f}"), forbidden(0x7f, 1));
    // A format character that is no control: refused on its own.
    assert_eq!(IdentityId::parse("a\u{200b}b"), forbidden(0x200b, 1));
    assert_eq!(IdentityId::parse("\u{feff}x"), forbidden(0xfeff, 0));
    // The position counts characters, not bytes; the first one found is named.
    assert_eq!(IdentityId::parse("éé\u{7}\u{8}"), forbidden(7, 2));
    assert_eq!(
        IdentityError::ForbiddenCharacter {
            code: 0x200b,
            position: 1
        }
        .to_string(),
        "an identity id cannot hold the character U+200B (at character 1)"
    );
    assert_eq!(
        IdentityError::TooLong { len: 256, max: 255 }.to_string(),
        "an identity id is at most 255 bytes, this one has 256"
    );
}

#[test]
fn d28_identity_text_forms_round_trip_and_compare_byte_for_byte() {
    let id: IdentityId = "auth0|Ada".parse().unwrap();
    assert_eq!(id.to_string(), "auth0|Ada");
    assert_eq!(format!("{id:?}"), "IdentityId(\"auth0|Ada\")");
    assert_eq!(IdentityId::from_stored("auth0|Ada"), id);
    assert!("".parse::<IdentityId>().is_err());
    let back: IdentityId = serde_json::from_str("\"auth0|Ada\"").unwrap();
    assert_eq!(back, id);
    assert!(serde_json::from_str::<IdentityId>("\" x\"").is_err());
    // Byte order: upper case sorts before lower case.
    assert!(IdentityId::parse("B").unwrap() < IdentityId::parse("a").unwrap());
}
