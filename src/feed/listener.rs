//! `ironmatch feed`: a MoldUDP64 listener that puts the stream back in order, fills gaps by
//! retransmission request, and builds every instrument's order-by-order book from ITCH.
//!
//! Three parts, each usable alone: [`Sequencer`] (packets in, messages in sequence out,
//! what to request), [`FeedBook`] (ITCH messages in, books out), and [`run_listener`]
//! (sockets, timers, printing). Everything here takes untrusted bytes: bad packets and
//! messages are counted and reported, never a panic.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::types::{Price, Timestamp};
use crate::wire::DecodeError;
use crate::wire::itch::{Body, Message};
use crate::wire::moldudp64::{
    COUNT_END_OF_SESSION, COUNT_HEARTBEAT, COUNT_MAX, Packet, PacketHeader, Session,
};

/// Messages held out of order while a gap is filled, at most; beyond, later ones are
/// dropped and asked for again.
pub const BUFFERED_MAX: usize = 1 << 20;

/// Bytes of messages held out of order, at most (ITCH messages are 50 bytes at most, but a
/// forged datagram's block may be 64 KiB: the count alone let one sender make the
/// listener hold tens of gigabytes).
pub const BUFFERED_BYTES_MAX: usize = 64 << 20;

/// What a packet was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// Messages (some may have been seen before).
    Data,
    /// Heartbeat.
    Heartbeat,
    /// End of Session.
    EndOfSession,
    /// Another session's packet, ignored.
    OtherSession,
}

/// Puts a MoldUDP64 stream in order: delivers each message once, in sequence, and says
/// which range is missing.
#[derive(Debug)]
pub struct Sequencer {
    session: Option<Session>,
    next: u64,
    /// One past the highest sequence number known to exist.
    known_end: u64,
    buffered: BTreeMap<u64, Vec<u8>>,
    /// The bytes of `buffered`'s messages.
    buffered_bytes: usize,
    ended: bool,
}

impl Sequencer {
    /// A sequencer that follows `session`, or the first session it sees.
    pub fn new(session: Option<Session>) -> Sequencer {
        Sequencer {
            session,
            next: 1,
            known_end: 1,
            buffered: BTreeMap::new(),
            buffered_bytes: 0,
            ended: false,
        }
    }

    /// The session followed, once known.
    pub fn session(&self) -> Option<Session> {
        self.session
    }

    /// The next sequence number to deliver.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// One past the highest sequence number known to exist.
    pub fn known_end(&self) -> u64 {
        self.known_end
    }

    /// End of Session seen.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// End of Session seen and every message delivered.
    pub fn complete(&self) -> bool {
        self.ended && self.next >= self.known_end
    }

    /// The missing range to request: its first number and how many (none if no gap).
    pub fn gap(&self) -> Option<(u64, u16)> {
        if self.next >= self.known_end {
            return None;
        }
        let end = self
            .buffered
            .keys()
            .next()
            .copied()
            .unwrap_or(self.known_end)
            .min(self.known_end);
        let count = (end - self.next).clamp(1, u64::from(COUNT_MAX));
        Some((self.next, count as u16))
    }

    /// Takes one datagram; `deliver` gets each new message in sequence.
    pub fn on_packet(
        &mut self,
        bytes: &[u8],
        deliver: &mut impl FnMut(u64, &[u8]),
    ) -> Result<PacketKind, DecodeError> {
        let packet = Packet::parse(bytes)?;
        let header = packet.header;
        match self.session {
            None => self.session = Some(header.session),
            Some(s) if s != header.session => return Ok(PacketKind::OtherSession),
            Some(_) => {}
        }
        if packet.is_end_of_session() {
            // The publisher's last word: the stream ends before `seq`, whatever a stray
            // packet claimed before (a number near 2^64 would leave a gap for ever).
            self.known_end = header.seq.max(self.next);
            self.ended = true;
            return Ok(PacketKind::EndOfSession);
        }
        // Past the end nothing is announced; what is missing before it still counts.
        if packet.is_heartbeat() {
            if !self.ended {
                self.known_end = self.known_end.max(header.seq);
            }
            return Ok(PacketKind::Heartbeat);
        }
        if !self.ended {
            self.known_end = self.known_end.max(packet.next_seq());
        }
        for (seq, message) in packet.messages() {
            if seq < self.next {
                continue;
            }
            if seq > self.next {
                if self.buffered.len() < BUFFERED_MAX
                    && self.buffered_bytes + message.len() <= BUFFERED_BYTES_MAX
                    && let std::collections::btree_map::Entry::Vacant(entry) =
                        self.buffered.entry(seq)
                {
                    entry.insert(message.to_vec());
                    self.buffered_bytes += message.len();
                }
                continue;
            }
            deliver(seq, message);
            self.next += 1;
            while let Some(m) = self.buffered.remove(&self.next) {
                self.buffered_bytes -= m.len();
                deliver(self.next, &m);
                self.next += 1;
            }
        }
        // Anything buffered below `next` was delivered another way.
        while let Some(entry) = self.buffered.first_entry() {
            if *entry.key() >= self.next {
                break;
            }
            self.buffered_bytes -= entry.remove().len();
        }
        Ok(PacketKind::Data)
    }
}

