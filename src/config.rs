//! `config/ironmatch.toml`: loading and validation.
//!
//! Read once at start-up on the main thread. Every error names the file and the key at
//! fault (`instruments[1].tick_size: ...`). Limits are named `*_max`. Prices are written
//! as decimal strings (`"0.01"`) and held as [`Price`] (4 implied decimals).

use std::path::Path;

use serde::Deserialize;

use crate::book::{
    BandRemainder, BookConfig, InstrumentSpec, LADDER_TICKS_MAX, OwnerSpec, RefRule, StpMode,
};
use crate::journal::FsyncMode;
use crate::pipeline::{Threading, WaitStrategy};
use crate::types::{Firm, Price, Symbol};

/// A configuration error, naming where and what.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: String,
        /// The TOML parser's message, which names the key and line.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// File.
        path: String,
        /// The key at fault, e.g. `instruments[0].tick_size`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Book capacity and matching policy.
    #[serde(default)]
    pub book: BookSection,
    /// Order entry: listening address, session timers, per-session limits.
    #[serde(default)]
    pub gateway: GatewaySection,
    /// Threads, rings, wait strategy.
    #[serde(default)]
    pub pipeline: PipelineSection,
    /// Where and how the journal is written.
    #[serde(default)]
    pub journal: JournalSection,
    /// The ITCH 5.0 feed over MoldUDP64.
    #[serde(default)]
    pub marketdata: MarketDataSection,
    /// The operator's HTTP endpoint (`/metrics`, `/status`); none when absent.
    #[serde(default)]
    pub admin: AdminSection,
    /// The trading day: time zone and schedule. Without it the venue has no day: every
    /// time in force is accepted at any time and timestamps count from UTC midnight.
    #[serde(default)]
    pub venue: Option<VenueSection>,
    /// Replication on Raft (see [`crate::cluster`]); none when absent: one node, as ever.
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
    /// Tradable instruments.
    pub instruments: Vec<InstrumentConfig>,
    /// Users that may log in.
    pub users: Vec<UserConfig>,
}

/// `[book]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BookSection {
    /// Resting orders at most, all instruments together.
    pub orders_max: u32,
    /// Price levels at most, all instruments and sides together.
    pub levels_max: u32,
    /// `"cancel_resting"`, `"cancel_incoming"` or `"cancel_both"`.
    pub self_trade_prevention: String,
}

impl Default for BookSection {
    fn default() -> BookSection {
        BookSection {
            orders_max: 1_000_000,
            levels_max: 65_536,
            self_trade_prevention: "cancel_resting".to_string(),
        }
    }
}

/// `[gateway]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// Address to listen on for OUCH over SoupBinTCP.
    pub listen: String,
    /// SoupBinTCP session name (1 to 10 characters) announced in Login Accepted; a journal
    /// keeps the name it was started with (`gateway.settings`, see
    /// [`crate::gateway::SessionSettings`]).
    pub session: String,
    /// A connection that has not logged in by then is closed (short: a member's
    /// connector sends its Login Request at once; only a flood waits).
    pub login_timeout_ms: u64,
    /// A Server Heartbeat goes out after this long without output.
    pub heartbeat_interval_ms: u64,
    /// A logged-in client silent this long is disconnected.
    pub client_timeout_ms: u64,
    /// Logged-in connections at most (pending ones have their own budget).
    pub connections_max: usize,
    /// Connections that have not logged in yet, at most. When full, a new connection
    /// evicts the oldest pending one of the address holding the most, so a flood can
    /// never keep a member out.
    pub pending_max: usize,
    /// Pending connections from one IP address (an IPv6 address: its /64) at most. A new connection from an
    /// address at its limit evicts that address's oldest pending connection, so one
    /// address can never evict another's.
    pub pending_per_address_max: usize,
    /// Largest SoupBinTCP packet accepted from a client, in bytes after the length field.
    pub packet_len_max: usize,
    /// Bytes queued for one session but not yet taken by its reader before it is
    /// disconnected as a slow reader (it can log in again and resume by sequence number).
    pub session_queue_bytes_max: usize,
    /// Bytes per chunk of a user's store of sequenced messages (replay by sequence number):
    /// the first is reserved at start, more come as the day needs them, none is copied.
    /// Memory holds about three chunks a user (being filled, being read, being written);
    /// full chunks are written out to a file in the journal directory.
    pub session_store_bytes: usize,
}

impl Default for GatewaySection {
    fn default() -> GatewaySection {
        GatewaySection {
            listen: "127.0.0.1:15000".to_string(),
            session: "IRONMATCH".to_string(),
            login_timeout_ms: 1_000,
            heartbeat_interval_ms: 1_000,
            client_timeout_ms: 15_000,
            connections_max: 64,
            pending_max: 64,
            pending_per_address_max: 16,
            packet_len_max: 512,
            session_queue_bytes_max: 4 << 20,
            session_store_bytes: 16 << 20,
        }
    }
}

/// `[pipeline]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    /// Records each ring holds.
    pub ring_capacity: usize,
    /// `"auto"`, `"dedicated"` (a thread per stage) or `"shared"` (gateway, matcher and
    /// journal writer in turn on one thread).
    pub threading: String,
    /// `"spin_park"`, `"spin_yield"` or `"busy_spin"`.
    pub wait: String,
    /// Core to pin the gateway thread to; absent = unpinned.
    pub gateway_core: Option<usize>,
    /// Core to pin the matcher thread to; absent = unpinned.
    pub matcher_core: Option<usize>,
    /// Core to pin the journal writer thread to; absent = unpinned.
    pub journal_core: Option<usize>,
    /// Core to pin the feed publisher thread to; absent = unpinned.
    pub feed_core: Option<usize>,
}

impl Default for PipelineSection {
    fn default() -> PipelineSection {
        PipelineSection {
            ring_capacity: 65_536,
            threading: "auto".to_string(),
            wait: "spin_park".to_string(),
            gateway_core: None,
            matcher_core: None,
            journal_core: None,
            feed_core: None,
        }
    }
}

/// `[cluster]`: this node's place in a Raft cluster.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// This node's id: one of `peers`' ids.
    pub node_id: u64,
    /// Every node of the cluster, this one included (three, or five).
    pub peers: Vec<PeerConfig>,
    /// Directory of the Raft log and vote; empty: `raft` under `journal.dir`.
    #[serde(default)]
    pub dir: String,
    /// Where this node listens for Raft; empty: its own `peers` entry's `raft` address.
    /// (Set when other nodes reach it through another address: a proxy, a NAT.)
    #[serde(default)]
    pub listen: String,
    /// A follower that hears nothing from a leader for a random time in this range
    /// (milliseconds) stands for election; a leader that heard from no majority for the
    /// lower bound stops taking orders.
    #[serde(default = "default_election_timeout_min_ms")]
    pub election_timeout_min_ms: u64,
    /// Upper end of the election timeout range, ms.
    #[serde(default = "default_election_timeout_max_ms")]
    pub election_timeout_max_ms: u64,
    /// How often the leader sends heartbeats, ms; well below the election timeout.
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// The cluster's shared secret (at least 16 bytes; every node the same): connections
    /// between nodes are authenticated with it and every frame sealed. Empty: none, allowed
    /// only on loopback. [`CLUSTER_SECRET_ENV`] overrides it, so it can stay out of the file.
    #[serde(default)]
    pub secret: String,
    /// While the cluster moves to a new secret: the one before it, still taken from nodes
    /// that have not moved yet (see the README's "rotating the secret"). Empty: none.
    /// [`CLUSTER_PREVIOUS_SECRET_ENV`] overrides it.
    #[serde(default)]
    pub previous_secret: String,
}

/// The environment variable holding the cluster secret.
pub const CLUSTER_SECRET_ENV: &str = "IRONMATCH_CLUSTER_SECRET";
/// The environment variable holding the cluster's previous secret, during a rotation.
pub const CLUSTER_PREVIOUS_SECRET_ENV: &str = "IRONMATCH_CLUSTER_PREVIOUS_SECRET";

/// Shortest cluster secret taken, in bytes.
pub const CLUSTER_SECRET_MIN: usize = 16;

impl ClusterSection {
    /// The secret in force: `env`'s (the value of [`CLUSTER_SECRET_ENV`]) if set, else the
    /// file's; `None` if neither is.
    pub fn secret<'a>(&'a self, env: Option<&'a str>) -> Option<&'a str> {
        env.filter(|s| !s.is_empty())
            .or((!self.secret.is_empty()).then_some(self.secret.as_str()))
    }

    /// The previous secret taken during a rotation: `env`'s (the value of
    /// [`CLUSTER_PREVIOUS_SECRET_ENV`]) if set, else the file's; `None` if neither is.
    pub fn previous_secret<'a>(&'a self, env: Option<&'a str>) -> Option<&'a str> {
        env.filter(|s| !s.is_empty())
            .or((!self.previous_secret.is_empty()).then_some(self.previous_secret.as_str()))
    }

    /// The secrets in force, read from the environment and the file.
    fn secrets(&self) -> Option<crate::cluster::Secrets> {
        let current_env = std::env::var(CLUSTER_SECRET_ENV).ok();
        let current = self.secret(current_env.as_deref())?;
        let previous_env = std::env::var(CLUSTER_PREVIOUS_SECRET_ENV).ok();
        Some(crate::cluster::Secrets {
            current: std::sync::Arc::from(current.as_bytes()),
            previous: self
                .previous_secret(previous_env.as_deref())
                .map(|s| std::sync::Arc::from(s.as_bytes())),
        })
    }
}

