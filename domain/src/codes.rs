//! Invite codes: derived from a server secret, a link's or invitation's number and a generation; never stored.
//!
//! A code is 32 bytes: the number (u64, big-endian, below 2^53) ‖ the generation (u32, big-endian)
//! ‖ the first 160 bits of HMAC-SHA256(server_secret, number ‖ generation). It is written either as
//! base64url without padding (43 characters, the native form) or as lowercase hex (64 characters,
//! Cal.com's form); both are accepted everywhere.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::ids::is_valid_number;
use crate::DomainError;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of MAC kept in a code: 160 bits, above the 128 the design asks for.
const MAC_BYTES: usize = 20;
const CODE_BYTES: usize = 8 + 4 + MAC_BYTES;
/// Length of the native form: 32 bytes in unpadded base64url.
pub const BASE64_CHARS: usize = 43;
/// Length of Cal.com's form: 32 bytes in hex.
pub const HEX_CHARS: usize = 64;

/// The server's secret key for codes. Its `Debug` never shows it.
#[derive(Clone)]
pub struct ServerSecret(Vec<u8>);

impl ServerSecret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> ServerSecret {
        ServerSecret(bytes.into())
    }

    fn mac(&self, number: u64, generation: u32) -> [u8; MAC_BYTES] {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(&number.to_be_bytes());
        mac.update(&generation.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut truncated = [0u8; MAC_BYTES];
        truncated.copy_from_slice(&full[..MAC_BYTES]);
        truncated
    }
}

impl ServerSecret {
    /// A key for another purpose (a webhook's signing secret), derived from this secret, a
    /// label and a number, so it is never stored and a copy of the log alone gives nothing.
    pub fn derive_key(&self, label: &str, number: u64) -> [u8; 32] {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(&number.to_be_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerSecret(..)")
    }
}

/// A code as handed to a person. Its `Debug` never shows the MAC, so codes stay out of logs.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteCode {
    number: u64,
    generation: u32,
    mac: [u8; MAC_BYTES],
}

impl InviteCode {
    /// The code of a link or invitation at a generation. Numbers come from state, where they were
    /// checked to be below 2^53; a larger one gives a code that never parses.
    pub fn derive(secret: &ServerSecret, number: u64, generation: u32) -> InviteCode {
        InviteCode {
            number,
            generation,
            mac: secret.mac(number, generation),
        }
    }

    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    fn bytes(&self) -> [u8; CODE_BYTES] {
        let mut bytes = [0u8; CODE_BYTES];
        bytes[..8].copy_from_slice(&self.number.to_be_bytes());
        bytes[8..12].copy_from_slice(&self.generation.to_be_bytes());
        bytes[12..].copy_from_slice(&self.mac);
        bytes
    }

    /// The native form: 43 characters of base64url without padding.
    pub fn encode_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.bytes())
    }

    /// Cal.com's form: 64 lowercase hex characters.
    pub fn encode_hex(&self) -> String {
        hex::encode(self.bytes())
    }

    /// Reads either form, as pasted: surrounding whitespace is dropped, and from a whole invite
    /// URL the code is taken out (`…/invite/{code}`, or Teable's `invitationCode=`, Cal.com's
    /// `token=` or a `code=` parameter). Anything else, and any number not below 2^53, is
    /// `invitation_not_found`: a malformed code and an unknown one answer alike, so probing
    /// learns nothing.
    /// The code a pasted text holds, as [`InviteCode::parse`] reads it: the text without the
    /// whitespace around it, or the code inside a whole invite URL (`…/invite/{code}`, or a
    /// seed product's `?invitationCode=`, `?token=` or `?code=`).
    pub fn code_part(text: &str) -> &str {
        code_in(text)
    }

    pub fn parse(text: &str) -> Result<ParsedCode, DomainError> {
        let text = code_in(text);
        let mut bytes = [0u8; CODE_BYTES];
        let decoded = match text.len() {
            BASE64_CHARS => match URL_SAFE_NO_PAD.decode(text.as_bytes()) {
                Ok(decoded) if decoded.len() == CODE_BYTES => {
                    bytes.copy_from_slice(&decoded);
                    true
                }
                _ => false,
            },
            HEX_CHARS => hex::decode_to_slice(text, &mut bytes).is_ok(),
            _ => false,
        };
        if !decoded {
            return Err(DomainError::InvitationNotFound);
        }
        let (number, rest) = bytes.split_at(8);
        let (generation, mac) = rest.split_at(4);
        let number = u64::from_be_bytes(
            number
                .try_into()
                .map_err(|_| DomainError::InvitationNotFound)?,
        );
        let generation = u32::from_be_bytes(
            generation
                .try_into()
                .map_err(|_| DomainError::InvitationNotFound)?,
        );
        if !is_valid_number(number) {
            return Err(DomainError::InvitationNotFound);
        }
        let mut mac_bytes = [0u8; MAC_BYTES];
        mac_bytes.copy_from_slice(mac);
        Ok(ParsedCode(InviteCode {
            number,
            generation,
            mac: mac_bytes,
        }))
    }
}

