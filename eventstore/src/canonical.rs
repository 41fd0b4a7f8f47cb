//! RFC 8785 JSON Canonicalization Scheme (JCS): the bytes the hash chain is computed over.
//!
//! The chain has to be recomputable by an outside auditor with any JCS library, so the
//! rules are the RFC's, not serde_json's: object members sorted by their UTF-16 code
//! units, numbers in ECMAScript's shortest form, strings with only the mandatory escapes.

use serde_json::Value;

/// Appends the canonical form of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => write_number(number, out),
        Value::String(string) => write_canonical_str(string, out),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            // serde_json's map orders keys by UTF-8 bytes, which differs from UTF-16 order
            // for characters above U+FFFF against U+E000..U+FFFF: sort explicitly.
            let mut keys: Vec<&String> = members.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push(b'{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical_str(key, out);
                out.push(b':');
                write_canonical(&members[key.as_str()], out);
            }
            out.push(b'}');
        }
    }
}

/// The canonical bytes of `value`.
pub fn to_canonical_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

fn write_number(number: &serde_json::Number, out: &mut Vec<u8>) {
    // ECMAScript prints integers up to 2^53 exactly and everything else through the
    // shortest round-trip double, which is what ryu-js implements.
    const EXACT_MAX: u64 = 1 << 53;
    if let Some(unsigned) = number.as_u64().filter(|n| *n <= EXACT_MAX) {
        out.extend_from_slice(unsigned.to_string().as_bytes());
    } else if let Some(signed) = number.as_i64().filter(|n| n.unsigned_abs() <= EXACT_MAX) {
        out.extend_from_slice(signed.to_string().as_bytes());
    } else {
        let float = number.as_f64().unwrap_or(f64::NAN);
        let mut buffer = ryu_js::Buffer::new();
        out.extend_from_slice(buffer.format(float).as_bytes());
    }
}

/// Appends the canonical form of a JSON string.
///
/// Only `"`, `\\` and the controls below U+0020 are escaped (RFC 8785 section 3.2.2.2, which
/// is also exactly what serde_json escapes); everything else, multi-byte UTF-8 included, is
/// copied as it is, in runs rather than character by character.
pub fn write_canonical_str(string: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = string.as_bytes();
    let mut run_start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run_start..index]);
        run_start = index + 1;
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0x0f)]);
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

/// Appends an unsigned integer in the canonical form `write_canonical` gives it.
pub fn write_canonical_u64(number: u64, out: &mut Vec<u8>) {
    const EXACT_MAX: u64 = 1 << 53;
    if number <= EXACT_MAX {
        write_u64(number, out);
    } else {
        write_number(&serde_json::Number::from(number), out);
    }
}

/// Appends the decimal digits of `number`, as serde_json writes it.
pub fn write_u64(mut number: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        // A remainder of division by 10: below 10, so the conversion is exact.
        digits[start] = b'0' + u8::try_from(number % 10).unwrap_or(0);
        number /= 10;
        if number == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canonical(value: Value) -> String {
        String::from_utf8(to_canonical_vec(&value)).expect("canonical JSON is UTF-8")
    }

    #[test]
    fn sorts_members_and_drops_whitespace() {
        assert_eq!(
            canonical(json!({"b": 1, "a": [true, null, "x"]})),
            r#"{"a":[true,null,"x"],"b":1}"#
        );
    }

    #[test]
    fn rfc8785_number_examples() {
        // From RFC 8785 appendix B.
        let cases = [
            (json!(0.0), "0"),
            (json!(-0.0), "0"),
            (json!(1e21), "1e+21"),
            (json!(1e-7), "1e-7"),
            (json!(333333333.3333333), "333333333.3333333"),
            (json!(9007199254740992u64), "9007199254740992"),
            (json!(295147905179352830000.0), "295147905179352830000"),
            (json!(4.5), "4.5"),
            (json!(0.000001), "0.000001"),
        ];
        for (value, expected) in cases {
            assert_eq!(canonical(value), expected);
        }
    }

    #[test]
    fn rfc8785_sorting_example_uses_utf16_order() {
        let value = json!({
            "\u{20ac}": "Euro Sign",
            "\r": "Carriage Return",
            "\u{fb33}": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\u{1f600}": "Emoji: Grinning Face",
            "\u{80}": "Control",
            "\u{f6}": "Latin Small Letter O With Diaeresis"
        });
        let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
            \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
            \"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(canonical(value), expected);
    }

    #[test]
    fn escapes_only_what_must_be_escaped() {
        assert_eq!(
            canonical(json!("a\"\\\u{1}\n/é")),
            "\"a\\\"\\\\\\u0001\\n/é\""
        );
    }
}
