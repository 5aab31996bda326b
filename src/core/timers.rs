//! Deadlines ordered by time: handshake timers per connection and drain
//! deadlines per retired epoch. Insert, cancel and pop are O(log n).

use std::collections::BTreeSet;
use std::time::Instant;

use super::types::ConnId;
use crate::config::model::Epoch;

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKey {
    /// The handshake of this connection must be over by then.
    Handshake(ConnId),
    /// R12: established connections of this retired epoch close then.
    Drain { entity: usize, epoch: Epoch },
}

#[derive(Debug, Default)]
pub(super) struct Timers {
    set: BTreeSet<(Instant, TimerKey)>,
}

impl Timers {
    pub(super) fn insert(&mut self, at: Instant, key: TimerKey) {
        self.set.insert((at, key));
    }

    pub(super) fn cancel(&mut self, at: Instant, key: TimerKey) {
        self.set.remove(&(at, key));
    }

    /// The earliest deadline, if it is due at `now` (deadline <= now).
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, TimerKey)> {
        match self.set.first() {
            Some(&(at, _)) if at <= now => self.set.pop_first(),
            _ => None,
        }
    }

    pub(super) fn next(&self) -> Option<Instant> {
        self.set.first().map(|&(at, _)| at)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.set.len()
    }
}