/// Why a message does not fit the book built so far.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    /// A message for an order the feed never added (or already removed).
    #[error("order {0} is not on the book")]
    UnknownOrder(u64),
    /// An add of a reference already on the book.
    #[error("order {0} added twice")]
    DuplicateOrder(u64),
    /// An add (or a replace's new order) showing no shares: no order rests with none.
    #[error("order {0} added with 0 shares")]
    ZeroShares(u64),
    /// More shares executed or canceled than the order shows.
    #[error("order {order_ref}: {shares} shares taken, {shown} shown")]
    TooManyShares {
        /// Order.
        order_ref: u64,
        /// Shares the message takes.
        shares: u32,
        /// Shares the order shows.
        shown: u32,
    },
}

#[derive(Clone, Copy, Debug)]
struct BookOrder {
    locate: u16,
    buy: bool,
    price: u32,
    shares: u32,
    priority: u64,
}

#[derive(Clone, Debug, Default)]
struct Level {
    shares: u64,
    /// Priority (arrival) to order reference.
    queue: BTreeMap<u64, u64>,
}

#[derive(Clone, Debug, Default)]
struct InstrumentBook {
    stock: Option<[u8; 8]>,
    bids: BTreeMap<u32, Level>,
    asks: BTreeMap<u32, Level>,
    trades: u64,
    volume: u64,
}

impl InstrumentBook {
    fn side(&mut self, buy: bool) -> &mut BTreeMap<u32, Level> {
        if buy { &mut self.bids } else { &mut self.asks }
    }
}

/// One price level as printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LevelView {
    /// Price (4 implied decimals).
    pub price: u32,
    /// Shares displayed at it.
    pub shares: u64,
    /// Orders at it.
    pub orders: usize,
}

/// One displayed order as printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OrderView {
    /// Order Reference Number.
    pub order_ref: u64,
    /// Price (4 implied decimals).
    pub price: u32,
    /// Shares displayed.
    pub shares: u32,
}

/// Every instrument's displayed book, order by order, as the ITCH messages build it.
#[derive(Clone, Debug, Default)]
pub struct FeedBook {
    books: BTreeMap<u16, InstrumentBook>,
    orders: FxHashMap<u64, BookOrder>,
    next_priority: u64,
}

impl FeedBook {
    /// Applies one message. On an error the book is unchanged.
    pub fn apply(&mut self, msg: &Message) -> Result<(), BookError> {
        match msg.body {
            Body::StockDirectory(d) => {
                self.books.entry(msg.locate).or_default().stock = Some(d.stock);
            }
            Body::AddOrder {
                order_ref,
                side,
                shares,
                price,
                ..
            } => self.add(msg.locate, order_ref, side == b'B', price, shares)?,
            Body::OrderExecuted {
                order_ref, shares, ..
            } => {
                let locate = self.reduce(order_ref, shares)?;
                let book = self.books.entry(locate).or_default();
                book.trades += 1;
                book.volume += u64::from(shares);
            }
            Body::OrderExecutedWithPrice {
                order_ref,
                shares,
                printable,
                ..
            } => {
                let locate = self.reduce(order_ref, shares)?;
                // Printable `N`: not to be counted in volume (ITCH 5.0, `C`).
                if printable == b'Y' {
                    let book = self.books.entry(locate).or_default();
                    book.trades += 1;
                    book.volume += u64::from(shares);
                }
            }
            Body::OrderCancel { order_ref, shares } => {
                self.reduce(order_ref, shares)?;
            }
            Body::OrderDelete { order_ref } => {
                let shown = self
                    .orders
                    .get(&order_ref)
                    .ok_or(BookError::UnknownOrder(order_ref))?;
                self.reduce(order_ref, shown.shares)?;
            }
            Body::OrderReplace {
                old_ref,
                new_ref,
                shares,
                price,
            } => {
                let old = *self
                    .orders
                    .get(&old_ref)
                    .ok_or(BookError::UnknownOrder(old_ref))?;
                if self.orders.contains_key(&new_ref) && new_ref != old_ref {
                    return Err(BookError::DuplicateOrder(new_ref));
                }
                // Refused before the old order goes, so a bad replace changes nothing.
                if shares == 0 {
                    return Err(BookError::ZeroShares(new_ref));
                }
                self.reduce(old_ref, old.shares)?;
                self.add(old.locate, new_ref, old.buy, price, shares)?;
            }
            Body::Trade { shares, .. } => {
                let book = self.books.entry(msg.locate).or_default();
                book.trades += 1;
                book.volume = book.volume.saturating_add(u64::from(shares));
            }
            // An 8-byte count from the wire: two of 2^63 would overflow the total.
            Body::CrossTrade { shares, .. } => {
                let book = self.books.entry(msg.locate).or_default();
                book.trades += 1;
                book.volume = book.volume.saturating_add(shares);
            }
            _ => {}
        }
        Ok(())
    }

