//! Fuzzing of the parsers that take bytes from outside: invite codes, stored envelopes and the
//! store's read path over them. (Request bodies over HTTP are in `api/fuzz_bodies.rs`.)
//!
//! Why proptest and not cargo-fuzz: cargo-fuzz needs a nightly toolchain (for
//! `-Zsanitizer`), which the build machines cannot fetch. Proptest over raw bytes and over
//! near-valid mutations of valid inputs runs on stable, in the normal `cargo test`, and
//! shrinks a failure to a small input. Each target first replays the corpus kept in
//! `tests/corpus/`, then a bounded number of random cases so the run stays in seconds; set
//! `ROSTER_FUZZ_CASES` for a longer session by hand, and add what it finds to the corpus.

#[path = "fuzz/mutate.rs"]
mod mutate;

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use roster_domain::{DomainError, InviteCode, ServerSecret, VerifiedCode};
use roster_eventstore::{
    AppendRequest, Backend, ChainChecker, Entry, Envelope, EventStore, ExpectedVersion, Limits,
    Log, MemoryBackend, NewEvent,
};
use serde_json::json;

use mutate::{apply, corpus, edits, text_of};

/// Cases per random target: `ROSTER_FUZZ_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("ROSTER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runner(default_cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases: cases(default_cases),
        // The corpus is the regression file here: a failure is shrunk and printed, and the
        // input goes into `tests/corpus/`, where every run replays it.
        failure_persistence: None,
        ..Config::default()
    })
}

fn secret() -> ServerSecret {
    ServerSecret::new(*b"fuzzing-secret-0123456789abcdef!")
}

// (a) Invite codes.

/// What any text given as a code must satisfy: a code verifies only if the code it holds
/// (the text without surrounding whitespace, or the code in a pasted invite URL) is, byte for
/// byte, one this server derived (hex in either case), and every refusal is the one error
/// that tells a guesser nothing.
fn check_code(secret: &ServerSecret, text: &str) -> Result<(), TestCaseError> {
    let code = InviteCode::code_part(text);
    match InviteCode::parse(text) {
        Ok(parsed) => {
            prop_assert!(code.len() == 43 || code.len() == 64, "parsed {text:?}");
            prop_assert!(parsed.claimed_number() >= 1);
            prop_assert!(parsed.claimed_number() < 1 << 53);
        }
        Err(error) => prop_assert_eq!(error, DomainError::InvitationNotFound),
    }
    match VerifiedCode::from_text(secret, text) {
        Ok(verified) => {
            let issued = InviteCode::derive(secret, verified.number(), verified.generation());
            prop_assert!(
                issued.encode_base64() == code || issued.encode_hex().eq_ignore_ascii_case(code),
                "{text:?} verified as {verified:?} but is not the code issued for it"
            );
        }
        Err(error) => prop_assert_eq!(error, DomainError::InvitationNotFound),
    }
    Ok(())
}

#[test]
fn code_corpus_replays() {
    let secret = secret();
    for (path, bytes) in corpus("codes") {
        check_code(&secret, &text_of(&bytes)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn arbitrary_bytes_never_open_anything() {
    let secret = secret();
    // Raw bytes rarely have a code's length, so strings of the two alphabets at exactly the
    // two lengths are drawn as well: they reach the decoders and the MAC check.
    let input = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..80).prop_map(|b| text_of(&b)),
        "[A-Za-z0-9_-]{43}",
        "[0-9a-fA-F]{64}",
        "[A-Za-z0-9+/=_-]{42,44}",
        "[0-9a-fA-F]{63,65}",
    ];
    runner(4096)
        .run(&input, |text| check_code(&secret, &text))
        .unwrap();
}

#[test]
fn edited_codes_verify_only_when_still_the_same_code() {
    let secret = secret();
    let input = (1u64..1 << 53, any::<u32>(), any::<bool>(), edits());
    runner(4096)
        .run(&input, |(number, generation, hex, edits)| {
            let code = InviteCode::derive(&secret, number, generation);
            let valid = if hex {
                code.encode_hex()
            } else {
                code.encode_base64()
            };
            let verified = VerifiedCode::from_text(&secret, &valid)
                .map_err(|e| TestCaseError::fail(format!("a derived code fails: {e}")))?;
            prop_assert_eq!(
                (verified.number(), verified.generation()),
                (number, generation)
            );
            check_code(&secret, &text_of(&apply(valid.as_bytes(), &edits)))
        })
        .unwrap();
}

// (b) Envelopes, decoded and through the store's read path.

/// Decoding never panics; an envelope that decodes writes back to one that decodes equal,
/// and the chain checker, as the first event of a log, accepts it only if its position,
/// version, link and hash are all right.
fn check_envelope_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(bytes) else {
        return Ok(());
    };
    // Floats round-trip (serde_json's `float_roundtrip`) and times outside the years 0 to
    // 9999 are written as `@ms`: both gaps this test found are closed, so it holds for all.
    let again: Envelope = serde_json::from_slice(envelope.to_json_line().as_bytes())
        .map_err(|e| TestCaseError::fail(format!("written back, it does not decode: {e}")))?;
    prop_assert_eq!(&again, &envelope);
    let accepted = ChainChecker::new().check(&envelope).is_ok();
    let sound = envelope.position == 1
        && envelope.version == 1
        && envelope.prev_hash == roster_eventstore::Hash::GENESIS
        && envelope.compute_hash() == envelope.hash;
    prop_assert_eq!(accepted, sound);
    Ok(())
}

