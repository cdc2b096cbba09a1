//! Market data: the ITCH 5.0 order-by-order feed over MoldUDP64.
//!
//! ```text
//! journal files ──► [im-feed: publisher]  follow, translate Md* events to ITCH, store,
//!                        │                 pack MoldUDP64, heartbeats, End of Session
//!                        ├── UDP ──► destination (unicast or multicast)
//!                        └── UDP ◄─► retransmission requests, answered from the store
//! ```
//! The publisher reads the journal, never the matcher's rings, so it cannot slow matching;
//! the stream is a pure function of the journal ([`stream`]), which is why `ironmatch
//! replay --itch` writes the very bytes the live feed carried. [`listener`] is the other
//! end: `ironmatch feed`.

pub mod listener;
pub mod publisher;
pub mod stream;

pub use listener::{FeedBook, ListenerOptions, ListenerReport, Sequencer, run_listener};
pub use publisher::{
    FeedSettings, Publisher, PublisherStart, SETTINGS_NAME, STORE_NAME, spawn_publisher,
};
pub use stream::{FeedStore, Translator};