/// The code in what a person pasted: the text trimmed, or the code inside an invite URL.
fn code_in(text: &str) -> &str {
    let text = text.trim();
    let end = |rest: &str| rest.find(['?', '#', '&', '/']).unwrap_or(rest.len());
    if let Some((_, rest)) = text.rsplit_once("/invite/") {
        return &rest[..end(rest)];
    }
    if let Some((_, query)) = text.split_once('?') {
        for pair in query.split(['&', '#']) {
            if let Some((name, value)) = pair.split_once('=') {
                if matches!(name, "invitationCode" | "token" | "code") {
                    return value;
                }
            }
        }
    }
    text
}

impl fmt::Debug for InviteCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "InviteCode(number {}, generation {}, ..)",
            self.number, self.generation
        )
    }
}

/// A code that parsed but is not yet verified: its number and generation must not be trusted.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ParsedCode(InviteCode);

impl ParsedCode {
    /// The claimed number, for routing the command to the right resource before verification.
    pub fn claimed_number(&self) -> u64 {
        self.0.number
    }

    /// Checks the MAC, giving the only way to obtain a [`VerifiedCode`].
    pub fn verify(&self, secret: &ServerSecret) -> Result<VerifiedCode, DomainError> {
        if verify(secret, self) {
            Ok(VerifiedCode {
                number: self.0.number,
                generation: self.0.generation,
            })
        } else {
            Err(DomainError::InvitationNotFound)
        }
    }
}

/// Whether the code's MAC is the one the secret gives for its number and generation, compared in constant time.
pub fn verify(secret: &ServerSecret, parsed: &ParsedCode) -> bool {
    let expected = secret.mac(parsed.0.number, parsed.0.generation);
    expected.ct_eq(&parsed.0.mac).into()
}

/// A code whose MAC verified: its number and generation were issued by this server.
///
/// Commands that use a code take this type, so `decide` never sees a raw code and never needs the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedCode {
    number: u64,
    generation: u32,
}

impl VerifiedCode {
    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The code a logged acceptance was made with, for checking the log against the rules
    /// (`redecide`): the log records the number and generation a verified code carried, and
    /// holds no code. Crate-internal, so that outside the domain a code is only ever verified.
    pub(crate) fn for_check(number: u64, generation: u32) -> VerifiedCode {
        VerifiedCode { number, generation }
    }

    /// Parses and verifies in one step.
    pub fn from_text(secret: &ServerSecret, text: &str) -> Result<VerifiedCode, DomainError> {
        InviteCode::parse(text)?.verify(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_carry_the_same_code() {
        let secret = ServerSecret::new(*b"0123456789abcdef0123456789abcdef");
        let code = InviteCode::derive(&secret, 42, 7);
        let native = code.encode_base64();
        let calcom = code.encode_hex();
        assert_eq!((native.len(), calcom.len()), (BASE64_CHARS, HEX_CHARS));
        assert!(native
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        for text in [native.as_str(), calcom.as_str(), &calcom.to_uppercase()] {
            let verified = VerifiedCode::from_text(&secret, text).unwrap();
            assert_eq!((verified.number(), verified.generation()), (42, 7));
        }
        assert!(!format!("{code:?}").contains(&native));
    }

    #[test]
    fn a_pasted_code_or_a_whole_invite_url_is_understood() {
        let secret = ServerSecret::new(*b"0123456789abcdef0123456789abcdef");
        let code = InviteCode::derive(&secret, 42, 7);
        let (native, calcom) = (code.encode_base64(), code.encode_hex());
        for pasted in [
            format!("  {native}\n"),
            format!("\t{calcom} "),
            format!("https://app.example/invite/{native}"),
            format!(" https://app.example/invite/{native}?utm=mail#top "),
            format!("https://app.example/invite?invitationId=42&invitationCode={native}"),
            format!("https://cal.example/signup?token={calcom}&callbackUrl=/getting-started"),
            format!("/join?code={native}"),
        ] {
            let verified = VerifiedCode::from_text(&secret, &pasted)
                .unwrap_or_else(|e| panic!("{pasted:?}: {e}"));
            assert_eq!((verified.number(), verified.generation()), (42, 7));
        }
        for wrong in [
            format!("{native}x"),
            format!("https://app.example/invite/{native}x"),
            format!("https://app.example/?other={native}"),
            "https://app.example/invite/".to_string(),
        ] {
            assert!(
                VerifiedCode::from_text(&secret, &wrong).is_err(),
                "{wrong:?}"
            );
        }
    }
}
