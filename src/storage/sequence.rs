//! Numbers handed out in increasing order: short IDs and the stream position.
//!
//! Short IDs come from atomic counters; a batch records the highest it used and the writer thread
//! persists the running maximum in the same write, so after a crash a counter resumes above every
//! number that reached the disk (numbers handed out but never committed may be reused, harmlessly).
//!
//! The stream position orders everything a client can sync. The writer thread assigns it while
//! writing, so positions follow commit order: once position N is committed, so is every position
//! below it, and a reader that saw N has missed nothing before it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Column, Engine, StorageError, key};

/// A counter of short IDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sequence {
    ShortEventId,
    ShortStateKey,
    StateSnapshot,
    ShortRoomId,
    /// Numbers of queued outbound PDUs and EDUs (`OutboundPdus`, `OutboundEdus`).
    Outbound,
}

impl Sequence {
    pub(super) const ALL: [Sequence; 5] = [
        Sequence::ShortEventId,
        Sequence::ShortStateKey,
        Sequence::StateSnapshot,
        Sequence::ShortRoomId,
        Sequence::Outbound,
    ];

    pub(super) fn index(self) -> usize {
        self as usize
    }

    fn meta_name(self) -> &'static str {
        match self {
            Sequence::ShortEventId => "seq.short_event_id",
            Sequence::ShortStateKey => "seq.short_state_key",
            Sequence::StateSnapshot => "seq.state_snapshot",
            Sequence::ShortRoomId => "seq.short_room_id",
            Sequence::Outbound => "seq.outbound",
        }
    }
}

pub(super) const STREAM_POSITION: &str = "seq.stream_position";

pub(super) struct Sequences {
    counters: [AtomicU64; Sequence::ALL.len()],
    /// The highest stream position committed.
    pub(super) position: AtomicU64,
}

impl Sequences {
    pub fn load(engine: &dyn Engine) -> Result<Self, StorageError> {
        let read = |name: &str| -> Result<u64, StorageError> {
            match engine.get(Column::Meta, &key::meta(name))? {
                None => Ok(0),
                Some(bytes) => decode_u64(&bytes),
            }
        };
        let mut counters = [const { AtomicU64::new(0) }; Sequence::ALL.len()];
        for (counter, sequence) in counters.iter_mut().zip(Sequence::ALL) {
            *counter.get_mut() = read(sequence.meta_name())?;
        }
        Ok(Self { counters, position: AtomicU64::new(read(STREAM_POSITION)?) })
    }

    /// The next number of `sequence`, starting at 1.
    pub fn next(&self, sequence: Sequence) -> u64 {
        self.counters[sequence.index()].fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn meta_entry(sequence: Sequence, value: u64) -> (Vec<u8>, Vec<u8>) {
        (key::meta(sequence.meta_name()), value.to_be_bytes().to_vec())
    }
}

pub(super) fn decode_u64(bytes: &[u8]) -> Result<u64, StorageError> {
    let array: [u8; 8] =
        bytes.try_into().map_err(|_| StorageError::Corrupt(format!("expected 8 bytes, found {}", bytes.len())))?;
    Ok(u64::from_be_bytes(array))
}
