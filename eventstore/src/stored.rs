//! How events sit under the `e` keys: one envelope per key, or a run of consecutive envelopes
//! under the first one's position, and how a position is found in either.
//!
//! sled 0.34 pays per insert (a leaf cloned, a log record, a leaf split every ~8 new keys), and
//! a group commit's positions are contiguous, so the writer stores a group's envelopes as runs
//! of a few KiB: one insert per run instead of one per event. A single envelope (a group of one,
//! an event too large to share a run, and every value of a log written before runs) is the
//! envelope's JSON as it always was, so older logs open and read unchanged.

use crate::backend::{keys, Backend, Entry};
use crate::envelope::Envelope;
use crate::error::StoreError;

/// The first byte of a run. A single envelope's JSON starts with `{`, so they never collide.
const RUN: u8 = 1;

/// The stored JSON a run holds at most. sled writes a leaf (up to 17 entries) in one log
/// record when it consolidates or splits it, and a record over about 128 KiB (a quarter of a
/// 512 KiB segment) goes to a blob file, which the `sync` mode must then `fdatasync` on its
/// own: 4 KiB runs keep a full leaf of them at about 70 KiB, inline.
pub const RUN_BYTES_MAX: usize = 4096;

/// Packs the stored JSON of consecutive envelopes, the first at `first_position`, into the
/// entries to write: runs of at most `RUN_BYTES_MAX` bytes, a lone envelope as itself.
pub(crate) fn pack(first_position: u64, stored: Vec<Vec<u8>>) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut run: Vec<Vec<u8>> = Vec::new();
    let mut run_bytes = 0;
    let mut run_first = first_position;
    for (position, bytes) in (first_position..).zip(stored) {
        if !run.is_empty() && run_bytes + bytes.len() > RUN_BYTES_MAX {
            entries.push(seal(run_first, std::mem::take(&mut run)));
            run_bytes = 0;
        }
        if run.is_empty() {
            run_first = position;
        }
        run_bytes += bytes.len();
        run.push(bytes);
    }
    if !run.is_empty() {
        entries.push(seal(run_first, run));
    }
    entries
}

/// `RUN ‖ count ‖ length of each ‖ their bytes`, the integers as 32-bit big-endian.
fn seal(first_position: u64, mut run: Vec<Vec<u8>>) -> Entry {
    let key = keys::event(first_position);
    if run.len() == 1 {
        return (key, run.pop().unwrap_or_default());
    }
    let lengths: Vec<u32> = run
        .iter()
        .map(|bytes| u32::try_from(bytes.len()).unwrap_or(u32::MAX))
        .collect();
    let total: usize = run.iter().map(Vec::len).sum();
    let mut value = Vec::with_capacity(5 + 4 * run.len() + total);
    value.push(RUN);
    value.extend_from_slice(&u32::try_from(run.len()).unwrap_or(u32::MAX).to_be_bytes());
    for length in lengths {
        value.extend_from_slice(&length.to_be_bytes());
    }
    for bytes in run {
        value.extend_from_slice(&bytes);
    }
    (key, value)
}

/// The envelopes' stored JSON in one entry read back, each with the position it must have.
pub(crate) fn unpack<'v>(key: &[u8], value: &'v [u8]) -> Result<Vec<(u64, &'v [u8])>, StoreError> {
    let first = key
        .split_first()
        .filter(|(tag, _)| **tag == keys::EVENT)
        .and_then(|(_, rest)| keys::decode_u64(rest))
        .ok_or_else(|| StoreError::corrupt(0, "an event key"))?;
    if value.first() != Some(&RUN) {
        return Ok(vec![(first, value)]);
    }
    let corrupt = || StoreError::corrupt(first, "a run of events whose lengths do not add up");
    let read_u32 = |at: usize| -> Option<usize> {
        let raw = <[u8; 4]>::try_from(value.get(at..at + 4)?).ok()?;
        usize::try_from(u32::from_be_bytes(raw)).ok()
    };
    let count = read_u32(1).ok_or_else(corrupt)?;
    let mut offset = 5usize
        .checked_add(count.checked_mul(4).ok_or_else(corrupt)?)
        .ok_or_else(corrupt)?;
    let mut out = Vec::with_capacity(count);
    for (index, position) in (0..count).zip(first..) {
        let length = read_u32(5 + 4 * index).ok_or_else(corrupt)?;
        let end = offset.checked_add(length).ok_or_else(corrupt)?;
        out.push((position, value.get(offset..end).ok_or_else(corrupt)?));
        offset = end;
    }
    if offset != value.len() || out.len() < 2 {
        return Err(corrupt());
    }
    Ok(out)
}

/// Parses one envelope and checks it is the one its place in the log says.
pub(crate) fn decode(position: u64, bytes: &[u8]) -> Result<Envelope, StoreError> {
    let envelope: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::corrupt(position, format!("undecodable envelope: {e}")))?;
    if envelope.position != position {
        return Err(StoreError::corrupt(
            position,
            format!("the envelope says position {}", envelope.position),
        ));
    }
    Ok(envelope)
}

