//! The hash chain's canonical JSON against RFC 8785 itself: the RFC's published examples
//! (section 3.2.2's canonicalization example with its section 3.2.4 bytes, section 3.2.3's
//! sorting example, appendix B's number serialization table), and generated JSON values whose
//! bytes must be those of another implementation, `serde_json_canonicalizer`, so an outside
//! auditor with any JCS library recomputes the same hashes.

use proptest::prelude::*;
use roster_eventstore::canonical::to_canonical_vec;
use serde_json::{Number, Value};

fn ours(value: &Value) -> String {
    String::from_utf8(to_canonical_vec(value)).expect("canonical JSON is UTF-8")
}

fn theirs(value: &Value) -> String {
    serde_json_canonicalizer::to_string(value).expect("serde_json_canonicalizer takes any Value")
}

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).expect("the RFC's input is JSON")
}

/// RFC 8785 section 3.2.2: the input, its canonical form, and section 3.2.4's UTF-8 bytes of it.
#[test]
fn rfc8785_canonicalization_example() {
    let input = parsed(
        r#"{
            "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
            "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
            "literals": [null, true, false]
        }"#,
    );
    let expected = r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#;
    assert_eq!(ours(&input), expected);
    let utf8: Vec<u8> = "\
        7b 22 6c 69 74 65 72 61 6c 73 22 3a 5b 6e 75 6c 6c 2c 74 72 \
        75 65 2c 66 61 6c 73 65 5d 2c 22 6e 75 6d 62 65 72 73 22 3a \
        5b 33 33 33 33 33 33 33 33 33 2e 33 33 33 33 33 33 33 2c 31 \
        65 2b 33 30 2c 34 2e 35 2c 30 2e 30 30 32 2c 31 65 2d 32 37 \
        5d 2c 22 73 74 72 69 6e 67 22 3a 22 e2 82 ac 24 5c 75 30 30 \
        30 66 5c 6e 41 27 42 5c 22 5c 5c 5c 5c 5c 22 2f 22 7d"
        .split_whitespace()
        .map(|pair| u8::from_str_radix(pair, 16).expect("hex"))
        .collect();
    assert_eq!(to_canonical_vec(&input), utf8);
    assert_eq!(theirs(&input), expected);
}

/// RFC 8785 section 3.2.3: members sorted by their names' UTF-16 code units, so the emoji
/// (a surrogate pair, 0xD83D…) sorts before U+FB33, which UTF-8 order would not do.
#[test]
fn rfc8785_sorting_example() {
    let input = parsed(
        r#"{
            "\u20ac": "Euro Sign",
            "\r": "Carriage Return",
            "\ufb33": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\ud83d\ude00": "Emoji: Grinning Face",
            "\u0080": "Control",
            "\u00f6": "Latin Small Letter O With Diaeresis"
        }"#,
    );
    let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
        \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
        \"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
    assert_eq!(ours(&input), expected);
    assert_eq!(theirs(&input), expected);
}

/// RFC 8785 appendix B: IEEE 754 doubles (as bits) and their serialization. The table's NaN
/// and Infinity rows have none: JSON cannot hold them, and `serde_json::Value` refuses them.
#[test]
fn rfc8785_number_serialization_samples() {
    let table: [(u64, &str); 24] = [
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0xffefffffffffffff, "-1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xc340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44b52d02c7e14af5, "9.999999999999997e+22"),
        (0x44b52d02c7e14af6, "1e+23"),
        (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
        (0x444b1ae4d6e2ef4e, "999999999999999700000"),
        (0x444b1ae4d6e2ef4f, "999999999999999900000"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
        (0x3eb0c6f7a0b5ed8d, "0.000001"),
        (0x41b3de4355555553, "333333333.3333332"),
        (0x41b3de4355555554, "333333333.33333325"),
        (0x41b3de4355555555, "333333333.3333333"),
        (0x41b3de4355555556, "333333333.3333334"),
        (0x41b3de4355555557, "333333333.33333343"),
        (0xbecbf647612f3696, "-0.0000033333333333333333"),
        (0x43143ff3c1cb0959, "1424953923781206.2"),
    ];
    for (bits, expected) in table {
        let value = Value::Number(Number::from_f64(f64::from_bits(bits)).expect("finite"));
        assert_eq!(ours(&value), expected, "{bits:016x}");
        assert_eq!(theirs(&value), expected, "{bits:016x}");
    }
    for bits in [0x7fffffffffffffff_u64, 0x7ff0000000000000] {
        assert!(Number::from_f64(f64::from_bits(bits)).is_none());
    }
}

/// Characters where canonical forms go wrong: the escaped ones (controls, `"`, `\`), `/` and
/// DEL (not escaped), the top of the BMP above the surrogates (U+E000..U+FFFF, which UTF-16
/// order puts after every supplementary character), and supplementary ones.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => proptest::char::range('a', 'e'),
        2 => proptest::char::range('\u{0}', '\u{1f}'),
        2 => prop::sample::select(vec!['"', '\\', '/', '\u{7f}', '\u{80}', '\u{2028}', '\u{feff}']),
        2 => proptest::char::range('\u{e000}', '\u{ffff}'),
        2 => proptest::char::range('\u{10000}', '\u{10ffff}'),
        1 => any::<char>(),
    ]
}

fn tricky_string() -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 0..8).prop_map(|chars| chars.into_iter().collect())
}

/// Numbers of every kind a `Value` holds: small and huge integers of both signs (past 2^53
/// they are written as doubles), doubles from any bit pattern, and decimal-looking ones.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1000_i64..1000).prop_map(Value::from),
        any::<u64>().prop_filter_map("finite", |bits| {
            Number::from_f64(f64::from_bits(bits)).map(Value::Number)
        }),
        (-1_000_000_i64..1_000_000, 0_u32..12).prop_filter_map("finite", |(m, e)| {
            let scaled = f64::from(i32::try_from(m).ok()?) / 10_f64.powi(i32::try_from(e).ok()?);
            Number::from_f64(scaled).map(Value::Number)
        }),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        tricky_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((tricky_string(), inner), 0..8)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn our_bytes_are_serde_json_canonicalizers(value in json_value()) {
        prop_assert_eq!(ours(&value), theirs(&value));
    }
}
