//! The feed publisher thread (`im-feed`): follows the journal files, turns journaled
//! market-data events into ITCH 5.0 messages, stores them (a plain ITCH file beside the
//! journal) and sends them in MoldUDP64 packets; answers retransmission requests from the
//! store; heartbeats when idle; End of Session after shutdown.
//!
//! It never touches the matcher or its rings: the journal writer only flips an atomic
//! after each batch (and wakes this thread if it sleeps), so publishing cannot slow
//! matching. The stream is rebuilt from the journal's first record at every start, so a
//! restarted engine continues the same sequence numbers; what the previous run had
//! already published (the records journaled before this start) is stored without being
//! sent again, then a heartbeat announces the next number and listeners that missed
//! anything fill the gap by retransmission.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use super::stream::{FeedStore, Translator, blocks};
use crate::book::BookConfig;
use crate::config::MarketDataSection;
use crate::journal::{Follower, fingerprint, first_header};
use crate::pipeline::{Signal, Wake, pin};
use crate::wire::moldudp64::{
    COUNT_MAX, HEADER_LEN, PacketBuilder, PacketHeader, Session, parse_request, status_packet,
};

/// File name of the stream's store in the journal directory.
pub const STORE_NAME: &str = "feed.itch";

const WAKE: Token = Token(0);
const REQUESTS: Token = Token(1);
/// Longest sleep when idle and woken by the writer: bounds the cost of a lost wake-up.
const SLEEP_MAX: Duration = Duration::from_millis(20);
/// Requests answered per round at most, so a flood of them cannot stall the live stream.
const REQUESTS_PER_ROUND_MAX: usize = 64;
/// Interval of End of Session packets after shutdown.
const END_OF_SESSION_PERIOD: Duration = Duration::from_millis(100);

/// The file in a journal directory that fixes its feed's settings (see [`FeedSettings`]).
pub const SETTINGS_NAME: &str = "feed.settings";

/// What a journal's feed keeps from the run that started it: its MoldUDP64 session and
/// whether adds carry the entering firm. Every later run on the journal (a restart in the
/// day) rebuilds the stream with these, so that a retransmission or an export is what
/// listeners were sent live; in particular a feed that was anonymous never discloses firms
/// afterwards. On one node, a configuration that differs is warned about and applies from
/// the next journal (the next trading day; without `[venue]`, a new journal directory);
/// in a cluster, whose nodes must store the same feed, it stops the start.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct FeedSettings {
    /// MoldUDP64 session name, as configured for the journal (with a trading day, the
    /// day's name).
    pub session: String,
    /// Add Order with MPID Attribution (`F`) instead of anonymous adds (`A`).
    pub attribution: bool,
    /// How the journal's first run stamped the start of day
    /// ([`preamble_stamp`](super::stream::preamble_stamp)): at midnight (`true`, a
    /// cluster's) or at the journal's creation (`false`, one node's). Not a setting, so
    /// not compared: a record of what was sent, so that every rebuild of the stream (a
    /// restart, `replay --itch`) stamps it the same whatever configuration it runs under.
    /// Absent from files written before 2026-12-07, whose readers take the
    /// configuration's mode, as they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at_midnight: Option<bool>,
}

/// The settings, not the record of the first run's start of day.
impl PartialEq for FeedSettings {
    fn eq(&self, other: &FeedSettings) -> bool {
        (&self.session, self.attribution) == (&other.session, other.attribution)
    }
}

impl Eq for FeedSettings {}

pub use crate::journal::pinned::Pinned;

impl FeedSettings {
    /// The configured settings, for a node in a cluster (`clustered`) or on its own.
    pub fn of(m: &MarketDataSection, clustered: bool) -> FeedSettings {
        FeedSettings {
            session: m.session.clone(),
            attribution: m.attribution,
            start_at_midnight: Some(clustered),
        }
    }

    /// Whether the start of day is stamped at midnight: as the journal's first run did, or
    /// for a file from before that was kept, as `clustered` (the configuration's mode) says.
    pub fn start_at_midnight(&self, clustered: bool) -> bool {
        self.start_at_midnight.unwrap_or(clustered)
    }

    /// Settings naming a valid MoldUDP64 session.
    fn valid(&self) -> Result<(), String> {
        match Session::from_str_padded(&self.session) {
            Some(_) => Ok(()),
            None => Err(format!(
                "session {:?} is not 1 to 10 printable characters",
                self.session
            )),
        }
    }

    /// The settings written in journal directory `dir`, if any. A file that is not
    /// settings (or names an invalid session) is an error naming it.
    pub fn read(dir: &Path) -> io::Result<Option<FeedSettings>> {
        crate::journal::pinned::read(dir, SETTINGS_NAME, FeedSettings::valid)
    }