/// The entry that holds `position`: its own key, or the run that starts before it.
fn entry_holding<B: Backend>(backend: &B, position: u64) -> Result<Option<Entry>, StoreError> {
    let key = keys::event(position);
    if let Some(value) = backend.get(&key)? {
        return Ok(Some((key, value)));
    }
    let before = backend.scan(&[keys::EVENT], &key, 1, true)?;
    Ok(before.into_iter().next())
}

/// The envelope at `position`.
pub(crate) fn read_event<B: Backend>(backend: &B, position: u64) -> Result<Envelope, StoreError> {
    let missing = || StoreError::corrupt(position, "missing event");
    let (key, value) = entry_holding(backend, position)?.ok_or_else(missing)?;
    let (_, bytes) = unpack(&key, &value)?
        .into_iter()
        .find(|(at, _)| *at == position)
        .ok_or_else(missing)?;
    decode(position, bytes)
}

/// Reads envelopes one position at a time, keeping the last entry read: a stream's
/// consecutive events often share a run, which then is fetched once.
#[derive(Default)]
pub(crate) struct EventReader {
    held: Option<Entry>,
}

impl EventReader {
    pub fn read<B: Backend>(&mut self, backend: &B, position: u64) -> Result<Envelope, StoreError> {
        if let Some((key, value)) = &self.held {
            if let Some((_, bytes)) = unpack(key, value)?
                .into_iter()
                .find(|(at, _)| *at == position)
            {
                return decode(position, bytes);
            }
        }
        let entry = entry_holding(backend, position)?
            .ok_or_else(|| StoreError::corrupt(position, "missing event"))?;
        let held = self.held.insert(entry);
        let (_, bytes) = unpack(&held.0, &held.1)?
            .into_iter()
            .find(|(at, _)| *at == position)
            .ok_or_else(|| StoreError::corrupt(position, "missing event"))?;
        decode(position, bytes)
    }
}

/// The stored JSON of the events from `from` to `to` (both included), in order, as far as the
/// store holds them; the caller checks that none is missing.
pub(crate) fn scan_events<B: Backend>(
    backend: &B,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    if to < from {
        return Ok(Vec::new());
    }
    // The first event may sit in a run that starts before it.
    let start = match entry_holding(backend, from)? {
        Some((key, _)) => key,
        None => keys::event(from),
    };
    let wanted = usize::try_from(to - from + 1).unwrap_or(usize::MAX);
    let entries = backend.scan(&start, &keys::event(to.saturating_add(1)), wanted, false)?;
    let mut out = Vec::with_capacity(wanted.min(entries.len().saturating_mul(8)));
    for (key, value) in &entries {
        for (position, bytes) in unpack(key, value)? {
            if (from..=to).contains(&position) {
                out.push((position, bytes.to_vec()));
            }
        }
    }
    Ok(out)
}

/// The last event the store holds, if any.
pub(crate) fn last_event<B: Backend>(backend: &B) -> Result<Option<Envelope>, StoreError> {
    let last = backend.scan(&[keys::EVENT], &[keys::EVENT + 1], 1, true)?;
    let Some((key, value)) = last.first() else {
        return Ok(None);
    };
    let events = unpack(key, value)?;
    match events.last() {
        Some((position, bytes)) => decode(*position, bytes).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(position: u64, bytes: usize) -> Vec<u8> {
        let mut text = format!("{{\"position\":{position},\"pad\":\"");
        text.push_str(&"x".repeat(bytes.saturating_sub(text.len() + 2)));
        text.push_str("\"}");
        text.into_bytes()
    }

    #[test]
    fn a_lone_envelope_is_stored_as_itself() {
        let entries = pack(7, vec![json(7, 100)]);
        assert_eq!(entries, vec![(keys::event(7), json(7, 100))]);
        let unpacked = unpack(&entries[0].0, &entries[0].1).expect("unpacks");
        assert_eq!(unpacked, vec![(7, &json(7, 100)[..])]);
    }

    #[test]
    fn a_group_becomes_runs_of_bounded_size_that_unpack_in_order() {
        let stored: Vec<Vec<u8>> = (10..30).map(|p| json(p, 600)).collect();
        let entries = pack(10, stored.clone());
        assert!(entries.len() > 1 && entries.len() < stored.len());
        let mut positions = Vec::new();
        for (key, value) in &entries {
            assert!(value.len() <= RUN_BYTES_MAX + 5 + 4 * 8, "{}", value.len());
            for (position, bytes) in unpack(key, value).expect("unpacks") {
                assert_eq!(
                    bytes,
                    &stored[usize::try_from(position - 10).expect("small")][..]
                );
                positions.push(position);
            }
        }
        assert_eq!(positions, (10..30).collect::<Vec<_>>());
    }

    #[test]
    fn an_oversized_envelope_stands_alone_between_runs() {
        let stored = vec![json(1, 100), json(2, 100), json(3, 9000), json(4, 100)];
        let entries = pack(1, stored);
        let keys: Vec<_> = entries.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![keys::event(1), keys::event(3), keys::event(4)]);
        assert_eq!(entries[1].1.first(), Some(&b'{'));
    }

    #[test]
    fn a_run_whose_lengths_do_not_add_up_is_corrupt() {
        let (key, mut value) = pack(1, vec![json(1, 100), json(2, 100)]).remove(0);
        value.pop();
        assert!(matches!(
            unpack(&key, &value),
            Err(StoreError::Corrupt { position: 1, .. })
        ));
    }
}