    fn add(
        &mut self,
        locate: u16,
        order_ref: u64,
        buy: bool,
        price: u32,
        shares: u32,
    ) -> Result<(), BookError> {
        if self.orders.contains_key(&order_ref) {
            return Err(BookError::DuplicateOrder(order_ref));
        }
        if shares == 0 {
            return Err(BookError::ZeroShares(order_ref));
        }
        let priority = self.next_priority;
        self.next_priority += 1;
        self.orders.insert(
            order_ref,
            BookOrder {
                locate,
                buy,
                price,
                shares,
                priority,
            },
        );
        let level = self
            .books
            .entry(locate)
            .or_default()
            .side(buy)
            .entry(price)
            .or_default();
        level.shares += u64::from(shares);
        level.queue.insert(priority, order_ref);
        Ok(())
    }

    /// Takes `shares` from an order, removing it at zero; returns its locate.
    fn reduce(&mut self, order_ref: u64, shares: u32) -> Result<u16, BookError> {
        let order = self
            .orders
            .get_mut(&order_ref)
            .ok_or(BookError::UnknownOrder(order_ref))?;
        if shares > order.shares {
            return Err(BookError::TooManyShares {
                order_ref,
                shares,
                shown: order.shares,
            });
        }
        order.shares -= shares;
        let o = *order;
        if o.shares == 0 {
            self.orders.remove(&order_ref);
        }
        let side = self.books.entry(o.locate).or_default().side(o.buy);
        if let Some(level) = side.get_mut(&o.price) {
            level.shares -= u64::from(shares);
            if o.shares == 0 {
                level.queue.remove(&o.priority);
                if level.queue.is_empty() {
                    side.remove(&o.price);
                }
            }
        }
        Ok(o.locate)
    }

    /// Stock Locates seen (in a Stock Directory or an order message), in order.
    pub fn locates(&self) -> Vec<u16> {
        self.books.keys().copied().collect()
    }

    /// The symbol of `locate` from its Stock Directory, without padding.
    pub fn symbol(&self, locate: u16) -> Option<String> {
        let stock = self.books.get(&locate)?.stock?;
        Some(String::from_utf8_lossy(&stock).trim_end().to_string())
    }

    /// Up to `depth` levels per side, best first: (bids, asks).
    pub fn top(&self, locate: u16, depth: usize) -> (Vec<LevelView>, Vec<LevelView>) {
        let Some(book) = self.books.get(&locate) else {
            return (Vec::new(), Vec::new());
        };
        let view = |(price, level): (&u32, &Level)| LevelView {
            price: *price,
            shares: level.shares,
            orders: level.queue.len(),
        };
        (
            book.bids.iter().rev().take(depth).map(view).collect(),
            book.asks.iter().take(depth).map(view).collect(),
        )
    }

    /// Every displayed order of one side, best price first, then time priority.
    pub fn orders(&self, locate: u16, buy: bool) -> Vec<OrderView> {
        let Some(book) = self.books.get(&locate) else {
            return Vec::new();
        };
        let levels: Box<dyn Iterator<Item = (&u32, &Level)>> = if buy {
            Box::new(book.bids.iter().rev())
        } else {
            Box::new(book.asks.iter())
        };
        levels
            .flat_map(|(_, level)| level.queue.values())
            .map(|r| {
                let o = &self.orders[r];
                OrderView {
                    order_ref: *r,
                    price: o.price,
                    shares: o.shares,
                }
            })
            .collect()
    }

    /// Executions (`E`, printable `C`, `P`, `Q`) and shares traded for `locate`.
    pub fn trades(&self, locate: u16) -> (u64, u64) {
        self.books
            .get(&locate)
            .map_or((0, 0), |b| (b.trades, b.volume))
    }

    /// Displayed orders on all books.
    pub fn order_count(&self) -> usize {
        self.orders.len()
    }

    /// Panics unless every level holds exactly its orders and their shares, no level is
    /// empty, and every order is in its level's queue (for tests and fuzzing).
    pub fn check_invariants(&self) {
        let mut seen = 0usize;
        for (locate, book) in &self.books {
            for (buy, side) in [(true, &book.bids), (false, &book.asks)] {
                for (price, level) in side {
                    assert!(!level.queue.is_empty(), "empty level {price}");
                    let mut shares = 0u64;
                    for (priority, r) in &level.queue {
                        let o = &self.orders[r];
                        assert_eq!((o.locate, o.buy, o.price), (*locate, buy, *price));
                        assert_eq!(o.priority, *priority);
                        assert!(o.shares > 0);
                        shares += u64::from(o.shares);
                    }
                    assert_eq!(shares, level.shares, "level {price} shares");
                    seen += level.queue.len();
                }
            }
        }
        assert_eq!(seen, self.orders.len(), "every order in one level");
    }
}

/// Runs untrusted datagrams through everything a listener does with them (sequencing,
/// ITCH decoding, the book) and through the publisher's request parser, checking what must
/// hold: no panic, the book's invariants after every message, and known messages that
/// decode encode back to the same bytes. For the fuzz target and property tests.
pub fn exercise<'a>(datagrams: impl IntoIterator<Item = &'a [u8]>) {
    let mut sequencer = Sequencer::new(None);
    let mut book = FeedBook::default();
    for datagram in datagrams {
        let _ = crate::wire::moldudp64::parse_request(datagram);
        let _ = sequencer.on_packet(datagram, &mut |_, bytes| {
            if let Ok(m) = Message::decode(bytes) {
                if !matches!(m.body, Body::Unknown { .. }) {
                    let mut buf = [0u8; crate::wire::itch::MESSAGE_LEN_MAX];
                    let n = m.encode(&mut buf);
                    assert_eq!(&buf[..n], bytes, "decode then encode changed the bytes");
                }
                let _ = book.apply(&m);
                book.check_invariants();
            }
        });
        let _ = sequencer.gap();
    }
}

