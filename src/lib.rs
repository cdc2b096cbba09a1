//! # ironmatch
//!
//! A single-process, low-latency order matching engine: OUCH 5.0 over SoupBinTCP 3.0 in,
//! a journal as the source of truth, ITCH 5.0 over MoldUDP64 out.
//!
//! ```text
//! TCP clients ──► [1 gateway: mio poll loop]  SoupBinTCP framing, sessions, OUCH decode
//!                     │ ring (bounded, lock-free, fixed-size commands)
//!                     ▼
//!                 [2 matcher: one thread]     risk checks, books (this crate's `book`)
//!                     │ ring
//!                     ▼
//!                 [3 journal writer]          append commands + events, group commit
//!                     │ ring: events released only once journaled
//!                     ▼
//!                 [4 gateway egress]          OUCH replies as SoupBinTCP sequenced data
//!
//! journal files ──► [im-feed]                 ITCH 5.0 over MoldUDP64, retransmissions
//! journal files ──► [im-snapshot]             books and sessions every N records
//! stages' atomics ──► [im-admin]               HTTP: /metrics (Prometheus), /status (JSON)
//! ```
//!
//! Stages 1 to 4 are [agents](pipeline::agent) (a step function each); `[pipeline]
//! threading` decides the threads: `dedicated` runs the gateway (1 + 4), the matcher and
//! the journal writer on a thread each; `shared` runs them in turn on one thread
//! (`im-pipeline`), a batch run to completion with no wake-up on its path; `auto` picks
//! `shared` when the process may use fewer than 4 cores. The feed follows the journal files
//! on a thread of its own in every mode; snapshots are taken by a follower thread, or (with
//! `snapshot_source = "auto"` under `shared`) copied by the matcher itself.
//!
//! ## Invariants that cross stages
//! - The matcher is a pure function of its command stream: timestamps come inside
//!   commands, there is no randomness and no hash-map iteration. Replaying the journaled
//!   commands reproduces every event byte for byte.
//! - Commands and events are fixed-size `Copy` records; nothing on the hot path allocates
//!   after start-up. Pools are sized by configuration; a full pool rejects, never grows.
//! - Prices are integers with 4 implied decimals everywhere ([`types::Price`]).
//! - Egress sees only events the journal writer released after writing their batch, in
//!   every threading mode: no reply leaves before its journal write.
//! - What the operator's endpoint reads, the stages publish as relaxed atomics each written
//!   by one stage ([`admin::metrics`]); no stage waits for it, and no clock it reads for
//!   metrics reaches the matcher.

#![deny(unsafe_code)]

// `book` and `types` are the matching core, which an embedder can take alone
// (`default-features = false`: docs/embedding.md); the rest is the engine around it.

#[cfg(feature = "server")]
pub mod admin;
pub mod book;
#[cfg(feature = "server")]
pub mod client;
#[cfg(feature = "server")]
pub mod cluster;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod engine;
#[cfg(feature = "server")]
pub mod feed;
#[cfg(feature = "server")]
pub mod gateway;
#[cfg(feature = "server")]
pub mod journal;
#[cfg(feature = "server")]
pub mod load;
#[cfg(feature = "server")]
pub mod pipeline;
#[cfg(feature = "server")]
pub mod replay;
#[cfg(feature = "server")]
pub mod server;
pub mod types;
#[cfg(feature = "server")]
pub mod venue;
#[cfg(feature = "server")]
pub mod wire;

/// `docs/embedding.md`, compiled and run as a doctest so its example stays true.
#[cfg(doctest)]
#[doc = include_str!("../docs/embedding.md")]
pub struct EmbeddingGuide;
