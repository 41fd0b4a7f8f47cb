//! Near-valid inputs for the fuzz property tests: a valid seed with a few byte-level edits,
//! and the repository's corpus of inputs that once mattered, replayed before anything random.

use std::path::PathBuf;

use proptest::prelude::*;

/// One edit; positions are taken modulo the input's length, so any edit fits any input.
#[derive(Debug, Clone)]
pub enum Edit {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    Duplicate { at: usize, len: usize },
    Truncate { at: usize },
}

/// Fragments that parsers treat specially: quotes, escapes, brackets, signs, huge and odd
/// numbers, invalid UTF-8, a NUL, a byte order mark.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"-",
    b"-1",
    b"0",
    b"1e999",
    b"18446744073709551616",
    b"9007199254740993",
    b"\xff",
    b"\xc3",
    b"\0",
    b"\xef\xbb\xbf",
    b"=",
    b"+",
    b"/",
    b"_",
    b"A",
    b"f",
];

fn edit() -> impl Strategy<Value = Edit> {
    let bytes = prop_oneof![
        prop::sample::select(TOKENS).prop_map(<[u8]>::to_vec),
        prop::collection::vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Set { at, byte }),
        (any::<usize>(), bytes).prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (any::<usize>(), 1usize..8).prop_map(|(at, len)| Edit::Remove { at, len }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Edit::Duplicate { at, len }),
        any::<usize>().prop_map(|at| Edit::Truncate { at }),
    ]
}

/// One to three edits.
pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(edit(), 1..4)
}

/// `seed` with `edits` applied in order.
pub fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for edit in edits {
        // `len + 1` places for an insertion, `len` for everything else; an empty input
        // takes only insertions.
        let place = |at: usize, len: usize| at % (len + 1);
        match edit {
            Edit::Flip { at, bit } if !out.is_empty() => {
                let i = at % out.len();
                out[i] ^= 1 << bit;
            }
            Edit::Set { at, byte } if !out.is_empty() => {
                let i = at % out.len();
                out[i] = *byte;
            }
            Edit::Insert { at, bytes } => {
                let i = place(*at, out.len());
                out.splice(i..i, bytes.iter().copied());
            }
            Edit::Remove { at, len } if !out.is_empty() => {
                let i = at % out.len();
                let end = (i + len).min(out.len());
                out.drain(i..end);
            }
            Edit::Duplicate { at, len } if !out.is_empty() => {
                let i = at % out.len();
                let end = (i + len).min(out.len());
                let copy = out[i..end].to_vec();
                out.splice(end..end, copy);
            }
            Edit::Truncate { at } => {
                let i = place(*at, out.len());
                out.truncate(i);
            }
            _ => {}
        }
    }
    out
}

/// Every file of `tests/corpus/{name}`, sorted by file name so a failure names the same
/// input each time.
pub fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus {} is empty", dir.display());
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("a corpus file");
            (path, bytes)
        })
        .collect()
}

/// Text as a parser of `&str` receives it: the bytes themselves when they are UTF-8, and
/// otherwise what a lossy decoder (an HTTP framework, a terminal) would hand on.
pub fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