/// How `ironmatch feed` runs.
#[derive(Clone, Debug)]
pub struct ListenerOptions {
    /// Address to receive the feed on (a multicast group is joined).
    pub listen: SocketAddr,
    /// The local interface an IPv4 group is joined on (`None`: the kernel's choice); only
    /// with an IPv4 multicast `listen`.
    pub interface: Option<std::net::Ipv4Addr>,
    /// The publisher's retransmission server.
    pub request: SocketAddr,
    /// Follow only this session (default: the first one seen).
    pub session: Option<Session>,
    /// Print every this often (none: only on SIGUSR1 and at the end).
    pub interval: Option<Duration>,
    /// Levels per side printed.
    pub depth: usize,
    /// Print every displayed order too.
    pub orders: bool,
    /// JSON lines instead of text.
    pub json: bool,
    /// Give up after this long (none: until End of Session and no gap).
    pub duration: Option<Duration>,
    /// Test aid: ignore every this-many-th live packet as if the network lost it.
    pub drop_every: Option<u64>,
    /// The venue's clock (its time zone), for the feed's lag: ITCH timestamps count from
    /// midnight in it.
    pub clock: crate::venue::VenueClock,
}

/// What a listener run saw.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ListenerReport {
    /// Session followed.
    pub session: String,
    /// Messages delivered in sequence.
    pub messages: u64,
    /// Next sequence number expected.
    pub next_seq: u64,
    /// End of Session seen and nothing missing.
    pub complete: bool,
    /// Packets received (live and retransmitted).
    pub packets: u64,
    /// Live packets ignored on purpose (`--drop-every`).
    pub dropped: u64,
    /// Retransmission requests sent.
    pub requests: u64,
    /// Packets that did not parse.
    pub bad_packets: u64,
    /// Messages that did not decode or did not fit the book.
    pub bad_messages: u64,
    /// Feed lag of order messages received live: arrival (this host's clock) minus the
    /// message's timestamp (the gateway's receipt of the order that caused it), in
    /// microseconds: p50, p99, max. Meaningful on the engine's host or with synchronised
    /// clocks.
    pub lag_us: Option<[u64; 3]>,
}

/// How long a request may go unanswered before it is sent again.
const REQUEST_RETRY: Duration = Duration::from_millis(50);
/// Socket receive timeout: the loop's tick.
const TICK: Duration = Duration::from_millis(10);
/// Receive buffer asked of the kernel, so a burst is not lost while the book is updated.
const RECV_BUFFER_BYTES: usize = 8 << 20;

