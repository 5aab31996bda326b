//! Plain types shared by the shard core and its shell: identifiers, policies,
//! close kinds and reasons, and what each event returns.

use std::time::Duration;

use crate::config::model::Epoch;

/// Identifier of one connection within one shard. Allocated by
/// [`ShardCore::on_accept`](super::ShardCore::on_accept), increasing from 1,
/// never reused within a shard.
pub type ConnId = u64;

/// The per-epoch rules of one entity, taken from its effective SSL parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochPolicy {
    /// R12: how long connections of a retired epoch may keep running. `None`:
    /// until they close by themselves.
    pub drain_timeout: Option<Duration>,
    /// Time allowed from accept (and again from the first handshake byte) to
    /// the end of the handshake.
    pub handshake_timeout: Duration,
    /// R8: drop the TLS session of a connection that did not end cleanly.
    pub strict_session_cleanup: bool,
    /// Most open connections of the entity on this shard; `None`: unlimited.
    pub max_conns: Option<u32>,
}

impl Default for EpochPolicy {
    fn default() -> Self {
        EpochPolicy {
            drain_timeout: None,
            handshake_timeout: Duration::from_secs(10),
            strict_session_cleanup: true,
            max_conns: None,
        }
    }
}

/// How a connection ended, as the shell saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseKind {
    /// We sent close_notify: after the peer's close_notify or clean EOF, on
    /// our own close, or at a drain deadline or disable. The only kind that
    /// keeps the TLS session (R8).
    Clean,
    /// The peer reset the connection or went away without close_notify.
    PeerReset,
    /// The peer sent something TLS or the proxy could not accept.
    ProtocolError,
    /// A handshake or idle timer ran out.
    Timeout,
    /// Closed mid-handshake by an epoch change (R2) or a stale handshake.
    Killed,
    /// The back end could not be reached or failed mid-stream.
    BackendFailed,
}

impl CloseKind {
    /// All kinds, for tests and tables.
    pub const ALL: [CloseKind; 6] = [
        CloseKind::Clean,
        CloseKind::PeerReset,
        CloseKind::ProtocolError,
        CloseKind::Timeout,
        CloseKind::Killed,
        CloseKind::BackendFailed,
    ];
}

/// Why the core asks the shell to close a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The handshake (or the wait for its first byte) took too long.
    HandshakeTimeout,
    /// R2: the connection was mid-handshake when its epoch retired.
    EpochChanged,
    /// R12: the connection's epoch retired and its drain timeout ran out.
    DrainTimeout,
    /// R7: the entity was disabled or removed.
    Disabled,
}

/// A new connection was refused: the entity is unknown or disabled, or it
/// already has `max_conns` open connections on this shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("connection refused: entity unknown, disabled or at its connection limit")]
pub struct Refused;

/// A handshake completed but the connection may not go on: its epoch retired
/// while it was handshaking (R2), or the core already asked the shell to
/// close it. The shell closes it with [`CloseKind::Killed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("handshake completed under a retired epoch")]
pub struct Stale;

/// What [`ShardCore::set_epoch`](super::ShardCore::set_epoch) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochChange {
    /// Connections mid-handshake under the retired epoch (R2), sorted. The
    /// shell closes each; they are already counted as killed.
    pub killed: Vec<ConnId>,
    /// Established connections of the retired epoch that now drain (R1).
    pub draining: usize,
    /// A new epoch was opened (first sight of the entity, or a newer epoch).
    pub opened: bool,
    /// The epoch that was retired by this call, if any.
    pub retired: Option<Epoch>,
    /// The retired epoch had no connection left and is already drained.
    pub retired_drained: bool,
}

/// What [`ShardCore::on_close`](super::ShardCore::on_close) decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloseOutcome {
    /// R8: remove this connection's TLS session from the caches.
    pub drop_session: bool,
    /// The epoch the connection was bound to; `None` when it closed before
    /// its first handshake byte, or when the id was unknown.
    pub epoch: Option<Epoch>,
    /// This was the last connection of a retired epoch: it is now drained.
    pub epoch_drained: bool,
}

/// A connection's place in its lifecycle, as seen from outside the core.
/// See `LIFECYCLE.md` beside this file for the transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnState {
    /// A front-end connection accepted with no byte read yet. Not bound to
    /// an epoch: it handshakes under whichever epoch is current when its
    /// first byte arrives (R2). Its handshake timer already runs.
    Accepted,
    /// Bound to `epoch` and handshaking: a front end has read its first
    /// ClientHello byte, a back end is connecting or handshaking. Killed if
    /// `epoch` retires before the handshake completes (R2).
    Handshaking { epoch: Epoch },
    /// Handshake completed under `epoch`, which is still current.
    Established { epoch: Epoch },
    /// Handshake completed under `epoch`, which has since retired. Keeps
    /// running on that epoch's settings (R1) until it closes, its drain
    /// deadline passes (R12) or the entity is disabled (R7). A back-end
    /// connection in this state is never handed to a new client (R4).
    Draining { epoch: Epoch },
    /// The core asked the shell to close it (killed, timed out, drained,
    /// disabled); it stays counted as live until the shell reports the close.
    Closing,
}

impl ConnState {
    /// The epoch the connection is bound to, when the state carries one.
    pub fn epoch(self) -> Option<Epoch> {
        match self {
            ConnState::Handshaking { epoch }
            | ConnState::Established { epoch }
            | ConnState::Draining { epoch } => Some(epoch),
            ConnState::Accepted | ConnState::Closing => None,
        }
    }
}