/// `[[cluster.peers]]`: one node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The node's id (any number, unique in the cluster).
    pub id: u64,
    /// Where the node listens for Raft (and `ironmatch cluster status`), `host:port`.
    pub raft: String,
    /// Where the node's gateway listens for clients (for the tools; optional).
    #[serde(default)]
    pub gateway: String,
}

fn default_election_timeout_min_ms() -> u64 {
    500
}
fn default_election_timeout_max_ms() -> u64 {
    1000
}
fn default_heartbeat_interval_ms() -> u64 {
    100
}

/// `[journal]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalSection {
    /// Directory of the journal's segment files.
    pub dir: String,
    /// `"never"` (survives a process crash) or `"always"` (fdatasync per batch: survives
    /// power loss).
    pub fsync: String,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes_max: u64,
    /// Journal records between snapshots of the books and sessions (0: no snapshots).
    pub snapshot_interval_records: u64,
    /// Where snapshots come from: `"matcher"` (the matcher copies its state at the end of
    /// a batch), `"follower"` (a thread re-runs the journal) or `"auto"` (the follower
    /// when each pipeline stage has its own thread, else the matcher).
    pub snapshot_source: String,
}

impl Default for JournalSection {
    fn default() -> JournalSection {
        JournalSection {
            dir: "./data".to_string(),
            fsync: "never".to_string(),
            segment_bytes_max: 256 << 20,
            snapshot_interval_records: 1_000_000,
            snapshot_source: "auto".to_string(),
        }
    }
}

/// `[venue]`: the trading day.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VenueSection {
    /// IANA time zone name; timestamps count nanoseconds from midnight in it.
    pub timezone: String,
    /// Start of system hours, local time (`HH:MM[:SS[.fff]]`).
    pub system_start: String,
    /// Start of market hours.
    pub market_open: String,
    /// End of market hours.
    pub market_close: String,
    /// End of system hours.
    pub system_end: String,
}

impl Default for VenueSection {
    /// Nasdaq's day in New York.
    fn default() -> VenueSection {
        VenueSection {
            timezone: "America/New_York".into(),
            system_start: "04:00".into(),
            market_open: "09:30".into(),
            market_close: "16:00".into(),
            system_end: "20:00".into(),
        }
    }
}

impl VenueSection {
    /// The parsed schedule. `Err((key, message))` if invalid.
    pub fn schedule(&self) -> Result<crate::venue::Schedule, (String, String)> {
        crate::venue::Schedule::new(
            &self.timezone,
            [
                ("system_start", &self.system_start),
                ("market_open", &self.market_open),
                ("market_close", &self.market_close),
                ("system_end", &self.system_end),
            ],
        )
    }
}

/// `[marketdata]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketDataSection {
    /// Publish the feed at all.
    pub enabled: bool,
    /// Where the MoldUDP64 packets go: a unicast or multicast address and port.
    pub destination: String,
    /// Address the retransmission request server listens on (UDP).
    pub retransmission: String,
    /// MoldUDP64 session name: 1 to 10 printable ASCII characters.
    pub session: String,
    /// Largest UDP payload sent, MoldUDP64 header included (fits one MTU by default).
    pub packet_bytes_max: usize,
    /// A heartbeat goes out after this long without a packet.
    pub heartbeat_interval_ms: u64,
    /// After shutdown, End of Session packets go out for this long (one per 100 ms) while
    /// retransmission requests are still answered: listeners' last chance to fill gaps.
    pub end_of_session_ms: u64,
    /// Add Order with MPID Attribution (`F`, the entering firm) instead of `A`.
    pub attribution: bool,
    /// Multicast TTL (hops) when the destination is a multicast group.
    pub multicast_ttl: u32,
    /// IPv4 address of the local interface the feed leaves from (a multicast group's
    /// packets go out on it, `IP_MULTICAST_IF`, and the socket is bound to it); empty: the
    /// kernel's route for the destination. The publisher's only: `ironmatch feed`, which
    /// may run on another host, joins on its own `--interface`.
    pub multicast_interface: String,
    /// How the publisher learns of new journal records. 0: the journal writer wakes it after
    /// every batch (lowest feed latency; costs the pipeline a wake-up per batch, so give the
    /// feed a core of its own). N: it reads the journal every N microseconds (the feed lags
    /// by up to N; the pipeline pays nothing: the default for shared cores).
    pub poll_interval_us: u64,
    /// Scheduling niceness of the publisher thread (0 to 19): with few cores the pipeline
    /// runs first and the feed waits; 0 treats them alike (dedicated cores).
    pub thread_nice: i32,
    /// Retransmission bytes sent per second to one address (a bucket of one second's
    /// worth): a request's source can be forged, so without a budget the server would
    /// send anyone's victim 70 bytes for each 20 it receives. 0: no limit (a private
    /// network). At least `packet_bytes_max` otherwise.
    pub retransmission_bytes_per_second: u64,
    /// Retransmission bytes sent per second to all addresses together (a bucket of one
    /// second's worth): forged sources, each with a budget of its own, add up to no more
    /// than this. 0: no limit. At least `packet_bytes_max` otherwise.
    pub retransmission_total_bytes_per_second: u64,
}

impl Default for MarketDataSection {
    fn default() -> MarketDataSection {
        MarketDataSection {
            enabled: true,
            destination: "127.0.0.1:15001".to_string(),
            retransmission: "127.0.0.1:15002".to_string(),
            session: "IRONMATCH".to_string(),
            packet_bytes_max: 1400,
            heartbeat_interval_ms: 1_000,
            end_of_session_ms: 1_000,
            attribution: false,
            multicast_ttl: 1,
            multicast_interface: String::new(),
            poll_interval_us: 1_000,
            thread_nice: 10,
            retransmission_bytes_per_second: 10_000_000,
            retransmission_total_bytes_per_second: 100_000_000,
        }
    }
}

impl MarketDataSection {
    /// The interface the feed leaves from and is joined on, if one is set (validated at load).
    pub fn interface(&self) -> Option<std::net::Ipv4Addr> {
        self.multicast_interface.parse().ok()
    }
}

/// `[admin]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Address of the HTTP endpoint; empty (the default, also when the section is absent):
    /// no endpoint. Outside loopback a token is required.
    pub listen: String,
    /// Bearer token the endpoint requires; empty: none. The environment variable
    /// [`ADMIN_TOKEN_ENV`] overrides it, so the secret can stay out of the file.
    pub token: String,
}

/// The environment variable holding the admin endpoint's bearer token.
pub const ADMIN_TOKEN_ENV: &str = "IRONMATCH_ADMIN_TOKEN";

/// `[admin]` resolved at start: where to listen and which token to require.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    /// The address to bind.
    pub listen: std::net::SocketAddr,
    /// The bearer token required, if any.
    pub token: Option<String>,
}

impl AdminSection {
    /// The endpoint to start, if any, with the token from `env_token` (the value of
    /// [`ADMIN_TOKEN_ENV`], which wins over the file's) or the file. `Err` explains why
    /// the endpoint may not start: a non-loopback address with no token.
    pub fn resolve(&self, env_token: Option<&str>) -> Result<Option<AdminSettings>, String> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        let listen: std::net::SocketAddr = self
            .listen
            .parse()
            .map_err(|e| format!("admin.listen: {:?}: {e}", self.listen))?;
        let token = match env_token.filter(|t| !t.is_empty()) {
            Some(t) => {
                check_token(t).map_err(|m| format!("{ADMIN_TOKEN_ENV}: {m}"))?;
                Some(t.to_string())
            }
            None => (!self.token.is_empty()).then(|| self.token.clone()),
        };
        if token.is_none() && !listen.ip().is_loopback() {
            return Err(format!(
                "admin.listen = \"{listen}\" is not a loopback address and no token is set: \
                 the admin endpoint refuses to listen there without one (set admin.token or \
                 {ADMIN_TOKEN_ENV}, or listen on 127.0.0.1)"
            ));
        }
        Ok(Some(AdminSettings { listen, token }))
    }
}

/// A bearer token must fit an HTTP header as it is: visible ASCII, no spaces.
fn check_token(token: &str) -> Result<(), String> {
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("a token is visible ASCII characters without spaces".into())
    }
}

/// One `[[instruments]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentConfig {
    /// Up to 8 printable ASCII characters.
    pub symbol: String,
    /// Price increment, decimal string.
    pub tick_size: String,
    /// Quantity increment.
    pub lot_size: u32,
    /// Lowest limit price, decimal string.
    pub min_price: String,
    /// Highest limit price, decimal string.
    pub max_price: String,
    /// Largest order quantity (OUCH allows below 1 000 000).
    pub max_qty: u32,
    /// Reference price at start of day, decimal string.
    pub ref_price: String,
    /// Price band half-width around the last trade price, in basis points (0 = off).
    pub band_bps: u32,
    /// What becomes of a limit order's remainder the band keeps from trading: "cancel"
    /// (default) or "rest" (at the band edge).
    #[serde(default = "default_band_remainder")]
    pub band_remainder: String,
    /// Fat-finger range half-width around `ref_price`, in basis points (0 = off).
    #[serde(default = "default_fat_finger_bps")]
    pub fat_finger_bps: u32,
    /// Circuit breaker half-width around the mean trade price of the window, in basis
    /// points (0 = off, the default).
    #[serde(default)]
    pub breaker_bps: u32,
    /// Seconds of trades the breaker's reference price is the mean of.
    #[serde(default = "default_breaker_secs")]
    pub breaker_window_secs: u32,
    /// Seconds a breaker pause lasts.
    #[serde(default = "default_breaker_secs")]
    pub breaker_pause_secs: u32,
}

fn default_band_remainder() -> String {
    "cancel".into()
}

fn default_fat_finger_bps() -> u32 {
    5_000
}

fn default_breaker_secs() -> u32 {
    300
}