/// Whether the chain sees `a` and `b` as one envelope: the same canonical bytes and hash.
/// When it does but they differ as values, the difference must lie only in how `data` wrote
/// a number: RFC 8785 writes numbers as the doubles they denote, so `1`, `1.0` and `1e0` are
/// one number to the chain, and so are integers beyond 2^53 that round to one double. The
/// domain writes no such integers (numbers are below 2^53, counts are `u32`), so nothing it
/// records can be edited unseen; an opaque host payload with larger integers could be.
fn same_to_the_chain(a: &Envelope, b: &Envelope) -> Result<bool, TestCaseError> {
    let same = a.canonical_without_hash() == b.canonical_without_hash() && a.hash == b.hash;
    if same && a != b {
        let mut a_with_b_data = a.clone();
        a_with_b_data.data = b.data.clone();
        prop_assert_eq!(
            &a_with_b_data,
            b,
            "the chain misses a difference outside data"
        );
    }
    Ok(same)
}

/// A little chain of valid envelopes over two streams, with the kinds of data events carry.
fn chain() -> Vec<Envelope> {
    let mut envelopes: Vec<Envelope> = Vec::new();
    let datas = [
        json!({"resource": "space/s", "owner": "alice", "parent": null}),
        json!({"number": 1, "role": "editor", "max_uses": 10, "expires_at": "2030-01-01T00:00:00.000Z"}),
        json!({"emails": ["b@example.com", "ç@example.com"], "big": 18_446_744_073_709_551_615u64, "float": 0.5, "neg": -3}),
    ];
    for (i, data) in datas.into_iter().enumerate() {
        let position = u64::try_from(i).unwrap_or(0) + 1;
        let (stream, version) = if i == 2 {
            ("resource/space/t", 1)
        } else {
            ("resource/space/s", position)
        };
        let mut envelope = Envelope {
            position,
            stream: stream.into(),
            version,
            event_id: format!("01J0000000000000000000000{position}"),
            event_type: "ResourceRegistered".into(),
            schema: 1,
            occurred_at: roster_eventstore::Timestamp::from_unix_ms(1_700_000_000_000),
            actor: "principal:alice".into(),
            command_id: format!("command-{position}"),
            correlation_id: format!("command-{position}"),
            data,
            prev_hash: envelopes
                .last()
                .map_or(roster_eventstore::Hash::GENESIS, |e| e.hash),
            hash: roster_eventstore::Hash::GENESIS,
        };
        envelope.hash = envelope.compute_hash();
        envelopes.push(envelope);
    }
    envelopes
}