    /// The settings of the journal in `dir` ([`crate::journal::pinned::pin`]). In a
    /// `cluster`, a configuration that differs from what the journal kept is an error.
    pub fn pin(
        dir: &Path,
        m: &MarketDataSection,
        journal_new: bool,
        cluster: bool,
    ) -> io::Result<(FeedSettings, Pinned)> {
        let configured = FeedSettings::of(m, cluster);
        let (settings, pinned) = crate::journal::pinned::pin(
            dir,
            SETTINGS_NAME,
            &configured,
            journal_new,
            FeedSettings::valid,
        )?;
        if cluster && settings.start_at_midnight == Some(false) {
            return Err(io::Error::other(format!(
                "{}: this journal's feed was started on a node on its own (its start of day stamped at the journal's creation), and the nodes of a cluster must store the same feed: a cluster node needs a journal the cluster wrote",
                dir.join(SETTINGS_NAME).display()
            )));
        }
        if cluster && pinned == Pinned::KeptOverConfiguration {
            return Err(io::Error::other(format!(
                "[marketdata] session {:?} and attribution = {} differ from what this node's journal's feed keeps (session {:?}, attribution = {}), and the nodes of a cluster must store the same feed: set them back (a new setting needs a new cluster journal)",
                configured.session, configured.attribution, settings.session, settings.attribution
            )));
        }
        Ok((settings, pinned))
    }
}

/// What the publisher needs to start.
#[derive(Clone, Debug)]
pub struct PublisherStart {
    /// Journal directory (the store is written there too).
    pub dir: PathBuf,
    /// Book configuration: instruments and the journal's fingerprint.
    pub book: BookConfig,
    /// `[marketdata]`.
    pub marketdata: MarketDataSection,
    /// Core to pin the thread to (`pipeline.feed_core`).
    pub core: Option<usize>,
    /// The first journal record this run writes: messages derived from records before it
    /// were published by an earlier run and are stored, not sent.
    pub live_from: u64,
    /// In a cluster: packets go out only while this node leads (every node stores the
    /// stream and answers retransmission requests; a new leader's heartbeat announces the
    /// next number and listeners fill the gap by retransmission).
    pub cluster: Option<Arc<crate::cluster::ClusterRole>>,
    /// The journal writer's count of records written (with `fsync = "always"`, made
    /// durable): the feed publishes nothing past it, so no packet goes out for a record a
    /// power loss could still take back. `None` follows the files as they grow.
    pub written: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// With a trading day, its end-of-messages flag: End of Session goes out at the stop
    /// only once it is set (a stop in the middle of the day ends nothing: the next start
    /// continues the session). `None` (no trading day): at every stop.
    pub day_over: Option<Arc<AtomicBool>>,
}

/// A started publisher.
pub struct Publisher {
    /// The thread; it ends after the stop flag is set and End of Session went out.
    pub thread: JoinHandle<()>,
    /// Give it to the journal writer if `marketdata.poll_interval_us` is 0: it then wakes
    /// the publisher after each batch.
    pub signal: Arc<Signal>,
    /// Where retransmission requests are answered.
    pub retransmission_addr: SocketAddr,
    /// The MoldUDP64 session it publishes (the journal's, see [`FeedSettings`]).
    pub session: String,
}

/// Counters, printed when the publisher ends.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    packets: u64,
    send_errors: u64,
    requests: u64,
    answered: u64,
    ignored: u64,
    over_budget: u64,
    over_total: u64,
}

/// Addresses whose budgets are kept at once; more are refused until some are full again.
const BUDGETS_MAX: usize = 4096;

/// Each requesting address's retransmission bytes, and all addresses' together: buckets
/// holding at most one second's worth, refilled continuously.
struct ReplyBudgets {
    per_second: u64,
    buckets: std::collections::HashMap<std::net::IpAddr, (u64, Instant)>,
    /// The bucket all replies take from (`total_per_second` 0: none), so that forged
    /// sources, each with a budget of its own, add up to no more than it.
    total_per_second: u64,
    total: (u64, Instant),
    /// With every budget in use, when the kept ones may next be swept for full buckets
    /// (a sweep walks them all: one per [`SWEEP_PERIOD`] at most).
    next_sweep: Option<Instant>,
}

/// How often, at most, the budgets are swept for room while every one is in use.
const SWEEP_PERIOD: Duration = Duration::from_millis(10);

impl ReplyBudgets {
    fn new(per_second: u64, total_per_second: u64, now: Instant) -> ReplyBudgets {
        ReplyBudgets {
            per_second,
            buckets: std::collections::HashMap::new(),
            next_sweep: None,
            total_per_second,
            total: (total_per_second, now),
        }
    }