/// One `[[users]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// SoupBinTCP username: 1 to 6 ASCII letters or digits.
    pub username: String,
    /// SoupBinTCP password: 1 to 10 printable ASCII characters, no spaces; compared without
    /// regard to ASCII case, as SoupBinTCP compares it (a letter counts as one choice, not
    /// two, towards its strength).
    pub password: String,
    /// Firm: 1 to 4 ASCII letters or digits. Orders of one firm never trade together.
    pub firm: String,
    /// Cancel the user's resting orders when its session drops.
    pub cancel_on_disconnect: bool,
    /// Self-trade prevention for this user's incoming orders, as `[book]
    /// self_trade_prevention`; absent = the venue's.
    #[serde(default)]
    pub self_trade_prevention: Option<String>,
    /// Sustained new orders and replaces per second (cancels are exempt).
    #[serde(default = "default_orders_per_sec")]
    pub orders_per_sec: u32,
    /// Orders and replaces allowed in a burst above the sustained rate.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_orders_per_sec() -> u32 {
    50_000
}

fn default_burst() -> u32 {
    5_000
}

/// OUCH quantities are below one million.
pub const OUCH_QTY_LIMIT: u32 = 1_000_000;

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: parse_error_message(text, &e),
        })?;
        config
            .book_config()
            .and_then(|_| config.check_runtime())
            .map_err(|(key, message)| ConfigError::Invalid {
                path: origin.to_string(),
                key,
                message,
            })?;
        Ok(config)
    }

    /// The schedule, if the venue has a trading day (validated at load).
    pub fn schedule(&self) -> Option<crate::venue::Schedule> {
        self.venue
            .as_ref()
            .map(|v| v.schedule().expect("validated at load"))
    }

    /// The configuration of trading day `day`: its own journal directory under
    /// `journal.dir` and its own session names (see [`crate::venue`]).
    pub fn for_day(&self, day: jiff::civil::Date) -> Config {
        let mut config = self.clone();
        config.journal.dir = std::path::Path::new(&self.journal.dir)
            .join(crate::venue::day_dir_name(day))
            .display()
            .to_string();
        config.gateway.session = crate::venue::session_name(&self.gateway.session, day);
        config.marketdata.session = crate::venue::session_name(&self.marketdata.session, day);
        config
    }

    /// The matcher's view of the configuration. `Err((key, message))` if invalid.
    pub fn book_config(&self) -> Result<BookConfig, (String, String)> {
        let stp = stp_mode(
            &self.book.self_trade_prevention,
            "book.self_trade_prevention",
        )?;
        check(
            self.book.orders_max >= 1 && self.book.orders_max <= crate::book::ORDERS_MAX,
            "book.orders_max",
            || format!("must be from 1 to {}", crate::book::ORDERS_MAX),
        )?;
        check(
            self.book.levels_max >= 1 && self.book.levels_max < u32::MAX,
            "book.levels_max",
            || format!("must be from 1 to {}", u32::MAX - 1),
        )?;
        check(!self.instruments.is_empty(), "instruments", || {
            "at least one [[instruments]] table is needed".into()
        })?;
        check(
            self.instruments.len() < usize::from(u16::MAX),
            "instruments",
            || "too many instruments".into(),
        )?;
        let mut instruments: Vec<InstrumentSpec> = Vec::with_capacity(self.instruments.len());
        for (i, ic) in self.instruments.iter().enumerate() {
            let spec = ic.spec(&format!("instruments[{i}]"))?;
            check(
                !instruments.iter().any(|s| s.symbol == spec.symbol),
                &format!("instruments[{i}].symbol"),
                || format!("{:?} appears twice", ic.symbol),
            )?;
            instruments.push(spec);
        }
        check(!self.users.is_empty(), "users", || {
            "at least one [[users]] table is needed".into()
        })?;
        check(self.users.len() < usize::from(u16::MAX), "users", || {
            "too many users".into()
        })?;
        let mut owners = Vec::with_capacity(self.users.len());
        for (i, user) in self.users.iter().enumerate() {
            owners.push(user.spec(&format!("users[{i}]"))?);
            check(
                // Logins and the operator's tools match usernames without regard to
                // case, so `MM1` and `mm1` would be one user twice.
                !self.users[..i]
                    .iter()
                    .any(|u| u.username.eq_ignore_ascii_case(&user.username)),
                &format!("users[{i}].username"),
                || format!("{:?} appears twice (usernames ignore case)", user.username),
            )?;
        }
        Ok(BookConfig {
            instruments,
            owners,
            orders_max: self.book.orders_max,
            levels_max: self.book.levels_max,
            stp,
            scheduled: self.venue.is_some(),
            refs: RefRule::Ouch,
        })
    }
}

impl Config {
    /// Checks the gateway and pipeline sections.
    fn check_runtime(&self) -> Result<(), (String, String)> {
        if let Some(venue) = &self.venue {
            venue.schedule()?;
        }
        let g = &self.gateway;
        check(
            g.listen.parse::<std::net::SocketAddr>().is_ok(),
            "gateway.listen",
            || format!("{:?} is not an address like \"127.0.0.1:15000\"", g.listen),
        )?;
        let session_ok =
            (1..=10).contains(&g.session.len()) && g.session.bytes().all(|b| b.is_ascii_graphic());
        check(session_ok, "gateway.session", || {
            "must be 1 to 10 printable ASCII characters".into()
        })?;
        for (key, value) in [
            ("gateway.login_timeout_ms", g.login_timeout_ms),
            ("gateway.heartbeat_interval_ms", g.heartbeat_interval_ms),
            ("gateway.client_timeout_ms", g.client_timeout_ms),
        ] {
            check((1..=3_600_000).contains(&value), key, || {
                "must be from 1 to 3600000".into()
            })?;
        }
        check(
            (1..=65_536).contains(&g.connections_max),
            "gateway.connections_max",
            || "must be from 1 to 65536".into(),
        )?;
        // Slots are allocated at start for both budgets; a bound keeps a typo from
        // reserving gigabytes.
        check(
            (1..=65_536).contains(&g.pending_max),
            "gateway.pending_max",
            || "must be from 1 to 65536".into(),
        )?;
        check(
            (1..=g.pending_max).contains(&g.pending_per_address_max),
            "gateway.pending_per_address_max",
            || format!("must be from 1 to gateway.pending_max ({})", g.pending_max),
        )?;
        // The largest inbound message is an Enter Order (48 bytes with its packet type) plus
        // its appendage: every option OUCH 5.0 lists for it, once each, is 92 bytes (Firm,
        // MinQty and MaxFloor alone make a 66-byte packet, which the old floor of 64
        // admitted a limit below: the valid order closed the session).
        check(
            (PACKET_LEN_MIN..=65_535).contains(&g.packet_len_max),
            "gateway.packet_len_max",
            || {
                format!(
                    "must be from {PACKET_LEN_MIN} (an Enter Order with {} bytes of options) to 65535",
                    crate::wire::ouch::APPENDAGE_MAX
                )
            },
        )?;
        check(
            g.session_queue_bytes_max >= 4096,
            "gateway.session_queue_bytes_max",
            || "must be at least 4096".into(),
        )?;
        // Reserved per user at start; a chunk holds at least a few of the longest messages.
        let store_min = crate::gateway::STORE_CHUNK_MIN;
        check(
            (store_min..=1 << 36).contains(&g.session_store_bytes),
            "gateway.session_store_bytes",
            || format!("must be from {store_min} to 68719476736 (64 GiB)"),
        )?;
        let j = &self.journal;
        check(!j.dir.is_empty(), "journal.dir", || {
            "must name a directory".into()
        })?;
        check(
            FsyncMode::parse(&j.fsync).is_some(),
            "journal.fsync",
            || format!("{:?} is not one of \"never\", \"always\"", j.fsync),
        )?;
        check(
            crate::journal::snapshot::SnapshotSource::parse(&j.snapshot_source).is_some(),
            "journal.snapshot_source",
            || {
                format!(
                    "{:?} is not one of \"auto\", \"matcher\", \"follower\"",
                    j.snapshot_source
                )
            },
        )?;
        check(
            j.segment_bytes_max >= 1 << 16,
            "journal.segment_bytes_max",
            || "must be at least 65536".into(),
        )?;
        self.check_marketdata()?;
        self.check_admin()?;
        self.check_cluster()?;
        self.check_listens()?;
        let p = &self.pipeline;
        // Each ring's slots (up to 128 bytes) are allocated at start.
        check(
            (16..=1 << 24).contains(&p.ring_capacity),
            "pipeline.ring_capacity",
            || "must be from 16 to 16777216".into(),
        )?;
        check(
            Threading::parse(&p.threading).is_some(),
            "pipeline.threading",
            || {
                format!(
                    "{:?} is not one of \"auto\", \"dedicated\", \"shared\"",
                    p.threading
                )
            },
        )?;
        check(
            WaitStrategy::parse(&p.wait).is_some(),
            "pipeline.wait",
            || {
                format!(
                    "{:?} is not one of \"spin_park\", \"spin_yield\", \"busy_spin\"",
                    p.wait
                )
            },
        )?;
        for (i, user) in self.users.iter().enumerate() {
            check(
                user.orders_per_sec >= 1,
                &format!("users[{i}].orders_per_sec"),
                || "must be at least 1".into(),
            )?;
            check(user.burst >= 1, &format!("users[{i}].burst"), || {
                "must be at least 1".into()
            })?;
        }
        Ok(())
    }

