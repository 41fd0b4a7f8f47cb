//! Characters that change how text looks without being seen: what names and addresses refuse.

/// Whether `c` is in Unicode's general category Cf ("format"): zero-width spaces and joiners,
/// bidirectional controls (U+202E turns `evil` into `live` on screen), the byte-order mark,
/// invisible tags. A name holding one prints as another name in an audit table, so names and
/// addresses refuse them, as they refuse whitespace and control characters.
///
/// The ranges are those of Unicode 15.1's `DerivedGeneralCategory.txt`; the category grows
/// rarely, and a character added to it later is refused once this list learns it.
pub fn is_format(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Whether `c` may not appear in a name someone reads: whitespace, control or format.
pub fn is_invisible_or_space(c: char) -> bool {
    c.is_whitespace() || c.is_control() || is_format(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_characters_are_known_and_letters_are_not() {
        for c in [
            '\u{200B}',
            '\u{202E}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{2066}',
            '\u{E0041}',
        ] {
            assert!(is_format(c), "{:04X}", u32::from(c));
        }
        for c in ['a', 'é', 'K', '\u{212A}', 'İ', '中', '-', '_'] {
            assert!(!is_format(c), "{:04X}", u32::from(c));
        }
    }
}
