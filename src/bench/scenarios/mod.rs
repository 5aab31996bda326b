//! One file per scenario; each starts workers through `runner`, drives the
//! main thread (progress, samples, admin changes) and builds the report.

pub mod bulk;
pub mod handshake;
pub mod idle;
pub mod latency;
pub mod rotate;