    fn check_cluster(&self) -> Result<(), (String, String)> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        check((1..=7).contains(&c.peers.len()), "cluster.peers", || {
            "must list 1 to 7 nodes, this one included".into()
        })?;
        for (i, p) in c.peers.iter().enumerate() {
            check(
                p.raft.parse::<std::net::SocketAddr>().is_ok(),
                &format!("cluster.peers[{i}].raft"),
                || format!("{:?} is not an address like \"127.0.0.1:16001\"", p.raft),
            )?;
            check(
                p.gateway.is_empty() || p.gateway.parse::<std::net::SocketAddr>().is_ok(),
                &format!("cluster.peers[{i}].gateway"),
                || format!("{:?} is not an address (or \"\" for none)", p.gateway),
            )?;
            check(
                c.peers[..i].iter().all(|q| q.id != p.id),
                &format!("cluster.peers[{i}].id"),
                || format!("{} is listed twice", p.id),
            )?;
            // Two nodes at one address: votes and appends for one would reach the other,
            // and clients failing over would log in at the same node twice.
            let same = |a: &str, b: &str| {
                matches!(
                    (a.parse::<std::net::SocketAddr>(), b.parse::<std::net::SocketAddr>()),
                    (Ok(a), Ok(b)) if a == b
                )
            };
            check(
                c.peers[..i].iter().all(|q| !same(&q.raft, &p.raft)),
                &format!("cluster.peers[{i}].raft"),
                || format!("{:?} is another node's Raft address too", p.raft),
            )?;
            check(
                c.peers[..i].iter().all(|q| !same(&q.gateway, &p.gateway)),
                &format!("cluster.peers[{i}].gateway"),
                || format!("{:?} is another node's gateway address too", p.gateway),
            )?;
        }
        check(
            c.listen.is_empty() || c.listen.parse::<std::net::SocketAddr>().is_ok(),
            "cluster.listen",
            || {
                format!(
                    "{:?} is not an address (or \"\" for the peers entry's)",
                    c.listen
                )
            },
        )?;
        check(
            c.peers.iter().any(|p| p.id == c.node_id),
            "cluster.node_id",
            || format!("{} is not among cluster.peers", c.node_id),
        )?;
        // A secret too short is named where it came from: the variable overrides the file.
        let from = |env: &Option<String>, variable: &'static str, key: &'static str| {
            if env.as_deref().is_some_and(|s| !s.is_empty()) {
                (variable, format!("at least {CLUSTER_SECRET_MIN} bytes"))
            } else {
                (
                    key,
                    format!("at least {CLUSTER_SECRET_MIN} bytes (or {variable})"),
                )
            }
        };
        let env = std::env::var(CLUSTER_SECRET_ENV).ok();
        let secret = c.secret(env.as_deref());
        let (key, wanted) = from(&env, CLUSTER_SECRET_ENV, "cluster.secret");
        check(
            secret.is_none_or(|s| s.len() >= CLUSTER_SECRET_MIN),
            key,
            || wanted,
        )?;
        let previous_env = std::env::var(CLUSTER_PREVIOUS_SECRET_ENV).ok();
        if let Some(previous) = c.previous_secret(previous_env.as_deref()) {
            let (key, wanted) = from(
                &previous_env,
                CLUSTER_PREVIOUS_SECRET_ENV,
                "cluster.previous_secret",
            );
            check(previous.len() >= CLUSTER_SECRET_MIN, key, || wanted)?;
            check(secret.is_some(), key, || {
                format!(
                    "set with no secret in force: set cluster.secret (or {CLUSTER_SECRET_ENV}) \
                     to the new secret"
                )
            })?;
            check(secret != Some(previous), key, || {
                "the same as the secret in force: leave it empty".to_string()
            })?;
        }
        // Any address a node listens on for Raft off loopback takes a secret, as the
        // admin endpoint takes a token: the port votes and appends orders.
        let listens = std::iter::once(c.listen.as_str())
            .chain(c.peers.iter().map(|p| p.raft.as_str()))
            .filter_map(|a| a.parse::<std::net::SocketAddr>().ok());
        check(
            secret.is_some() || listens.clone().all(|a| a.ip().is_loopback()),
            "cluster.secret",
            || {
                format!(
                    "required when a node's Raft address is not loopback ({}): anything \
                     that reaches the port could vote and append orders; set \
                     cluster.secret or {CLUSTER_SECRET_ENV}, the same on every node",
                    listens
                        .filter(|a| !a.ip().is_loopback())
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        )?;
        // A leader takes logins for `election_timeout_min_ms` after a majority last
        // answered, as its Raft metrics report it (they can be a heartbeat old); a follower
        // stands at the earliest `election_timeout_max_ms` after it last heard the leader.
        // The gap between the two must cover that age and the answer's way back, or a
        // deposed leader could take a login while another leads; and a lease of fewer than
        // three heartbeats lapses between them on an ordinary delay.
        let (heartbeat, min, max) = (
            c.heartbeat_interval_ms,
            c.election_timeout_min_ms,
            c.election_timeout_max_ms,
        );
        check(
            heartbeat >= 1
                && heartbeat.saturating_mul(3) <= min
                && min.saturating_add(heartbeat.saturating_mul(2)) <= max
                && max <= 60_000,
            "cluster.election_timeout_min_ms",
            || {
                format!(
                    "needs 1 <= 3 x heartbeat_interval_ms <= election_timeout_min_ms and \
                     election_timeout_min_ms + 2 x heartbeat_interval_ms <= \
                     election_timeout_max_ms <= 60000 (a deposed leader's login lease must \
                     end before another can be elected); got {heartbeat}, {min}, {max}"
                )
            },
        )?;
        // Each node would have to start each day's Raft log anew with the day's journal:
        // not done yet.
        check(self.venue.is_none(), "cluster", || {
            "a cluster with a [venue] trading day is not supported yet".into()
        })?;
        // At start, the rest of an entry a crash cut short goes into the matcher's ring
        // before the matcher runs: the ring must hold a whole entry.
        let entry_max = crate::cluster::PROPOSAL_LEN_MAX;
        check(
            self.pipeline.ring_capacity >= entry_max,
            "pipeline.ring_capacity",
            || format!("must be at least {entry_max} with [cluster] (a whole Raft entry)"),
        )?;
        Ok(())
    }

    /// The raft thread's settings, with `[cluster]`.
    pub fn cluster_settings(&self) -> Option<crate::cluster::ClusterSettings> {
        let c = self.cluster.as_ref()?;
        let dir = if c.dir.is_empty() {
            Path::new(&self.journal.dir).join("raft")
        } else {
            Path::new(&c.dir).to_path_buf()
        };
        Some(crate::cluster::ClusterSettings {
            listen: c.listen.clone(),
            node_id: c.node_id,
            peers: c.peers.iter().map(|p| (p.id, p.raft.clone())).collect(),
            dir,
            fsync: self.fsync_mode(),
            election_timeout_min_ms: c.election_timeout_min_ms,
            election_timeout_max_ms: c.election_timeout_max_ms,
            heartbeat_interval_ms: c.heartbeat_interval_ms,
            config_fingerprint: self.cluster_fingerprint(),
            secret: c.secrets(),
        })
    }

    /// What every node of a cluster must share: the book configuration (the journal's
    /// [`crate::journal::fingerprint`]: instruments, users, rules), the feed's shape (its
    /// MoldUDP64 session and attribution), since every node stores the same feed bytes, and
    /// the order entry sessions' SoupBinTCP name, which any node may announce as leader.
    fn cluster_fingerprint(&self) -> u64 {
        let book = self
            .book_config()
            .map_or(0, |book| crate::journal::fingerprint(&book));
        let mut bytes = book.to_le_bytes().to_vec();
        bytes.extend_from_slice(self.marketdata.session.as_bytes());
        bytes.push(u8::from(self.marketdata.attribution));
        // The order entry sessions' name: after a failover the new leader announces its
        // own, and a member's connector seeing another name would take the stream for a
        // new session (each name is 1 to 10 printable characters, so the byte before it
        // cannot be taken for one of them).
        bytes.push(0);
        bytes.extend_from_slice(self.gateway.session.as_bytes());
        let low = crc32c::crc32c(&bytes);
        let high = crc32c::crc32c_append(low, &bytes);
        (u64::from(high) << 32) | u64::from(low)
    }

    fn check_admin(&self) -> Result<(), (String, String)> {
        let a = &self.admin;
        check(
            a.listen.is_empty() || a.listen.parse::<std::net::SocketAddr>().is_ok(),
            "admin.listen",
            || {
                format!(
                    "{:?} is not an address like \"127.0.0.1:15080\" (or \"\" for no endpoint)",
                    a.listen
                )
            },
        )?;
        if !a.token.is_empty() {
            check_token(&a.token).map_err(|m| ("admin.token".to_string(), m))?;
        }
        Ok(())
    }

    /// The TCP ports this process listens on (order entry, the admin endpoint, this
    /// node's Raft port) are each bound once: two that overlap (the same port on the same
    /// address, or on every address) would fail the second bind at start, or take one
    /// protocol's clients on the other's port.
    fn check_listens(&self) -> Result<(), (String, String)> {
        let own_raft;
        let mut listens = vec![("gateway.listen", self.gateway.listen.as_str())];
        if !self.admin.listen.is_empty() {
            listens.push(("admin.listen", self.admin.listen.as_str()));
        }
        if let Some(c) = &self.cluster {
            if !c.listen.is_empty() {
                listens.push(("cluster.listen", c.listen.as_str()));
            } else if let Some(i) = c.peers.iter().position(|p| p.id == c.node_id) {
                // Without cluster.listen the node binds its own peers entry's address.
                own_raft = format!("cluster.peers[{i}].raft");
                listens.push((own_raft.as_str(), c.peers[i].raft.as_str()));
            }
        }
        let parsed: Vec<(&str, std::net::SocketAddr)> = listens
            .iter()
            .filter_map(|&(key, text)| text.parse().ok().map(|addr| (key, addr)))
            .collect();
        for (i, &(key, addr)) in parsed.iter().enumerate() {
            if let Some((other, at)) = parsed[..i].iter().find(|(_, o)| overlap(*o, addr)) {
                return Err((
                    key.to_string(),
                    format!("{addr} takes the port of {other} ({at})"),
                ));
            }
        }
        Ok(())
    }

    fn check_marketdata(&self) -> Result<(), (String, String)> {
        let m = &self.marketdata;
        for (key, value) in [
            ("marketdata.destination", &m.destination),
            ("marketdata.retransmission", &m.retransmission),
        ] {
            check(value.parse::<std::net::SocketAddr>().is_ok(), key, || {
                format!("{value:?} is not an address like \"127.0.0.1:15001\"")
            })?;
        }
        // Linux refuses a datagram to port 0 (EINVAL): every packet of the feed would be
        // lost, counted only in the publisher's send errors.
        check(
            m.destination
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|d| d.port() != 0),
            "marketdata.destination",
            || {
                format!(
                    "{:?} has port 0: no packet can be sent there",
                    m.destination
                )
            },
        )?;
        // A broadcast address needs SO_BROADCAST, which the publisher does not set: every
        // send would fail (EACCES), the feed lost and counted only in its send errors.
        check(
            m.destination
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|d| match d.ip() {
                    std::net::IpAddr::V4(v4) => !v4.is_broadcast(),
                    std::net::IpAddr::V6(_) => true,
                }),
            "marketdata.destination",
            || {
                format!(
                    "{:?} is the broadcast address: send the feed to a multicast group or a host",
                    m.destination
                )
            },
        )?;
        // The retransmission server binds its address: the feed sent there would reach it,
        // and no listener could bind the destination on this host. So does the wildcard on
        // the destination's port when the destination is on this host or a group joined
        // here (loopback, multicast); a remote unicast destination is another host's port.
        check(
            m.retransmission
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|r| {
                    m.destination
                        .parse::<std::net::SocketAddr>()
                        .is_ok_and(|d| {
                            let here = d.ip().is_loopback() || d.ip().is_multicast();
                            !(overlap(r, d) && (here || r.ip() == d.ip()))
                        })
                }),
            "marketdata.retransmission",
            || {
                format!(
                    "{:?} takes the port of marketdata.destination ({})",
                    m.retransmission, m.destination
                )
            },
        )?;
        check(
            crate::wire::moldudp64::Session::from_str_padded(&m.session).is_some(),
            "marketdata.session",
            || "must be 1 to 10 printable ASCII characters".into(),
        )?;
        // The header and the largest message must fit; UDP carries at most 65 507 bytes.
        let least = crate::wire::moldudp64::HEADER_LEN + 2 + crate::wire::itch::MESSAGE_LEN_MAX;
        check(
            (least..=65_507).contains(&m.packet_bytes_max),
            "marketdata.packet_bytes_max",
            || format!("must be from {least} to 65507"),
        )?;
        check(
            (1..=3_600_000).contains(&m.heartbeat_interval_ms),
            "marketdata.heartbeat_interval_ms",
            || "must be from 1 to 3600000".into(),
        )?;
        check(
            m.end_of_session_ms <= 60_000,
            "marketdata.end_of_session_ms",
            || "must be at most 60000".into(),
        )?;
        check(
            m.poll_interval_us <= 1_000_000,
            "marketdata.poll_interval_us",
            || "must be at most 1000000".into(),
        )?;
        check(
            (0..=19).contains(&m.thread_nice),
            "marketdata.thread_nice",
            || "must be from 0 to 19".into(),
        )?;
        check(
            (1..=255).contains(&m.multicast_ttl),
            "marketdata.multicast_ttl",
            || "must be from 1 to 255".into(),
        )?;
        check(
            m.multicast_interface.is_empty()
                || (m
                    .multicast_interface
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|ip| !ip.is_unspecified() && !ip.is_multicast())
                    && m.destination
                        .parse::<std::net::SocketAddr>()
                        .is_ok_and(|d| d.is_ipv4())),
            "marketdata.multicast_interface",
            || {
                format!(
                    "must be empty or an IPv4 address of this host, with an IPv4 destination (got {:?})",
                    m.multicast_interface
                )
            },
        )?;
        check(
            m.retransmission_bytes_per_second == 0
                || m.retransmission_bytes_per_second >= m.packet_bytes_max as u64,
            "marketdata.retransmission_bytes_per_second",
            || {
                format!(
                    "must be 0 (no limit) or at least packet_bytes_max ({})",
                    m.packet_bytes_max
                )
            },
        )?;
        check(
            m.retransmission_total_bytes_per_second == 0
                || m.retransmission_total_bytes_per_second >= m.packet_bytes_max as u64,
            "marketdata.retransmission_total_bytes_per_second",
            || {
                format!(
                    "must be 0 (no limit) or at least packet_bytes_max ({})",
                    m.packet_bytes_max
                )
            },
        )?;
        Ok(())
    }

    /// The configured fsync mode.
    pub fn fsync_mode(&self) -> FsyncMode {
        FsyncMode::parse(&self.journal.fsync).expect("validated at load")
    }

    /// Where snapshots come from.
    pub fn snapshot_source(&self) -> crate::journal::snapshot::SnapshotSource {
        crate::journal::snapshot::SnapshotSource::parse(&self.journal.snapshot_source)
            .expect("validated at load")
    }

    /// The configured threading mode (`auto` not resolved yet: see [`Threading::choose`]).
    pub fn threading(&self) -> Threading {
        Threading::parse(&self.pipeline.threading).expect("validated at load")
    }

    /// The configured wait strategy.
    pub fn wait_strategy(&self) -> WaitStrategy {
        WaitStrategy::parse(&self.pipeline.wait).expect("validated at load")
    }
}