    /// Takes `bytes` from `to`'s budget and from the total at `now`, if both hold them:
    /// `Err(Over::Total)` when only the total is short. An IPv6 address's budget is its
    /// /64's, one host's or link's prefix, out of which a forger could name as many
    /// sources as it liked for one victim (an IPv4 address mapped into IPv6 keeps its own).
    fn take(&mut self, to: std::net::IpAddr, bytes: u64, now: Instant) -> Result<(), Over> {
        let total_left = match self.total_per_second {
            0 => None,
            per_second => Some(bucket_level(self.total, per_second, now)),
        };
        if total_left.is_some_and(|left| left < bytes) {
            return Err(Over::Total);
        }
        self.take_address(to, bytes, now)?;
        if let Some(left) = total_left {
            self.total = (left - bytes, now);
        }
        Ok(())
    }

    fn take_address(&mut self, to: std::net::IpAddr, bytes: u64, now: Instant) -> Result<(), Over> {
        if self.per_second == 0 {
            return Ok(());
        }
        let to = crate::gateway::admission::address_group(to);
        let per_second = self.per_second;
        let level = |bucket| bucket_level(bucket, per_second, now);
        if !self.buckets.contains_key(&to) && self.buckets.len() >= BUDGETS_MAX {
            if self.next_sweep.is_some_and(|at| now < at) {
                return Err(Over::Address);
            }
            // A full bucket is the same as none: forget those to make room.
            self.buckets.retain(|_, b| level(*b) < per_second);
            if self.buckets.len() >= BUDGETS_MAX {
                self.next_sweep = Some(now + SWEEP_PERIOD);
                return Err(Over::Address);
            }
        }
        let bucket = self.buckets.entry(to).or_insert((per_second, now));
        let left = level(*bucket);
        if left < bytes {
            return Err(Over::Address);
        }
        *bucket = (left - bytes, now);
        Ok(())
    }
}

/// Which budget a reply was over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Over {
    Address,
    Total,
}

/// A bucket `(left, at)` of at most `per_second` bytes, refilled continuously, at `now`.
fn bucket_level((left, at): (u64, Instant), per_second: u64, now: Instant) -> u64 {
    let refill =
        now.saturating_duration_since(at).as_nanos() * u128::from(per_second) / 1_000_000_000;
    u64::try_from(u128::from(left) + refill).map_or(per_second, |l| l.min(per_second))
}

struct Feed {
    start: PublisherStart,
    session: Session,
    /// The start of day at midnight ([`FeedSettings::start_at_midnight`]).
    start_at_midnight: bool,
    poll: Poll,
    signal: Arc<Signal>,
    stream: UdpSocket,
    destination: SocketAddr,
    requests: mio::net::UdpSocket,
    follower: Follower,
    translator: Translator,
    store: FeedStore,
    packet: PacketBuilder,
    pending: Vec<u8>,
    reply: Vec<u8>,
    budgets: ReplyBudgets,
    live: bool,
    last_send: Instant,
    stats: Stats,
}

/// The socket the feed is sent from: bound to `[marketdata] multicast_interface` if set
/// (an address not of this host fails here, naming the key), else to any address; for a
/// multicast destination, with its TTL, loopback on (listeners on this host hear it) and,
/// with an interface, `IP_MULTICAST_IF` set to it, so the group's packets leave there
/// rather than by the kernel's route.
fn feed_socket(m: &MarketDataSection, destination: SocketAddr) -> io::Result<UdpSocket> {
    let interface = m.interface();
    let bind: SocketAddr = match (destination, interface) {
        (SocketAddr::V4(_), Some(interface)) => SocketAddr::from((interface, 0)),
        (SocketAddr::V4(_), None) => "0.0.0.0:0".parse().expect("literal"),
        (SocketAddr::V6(_), _) => "[::]:0".parse().expect("literal"),
    };
    let stream = UdpSocket::bind(bind).map_err(|e| match interface {
        Some(interface) => io::Error::new(
            e.kind(),
            format!("marketdata.multicast_interface {interface}: {e}"),
        ),
        None => e,
    })?;
    if let SocketAddr::V4(v4) = destination
        && v4.ip().is_multicast()
    {
        stream.set_multicast_ttl_v4(m.multicast_ttl)?;
        stream.set_multicast_loop_v4(true)?;
        if let Some(interface) = interface {
            socket2::SockRef::from(&stream)
                .set_multicast_if_v4(&interface)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("marketdata.multicast_interface {interface}: {e}"),
                    )
                })?;
        }
    }
    // An IPv6 group's hop limit is `multicast_ttl` too (it was left at the kernel's 1:
    // subscribers beyond a router heard nothing).
    if let SocketAddr::V6(v6) = destination
        && v6.ip().is_multicast()
    {
        socket2::SockRef::from(&stream).set_multicast_hops_v6(m.multicast_ttl)?;
        stream.set_multicast_loop_v6(true)?;
    }
    Ok(stream)
}

