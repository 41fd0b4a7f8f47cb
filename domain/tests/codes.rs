//! Property tests of invite codes: a code verifies only for its own number, generation and secret,
//! and no string, however malformed, makes parsing panic or passes verification.

use proptest::prelude::*;
use roster_domain::codes::{verify, BASE64_CHARS, HEX_CHARS};
use roster_domain::{InviteCode, ServerSecret, VerifiedCode, NUMBER_LIMIT};

fn secret() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..64)
}

fn number() -> impl Strategy<Value = u64> {
    1..NUMBER_LIMIT
}

/// A code's 32 bytes with its number and generation replaced, the MAC kept: what a forger would try.
fn with_fields(code: &InviteCode, number: u64, generation: u32) -> String {
    let mut bytes = hex::decode(code.encode_hex()).unwrap();
    bytes[..8].copy_from_slice(&number.to_be_bytes());
    bytes[8..12].copy_from_slice(&generation.to_be_bytes());
    hex::encode(bytes)
}

/// Near-miss lengths around both encodings, in both alphabets.
fn near_miss() -> impl Strategy<Value = String> {
    let lengths = proptest::sample::select(vec![0usize, 1, 42, 43, 44, 63, 64, 65]);
    let alphabet = proptest::sample::select(vec![
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        "0123456789abcdef",
        "0123456789ABCDEF",
        "+/=. \u{e9}\u{1F600}",
    ]);
    (lengths, alphabet).prop_flat_map(|(len, alphabet)| {
        let chars: Vec<char> = alphabet.chars().collect();
        proptest::collection::vec(proptest::sample::select(chars), len)
            .prop_map(|cs| cs.into_iter().collect())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn a_code_verifies_in_both_encodings(key in secret(), n in number(), g in any::<u32>()) {
        let secret = ServerSecret::new(key);
        let code = InviteCode::derive(&secret, n, g);
        for text in [code.encode_base64(), code.encode_hex()] {
            let verified = VerifiedCode::from_text(&secret, &text).unwrap();
            prop_assert_eq!((verified.number(), verified.generation()), (n, g));
        }
        prop_assert_eq!(code.encode_base64().len(), BASE64_CHARS);
        prop_assert_eq!(code.encode_hex().len(), HEX_CHARS);
    }

    #[test]
    fn a_code_never_verifies_for_another_number_generation_or_secret(
        key in secret(),
        other_key in secret(),
        n in number(),
        other_n in number(),
        g in any::<u32>(),
        other_g in any::<u32>(),
    ) {
        let secret = ServerSecret::new(key.clone());
        let code = InviteCode::derive(&secret, n, g);
        if other_n != n {
            let forged = InviteCode::parse(&with_fields(&code, other_n, g)).unwrap();
            prop_assert!(!verify(&secret, &forged), "verified for another number");
        }
        if other_g != g {
            let forged = InviteCode::parse(&with_fields(&code, n, other_g)).unwrap();
            prop_assert!(!verify(&secret, &forged), "verified for another generation");
        }
        if other_key != key {
            let parsed = InviteCode::parse(&code.encode_base64()).unwrap();
            prop_assert!(!verify(&ServerSecret::new(other_key), &parsed), "verified with another secret");
        }
    }

    #[test]
    fn any_string_is_refused_without_panicking(text in any::<String>()) {
        let secret = ServerSecret::new(*b"property test secret");
        let verified = InviteCode::parse(&text).is_ok_and(|parsed| verify(&secret, &parsed));
        prop_assert!(!verified, "{text:?} verified");
    }

    #[test]
    fn near_miss_lengths_and_alphabets_are_refused(text in near_miss()) {
        let secret = ServerSecret::new(*b"property test secret");
        match InviteCode::parse(&text) {
            Ok(parsed) => {
                prop_assert!(text.len() == BASE64_CHARS || text.len() == HEX_CHARS, "parsed {text:?}");
                prop_assert!(!verify(&secret, &parsed));
            }
            Err(error) => prop_assert_eq!(error.code(), "invitation_not_found"),
        }
    }
}

#[test]
fn numbers_from_two_to_the_53_up_never_parse() {
    let secret = ServerSecret::new(*b"s");
    for number in [NUMBER_LIMIT, NUMBER_LIMIT + 1, u64::MAX] {
        let code = InviteCode::derive(&secret, number, 1);
        assert!(InviteCode::parse(&code.encode_base64()).is_err());
        assert!(InviteCode::parse(&code.encode_hex()).is_err());
    }
    assert!(
        InviteCode::parse(&InviteCode::derive(&secret, NUMBER_LIMIT - 1, 1).encode_hex()).is_ok()
    );
}

#[test]
fn base64_with_padding_or_the_standard_alphabet_is_refused() {
    let secret = ServerSecret::new(*b"s");
    let native = InviteCode::derive(&secret, 7, 1).encode_base64();
    assert!(InviteCode::parse(&format!("{native}=")).is_err());
    let standard: String = native
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    if standard != native {
        assert!(InviteCode::parse(&standard).is_err());
    }
}