/// The smallest `gateway.packet_len_max`: an Enter Order (its packet type, 47 fixed bytes)
/// with an appendage of [`crate::wire::ouch::APPENDAGE_MAX`] bytes, more than every option
/// OUCH 5.0 lists for it once each (92).
pub const PACKET_LEN_MIN: usize = 1 + 47 + crate::wire::ouch::APPENDAGE_MAX;

/// Whether binding both addresses would collide: the same port (not 0, which the OS
/// picks) on the same address (an IPv4-mapped IPv6 address being its IPv4 one), or on
/// every address of a family and one of it: `0.0.0.0` covers IPv4, `[::]` both families
/// (Linux's default dual stack).
fn overlap(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    let covers = |x: std::net::IpAddr, y: std::net::IpAddr| {
        x == y || (x.is_unspecified() && (x.is_ipv6() || y.is_ipv4()))
    };
    let (x, y) = (a.ip().to_canonical(), b.ip().to_canonical());
    a.port() != 0 && a.port() == b.port() && (covers(x, y) || covers(y, x))
}

fn check(ok: bool, key: &str, message: impl FnOnce() -> String) -> Result<(), (String, String)> {
    if ok {
        Ok(())
    } else {
        Err((key.to_string(), message()))
    }
}

fn price(text: &str, key: String) -> Result<Price, (String, String)> {
    Price::parse_decimal(text).map_err(|m| (key, m))
}

impl InstrumentConfig {
    fn spec(&self, at: &str) -> Result<InstrumentSpec, (String, String)> {
        let key = |field: &str| format!("{at}.{field}");
        let symbol = Symbol::from_str_padded(&self.symbol).ok_or_else(|| {
            (
                key("symbol"),
                format!(
                    "{:?} must be 1 to 8 printable ASCII characters without spaces",
                    self.symbol
                ),
            )
        })?;
        let tick = price(&self.tick_size, key("tick_size"))?;
        let min_price = price(&self.min_price, key("min_price"))?;
        let max_price = price(&self.max_price, key("max_price"))?;
        let ref_price = price(&self.ref_price, key("ref_price"))?;
        check(tick.0 > 0, &key("tick_size"), || {
            "must be above zero".into()
        })?;
        check(min_price.0 > 0, &key("min_price"), || {
            "must be above zero".into()
        })?;
        for (name, p) in [
            ("min_price", min_price),
            ("max_price", max_price),
            ("ref_price", ref_price),
        ] {
            check(p.0 % tick.0 == 0, &key(name), || {
                format!("{p} is not a multiple of tick_size {tick}")
            })?;
        }
        check(max_price >= min_price, &key("max_price"), || {
            format!("{max_price} is below min_price {min_price}")
        })?;
        check(
            ref_price >= min_price && ref_price <= max_price,
            &key("ref_price"),
            || format!("{ref_price} is outside min_price..max_price"),
        )?;
        let ticks = (max_price.0 - min_price.0) / tick.0 + 1;
        check(ticks <= LADDER_TICKS_MAX, &key("max_price"), || {
            format!(
                "min_price {min_price} to max_price {max_price} is {ticks} ticks of {tick}; at most {LADDER_TICKS_MAX} (each tick has a slot in the book's ladder)"
            )
        })?;
        check(self.lot_size > 0, &key("lot_size"), || {
            "must be above zero".into()
        })?;
        check(
            self.max_qty >= self.lot_size && self.max_qty < OUCH_QTY_LIMIT,
            &key("max_qty"),
            || {
                format!(
                    "must be from lot_size ({}) to {}",
                    self.lot_size,
                    OUCH_QTY_LIMIT - 1
                )
            },
        )?;
        check(self.band_bps <= 10_000, &key("band_bps"), || {
            "must be from 0 (off) to 10000 basis points".into()
        })?;
        let band_remainder = match self.band_remainder.as_str() {
            "cancel" => BandRemainder::Cancel,
            "rest" => BandRemainder::Rest,
            other => {
                return Err((
                    key("band_remainder"),
                    format!("{other:?} must be \"cancel\" or \"rest\""),
                ));
            }
        };
        check(
            self.fat_finger_bps <= 100_000,
            &key("fat_finger_bps"),
            || "must be from 0 (off) to 100000 basis points".into(),
        )?;
        check(self.breaker_bps <= 10_000, &key("breaker_bps"), || {
            "must be from 0 (off) to 10000 basis points".into()
        })?;
        let breaker_on = self.breaker_bps > 0;
        check(
            !breaker_on || (1..=3_600).contains(&self.breaker_window_secs),
            &key("breaker_window_secs"),
            || {
                "must be from 1 to 3600 seconds while breaker_bps is above 0 (0 turns the breaker off)".into()
            },
        )?;
        check(
            !breaker_on || (1..=86_400).contains(&self.breaker_pause_secs),
            &key("breaker_pause_secs"),
            || {
                "must be from 1 to 86400 seconds while breaker_bps is above 0 (0 turns the breaker off)".into()
            },
        )?;
        Ok(InstrumentSpec {
            symbol,
            tick,
            lot: self.lot_size,
            min_price,
            max_price,
            max_qty: self.max_qty,
            ref_price,
            band_bps: self.band_bps,
            band_remainder,
            fat_finger_bps: self.fat_finger_bps,
            breaker_bps: self.breaker_bps,
            breaker_window_secs: self.breaker_window_secs,
            breaker_pause_secs: self.breaker_pause_secs,
        })
    }
}