/// Binds the sockets (so a port in use fails the start) and starts the `im-feed` thread.
pub fn spawn_publisher(start: PublisherStart, stop: Arc<AtomicBool>) -> io::Result<Publisher> {
    let m = &start.marketdata;
    let (settings, pinned) =
        FeedSettings::pin(&start.dir, m, start.live_from <= 1, start.cluster.is_some())?;
    match pinned {
        Pinned::KeptOverConfiguration => eprintln!(
            "ironmatch feed: [marketdata] session {:?} and attribution = {} differ from what this journal's feed was started with (session {:?}, attribution = {}): the journal's are kept, so that retransmissions are what was sent; the configuration's apply from the next journal",
            m.session, m.attribution, settings.session, settings.attribution
        ),
        Pinned::Assumed => eprintln!(
            "ironmatch feed: this journal's feed was started by a build that did not keep its settings; the configuration's (session {:?}, attribution = {}) are taken for it from now on",
            settings.session, settings.attribution
        ),
        Pinned::New | Pinned::Kept => {}
    }
    let session = Session::from_str_padded(&settings.session)
        .ok_or_else(|| io::Error::other("marketdata.session: invalid"))?;
    let destination: SocketAddr = m.destination.parse().map_err(io::Error::other)?;
    let stream = feed_socket(m, destination)?;
    let request_addr: SocketAddr = m.retransmission.parse().map_err(io::Error::other)?;
    let mut requests = mio::net::UdpSocket::bind(request_addr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("marketdata.retransmission {request_addr}: {e}"),
        )
    })?;
    let retransmission_addr = requests.local_addr()?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut requests, REQUESTS, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let signal = Arc::new(Signal::new(Wake::Poll(waker)));
    let store = FeedStore::create(&start.dir.join(STORE_NAME))?;
    let fingerprint = fingerprint(&start.book);
    let (nice, core) = (m.thread_nice, start.core);
    let feed = Feed {
        session,
        start_at_midnight: settings.start_at_midnight(start.cluster.is_some()),
        poll,
        signal: Arc::clone(&signal),
        stream,
        destination,
        requests,
        follower: match &start.written {
            Some(written) => {
                Follower::new(&start.dir, fingerprint, 1).limited_to(Arc::clone(written))
            }
            None => Follower::new(&start.dir, fingerprint, 1),
        },
        translator: Translator::new(&start.book, settings.attribution),
        store,
        packet: PacketBuilder::new(session, m.packet_bytes_max),
        pending: Vec::with_capacity(1 << 16),
        reply: Vec::with_capacity(m.packet_bytes_max),
        budgets: ReplyBudgets::new(
            m.retransmission_bytes_per_second,
            m.retransmission_total_bytes_per_second,
            Instant::now(),
        ),
        // A new journal: everything, the start of day included, goes out live.
        live: start.live_from <= 1,
        last_send: Instant::now(),
        stats: Stats::default(),
        start,
    };
    let thread = std::thread::Builder::new()
        .name("im-feed".into())
        .spawn(move || {
            pin(core, "feed");
            lower_priority(nice);
            feed.run(&stop)
        })?;
    Ok(Publisher {
        thread,
        signal,
        retransmission_addr,
        session: settings.session.clone(),
    })
}

/// Gives this thread the scheduling niceness `nice` (0..=19): when cores are short, the
/// pipeline's threads run first and the feed waits.
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
        eprintln!("ironmatch feed: cannot set niceness {nice}: {e}");
    }
}

impl Feed {
    fn run(mut self, stop: &AtomicBool) {
        match self.publish(stop) {
            Ok(()) => eprintln!(
                "ironmatch feed: session {} ended at message {}: {} packets, {} retransmission \
                 requests ({} answered, {} ignored, {} over an address's budget, {} over the \
                 total), {} send errors",
                self.session.as_str(),
                self.store.messages(),
                self.stats.packets,
                self.stats.requests,
                self.stats.answered,
                self.stats.ignored,
                self.stats.over_budget,
                self.stats.over_total,
                self.stats.send_errors
            ),
            Err(e) => eprintln!("ironmatch feed: stopped (matching goes on): {e}"),
        }
    }

