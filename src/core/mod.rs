//! Placeholder of the IO-free per-shard lifecycle (replaced by the real module).
#![allow(dead_code, unused_variables)]
use std::time::{Duration, Instant};
use crate::config::{EntityRef, Epoch};

pub type ConnId = u64;
#[derive(Clone, Debug)]
pub struct EpochPolicy { pub drain_timeout: Option<Duration>, pub handshake_timeout: Duration, pub strict_session_cleanup: bool, pub max_conns: Option<u32> }
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseKind { Clean, PeerReset, ProtocolError, Timeout, Killed, BackendFailed }
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason { HandshakeTimeout, EpochChanged, DrainTimeout, Disabled }
#[derive(Debug)]
pub struct Refused;
#[derive(Debug)]
pub struct Stale;
#[derive(Debug, Default)]
pub struct EpochChange { pub killed: Vec<ConnId>, pub draining: usize, pub opened: bool }
#[derive(Debug, Default)]
pub struct CloseOutcome { pub drop_session: bool, pub epoch: Option<Epoch> }
#[derive(Debug, Default, serde::Serialize)]
pub struct ShardStats { pub shard: usize }
pub struct ShardCore { shard: usize }
impl ShardCore {
  pub fn new(shard: usize) -> Self { ShardCore { shard } }
  pub fn set_epoch(&mut self, entity: &EntityRef, epoch: Epoch, policy: EpochPolicy, now: Instant) -> EpochChange { EpochChange::default() }
  pub fn disable(&mut self, entity: &EntityRef, now: Instant) -> Vec<ConnId> { vec![] }
  pub fn enable(&mut self, entity: &EntityRef) {}
  pub fn remove_entity(&mut self, entity: &EntityRef) -> Vec<ConnId> { vec![] }
  pub fn current_epoch(&self, entity: &EntityRef) -> Option<Epoch> { None }
  pub fn on_accept(&mut self, entity: &EntityRef, now: Instant) -> Result<ConnId, Refused> { Ok(0) }
  pub fn on_handshake_start(&mut self, id: ConnId, now: Instant) -> Epoch { 1 }
  pub fn on_established(&mut self, id: ConnId, resumed: bool, now: Instant) -> Result<(), Stale> { Ok(()) }
  pub fn on_close(&mut self, id: ConnId, kind: CloseKind, now: Instant) -> CloseOutcome { CloseOutcome::default() }
  pub fn on_refused_resumption(&mut self, entity: &EntityRef, now: Instant) {}
  pub fn poll_timeouts(&mut self, now: Instant) -> Vec<(ConnId, CloseReason)> { vec![] }
  pub fn next_deadline(&self) -> Option<Instant> { None }
  pub fn stats(&self) -> ShardStats { ShardStats::default() }
}