impl UserConfig {
    fn spec(&self, at: &str) -> Result<OwnerSpec, (String, String)> {
        let key = |field: &str| format!("{at}.{field}");
        let name_ok = (1..=6).contains(&self.username.len())
            && self.username.bytes().all(|b| b.is_ascii_alphanumeric());
        check(name_ok, &key("username"), || {
            format!(
                "{:?} must be 1 to 6 ASCII letters or digits (SoupBinTCP)",
                self.username
            )
        })?;
        let pass_ok = (1..=10).contains(&self.password.len())
            && self.password.bytes().all(|b| b.is_ascii_graphic());
        check(pass_ok, &key("password"), || {
            "must be 1 to 10 printable ASCII characters without spaces (SoupBinTCP)".into()
        })?;
        // Upper case, as OUCH firms are: the gateway refuses any other in the Firm option,
        // so a lower-case firm here could never be named by its own user.
        let firm = Firm::from_str_padded(&self.firm).ok_or_else(|| {
            (
                key("firm"),
                format!(
                    "{:?} must be 1 to 4 upper-case ASCII letters or digits",
                    self.firm
                ),
            )
        })?;
        let stp = match &self.self_trade_prevention {
            Some(mode) => Some(stp_mode(mode, &key("self_trade_prevention"))?),
            None => None,
        };
        Ok(OwnerSpec {
            firm,
            cancel_on_disconnect: self.cancel_on_disconnect,
            stp,
        })
    }
}

/// A self-trade prevention mode by its configuration name.
fn stp_mode(name: &str, key: &str) -> Result<StpMode, (String, String)> {
    match name {
        "cancel_resting" => Ok(StpMode::CancelResting),
        "cancel_incoming" => Ok(StpMode::CancelIncoming),
        "cancel_both" => Ok(StpMode::CancelBoth),
        "none" => Ok(StpMode::None),
        other => Err((
            key.into(),
            format!(
                "{other:?} is not one of \"cancel_resting\", \"cancel_incoming\", \"cancel_both\", \"none\""
            ),
        )),
    }
}

