//! Benchmark harness for Switchboard.
//!
//! * [`peer`]: shared plumbing of the peer servers (`src/bin/peer-*.rs`).
//! * [`sio_peer`]: the bench's Socket.IO events on socketioxide (both socketioxide peers).
//! * [`loadgen`]: a load generator that speaks WebSocket at the byte level.
//! * [`driver`]: the `bench` command, which runs every scenario against every
//!   server and writes `docs/benchmarks.md`.
//! * [`report`]: the JSON lines `loadgen` prints and `bench` reads.
//! * [`procfs`]: memory and CPU time of a process, from /proc.

pub mod driver;
pub mod loadgen;
pub mod peer;
pub mod procfs;
pub mod report;
pub mod sio_peer;