fn bind(listen: SocketAddr, interface: Option<std::net::Ipv4Addr>) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    if interface.is_some() && !matches!(listen, SocketAddr::V4(v4) if v4.ip().is_multicast()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--interface is for an IPv4 multicast group; {listen} is not one"),
        ));
    }
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_reuse_address(true)?;
    // The kernel caps this at net.core.rmem_max; a smaller buffer only means more requests.
    let _ = socket.set_recv_buffer_size(RECV_BUFFER_BYTES);
    // Bound to the group's address itself, a socket receives only that group's datagrams
    // (not other groups on the port, nor unicast to it).
    socket.bind(&listen.into())?;
    let socket: UdpSocket = socket.into();
    match listen {
        SocketAddr::V4(v4) if v4.ip().is_multicast() => {
            let on = interface.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
            socket.join_multicast_v4(v4.ip(), &on).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("joining {} on {on} (--interface): {e}", v4.ip()),
                )
            })?;
        }
        SocketAddr::V6(v6) if v6.ip().is_multicast() => {
            socket.join_multicast_v6(v6.ip(), v6.scope_id())?;
        }
        _ => {}
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Where to send retransmission requests, and where their answers come from: `configured`,
/// but a server configured on every address (`0.0.0.0`, `::`) is asked on loopback, the
/// address its answers to a local listener come from (a request sent to `0.0.0.0` reaches
/// it, and its answers, from `127.0.0.1`, were all dropped as not the server's). Port 0
/// names no server: refused.
pub fn request_address(configured: SocketAddr) -> io::Result<SocketAddr> {
    if configured.port() == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "retransmission server {configured}: port 0 names no server (give --request HOST:PORT)"
            ),
        ));
    }
    let mut reachable = configured;
    if configured.ip().is_unspecified() {
        reachable.set_ip(match configured {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(reachable)
}

/// Listens until End of Session with nothing missing (or `duration`, or `stop`), printing
/// the books to `out` every `interval`, when `show` is set (SIGUSR1), and at the end.
pub fn run_listener(
    options: &ListenerOptions,
    stop: &AtomicBool,
    show: &Arc<AtomicBool>,
    out: &mut impl Write,
) -> io::Result<(ListenerReport, FeedBook)> {
    let socket = bind(options.listen, options.interface)?;
    // Requests go out from a socket of their own and their answers come back to it: the
    // stream's socket may be bound to a multicast group, which a unicast answer never
    // reaches, and another receiver bound to the stream's port could take them.
    let request = request_address(options.request)?;
    let requests = UdpSocket::bind(match request {
        SocketAddr::V4(_) => SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    })?;
    requests.set_nonblocking(true)?;
    // Both sockets wake one poll: an answer is read as soon as it comes, not after the
    // stream's next packet.
    let mut socket = mio::net::UdpSocket::from_std(socket);
    let mut requests = mio::net::UdpSocket::from_std(requests);
    let mut poll = mio::Poll::new()?;
    poll.registry()
        .register(&mut socket, mio::Token(0), mio::Interest::READABLE)?;
    poll.registry()
        .register(&mut requests, mio::Token(1), mio::Interest::READABLE)?;
    let mut events = mio::Events::with_capacity(4);
    let mut sequencer = Sequencer::new(options.session);
    let mut book = FeedBook::default();
    let mut report = ListenerReport::default();
    let mut buf = vec![0u8; 65_536];
    let started = Instant::now();
    let mut clock = options.clock.clone();
    let mut last_print = Instant::now();
    let mut last_request: Option<(Instant, u64)> = None;
    let mut live_packets = 0u64;
    let mut lag_us = hdrhistogram::Histogram::<u64>::new(3).expect("3 significant digits");
    loop {
        // An answer waiting is taken first, then the stream; with neither, a poll of
        // both for up to a tick (the sockets are drained before each poll: mio's events
        // are edge-triggered).
        let received = match requests.recv_from(&mut buf) {
            Ok((len, from)) if from == request => Ok((len, from)),
            // Not from the retransmission server: not an answer, and not a reason to wait.
            Ok(_) => Err(io::ErrorKind::Interrupted.into()),
            Err(_) => socket.recv_from(&mut buf),
        };
        match received {
            Ok((len, from)) => {
                let retransmitted = from == request;
                let data = PacketHeader::parse(&buf[..len])
                    .is_ok_and(|h| h.count != COUNT_HEARTBEAT && h.count != COUNT_END_OF_SESSION);
                if data && !retransmitted {
                    live_packets += 1;
                    if options
                        .drop_every
                        .is_some_and(|n| live_packets.is_multiple_of(n))
                    {
                        report.dropped += 1;
                        continue;
                    }
                }
                report.packets += 1;
                let arrival = clock.now().0;
                let mut deliver = |_seq: u64, bytes: &[u8]| {
                    let decoded = Message::decode(bytes);
                    if let Ok(m) = &decoded
                        && !retransmitted
                        && m.locate != 0
                        && !matches!(m.body, Body::StockDirectory(_) | Body::TradingAction { .. })
                        && let Some(lag) = lag_ns(arrival, m.ts)
                    {
                        let _ = lag_us.record(lag / 1_000);
                    }
                    let ok = decoded
                        .map_err(|e| e.to_string())
                        .and_then(|m| book.apply(&m).map_err(|e| e.to_string()));
                    if ok.is_err() {
                        report.bad_messages += 1;
                    }
                };
                if sequencer.on_packet(&buf[..len], &mut deliver).is_err() {
                    report.bad_packets += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = poll.poll(&mut events, Some(TICK))
                    && e.kind() != io::ErrorKind::Interrupted
                {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
        if let (Some(session), Some((first, count))) = (sequencer.session(), sequencer.gap()) {
            let stale = last_request
                .is_none_or(|(at, asked)| asked != first || at.elapsed() >= REQUEST_RETRY);
            if stale {
                let header = PacketHeader {
                    session,
                    seq: first,
                    count,
                };
                // A lost request is sent again after REQUEST_RETRY.
                let _ = requests.send_to(&header.to_bytes(), request);
                report.requests += 1;
                last_request = Some((Instant::now(), first));
            }
        }
        let due = options.interval.is_some_and(|i| last_print.elapsed() >= i);
        if due || show.swap(false, Ordering::Relaxed) {
            fill_report(&mut report, &sequencer, &lag_us);
            print_books(out, &report, &book, options)?;
            last_print = Instant::now();
        }
        let timed_out = options.duration.is_some_and(|d| started.elapsed() >= d);
        if sequencer.complete() || timed_out || stop.load(Ordering::Relaxed) {
            break;
        }
    }
    fill_report(&mut report, &sequencer, &lag_us);
    print_books(out, &report, &book, options)?;
    Ok((report, book))
}

fn fill_report(
    report: &mut ListenerReport,
    sequencer: &Sequencer,
    lag_us: &hdrhistogram::Histogram<u64>,
) {
    report.lag_us = (!lag_us.is_empty()).then(|| {
        [
            lag_us.value_at_quantile(0.5),
            lag_us.value_at_quantile(0.99),
            lag_us.max(),
        ]
    });
    report.session = sequencer.session().map(|s| s.as_str()).unwrap_or_default();
    report.next_seq = sequencer.next_seq();
    report.messages = sequencer.next_seq() - 1;
    report.complete = sequencer.complete();
}

fn price_text(price: u32) -> String {
    Price(u64::from(price)).to_string()
}

/// Prints every instrument's top levels (and orders with `options.orders`).
pub fn print_books(
    out: &mut impl Write,
    report: &ListenerReport,
    book: &FeedBook,
    options: &ListenerOptions,
) -> io::Result<()> {
    if options.json {
        let instruments: Vec<serde_json::Value> = book
            .locates()
            .into_iter()
            .map(|locate| {
                let (bids, asks) = book.top(locate, options.depth);
                let (trades, volume) = book.trades(locate);
                let level = |l: &LevelView| {
                    serde_json::json!({"price": price_text(l.price), "shares": l.shares, "orders": l.orders})
                };
                let mut v = serde_json::json!({
                    "locate": locate,
                    "symbol": book.symbol(locate),
                    "bids": bids.iter().map(level).collect::<Vec<_>>(),
                    "asks": asks.iter().map(level).collect::<Vec<_>>(),
                    "trades": trades,
                    "volume": volume,
                });
                if options.orders {
                    let order = |o: &OrderView| {
                        serde_json::json!({"ref": o.order_ref, "price": price_text(o.price), "shares": o.shares})
                    };
                    v["bid_orders"] = book.orders(locate, true).iter().map(order).collect();
                    v["ask_orders"] = book.orders(locate, false).iter().map(order).collect();
                }
                v
            })
            .collect();
        let line = serde_json::json!({"report": report, "instruments": instruments});
        writeln!(out, "{line}")?;
        return out.flush();
    }
    if let Some([p50, p99, max]) = report.lag_us {
        writeln!(out, "feed lag (us): p50 {p50}, p99 {p99}, max {max}")?;
    }
    writeln!(
        out,
        "session {} · {} messages (next {}) · {} · {} packets, {} requests, {} dropped on purpose, {} bad packets, {} bad messages",
        report.session,
        report.messages,
        report.next_seq,
        if report.complete { "complete" } else { "live" },
        report.packets,
        report.requests,
        report.dropped,
        report.bad_packets,
        report.bad_messages
    )?;
    for locate in book.locates() {
        let (bids, asks) = book.top(locate, options.depth);
        let (trades, volume) = book.trades(locate);
        let symbol = book.symbol(locate).unwrap_or_else(|| format!("#{locate}"));
        writeln!(out, "{symbol:<8} {trades} trades, {volume} shares")?;
        for i in 0..bids.len().max(asks.len()) {
            let cell = |l: Option<&LevelView>| {
                l.map_or(String::new(), |l| {
                    format!("{:>8} {:>12} ({})", l.shares, price_text(l.price), l.orders)
                })
            };
            writeln!(out, "  {:<32} | {}", cell(bids.get(i)), cell(asks.get(i)))?;
        }
        if options.orders {
            for (name, buy) in [("bid", true), ("ask", false)] {
                for o in book.orders(locate, buy) {
                    writeln!(
                        out,
                        "  {name} {} {} x {}",
                        o.order_ref,
                        o.shares,
                        price_text(o.price)
                    )?;
                }
            }
        }
    }
    out.flush()
}

/// How long after its timestamp `ts` a message arrived at `arrival` (both nanoseconds since
/// midnight; across midnight the arrival is the next day's). `None` for a timestamp past the
/// day's end, which 48 bits can hold but no time of day is.
fn lag_ns(arrival: u64, ts: u64) -> Option<u64> {
    (ts < Timestamp::DAY_NS && arrival < Timestamp::DAY_NS)
        .then(|| (arrival + Timestamp::DAY_NS - ts) % Timestamp::DAY_NS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::moldudp64::{PacketBuilder, status_packet};

    fn session() -> Session {
        Session::from_str_padded("S1").unwrap()
    }

    /// A packet of `n` one-byte-type messages numbered from `first` (the message bytes
    /// carry their number so delivery order can be checked).
    fn packet(first: u64, n: u64) -> Vec<u8> {
        let mut b = PacketBuilder::new(session(), 1400);
        for seq in first..first + n {
            let mut block = 9u16.to_be_bytes().to_vec();
            block.push(b'z');
            block.extend_from_slice(&seq.to_be_bytes());
            assert!(b.try_add_block(&block));
        }
        b.finish(first).to_vec()
    }

    fn feed(s: &mut Sequencer, bytes: &[u8], got: &mut Vec<u64>) -> PacketKind {
        s.on_packet(bytes, &mut |seq, m| {
            assert_eq!(u64::from_be_bytes(m[1..9].try_into().unwrap()), seq);
            got.push(seq);
        })
        .unwrap()
    }

    /// Messages held out of order are bounded in bytes as well as in number: forged
    /// datagrams of one 60,000-byte block each, past a gap, stop being held at
    /// `BUFFERED_BYTES_MAX` (the count's bound alone allowed tens of gigabytes), and the
    /// ones held are delivered in order once the gap fills.
    #[test]
    fn messages_held_out_of_order_are_bounded_in_bytes() {
        let mut s = Sequencer::new(None);
        let mut got = Vec::new();
        let big = |seq: u64| {
            let mut b = PacketBuilder::new(session(), 65_000);
            let mut block = 60_000u16.to_be_bytes().to_vec();
            block.push(b'z');
            block.extend_from_slice(&seq.to_be_bytes());
            block.resize(2 + 60_000, 0);
            assert!(b.try_add_block(&block));
            b.finish(seq).to_vec()
        };
        for seq in 2..2_000 {
            feed(&mut s, &big(seq), &mut got);
        }
        assert!(got.is_empty());
        let held = s.buffered.len();
        assert!(held > 0 && held < 1_998, "{held}");
        assert_eq!(s.buffered_bytes, held * 60_000);
        assert!(s.buffered_bytes <= BUFFERED_BYTES_MAX);
        feed(&mut s, &packet(1, 1), &mut got);
        assert_eq!(got, (1..=held as u64 + 1).collect::<Vec<_>>());
        assert_eq!((s.buffered.len(), s.buffered_bytes), (0, 0));
        assert_eq!(s.gap(), Some((held as u64 + 2, 1_999 - held as u16 - 1)));
    }

    /// A retransmission server configured on every address is asked on loopback, where its
    /// answers to a local listener come from; port 0 is refused.
    #[test]
    fn a_server_on_every_address_is_asked_on_loopback() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            request_address(addr("0.0.0.0:15002")).unwrap(),
            addr("127.0.0.1:15002")
        );
        assert_eq!(
            request_address(addr("[::]:15002")).unwrap(),
            addr("[::1]:15002")
        );
        assert_eq!(
            request_address(addr("10.1.2.3:15002")).unwrap(),
            addr("10.1.2.3:15002")
        );
        assert!(request_address(addr("127.0.0.1:0")).is_err());
    }

    #[test]
    fn gaps_are_reported_buffered_and_filled_in_order() {
        let mut s = Sequencer::new(None);
        let mut got = Vec::new();
        feed(&mut s, &packet(1, 3), &mut got);
        assert_eq!(s.gap(), None);
        // 4..=6 lost; 7..=9 arrive and wait.
        feed(&mut s, &packet(7, 3), &mut got);
        assert_eq!(got, vec![1, 2, 3]);
        assert_eq!(s.gap(), Some((4, 3)));
        // A retransmission of 4..=5 (fewer than asked), then of 6.
        feed(&mut s, &packet(4, 2), &mut got);
        assert_eq!(s.gap(), Some((6, 1)));
        feed(&mut s, &packet(6, 1), &mut got);
        assert_eq!(got, (1..=9).collect::<Vec<_>>());
        assert_eq!(s.gap(), None);
        // Duplicates are skipped; a heartbeat announcing 12 opens a gap of 10..=11.
        feed(&mut s, &packet(5, 4), &mut got);
        assert_eq!(got.len(), 9);
        assert_eq!(
            feed(&mut s, &status_packet(session(), 12, false), &mut got),
            PacketKind::Heartbeat
        );
        assert_eq!(s.gap(), Some((10, 2)));
        assert!(!s.complete());
        assert_eq!(
            feed(&mut s, &status_packet(session(), 12, true), &mut got),
            PacketKind::EndOfSession
        );
        assert!(!s.complete(), "ended, but 10 and 11 are missing");
        feed(&mut s, &packet(10, 2), &mut got);
        assert!(s.complete());
        assert_eq!(got, (1..=11).collect::<Vec<_>>());
    }

    #[test]
    fn end_of_session_bounds_the_stream_whatever_came_before() {
        let mut s = Sequencer::new(None);
        let mut got = Vec::new();
        feed(&mut s, &packet(1, 3), &mut got);
        // A stray packet (another publisher misconfigured with the same session) far ahead.
        feed(&mut s, &packet(u64::MAX - 10, 1), &mut got);
        assert!(s.gap().is_some());
        feed(&mut s, &packet(4, 1), &mut got);
        feed(&mut s, &status_packet(session(), 5, true), &mut got);
        assert_eq!(s.gap(), None);
        assert!(s.complete());
        // Nothing after the end reopens a gap.
        feed(&mut s, &status_packet(session(), 9, false), &mut got);
        feed(&mut s, &packet(7, 1), &mut got);
        assert!(s.complete());
        assert_eq!(got, vec![1, 2, 3, 4]);
    }

    #[test]
    fn other_sessions_and_bad_packets_change_nothing() {
        let mut s = Sequencer::new(Some(session()));
        let mut got = Vec::new();
        let mut other = packet(1, 2);
        other[..10].copy_from_slice(b"OTHER     ");
        assert_eq!(feed(&mut s, &other, &mut got), PacketKind::OtherSession);
        let mut cut = packet(1, 2);
        cut.pop();
        assert!(s.on_packet(&cut, &mut |_, _| got.push(0)).is_err());
        assert!(got.is_empty());
        assert_eq!((s.next_seq(), s.known_end()), (1, 1));
    }

    fn add(order_ref: u64, side: u8, shares: u32, price: u32) -> Message {
        Message {
            locate: 1,
            tracking: 0,
            ts: 0,
            body: Body::AddOrder {
                order_ref,
                side,
                shares,
                stock: *b"AAPL    ",
                price,
                attribution: None,
            },
        }
    }

    fn body(b: Body) -> Message {
        Message {
            locate: 1,
            tracking: 0,
            ts: 0,
            body: b,
        }
    }

    #[test]
    fn crosses_of_any_size_do_not_overflow_the_volume() {
        let mut book = FeedBook::default();
        let cross = body(Body::CrossTrade {
            shares: 1 << 63,
            stock: *b"AAPL    ",
            price: 1000,
            match_number: 1,
            cross_type: b'O',
        });
        book.apply(&cross).unwrap();
        book.apply(&cross).unwrap();
        assert_eq!(book.books[&1].volume, u64::MAX);
    }

    #[test]
    fn book_follows_adds_executions_cancels_replaces_and_deletes() {
        let mut book = FeedBook::default();
        book.apply(&add(1, b'B', 100, 1000)).unwrap();
        book.apply(&add(2, b'B', 200, 1000)).unwrap();
        book.apply(&add(3, b'B', 50, 900)).unwrap();
        book.apply(&add(4, b'S', 70, 1100)).unwrap();
        let (bids, asks) = book.top(1, 5);
        assert_eq!(
            bids[0],
            LevelView {
                price: 1000,
                shares: 300,
                orders: 2
            }
        );
        assert_eq!(bids[1].price, 900);
        assert_eq!(asks[0].shares, 70);
        // A partial execution keeps priority; a replace goes to the back.
        book.apply(&body(Body::OrderExecuted {
            order_ref: 1,
            shares: 40,
            match_number: 1,
        }))
        .unwrap();
        book.apply(&body(Body::OrderReplace {
            old_ref: 1,
            new_ref: 5,
            shares: 60,
            price: 1000,
        }))
        .unwrap();
        let refs: Vec<u64> = book.orders(1, true).iter().map(|o| o.order_ref).collect();
        assert_eq!(refs, vec![2, 5, 3]);
        book.apply(&body(Body::OrderCancel {
            order_ref: 2,
            shares: 150,
        }))
        .unwrap();
        book.apply(&body(Body::OrderDelete { order_ref: 3 }))
            .unwrap();
        book.apply(&body(Body::OrderExecutedWithPrice {
            order_ref: 4,
            shares: 70,
            match_number: 2,
            printable: b'Y',
            price: 1090,
        }))
        .unwrap();
        let (bids, asks) = book.top(1, 5);
        assert_eq!(
            bids,
            vec![LevelView {
                price: 1000,
                shares: 110,
                orders: 2
            }]
        );
        assert!(asks.is_empty(), "fully executed: gone without a delete");
        assert_eq!(book.trades(1), (2, 110));
        // A non-printable execution reduces the order but is not counted in volume.
        book.apply(&body(Body::OrderExecutedWithPrice {
            order_ref: 5,
            shares: 10,
            match_number: 3,
            printable: b'N',
            price: 1000,
        }))
        .unwrap();
        assert_eq!(book.trades(1), (2, 110));
        assert_eq!(book.top(1, 5).0[0].shares, 100);
        assert_eq!(book.order_count(), 2);
        book.check_invariants();
    }

    #[test]
    fn inconsistent_messages_are_refused_and_change_nothing() {
        let mut book = FeedBook::default();
        book.apply(&add(1, b'B', 100, 1000)).unwrap();
        assert_eq!(
            book.apply(&add(1, b'B', 5, 5)),
            Err(BookError::DuplicateOrder(1))
        );
        assert_eq!(
            book.apply(&body(Body::OrderCancel {
                order_ref: 1,
                shares: 101
            })),
            Err(BookError::TooManyShares {
                order_ref: 1,
                shares: 101,
                shown: 100
            })
        );
        assert_eq!(
            book.apply(&body(Body::OrderDelete { order_ref: 9 })),
            Err(BookError::UnknownOrder(9))
        );
        book.apply(&add(2, b'S', 10, 1100)).unwrap();
        assert_eq!(
            book.apply(&body(Body::OrderReplace {
                old_ref: 1,
                new_ref: 2,
                shares: 1,
                price: 1
            })),
            Err(BookError::DuplicateOrder(2))
        );
        // No order rests with 0 shares, added or replaced (a foreign or damaged feed's).
        assert_eq!(
            book.apply(&add(3, b'B', 0, 1000)),
            Err(BookError::ZeroShares(3))
        );
        assert_eq!(
            book.apply(&body(Body::OrderReplace {
                old_ref: 1,
                new_ref: 4,
                shares: 0,
                price: 1000
            })),
            Err(BookError::ZeroShares(4))
        );
        book.check_invariants();
        assert_eq!(
            book.top(1, 5).0,
            vec![LevelView {
                price: 1000,
                shares: 100,
                orders: 1
            }]
        );
    }

    #[test]
    fn lag_is_measured_across_midnight_and_not_for_timestamps_past_the_day() {
        let day = Timestamp::DAY_NS;
        assert_eq!(lag_ns(5_000, 2_000), Some(3_000));
        assert_eq!(lag_ns(1_000, day - 1_000), Some(2_000));
        assert_eq!(lag_ns(1_000, (1 << 48) - 1), None);
        assert_eq!(lag_ns(1_000, day), None);
    }
}