/// The parser's message for `error` in `text`, by line and column. The source line is never
/// quoted: it may hold a secret under a misspelled key (`pasword = "..."` is refused as an
/// unknown field, and the parser's own report quotes the line whole). The parser's message
/// names the key and, for a value of the wrong type, quotes the value: on a line of a
/// password or a token only the line number and that the value is malformed, so that no
/// secret reaches the logs.
fn parse_error_message(text: &str, error: &toml::de::Error) -> String {
    let Some(span) = error.span() else {
        return error.message().trim_end().to_string();
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let column = text[..start]
        .rfind('\n')
        .map_or(start, |newline| start - newline - 1)
        + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    if ["password", "passwd", "token", "secret"]
        .iter()
        .any(|word| line.to_ascii_lowercase().contains(word))
    {
        return format!(
            "line {line_no}: a secret setting (a password or token) is malformed; its value is not shown"
        );
    }
    let message = error.message().trim_end();
    // The key of a `key = value` line, which a type error's message does not name.
    match line.split_once('=').map(|(key, _)| key.trim()) {
        Some(key) if !key.is_empty() && !message.contains(&format!("`{key}`")) => {
            format!("line {line_no}, column {column}: {key}: {message}")
        }
        _ => format!("line {line_no}, column {column}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../config/ironmatch.toml");

    #[test]
    fn shipped_config_is_valid() {
        let config = Config::parse(SHIPPED, "config/ironmatch.toml").unwrap();
        let book = config.book_config().unwrap();
        assert!(book.instruments.len() >= 3);
        assert!(book.owners.len() >= 2);
    }

    #[test]
    fn self_trade_prevention_none_globally_and_per_user() {
        let text = SHIPPED
            .replacen(
                "prevention = \"cancel_resting\"",
                "prevention = \"none\"",
                1,
            )
            .replacen(
                "# self_trade_prevention = \"none\"",
                "self_trade_prevention = \"cancel_both\"",
                1,
            );
        let book = Config::parse(&text, "test.toml")
            .unwrap()
            .book_config()
            .unwrap();
        assert_eq!(book.stp, StpMode::None);
        assert_eq!(book.stp_of(0), StpMode::CancelBoth);
        assert_eq!(book.stp_of(1), StpMode::None);
    }

    fn error_for(edit: impl Fn(&str) -> String) -> String {
        Config::parse(&edit(SHIPPED), "test.toml")
            .unwrap_err()
            .to_string()
    }

    /// Values that would break the engine later, or that no client could use, are refused
    /// at load, naming their key.
    #[test]
    fn refused_at_load_what_would_fail_later() {
        let cases: [(&str, &str, &str); 13] = [
            (
                "username = \"MM2\"",
                "username = \"mm1\"",
                "users[1].username",
            ),
            ("firm = \"MMA\"", "firm = \"mma\"", "users[0].firm"),
            (
                "connections_max = 64",
                "connections_max = 10000000",
                "gateway.connections_max",
            ),
            (
                "ring_capacity = 65536",
                "ring_capacity = 1073741824",
                "pipeline.ring_capacity",
            ),
            (
                "listen = \"127.0.0.1:15080\"",
                "listen = \"127.0.0.1:15000\"",
                "admin.listen",
            ),
            (
                "retransmission = \"127.0.0.1:15002\"",
                "retransmission = \"127.0.0.1:15001\"",
                "marketdata.retransmission",
            ),
            (
                "session_store_bytes = 16777216",
                "session_store_bytes = 1099511627776",
                "gateway.session_store_bytes",
            ),
            // Below a chunk of eight of the longest messages (it was raised silently).
            (
                "session_store_bytes = 16777216",
                "session_store_bytes = 4096",
                "gateway.session_store_bytes",
            ),
            // Linux sends no datagram to port 0: the whole feed would be lost.
            (
                "destination = \"127.0.0.1:15001\"",
                "destination = \"127.0.0.1:0\"",
                "marketdata.destination",
            ),
            // The wildcard on the feed's port takes the feed's datagrams.
            (
                "retransmission = \"127.0.0.1:15002\"",
                "retransmission = \"0.0.0.0:15001\"",
                "marketdata.retransmission",
            ),
            // Without SO_BROADCAST every send fails.
            (
                "destination = \"127.0.0.1:15001\"",
                "destination = \"255.255.255.255:15001\"",
                "marketdata.destination",
            ),
            // An Enter Order with three options is 66 bytes.
            (
                "packet_len_max = 512",
                "packet_len_max = 64",
                "gateway.packet_len_max",
            ),
            // Every address and the admin endpoint's own: one port, bound twice.
            (
                "listen = \"127.0.0.1:15000\"",
                "listen = \"0.0.0.0:15080\"",
                "admin.listen",
            ),
        ];
        for (from, to, key) in cases {
            assert!(SHIPPED.contains(from), "{from}");
            let e = error_for(|s| s.replacen(from, to, 1));
            assert!(e.contains(key), "{to}: {e}");
        }
        // The wildcard on the port of another host's unicast destination takes nothing.
        let remote = SHIPPED
            .replacen(
                "destination = \"127.0.0.1:15001\"",
                "destination = \"10.0.0.5:15001\"",
                1,
            )
            .replacen(
                "retransmission = \"127.0.0.1:15002\"",
                "retransmission = \"0.0.0.0:15001\"",
                1,
            );
        Config::parse(&remote, "test.toml").unwrap();
    }

    /// A malformed password or token is reported by line, its value not shown.
    #[test]
    fn a_malformed_secret_is_not_printed() {
        let e = error_for(|s| s.replacen("password = \"mm1pass\"", "password = 9876543", 1));
        assert!(
            e.contains("secret setting") && !e.contains("9876543"),
            "{e}"
        );
        let e = error_for(|s| s.replacen("password = \"mm1pass\"", "passwd = \"hunter2x\"", 1));
        assert!(!e.contains("hunter2x"), "{e}");
        // A misspelled key is refused by name, its line (and so its value) not quoted.
        let e = error_for(|s| s.replacen("password = \"mm1pass\"", "pasword = \"hunter2x\"", 1));
        assert!(e.contains("pasword") && !e.contains("hunter2x"), "{e}");
        let e = error_for(|s| s.replacen("[admin]", "[admin]\ntokn = \"s3cr3t-t0ken\"", 1));
        assert!(e.contains("tokn") && !e.contains("s3cr3t-t0ken"), "{e}");
        // Other errors keep the parser's full message.
        let e = error_for(|s| s.replacen("connections_max = 64", "connections_max = \"x\"", 1));
        assert!(e.contains("connections_max"), "{e}");
    }

    #[test]
    fn errors_name_the_bad_key() {
        let e = error_for(|s| s.replacen("tick_size = \"0.01\"", "tick_size = \"0.00001\"", 1));
        assert!(e.contains("instruments[0].tick_size"), "{e}");
        let e = error_for(|s| {
            s.replacen("max_price = \"1000.00\"", "max_price = \"199999.99\"", 1)
                .replacen("tick_size = \"0.01\"", "tick_size = \"0.0001\"", 1)
        });
        assert!(
            e.contains("instruments[0].max_price") && e.contains("ticks"),
            "{e}"
        );
        let e = error_for(|s| s.replacen("min_price = \"0.01\"", "min_price = \"0.00015\"", 1));
        assert!(
            e.contains("instruments[0].min_price") && e.contains("decimal places"),
            "{e}"
        );
        let e = error_for(|s| s.replacen("band_bps = 1000", "band_bps = 10001", 1));
        assert!(e.contains("instruments[0].band_bps"), "{e}");
        let e = error_for(|s| {
            s.replacen(
                "band_remainder = \"cancel\"",
                "band_remainder = \"keep\"",
                1,
            )
        });
        assert!(e.contains("instruments[0].band_remainder"), "{e}");
        let e = error_for(|s| s.replacen("fat_finger_bps = 5000", "fat_finger_bps = 100001", 1));
        assert!(e.contains("instruments[0].fat_finger_bps"), "{e}");
        let e = error_for(|s| s.replacen("breaker_bps = 0", "breaker_bps = 10001", 1));
        assert!(e.contains("instruments[0].breaker_bps"), "{e}");
        let e = error_for(|s| {
            s.replacen("breaker_bps = 0", "breaker_bps = 500", 1)
                .replacen("breaker_window_secs = 300", "breaker_window_secs = 0", 1)
        });
        assert!(e.contains("instruments[0].breaker_window_secs"), "{e}");
        let e = error_for(|s| {
            s.replacen("breaker_bps = 0", "breaker_bps = 500", 1)
                .replacen("breaker_pause_secs = 300", "breaker_pause_secs = 86401", 1)
        });
        assert!(e.contains("instruments[0].breaker_pause_secs"), "{e}");
        let e = error_for(|s| s.replacen("firm = \"MMA\"", "firm = \"TOOLONG\"", 1));
        assert!(e.contains("users[0].firm"), "{e}");
        let e = error_for(|s| s.replacen("symbol = \"AAPL\"", "symbol = \"MSFT\"", 1));
        assert!(e.contains(".symbol") && e.contains("twice"), "{e}");
        let e = error_for(|s| {
            s.replacen(
                "prevention = \"cancel_resting\"",
                "prevention = \"maybe\"",
                1,
            )
        });
        assert!(e.contains("book.self_trade_prevention"), "{e}");
        let e = error_for(|s| {
            s.replacen(
                "# self_trade_prevention = \"none\"",
                "self_trade_prevention = \"off\"",
                1,
            )
        });
        assert!(e.contains("users[0].self_trade_prevention"), "{e}");
        let e =
            error_for(|s| s.replacen("listen = \"127.0.0.1:15000\"", "listen = \"nowhere\"", 1));
        assert!(e.contains("gateway.listen"), "{e}");
        let e = error_for(|s| s.replacen("wait = \"spin_park\"", "wait = \"nap\"", 1));
        assert!(e.contains("pipeline.wait"), "{e}");
        let e = error_for(|s| s.replacen("threading = \"auto\"", "threading = \"two\"", 1));
        assert!(e.contains("pipeline.threading"), "{e}");
        let e = error_for(|s| {
            s.replacen(
                "snapshot_source = \"auto\"",
                "snapshot_source = \"disk\"",
                1,
            )
        });
        assert!(e.contains("journal.snapshot_source"), "{e}");
        let e = error_for(|s| s.replacen("max_qty = 100000", "max_qty = 1000000", 1));
        assert!(e.contains("instruments[0].max_qty"), "{e}");
        let e = error_for(|s| s.replacen("packet_bytes_max = 1400", "packet_bytes_max = 40", 1));
        assert!(e.contains("marketdata.packet_bytes_max"), "{e}");
        let e = error_for(|s| {
            s.replacen(
                "retransmission_bytes_per_second = 10000000",
                "retransmission_bytes_per_second = 1000",
                1,
            )
        });
        assert!(
            e.contains("marketdata.retransmission_bytes_per_second"),
            "{e}"
        );
        let e = error_for(|s| {
            s.replacen(
                "retransmission_total_bytes_per_second = 100000000",
                "retransmission_total_bytes_per_second = 1000",
                1,
            )
        });
        assert!(
            e.contains("marketdata.retransmission_total_bytes_per_second"),
            "{e}"
        );
        let e = error_for(|s| {
            s.replacen(
                "session = \"IRONMATCH\"\n# Largest",
                "session = \"TOO LONG NAME\"\n# Largest",
                1,
            )
        });
        assert!(e.contains("marketdata.session"), "{e}");
        let e = error_for(|s| {
            s.replacen(
                "destination = \"127.0.0.1:15001\"",
                "destination = \"x\"",
                1,
            )
        });
        assert!(e.contains("marketdata.destination"), "{e}");
        // The feed's interface is an IPv4 address, for an IPv4 destination.
        for (interface, destination) in [
            ("eth0", "127.0.0.1:15001"),
            ("::1", "127.0.0.1:15001"),
            ("127.0.0.1", "[ff02::1:3]:15001"),
            ("0.0.0.0", "127.0.0.1:15001"),
        ] {
            let e = error_for(|s| {
                s.replacen(
                    "multicast_interface = \"\"",
                    &format!("multicast_interface = \"{interface}\""),
                    1,
                )
                .replacen(
                    "destination = \"127.0.0.1:15001\"",
                    &format!("destination = \"{destination}\""),
                    1,
                )
            });
            assert!(e.contains("marketdata.multicast_interface"), "{e}");
        }
    }

    #[test]
    fn a_cluster_node_needs_a_ring_for_a_whole_raft_entry() {
        let node = include_str!("../config/cluster/node1.toml");
        assert!(Config::parse(node, "node1").is_ok());
        let small = node.replacen("ring_capacity = 65536", "ring_capacity = 512", 1);
        let e = Config::parse(&small, "node1").unwrap_err().to_string();
        assert!(e.contains("pipeline.ring_capacity"), "{e}");
    }

    /// Two nodes at one Raft or gateway address, or this node's Raft port on another
    /// listener's, are refused at load, naming the key.
    #[test]
    fn a_cluster_node_address_is_used_once() {
        let node = include_str!("../config/cluster/node1.toml");
        let error = |from: &str, to: &str| {
            assert!(node.contains(from), "{from}");
            Config::parse(&node.replacen(from, to, 1), "node1")
                .unwrap_err()
                .to_string()
        };
        let e = error("raft = \"127.0.0.1:15121\"", "raft = \"127.0.0.1:15131\"");
        assert!(e.contains("cluster.peers[2].raft"), "{e}");
        let e = error(
            "gateway = \"127.0.0.1:15120\"",
            "gateway = \"127.0.0.1:15130\"",
        );
        assert!(e.contains("cluster.peers[2].gateway"), "{e}");
        let e = error("listen = \"127.0.0.1:15118\"", "listen = \"0.0.0.0:15111\"");
        assert!(
            e.contains("cluster.peers[0].raft") && e.contains("admin.listen"),
            "{e}"
        );
        let e = error(
            "listen = \"127.0.0.1:15110\"",
            "listen = \"127.0.0.1:15111\"",
        );
        assert!(
            e.contains("cluster.peers[0].raft") && e.contains("gateway.listen"),
            "{e}"
        );
        // Another address, or port 0 (the OS picks one) twice, is fine.
        for (from, to) in [
            (
                "listen = \"127.0.0.1:15118\"",
                "listen = \"127.0.0.2:15111\"",
            ),
            ("listen = \"127.0.0.1:15118\"", "listen = \"127.0.0.1:0\""),
        ] {
            let text = node.replacen(from, to, 1);
            assert!(Config::parse(&text, "node1").is_ok(), "{to}");
        }
    }

    /// Listeners overlap on one port at one address, or where one takes every address of
    /// the other's family (`[::]` both families); never on port 0.
    #[test]
    fn listeners_overlap_by_port_and_family() {
        let a = |text: &str| text.parse::<std::net::SocketAddr>().unwrap();
        for (x, y, both) in [
            ("127.0.0.1:9000", "127.0.0.1:9000", true),
            ("127.0.0.1:9000", "127.0.0.2:9000", false),
            ("127.0.0.1:9000", "127.0.0.1:9001", false),
            ("0.0.0.0:9000", "127.0.0.1:9000", true),
            ("0.0.0.0:9000", "[::1]:9000", false),
            ("[::]:9000", "127.0.0.1:9000", true),
            ("[::]:9000", "0.0.0.0:9000", true),
            ("[::]:9000", "[::1]:9000", true),
            ("[::ffff:127.0.0.1]:9000", "127.0.0.1:9000", true),
            ("0.0.0.0:0", "0.0.0.0:0", false),
        ] {
            assert_eq!(overlap(a(x), a(y)), both, "{x} {y}");
            assert_eq!(overlap(a(y), a(x)), both, "{y} {x}");
        }
    }

    /// A cluster secret has at least 16 bytes, and one is required when a node's Raft
    /// address is not loopback.
    #[test]
    fn a_cluster_secret_is_long_enough_and_required_off_loopback() {
        let node = include_str!("../config/cluster/node1.toml");
        let with =
            |secret: &str| node.replacen("secret = \"\"", &format!("secret = \"{secret}\""), 1);
        let settings = |text: &str| Config::parse(text, "node1").map(|c| c.cluster_settings());
        let none = settings(node).unwrap().unwrap();
        assert!(none.secret.is_none(), "loopback: none needed");
        let some = settings(&with("sixteen bytes ok")).unwrap().unwrap();
        let secrets = some.secret.expect("a secret");
        assert_eq!(&*secrets.current, &b"sixteen bytes ok"[..]);
        assert!(secrets.previous.is_none());
        let e = settings(&with("fifteen bytes..")).unwrap_err().to_string();
        assert!(e.contains("cluster.secret") && e.contains("16"), "{e}");
        let off = node.replace("raft = \"127.0.0.1:15121\"", "raft = \"10.0.0.2:15121\"");
        let e = settings(&off).unwrap_err().to_string();
        assert!(
            e.contains("cluster.secret") && e.contains("10.0.0.2:15121"),
            "{e}"
        );
        let off_with = off.replacen("secret = \"\"", "secret = \"sixteen bytes ok\"", 1);
        assert!(settings(&off_with).is_ok());
    }

    /// A previous secret (for a rotation) has at least 16 bytes, comes with a secret in
    /// force, and differs from it; the settings carry both, the one in force first.
    #[test]
    fn a_previous_cluster_secret_comes_with_a_new_one() {
        let node = include_str!("../config/cluster/node1.toml");
        let with = |secret: &str, previous: &str| {
            node.replacen("\nsecret = \"\"", &format!("\nsecret = \"{secret}\""), 1)
                .replacen(
                    "previous_secret = \"\"",
                    &format!("previous_secret = \"{previous}\""),
                    1,
                )
        };
        let settings = |text: &str| Config::parse(text, "node1").map(|c| c.cluster_settings());
        let rotating = settings(&with("the new secret, 16+", "the old secret, 16+"))
            .unwrap()
            .unwrap()
            .secret
            .expect("secrets");
        assert_eq!(&*rotating.current, &b"the new secret, 16+"[..]);
        assert_eq!(
            rotating.previous.as_deref(),
            Some(&b"the old secret, 16+"[..])
        );
        for (secret, previous, says) in [
            ("the new secret, 16+", "too short", "16"),
            ("", "the old secret, 16+", "no secret in force"),
            ("the new secret, 16+", "the new secret, 16+", "the same"),
        ] {
            let e = settings(&with(secret, previous)).unwrap_err().to_string();
            assert!(
                e.contains("cluster.previous_secret") && e.contains(says),
                "{e}"
            );
        }
    }

    /// Timeouts whose login lease could outlast a new leader's election, or lapse between
    /// heartbeats, are refused; the shipped and tested ones pass.
    #[test]
    fn cluster_timeouts_keep_the_login_lease_inside_the_election_timeout() {
        let node = include_str!("../config/cluster/node1.toml");
        let with = |min: u64, max: u64, heartbeat: u64| {
            let text = node
                .replacen(
                    "election_timeout_min_ms = 500",
                    &format!("election_timeout_min_ms = {min}"),
                    1,
                )
                .replacen(
                    "election_timeout_max_ms = 1000",
                    &format!("election_timeout_max_ms = {max}"),
                    1,
                )
                .replacen(
                    "heartbeat_interval_ms = 100\n",
                    &format!("heartbeat_interval_ms = {heartbeat}\n"),
                    1,
                );
            Config::parse(&text, "node1").map(|c| {
                let s = c.cluster_settings().unwrap();
                let got = (
                    s.election_timeout_min_ms,
                    s.election_timeout_max_ms,
                    s.heartbeat_interval_ms,
                );
                assert_eq!(got, (min, max, heartbeat));
            })
        };
        assert!(with(500, 1000, 100).is_ok(), "shipped");
        assert!(with(400, 800, 50).is_ok(), "tests/cluster.rs");
        assert!(with(300, 500, 100).is_ok(), "the limits");
        for (min, max, heartbeat) in [(900, 1000, 800), (300, 499, 100), (299, 1000, 100)] {
            let e = with(min, max, heartbeat).unwrap_err().to_string();
            assert!(e.contains("cluster.election_timeout_min_ms"), "{e}");
        }
    }

    /// Nodes whose books, feeds or order entry session names differ have different
    /// fingerprints (and refuse each other).
    #[test]
    fn the_cluster_fingerprint_covers_the_book_and_the_feed() {
        let node = include_str!("../config/cluster/node1.toml");
        let of = |text: &str| {
            Config::parse(text, "node1")
                .unwrap()
                .cluster_settings()
                .unwrap()
                .config_fingerprint
        };
        let base = of(node);
        assert_eq!(
            base,
            of(node),
            "the same configuration, the same fingerprint"
        );
        let at = node.find("[marketdata]").expect("a [marketdata] table");
        let (before, feed) = node.split_at(at);
        for changed in [
            node.replacen("attribution = false", "attribution = true", 1),
            format!(
                "{before}{}",
                feed.replacen("session = \"IRONMATCH\"", "session = \"OTHER\"", 1)
            ),
            node.replacen("lot_size = 1\n", "lot_size = 10\n", 1),
            // The first `session` is `[gateway]`'s.
            node.replacen("session = \"IRONMATCH\"", "session = \"OTHER\"", 1),
        ] {
            assert_ne!(changed, node, "the test changed something");
            assert_ne!(of(&changed), base, "{changed}");
        }
    }

    #[test]
    fn shipped_marketdata_matches_defaults() {
        let config = Config::parse(SHIPPED, "x").unwrap();
        let d = MarketDataSection::default();
        let m = &config.marketdata;
        assert_eq!(
            (
                &m.destination,
                &m.retransmission,
                &m.session,
                m.packet_bytes_max
            ),
            (
                &d.destination,
                &d.retransmission,
                &d.session,
                d.packet_bytes_max
            )
        );
        assert_eq!(
            (
                m.enabled,
                m.heartbeat_interval_ms,
                m.end_of_session_ms,
                m.attribution,
                m.multicast_ttl,
                m.thread_nice,
                m.poll_interval_us,
                m.retransmission_bytes_per_second,
                m.retransmission_total_bytes_per_second
            ),
            (
                d.enabled,
                d.heartbeat_interval_ms,
                d.end_of_session_ms,
                d.attribution,
                d.multicast_ttl,
                d.thread_nice,
                d.poll_interval_us,
                d.retransmission_bytes_per_second,
                d.retransmission_total_bytes_per_second
            )
        );
    }

    #[test]
    fn admission_budgets_are_checked_by_name() {
        let e = error_for(|s| s.replacen("pending_max = 64", "pending_max = 0", 1));
        assert!(e.contains("gateway.pending_max"), "{e}");
        let e = error_for(|s| {
            s.replacen(
                "pending_per_address_max = 16",
                "pending_per_address_max = 65",
                1,
            )
        });
        assert!(e.contains("gateway.pending_per_address_max"), "{e}");
    }

    #[test]
    fn admin_endpoint_is_optional_and_needs_a_token_off_loopback() {
        let shipped = Config::parse(SHIPPED, "x").unwrap();
        let on = shipped.admin.resolve(None).unwrap().unwrap();
        assert_eq!(on.listen, "127.0.0.1:15080".parse().unwrap());
        assert_eq!(on.token, None);
        let absent = SHIPPED
            .replacen("[admin]\n", "", 1)
            .replacen("listen = \"127.0.0.1:15080\"\n", "", 1)
            .replacen("token = \"\"\n", "", 1);
        let config = Config::parse(&absent, "x").unwrap();
        assert_eq!(config.admin.resolve(None), Ok(None));
        let open = AdminSection {
            listen: "0.0.0.0:15080".into(),
            token: String::new(),
        };
        let e = open.resolve(None).unwrap_err();
        assert!(
            e.contains("not a loopback address") && e.contains(ADMIN_TOKEN_ENV),
            "{e}"
        );
        let from_env = open.resolve(Some("s3cret")).unwrap().unwrap();
        assert_eq!(from_env.token.as_deref(), Some("s3cret"));
        let from_file = AdminSection {
            token: "filetoken".into(),
            ..open.clone()
        };
        assert_eq!(
            from_file
                .resolve(Some("envtoken"))
                .unwrap()
                .unwrap()
                .token
                .as_deref(),
            Some("envtoken")
        );
        assert!(from_file.resolve(Some("bad token")).is_err());
        let e =
            error_for(|s| s.replacen("listen = \"127.0.0.1:15080\"", "listen = \"localhost\"", 1));
        assert!(e.contains("admin.listen"), "{e}");
        let e = error_for(|s| s.replacen("token = \"\"", "token = \"a b\"", 1));
        assert!(e.contains("admin.token"), "{e}");
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let e = error_for(|s| s.replacen("[book]", "[book]\nordres_max = 5", 1));
        assert!(e.contains("ordres_max"), "{e}");
    }

    #[test]
    fn prices_are_held_with_four_decimals() {
        let config = Config::parse(SHIPPED, "x").unwrap();
        let book = config.book_config().unwrap();
        assert_eq!(book.instruments[0].tick, Price(100));
    }
}