#[test]
fn envelope_corpus_replays() {
    for (path, bytes) in corpus("envelopes") {
        check_envelope_bytes(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn arbitrary_bytes_decode_as_envelopes_or_are_refused() {
    runner(2048)
        .run(&prop::collection::vec(any::<u8>(), 0..512), |bytes| {
            check_envelope_bytes(&bytes)
        })
        .unwrap();
}

#[test]
fn an_edited_envelope_that_still_decodes_breaks_the_chain() {
    let pristine = chain();
    let mut checker = ChainChecker::new();
    for envelope in &pristine {
        checker.check(envelope).expect("the pristine chain checks");
    }
    let lines: Vec<Vec<u8>> = pristine
        .iter()
        .map(|e| e.to_json_line().into_bytes())
        .collect();
    runner(4096)
        .run(&(0..pristine.len(), edits()), |(which, edits)| {
            let edited = apply(&lines[which], &edits);
            check_envelope_bytes(&edited)?;
            let Ok(decoded) = serde_json::from_slice::<Envelope>(&edited) else {
                return Ok(());
            };
            let changed = !same_to_the_chain(&decoded, &pristine[which])?;
            let mut envelopes = pristine.clone();
            envelopes[which] = decoded;
            let mut checker = ChainChecker::new();
            let intact = envelopes.iter().all(|e| checker.check(e).is_ok());
            // An edit that changes what the envelope says is always caught; one that only
            // respells it (an escape, a number's form) changes nothing the chain covers.
            prop_assert_eq!(intact, !changed, "edited line: {}", text_of(&edited));
            Ok(())
        })
        .unwrap();
}

/// Every raw record of a log of a few appends: events, the stream index, command
/// outcomes and the chain head, whatever their keys.
fn pristine_records(runtime: &tokio::runtime::Runtime) -> Vec<Entry> {
    // The log owns one handle on the backend; this one reads back what it wrote.
    let backend = Arc::new(MemoryBackend::default());
    let log = Log::with_backend(backend.clone(), Limits::default()).expect("an empty log opens");
    runtime.block_on(async {
        for (stream, data) in [
            ("resource/space/s", json!({"owner": "alice"})),
            (
                "resource/space/s",
                json!({"role": "editor", "uses": [1, 2.5, null]}),
            ),
            ("resource/space/t", json!({"text": "é\u{0}\"\\"})),
        ] {
            let event = NewEvent {
                event_id: ulid::Ulid::new().to_string(),
                event_type: "Something".into(),
                schema: 1,
                data,
            };
            log.append(AppendRequest::new(
                stream,
                ExpectedVersion::Any,
                vec![event],
            ))
            .await
            .expect("appends");
        }
    });
    drop(log);
    // Every key the log writes starts with an ASCII letter, so `[0xff]` bounds them all.
    backend
        .scan(&[], &[0xff], usize::MAX, false)
        .expect("scans the backend")
}

/// Opens a log over `records` and reads it back. Whatever the bytes, nothing panics; an
/// event whose bytes say something other than what was appended is refused by the open, by
/// the read, or by `verify`.
async fn read_back(records: Vec<Entry>) -> Result<Vec<Envelope>, String> {
    let backend = MemoryBackend::default();
    backend.apply(records).map_err(|e| e.to_string())?;
    let log = Log::with_backend(backend, Limits::default()).map_err(|e| e.to_string())?;
    let envelopes = log
        .read_all(0, usize::MAX)
        .await
        .map_err(|e| e.to_string())?;
    roster_eventstore::verify(&log)
        .await
        .map_err(|e| e.to_string())?;
    Ok(envelopes)
}

#[test]
fn the_store_refuses_edited_records_on_its_read_path() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let records = pristine_records(&runtime);
    let original = runtime
        .block_on(read_back(records.clone()))
        .expect("the pristine log reads back and verifies");
    assert_eq!(original.len(), 3);
    runner(1024)
        .run(&(0..records.len(), edits()), |(which, edits)| {
            let mut edited = records.clone();
            edited[which].1 = apply(&records[which].1, &edits);
            let outcome = runtime.block_on(read_back(edited.clone()));
            let event_edit = serde_json::from_slice::<Envelope>(&records[which].1).is_ok();
            if let (Ok(envelopes), true) = (&outcome, event_edit) {
                prop_assert_eq!(envelopes.len(), original.len());
                for (served, appended) in envelopes.iter().zip(&original) {
                    prop_assert!(
                        same_to_the_chain(served, appended)?,
                        "an edited event was served as valid: {}",
                        text_of(&edited[which].1)
                    );
                }
            }
            Ok(())
        })
        .unwrap();
}