    fn publish(&mut self, stop: &AtomicBool) -> Result<(), String> {
        let header = first_header(&self.start.dir)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{}: no journal segment", self.start.dir.display()))?;
        let stamp = super::stream::preamble_stamp(header.created_ns, self.start_at_midnight);
        self.translator.preamble(stamp, &mut self.pending);
        let mut events = Events::with_capacity(64);
        let heartbeat = Duration::from_millis(self.start.marketdata.heartbeat_interval_ms);
        let (signalled, sleep_max) = match self.start.marketdata.poll_interval_us {
            0 => (true, SLEEP_MAX),
            us => (false, Duration::from_micros(us)),
        };
        loop {
            // Read before the journal is read: the flag is set once the writer has written
            // everything, so a read that finds nothing after the flag was seen is at the
            // journal's end. (Seen after the read, it could end the stream short: the
            // writer may write the rest and the flag be set between the two, as a loaded
            // machine showed, ending the session hundreds of messages early.)
            let stopping = stop.load(Ordering::SeqCst);
            let read = self.pump()?;
            self.serve_requests();
            if read > 0 {
                continue;
            }
            if stopping {
                break;
            }
            if self.live && self.last_send.elapsed() >= heartbeat {
                self.send_status(false);
            }
            if signalled {
                self.signal.announce_sleep();
                if self.pump()? > 0 {
                    self.signal.woke();
                    continue;
                }
            }
            let due = heartbeat.saturating_sub(self.last_send.elapsed());
            let _ = self.poll.poll(&mut events, Some(due.min(sleep_max)));
            self.signal.woke();
        }
        if self
            .start
            .day_over
            .as_ref()
            .is_none_or(|over| over.load(Ordering::SeqCst))
        {
            self.end_of_session(&mut events);
        }
        Ok(())
    }

    /// Reads what the journal has new, publishes it; returns the records read.
    fn pump(&mut self) -> Result<usize, String> {
        let live_from = self.start.live_from;
        // Where in `pending` the messages of records this run journaled begin.
        let mut live_offset = self.live.then_some(0);
        let Feed {
            follower,
            translator,
            pending,
            ..
        } = self;
        let read = follower
            .poll(|place, entry| {
                if live_offset.is_none() && place.seq >= live_from {
                    live_offset = Some(pending.len());
                }
                translator.record(place, entry, pending)
            })
            .map_err(|e| e.to_string())?;
        if !self.pending.is_empty() {
            let first = self.store.messages() + 1;
            self.store
                .append(&self.pending)
                .map_err(|e| format!("{}: {e}", self.store.path().display()))?;
            if let Some(offset) = live_offset {
                // Messages an earlier run published are stored, not sent again.
                let earlier = blocks(&self.pending[..offset]).count() as u64;
                if !self.live {
                    // Caught up in this very read: the heartbeat announcing where the
                    // stream is goes out before its first live message, however late this
                    // thread first read the journal.
                    self.live = true;
                    self.announce(first + earlier, false);
                }
                self.send_blocks(first + earlier, offset);
            }
            self.pending.clear();
        }
        if !self.live && self.follower.next_seq() >= live_from {
            // Caught up with what earlier runs published: announce where the stream is.
            self.live = true;
            self.send_status(false);
        }
        Ok(read)
    }

    /// Sends the pending blocks from byte `offset` on (the first numbered `first`) in as
    /// few packets as fit.
    fn send_blocks(&mut self, first: u64, offset: usize) {
        let mut packet_first = first;
        let pending = std::mem::take(&mut self.pending);
        for block in blocks(&pending[offset..]) {
            if !self.packet.try_add_block(block) {
                let sent = u64::from(self.packet.count());
                self.flush_packet(packet_first);
                packet_first += sent;
                let fits = self.packet.try_add_block(block);
                debug_assert!(fits, "packet_bytes_max holds the largest message");
            }
        }
        if self.packet.count() > 0 {
            self.flush_packet(packet_first);
        }
        self.pending = pending;
    }

    /// Whether packets go out: alone always, in a cluster while this node leads.
    fn sends(&self) -> bool {
        self.start.cluster.as_ref().is_none_or(|r| r.accepting())
    }

    fn flush_packet(&mut self, first: u64) {
        if !self.sends() {
            self.packet.clear();
            self.last_send = Instant::now();
            return;
        }
        let bytes = self.packet.finish(first);
        match self.stream.send_to(bytes, self.destination) {
            Ok(_) => self.stats.packets += 1,
            Err(_) => self.stats.send_errors += 1,
        }
        self.packet.clear();
        self.last_send = Instant::now();
    }

    fn send_status(&mut self, end_of_session: bool) {
        self.announce(self.store.messages() + 1, end_of_session);
    }

    /// A heartbeat (or End of Session) announcing message `next` as the next.
    fn announce(&mut self, next: u64, end_of_session: bool) {
        if !self.sends() {
            self.last_send = Instant::now();
            return;
        }
        let bytes = status_packet(self.session, next, end_of_session);
        match self.stream.send_to(&bytes, self.destination) {
            Ok(_) => self.stats.packets += 1,
            Err(_) => self.stats.send_errors += 1,
        }
        self.last_send = Instant::now();
    }

    /// Answers waiting requests, one packet each: the messages asked for that fit.
    fn serve_requests(&mut self) {
        let mut buf = [0u8; 64];
        for _ in 0..REQUESTS_PER_ROUND_MAX {
            let (len, from) = match self.requests.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => continue,
            };
            self.stats.requests += 1;
            match parse_request(&buf[..len]) {
                Ok(request) if request.session == self.session => self.answer(request, from),
                _ => self.stats.ignored += 1,
            }
        }
    }

    fn answer(&mut self, request: PacketHeader, to: SocketAddr) {
        let count_max = u64::from(request.count.min(COUNT_MAX));
        let bytes_max = self.start.marketdata.packet_bytes_max - HEADER_LEN;
        let (blocks, count) = match self.store.read(request.seq, count_max, bytes_max) {
            Ok((blocks, count)) if count > 0 => (blocks, count),
            // Nothing there (0, not yet sent, or an empty count): no answer, as nassau.
            _ => {
                self.stats.ignored += 1;
                return;
            }
        };
        let header = PacketHeader {
            session: self.session,
            seq: request.seq,
            count: count as u16,
        };
        self.reply.clear();
        self.reply.extend_from_slice(&header.to_bytes());
        self.reply.extend_from_slice(blocks);
        match self
            .budgets
            .take(to.ip(), self.reply.len() as u64, Instant::now())
        {
            Ok(()) => {}
            // Asked for again later by a real listener; a forged source gets no more.
            Err(Over::Address) => {
                self.stats.over_budget += 1;
                return;
            }
            Err(Over::Total) => {
                self.stats.over_total += 1;
                return;
            }
        }
        // A reply lost to a full socket buffer is asked for again.
        if self.requests.send_to(&self.reply, to).is_ok() {
            self.stats.answered += 1;
        }
    }

    /// End of Session packets for the configured time, answering requests meanwhile.
    fn end_of_session(&mut self, events: &mut Events) {
        let until = Instant::now() + Duration::from_millis(self.start.marketdata.end_of_session_ms);
        loop {
            self.send_status(true);
            let next = Instant::now() + END_OF_SESSION_PERIOD;
            while Instant::now() < next.min(until) {
                let wait = next.min(until).saturating_duration_since(Instant::now());
                let _ = self.poll.poll(events, Some(wait));
                self.serve_requests();
            }
            if Instant::now() >= until {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A multicast group's packets leave with `multicast_ttl` hops, an IPv6 group's too
    /// (its hop limit was left at the kernel's 1), and loop back to listeners on the host.
    #[test]
    fn a_multicast_feed_has_the_configured_hops_in_both_families() {
        let m = MarketDataSection {
            multicast_ttl: 16,
            ..MarketDataSection::default()
        };
        let v4 = feed_socket(&m, "239.1.2.3:15001".parse().unwrap()).unwrap();
        assert_eq!(v4.multicast_ttl_v4().unwrap(), 16);
        assert!(v4.multicast_loop_v4().unwrap());
        // A host without IPv6 (booted with `ipv6.disable=1`) has no IPv6 socket to check.
        if UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("no IPv6 on this host: the IPv6 group's hop limit is not checked");
            return;
        }
        let v6 = feed_socket(&m, "[ff15::1]:15001".parse().unwrap()).unwrap();
        assert_eq!(socket2::SockRef::from(&v6).multicast_hops_v6().unwrap(), 16);
        assert!(v6.multicast_loop_v6().unwrap());
    }

    /// A journal with no record takes the configuration's settings (written, over what a
    /// failed start left); one with records keeps its own, told whether the configuration
    /// differs, which a cluster refuses; one with records and no file (an older build's)
    /// takes the configuration's; a damaged file, or one naming an invalid session, is an
    /// error naming it.
    #[test]
    fn a_journals_feed_settings_are_those_it_started_with() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path();
        let m = |session: &str, attribution| MarketDataSection {
            session: session.into(),
            attribution,
            ..MarketDataSection::default()
        };
        let (first, other) = (m("IR20261206", false), m("XX20261206", true));
        assert_eq!(FeedSettings::read(day).unwrap(), None);
        assert_eq!(
            FeedSettings::pin(day, &other, true, false).unwrap(),
            (FeedSettings::of(&other, false), Pinned::New)
        );
        // A start that failed before its first record: the next one's settings count.
        assert_eq!(
            FeedSettings::pin(day, &first, true, false).unwrap(),
            (FeedSettings::of(&first, false), Pinned::New)
        );
        let (kept, pinned) = FeedSettings::pin(day, &first, false, false).unwrap();
        assert_eq!(
            (&kept, pinned),
            (&FeedSettings::of(&first, false), Pinned::Kept)
        );
        // How the first run stamped its start of day is kept, whatever the mode now; a
        // cluster node refuses a journal whose feed was started on a node on its own (its
        // stream would differ from the other nodes').
        assert!(!kept.start_at_midnight(true));
        let e = FeedSettings::pin(day, &first, false, true).unwrap_err();
        assert!(e.to_string().contains("on a node on its own"), "{e}");
        assert_eq!(
            FeedSettings::pin(day, &other, false, false).unwrap(),
            (
                FeedSettings::of(&first, false),
                Pinned::KeptOverConfiguration
            )
        );
        let e = FeedSettings::pin(day, &other, false, true).unwrap_err();
        assert!(e.to_string().contains("must store the same feed"), "{e}");
        assert_eq!(
            FeedSettings::read(day).unwrap(),
            Some(FeedSettings::of(&first, false))
        );
        std::fs::remove_file(day.join(SETTINGS_NAME)).unwrap();
        assert_eq!(
            FeedSettings::pin(day, &other, false, false).unwrap(),
            (FeedSettings::of(&other, false), Pinned::Assumed)
        );
        assert_eq!(
            FeedSettings::read(day).unwrap(),
            Some(FeedSettings::of(&other, false))
        );
        // A file from before the start of day was kept: the configuration's mode.
        std::fs::write(
            day.join(SETTINGS_NAME),
            "session = \"IR20261206\"\nattribution = false\n",
        )
        .unwrap();
        let older = FeedSettings::read(day).unwrap().unwrap();
        assert_eq!(older.start_at_midnight, None);
        assert!(older.start_at_midnight(true) && !older.start_at_midnight(false));
        // A cluster's new journal keeps its midnight, read back by any later run.
        let cluster_day = dir.path().join("cluster");
        std::fs::create_dir(&cluster_day).unwrap();
        FeedSettings::pin(&cluster_day, &first, true, true).unwrap();
        let read = FeedSettings::read(&cluster_day).unwrap().unwrap();
        assert!(read.start_at_midnight(false));
        let (kept, _) = FeedSettings::pin(&cluster_day, &first, false, false).unwrap();
        assert!(
            kept.start_at_midnight(false),
            "a node on its own keeps it too"
        );
        for bad in [
            "attribution = 3",
            "session = \"ELEVEN CHARS\"\nattribution = true",
        ] {
            std::fs::write(day.join(SETTINGS_NAME), bad).unwrap();
            let e = FeedSettings::pin(day, &first, false, false).unwrap_err();
            assert!(e.to_string().contains(SETTINGS_NAME), "{e}");
        }
    }

    /// With an interface, the feed's socket is bound to it and a group's packets leave
    /// there (`IP_MULTICAST_IF`); without, the kernel routes them; an address not of this
    /// host fails the start, naming the key. Nothing is sent.
    #[test]
    fn the_feed_leaves_from_its_configured_interface() {
        use std::net::{IpAddr, Ipv4Addr};
        let group: SocketAddr = "239.192.7.7:15001".parse().unwrap();
        let m = MarketDataSection {
            multicast_interface: "127.0.0.1".into(),
            multicast_ttl: 3,
            ..MarketDataSection::default()
        };
        let s = feed_socket(&m, group).unwrap();
        assert_eq!(
            socket2::SockRef::from(&s).multicast_if_v4().unwrap(),
            Ipv4Addr::LOCALHOST
        );
        assert_eq!(
            s.local_addr().unwrap().ip(),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(s.multicast_ttl_v4().unwrap(), 3);
        let s = feed_socket(&MarketDataSection::default(), group).unwrap();
        assert_eq!(
            socket2::SockRef::from(&s).multicast_if_v4().unwrap(),
            Ipv4Addr::UNSPECIFIED
        );
        assert_eq!(
            s.local_addr().unwrap().ip(),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        );
        let m = MarketDataSection {
            multicast_interface: "203.0.113.9".into(),
            ..MarketDataSection::default()
        };
        let e = feed_socket(&m, group).unwrap_err();
        assert!(
            e.to_string()
                .contains("marketdata.multicast_interface 203.0.113.9"),
            "{e}"
        );
    }

    #[test]
    fn an_address_gets_at_most_its_budget_a_second() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let victim: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let other: std::net::IpAddr = "192.0.2.8".parse().unwrap();
        let mut budgets = ReplyBudgets::new(3_000, 0, t0);
        // A second's worth at once, then nothing until it refills.
        assert!(budgets.take(victim, 1_400, at(0)).is_ok());
        assert!(budgets.take(victim, 1_400, at(0)).is_ok());
        assert!(budgets.take(victim, 1_400, at(1)).is_err());
        // Another address has its own budget.
        assert!(budgets.take(other, 1_400, at(1)).is_ok());
        // 200 left; 1,200 more come in 400 ms.
        assert!(budgets.take(victim, 1_400, at(399)).is_err());
        assert!(budgets.take(victim, 1_400, at(400)).is_ok());
        // A long pause refills to one second's worth, not more.
        assert!(budgets.take(victim, 3_000, at(60_000)).is_ok());
        assert!(budgets.take(victim, 1, at(60_000)).is_err());
        // 0: no limit.
        let mut free = ReplyBudgets::new(0, 0, t0);
        assert!((0..100).all(|_| free.take(victim, 65_000, at(0)).is_ok()));
    }

    /// Forged sources across one IPv6 /64 share its budget (each used to get one of its
    /// own, thousands for one victim); another /64 has its own, and IPv4 addresses mapped
    /// into IPv6 are not lumped together.
    #[test]
    fn an_ipv6_prefix_gets_one_budget() {
        let t0 = Instant::now();
        let mut budgets = ReplyBudgets::new(3_000, 0, t0);
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(budgets.take(ip("2001:db8:1:2::1"), 1_400, t0).is_ok());
        assert!(budgets.take(ip("2001:db8:1:2:ffff::9"), 1_400, t0).is_ok());
        assert!(budgets.take(ip("2001:db8:1:2:abcd::7"), 1_400, t0).is_err());
        assert!(budgets.take(ip("2001:db8:1:3::1"), 1_400, t0).is_ok());
        assert!(budgets.take(ip("::ffff:192.0.2.7"), 3_000, t0).is_ok());
        assert!(budgets.take(ip("::ffff:192.0.2.8"), 3_000, t0).is_ok());
        assert!(
            budgets.take(ip("192.0.2.8"), 1, t0).is_err(),
            "the same address"
        );
    }

    /// Forged sources, each within a budget of its own, add up to no more than the total;
    /// what is refused for the total takes nothing from the address's own budget.
    #[test]
    fn all_addresses_together_get_at_most_the_total() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut budgets = ReplyBudgets::new(3_000, 10_000, t0);
        let addr = |i: u8| std::net::IpAddr::from([192, 0, 2, i]);
        for i in 0..5 {
            assert_eq!(budgets.take(addr(i), 2_000, t0), Ok(()), "source {i}");
        }
        assert_eq!(budgets.take(addr(5), 2_000, t0), Err(Over::Total));
        assert_eq!(budgets.take(addr(0), 1_001, t0), Err(Over::Total));
        // 1,000 come back in 100 ms: source 5 still has its whole second's worth.
        assert_eq!(budgets.take(addr(5), 1_000, at(100)), Ok(()));
        assert_eq!(budgets.take(addr(5), 1, at(100)), Err(Over::Total));
        // With room in the total, an address's own budget still holds.
        assert_eq!(budgets.take(addr(6), 3_000, at(1_000)), Ok(()));
        assert_eq!(budgets.take(addr(6), 1, at(1_000)), Err(Over::Address));
        // A long pause refills the total to one second's worth, not more.
        assert_eq!(budgets.take(addr(7), 3_000, at(60_000)), Ok(()));
        assert_eq!(budgets.take(addr(8), 3_000, at(60_000)), Ok(()));
        assert_eq!(budgets.take(addr(9), 3_000, at(60_000)), Ok(()));
        assert_eq!(budgets.take(addr(10), 1_001, at(60_000)), Err(Over::Total));
        // 0: no total, only each address's budget.
        let mut free = ReplyBudgets::new(3_000, 0, t0);
        assert!((0..=255).all(|i| free.take(addr(i), 3_000, t0).is_ok()));
    }

    #[test]
    fn the_budgets_kept_are_bounded() {
        let t0 = Instant::now();
        let mut budgets = ReplyBudgets::new(1_000, 0, t0);
        let addr = |i: usize| std::net::IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
        for i in 0..BUDGETS_MAX {
            assert!(budgets.take(addr(i), 1_000, t0).is_ok());
        }
        // Every bucket empty: a new address is refused, not given memory, and the next
        // ones are refused without another sweep for a while.
        assert!(budgets.take(addr(BUDGETS_MAX), 1, t0).is_err());
        assert_eq!(budgets.buckets.len(), BUDGETS_MAX);
        assert_eq!(budgets.next_sweep, Some(t0 + SWEEP_PERIOD));
        assert!(
            budgets
                .take(addr(BUDGETS_MAX + 1), 1, t0 + SWEEP_PERIOD / 2)
                .is_err()
        );
        // A second later they are full again and forgotten to make room.
        assert!(
            budgets
                .take(addr(BUDGETS_MAX), 1, t0 + Duration::from_secs(1))
                .is_ok()
        );
        assert_eq!(budgets.buckets.len(), 1);
    }
}
