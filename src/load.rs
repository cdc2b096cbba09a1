//! `ironmatch load`: an open-loop load generator speaking OUCH 5.0 over SoupBinTCP 3.0.
//!
//! N market-maker sessions quote both sides of the configured instruments around a drifting
//! mid price: most messages replace a session's own quotes, a few cancel one, a few percent
//! are marketable IOC orders that trade against the other sessions' quotes. Seeded, so a run
//! repeats exactly (as far as the engine's answers are the same).
//!
//! **Open loop.** Message `i` is due at `start + i / rate`, whatever happened before it. Its
//! latency runs from that due time to the first reply that answers it, so a stall (in the
//! engine, the network or this generator) shows in full in every message it delays: no
//! coordinated omission. The generator's own lateness (send time minus due time) is
//! reported separately, so a figure is only trusted when the generator kept up.
//!
//! Two threads: a sender and a receiver that reads every session with `mio`. The sender
//! sleeps until 15 µs before the next message is due (timer slack 1 µs) and yields the
//! rest; above 50,000 msg/s it sleeps 20 µs ticks instead of yielding. At each wake-up it
//! sends everything due with one write per session, so it never pays a system call per
//! message when messages are close, and catches up in batches when it falls behind.
//!
//! **Baseline.** `--baseline` runs the same schedule of the same bytes against a TCP echo
//! server on loopback in the same process first, so every figure can be quoted as a ratio
//! to this machine's socket round trip.
//!
//! With `IRONMATCH_LOAD_DEBUG` set, the first unanswered requests of each session are
//! printed at the end (session, UserRefNum, due time), to look up with `replay --order`.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rustc_hash::FxHashMap;
use zerocopy::big_endian::{U16, U32, U64};

use crate::wire::ouch::{
    self, Inbound, Options, Outbound, decode_inbound, decode_outbound, inbound,
};
use crate::wire::soupbin::{self, ServerPacket, kind};

/// One instrument to quote.
#[derive(Clone, Debug)]
pub struct LoadInstrument {
    /// Symbol.
    pub symbol: String,
    /// Price increment, 4 implied decimals.
    pub tick: u64,
    /// Quantity increment.
    pub lot: u32,
    /// Starting mid price, 4 implied decimals.
    pub mid: u64,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The engine's OUCH address.
    pub connect: SocketAddr,
    /// The other nodes of a cluster: where the first login is refused (a follower answers
    /// `S`), the next address is tried, and every session logs in to the one that took it.
    pub also: Vec<SocketAddr>,
    /// Logins to use, one session each: (username, password).
    pub users: Vec<(String, String)>,
    /// Instruments to quote.
    pub instruments: Vec<LoadInstrument>,
    /// Messages per second, all sessions together.
    pub rate: u64,
    /// Stop sending after this long...
    pub duration: Duration,
    /// ... or after this many messages, whichever comes first.
    pub messages: Option<u64>,
    /// Seed of the flow.
    pub seed: u64,
    /// Percent of messages that are marketable IOC orders.
    pub ioc_percent: u64,
    /// How long to wait for the last replies after the last send.
    pub drain: Duration,
    /// Print a progress line every second (to stderr).
    pub progress: bool,
}

/// Percentiles reported, with their labels.
pub const PERCENTILES: [(&str, f64); 6] = [
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("p99.99", 99.99),
    ("max", 100.0),
];

/// What a run measured.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// "engine" or "baseline".
    pub target: &'static str,
    /// Messages sent.
    pub sent: u64,
    /// Messages answered.
    pub replies: u64,
    /// Messages never answered (within the drain time).
    pub missing: u64,
    /// Sessions that logged in again at a cluster's new leader.
    pub failovers: u64,
    /// Executions on the taking side.
    pub trades: u64,
    /// Rejects by OUCH reason.
    pub rejects: BTreeMap<String, u64>,
    /// From the first due time to the last send.
    pub send_seconds: f64,
    /// From the first due time to the last reply (answers that came during the drain
    /// after the last send count: an engine that fell behind takes longer).
    pub reply_seconds: f64,
    /// Round trip from due time to reply, ns; a request never answered counts at its wait
    /// until the end of the drain (a lower bound: see `missing`).
    pub latency: Histogram<u64>,
    /// Lateness of each send against its due time, ns (the generator's own delay).
    pub send_lag: Histogram<u64>,
}

impl LoadReport {
    /// Messages answered per second, from the first due time to the last send or the last
    /// reply, whichever came later: what the target sustained. (Over the sending time
    /// alone, replies that came during the drain would count as if on time, and an engine
    /// that fell behind would still show the offered rate.)
    pub fn throughput(&self) -> f64 {
        let seconds = self.send_seconds.max(self.reply_seconds);
        if seconds > 0.0 {
            self.replies as f64 / seconds
        } else {
            0.0
        }
    }

    /// Latency at `percentile`, µs.
    pub fn latency_us(&self, percentile: f64) -> f64 {
        if percentile >= 100.0 {
            self.latency.max() as f64 / 1e3
        } else {
            self.latency.value_at_percentile(percentile) as f64 / 1e3
        }
    }

    /// The generator's lag at `percentile`, µs.
    pub fn send_lag_us(&self, percentile: f64) -> f64 {
        if percentile >= 100.0 {
            self.send_lag.max() as f64 / 1e3
        } else {
            self.send_lag.value_at_percentile(percentile) as f64 / 1e3
        }
    }

    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let latency: serde_json::Map<String, serde_json::Value> = PERCENTILES
            .iter()
            .map(|(name, p)| ((*name).to_string(), self.latency_us(*p).into()))
            .collect();
        let send_lag: serde_json::Map<String, serde_json::Value> = PERCENTILES
            .iter()
            .map(|(name, p)| ((*name).to_string(), self.send_lag_us(*p).into()))
            .collect();
        serde_json::json!({
            "target": self.target,
            "sent": self.sent,
            "replies": self.replies,
            "missing": self.missing,
            "failovers": self.failovers,
            "trades": self.trades,
            "rejects": self.rejects,
            "send_seconds": self.send_seconds,
            "reply_seconds": self.reply_seconds,
            "throughput_per_sec": self.throughput(),
            "latency_us": latency,
            "latency_mean_us": self.latency.mean() / 1e3,
            "send_lag_us": send_lag,
        })
    }
}

/// Writes `histogram` (ns) as an HdrHistogram percentile distribution in µs, the text format
/// HdrHistogram's tools (and its online plotter) read.
pub fn write_hgrm(histogram: &Histogram<u64>, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    // TotalCount is the count of values up to the line's (cumulative), as HdrHistogram
    // writes it.
    let mut total = 0u64;
    for v in histogram.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / 1e3;
        total += v.count_since_last_iteration();
        if q < 1.0 {
            writeln!(
                out,
                "{value:>12.3} {q:>14.12} {total:>10} {:>14.2}",
                1.0 / (1.0 - q)
            )?;
        } else {
            writeln!(out, "{value:>12.3} {q:>14.12} {total:>10}")?;
        }
    }
    writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        histogram.mean() / 1e3,
        histogram.stdev() / 1e3
    )?;
    writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        histogram.max() as f64 / 1e3,
        histogram.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        histogram.buckets(),
        // HdrHistogram's sub-bucket count: enough for the significant digits, a power of
        // two (2,048 for 3 digits).
        (2 * 10u64.pow(u32::from(histogram.sigfig()))).next_power_of_two()
    )
}

/// A small deterministic generator (xorshift64*), so a seed repeats a run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A resting quote of one session.
#[derive(Clone, Copy, Debug)]
struct Quote {
    user_ref: u32,
    /// The reference this quote replaced, if it did: a fill of that order can still be on
    /// its way (it traded before the replace reached the book), and the engine counts it
    /// against this quote's quantity.
    prev_ref: Option<u32>,
    open: u32,
    /// Shares executed by the replace chain: a Replace's quantity includes them.
    executed: u32,
}

/// The sending half of a session: its socket for writing and its quotes.
struct Quoter {
    stream: std::net::TcpStream,
    /// The connection failed (a cluster's leader went away): messages queue in `out` until
    /// the receiver hands over the new leader's connection.
    down: bool,
    out: Vec<u8>,
    next_ref: u32,
    /// Per instrument: bid and ask quote.
    quotes: Vec<[Option<Quote>; 2]>,
}

/// The receiving half of a session.
struct Listener {
    stream: TcpStream,
    inbuf: Vec<u8>,
    /// Due times of requests not answered yet, by the UserRefNum a reply carries.
    pending: FxHashMap<u32, VecDeque<u64>>,
    pending_count: u64,
    closed: bool,
    /// The sequence number of the next message the engine will send this session (where
    /// a failover's login resumes).
    next_seq: u64,
    /// When bytes last arrived.
    last_rx: Instant,
    /// Closed for good: the engine ended the session, or no node took it back.
    gone: bool,
    /// The node it is logged in at (tried last when it fails: it may be frozen, and a
    /// frozen node still takes the TCP handshake and lets a login wait).
    at: SocketAddr,
}

/// Due time of a request, sent by the sender before the request itself.
struct Due {
    session: usize,
    user_ref: u32,
    due_ns: u64,
}

/// What the receiver tells the sender about its quotes.
enum QuoteNews {
    Executed {
        session: usize,
        user_ref: u32,
        qty: u32,
    },
    Gone {
        session: usize,
        user_ref: u32,
    },
    /// Shares taken off an order without a trade (an AIQ cancel: self-trade prevention).
    Reduced {
        session: usize,
        user_ref: u32,
        qty: u32,
    },
}

/// What the sessions talk to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Engine,
    Echo,
}

/// Runs the load against the engine. With `baseline`, first runs the same schedule against
/// a loopback TCP echo server and returns its report too.
pub fn run(options: &LoadOptions, baseline: bool) -> io::Result<(LoadReport, Option<LoadReport>)> {
    let base = if baseline {
        let (addr, stop) = spawn_echo()?;
        let report = run_target(options, addr, Target::Echo);
        stop();
        Some(report?)
    } else {
        None
    };
    let engine = run_target(options, options.connect, Target::Engine)?;
    Ok((engine, base))
}

/// Starts a TCP echo server on loopback; returns its address and a function that stops it.
fn spawn_echo() -> io::Result<(SocketAddr, impl FnOnce())> {
    let mut listener = TcpListener::bind("127.0.0.1:0".parse().expect("address"))?;
    let addr = listener.local_addr()?;
    let mut poll = Poll::new()?;
    let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), Token(usize::MAX - 1))?);
    poll.registry()
        .register(&mut listener, Token(usize::MAX), Interest::READABLE)?;
    let stop_flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stop_flag);
    let thread = std::thread::Builder::new()
        .name("im-echo".into())
        .spawn(move || {
            let mut events = Events::with_capacity(64);
            let mut conns: Vec<(TcpStream, Vec<u8>)> = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            // Idle as the engine's gateway does (`pipeline::agent`): polls without waiting
            // for `SPIN_FOR` after the last packet, yields between polls until
            // `YIELD_FOR`, then sleeps in the poll. A floor that slept at once paid a
            // wake-up on every message the engine, still awake, did not (until
            // 2026-12-07: the engine's p50 read below the echo's at 50,000 msg/s).
            use crate::pipeline::agent::{SPIN_FOR, YIELD_FOR};
            let mut last_work = std::time::Instant::now();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let idle = last_work.elapsed();
                let wait = if idle < SPIN_FOR {
                    Duration::ZERO
                } else if idle < YIELD_FOR {
                    std::thread::yield_now();
                    Duration::ZERO
                } else {
                    Duration::from_millis(100)
                };
                // A signal (SIGSTOP and SIGCONT among them, even unhandled) interrupts the
                // wait: not a reason to stop echoing.
                match poll.poll(&mut events, Some(wait)) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                    Ok(()) => {}
                }
                if !events.is_empty() {
                    last_work = std::time::Instant::now();
                }
                for event in events.iter() {
                    match event.token() {
                        Token(t) if t == usize::MAX => {
                            while let Ok((mut s, _)) = listener.accept() {
                                let _ = s.set_nodelay(true);
                                let token = Token(conns.len());
                                if poll
                                    .registry()
                                    .register(
                                        &mut s,
                                        token,
                                        Interest::READABLE | Interest::WRITABLE,
                                    )
                                    .is_ok()
                                {
                                    conns.push((s, Vec::new()));
                                }
                            }
                        }
                        Token(t) if t == usize::MAX - 1 => {}
                        Token(i) => {
                            let (s, pending) = &mut conns[i];
                            loop {
                                match s.read(&mut buf) {
                                    Ok(0) => break,
                                    Ok(n) => {
                                        pending.extend_from_slice(&buf[..n]);
                                        // A short read drained the socket (epoll(7)).
                                        if n < buf.len() {
                                            break;
                                        }
                                    }
                                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                    Err(_) => break,
                                }
                            }
                            while !pending.is_empty() {
                                match s.write(pending) {
                                    Ok(n) => {
                                        pending.drain(..n);
                                    }
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                }
            }
        })?;
    let stop = move || {
        stop_flag.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = waker.wake();
        let _ = thread.join();
    };
    Ok((addr, stop))
}

/// Logs in at `first`, else at each of `also` in turn (a cluster's follower refuses with
/// `S`); returns the address that took the login and the session.
fn login_any(
    first: SocketAddr,
    also: &[SocketAddr],
    user: &str,
    password: &str,
) -> io::Result<(SocketAddr, LoggedIn)> {
    let mut last = None;
    for &addr in std::iter::once(&first).chain(also) {
        match login(addr, user, password) {
            Ok(logged_in) => return Ok((addr, logged_in)),
            Err(e) if also.is_empty() => return Err(e),
            Err(e) => last = Some(io::Error::new(e.kind(), format!("{addr}: {e}"))),
        }
    }
    Err(last.expect("at least one address was tried"))
}

/// A session just logged in.
struct LoggedIn {
    stream: std::net::TcpStream,
    /// The next UserRefNum the engine accepts.
    next_ref: u32,
    /// The sequence number of the next message it will send.
    next_seq: u64,
}

/// Logs in with a blocking socket and asks for the next UserRefNum to use.
fn login(addr: SocketAddr, user: &str, password: &str) -> io::Result<LoggedIn> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut out = Vec::new();
    // Requested sequence 0: only new messages, no replay of the day so far.
    soupbin::write_login_request(&mut out, user, password, "", 0);
    // Account Query: the engine tells the next UserRefNum it accepts.
    soupbin::write_packet(&mut out, kind::UNSEQUENCED, &[inbound::ACCOUNT_QUERY]);
    stream.write_all(&out)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut logged_in = false;
    let mut next_seq = 0u64;
    loop {
        while let Some(frame) = soupbin::next_frame(&buf, 1 << 16).map_err(io::Error::other)? {
            let len = frame.len;
            match soupbin::decode_server(&frame).map_err(io::Error::other)? {
                ServerPacket::LoginAccepted(a) => {
                    logged_in = true;
                    next_seq = soupbin::parse_number(&a.sequence).unwrap_or(1);
                }
                ServerPacket::LoginRejected(code) => {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        match code {
                            b'S' => format!(
                                "{user}: login rejected (S: session not available: outside the \
                                 venue's trading day, or the user is logged in elsewhere)"
                            ),
                            _ => format!("{user}: login rejected ({})", code as char),
                        },
                    ));
                }
                ServerPacket::Sequenced(msg) => {
                    next_seq += 1;
                    if let Ok(Outbound::AccountQueryResponse(r)) = decode_outbound(msg)
                        && logged_in
                    {
                        stream.set_read_timeout(None)?;
                        return Ok(LoggedIn {
                            stream,
                            next_ref: r.next_user_ref.get().max(1),
                            next_seq,
                        });
                    }
                }
                ServerPacket::Debug(text) => {
                    return Err(io::Error::other(format!(
                        "{user}: {}",
                        String::from_utf8_lossy(text)
                    )));
                }
                ServerPacket::EndOfSession => {
                    return Err(io::Error::other(format!("{user}: end of session at login")));
                }
                ServerPacket::Heartbeat => {}
            }
            buf.drain(..len);
        }
        let n = match stream.read(&mut chunk) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            read => read?,
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{user}: connection closed during login"),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A session logged in again after a failover, resuming its stream.
struct Resumed {
    addr: SocketAddr,
    stream: std::net::TcpStream,
    /// The sequence number of the first message to come (the one asked for, unless the
    /// server's stream is shorter).
    next_seq: u64,
    /// Bytes read past the Login Accepted (the first replayed messages).
    rest: Vec<u8>,
}

/// How long a session looks for a new leader after its connection failed.
const FAILOVER_WAIT: Duration = Duration::from_secs(30);
/// With a cluster's addresses: a session that hears nothing (the engine sends a heartbeat
/// every `gateway.heartbeat_interval_ms`, 1 s as shipped) or whose engine reads nothing for
/// this long counts as failed (a frozen or unreachable node sends no EOF).
const FAILOVER_STALL: Duration = Duration::from_secs(3);

/// Logs `user` in again at whichever of `addrs` takes it (a cluster's new leader; followers
/// refuse with `S`), asking for message `next_seq` on: SoupBinTCP's own recovery.
/// `first`, if given, is tried first (where another session just logged in again), and
/// `failed` (where this one was) last.
fn resume(
    addrs: &[SocketAddr],
    first: Option<SocketAddr>,
    failed: SocketAddr,
    user: &str,
    password: &str,
    next_seq: u64,
) -> io::Result<Resumed> {
    let first = first.filter(|f| *f != failed && addrs.contains(f));
    let ordered: Vec<SocketAddr> = (first.into_iter())
        .chain((addrs.iter().copied()).filter(|a| Some(*a) != first && *a != failed))
        .chain([failed])
        .collect();
    let (client, addr, next_seq) =
        crate::client::Client::connect_any(&ordered, user, password, next_seq, FAILOVER_WAIT)?;
    let (stream, rest) = client.into_parts()?;
    Ok(Resumed {
        addr,
        stream,
        next_seq,
        rest,
    })
}

/// The flow: what each message is. Shared mid prices drift by one tick at a time.
struct Flow {
    rng: Rng,
    mids: Vec<u64>,
    instruments: Vec<LoadInstrument>,
    ioc_percent: u64,
    /// The OUCH message being built (reused: no allocation per message).
    payload: Vec<u8>,
}

/// OUCH reject reason codes as text: OUCH 5.0's names for them (which of ironmatch's
/// reasons each one carries is under "Rejected codes" in the README).
fn reject_name(code: u16) -> String {
    let what = match code {
        0x0001 => "quote unavailable",
        0x0002 => "destination closed",
        0x0003 => "invalid display",
        0x0004 => "invalid max floor",
        0x0005 => "invalid peg type",
        0x0006 => "fat finger",
        0x0007 => "halted",
        0x0008 => "ISO not allowed",
        0x0009 => "invalid side",
        0x000A => "processing error",
        0x000B => "cancel pending",
        0x000C => "firm not authorized",
        0x000D => "invalid min quantity",
        0x000E => "no closing reference price",
        0x000F => "other",
        0x0010 => "cancel not allowed",
        0x0011 => "pegging not allowed",
        0x0012 => "crossed market",
        0x0013 => "invalid quantity",
        0x0014 => "invalid cross order",
        0x0015 => "replace not allowed",
        0x0016 => "routing not allowed",
        0x0017 => "invalid symbol",
        0x0018 => "test",
        0x0019 => "late LOC too aggressive",
        0x001A => "retail not allowed",
        0x001B => "invalid midpoint post-only price",
        0x001C => "invalid destination",
        0x001D => "invalid price",
        0x001E => "shares exceed threshold",
        0x001F => "exceeds maximum allowed notional value",
        _ => "a code OUCH 5.0 does not list",
    };
    format!("0x{code:04X} {what}")
}

impl Flow {
    /// Appends the next message of session `s` (a SoupBinTCP packet) to its buffer and
    /// returns the UserRefNum its reply will carry.
    fn next_message(&mut self, s: &mut Quoter) -> u32 {
        let i = self.rng.below(self.instruments.len() as u64) as usize;
        let spec = &self.instruments[i];
        let tick = spec.tick;
        // Drift: one tick up or down now and then, kept within 20 ticks of the start.
        if self.rng.below(8) == 0 {
            let start = spec.mid;
            let mid = self.mids[i];
            self.mids[i] = if self.rng.below(2) == 0 {
                if mid + tick <= start + 20 * tick {
                    mid + tick
                } else {
                    mid - tick
                }
            } else if mid >= start.saturating_sub(20 * tick) + tick && mid > 3 * tick {
                mid - tick
            } else {
                mid + tick
            };
        }
        let mid = self.mids[i];
        let side = self.rng.below(2) as usize;
        let lot = spec.lot.max(1);
        let qty = (100 * (1 + self.rng.below(5) as u32)).div_ceil(lot) * lot;
        let roll = self.rng.below(100);
        let payload = &mut self.payload;
        payload.clear();
        let reply_ref;
        if roll < self.ioc_percent {
            // Marketable IOC: crosses the other side's quotes by a few ticks.
            let price = if side == 0 {
                mid + 4 * tick
            } else {
                mid.saturating_sub(4 * tick).max(tick)
            };
            let user_ref = s.take_ref();
            enter(payload, user_ref, side, qty, &spec.symbol, price, b'3');
            reply_ref = user_ref;
        } else {
            let offset = (1 + self.rng.below(3)) * tick;
            let price = if side == 0 {
                mid.saturating_sub(offset).max(tick)
            } else {
                mid + offset
            };
            match s.quotes[i][side] {
                Some(q) if roll < self.ioc_percent + 3 => {
                    // Now and then pull the quote instead of moving it.
                    let m = ouch::CancelOrder {
                        msg_type: inbound::CANCEL,
                        user_ref: U32::new(q.user_ref),
                        qty: U32::ZERO,
                    };
                    Inbound::Cancel(&m, Options::default()).write(payload);
                    s.quotes[i][side] = None;
                    reply_ref = q.user_ref;
                }
                Some(q) => {
                    let user_ref = s.take_ref();
                    let m = ouch::ReplaceOrder {
                        msg_type: inbound::REPLACE,
                        orig_user_ref: U32::new(q.user_ref),
                        user_ref: U32::new(user_ref),
                        qty: U32::new(q.executed + qty),
                        price: U64::new(price),
                        tif: b'0',
                        display: b'Y',
                        iso: b'N',
                        clordid: [b' '; 14],
                        appendage_len: U16::ZERO,
                    };
                    Inbound::Replace(&m, Options::default()).write(payload);
                    s.quotes[i][side] = Some(Quote {
                        user_ref,
                        prev_ref: Some(q.user_ref),
                        open: qty,
                        executed: q.executed,
                    });
                    reply_ref = user_ref;
                }
                None => {
                    let user_ref = s.take_ref();
                    enter(payload, user_ref, side, qty, &spec.symbol, price, b'0');
                    s.quotes[i][side] = Some(Quote {
                        user_ref,
                        prev_ref: None,
                        open: qty,
                        executed: 0,
                    });
                    reply_ref = user_ref;
                }
            }
        }
        soupbin::write_packet(&mut s.out, kind::UNSEQUENCED, payload);
        reply_ref
    }
}

/// What the engine said of a session's orders, applied to its quotes.
fn apply_news(quotes: &mut [[Option<Quote>; 2]], news: &QuoteNews) {
    for sides in quotes.iter_mut() {
        for slot in sides.iter_mut() {
            match (slot.as_mut(), news) {
                (Some(q), QuoteNews::Executed { user_ref, qty, .. })
                    if q.user_ref == *user_ref || q.prev_ref == Some(*user_ref) =>
                {
                    q.open = q.open.saturating_sub(*qty);
                    q.executed += *qty;
                    if q.open == 0 {
                        *slot = None;
                    }
                }
                (Some(q), QuoteNews::Gone { user_ref, .. }) if q.user_ref == *user_ref => {
                    *slot = None;
                }
                (Some(q), QuoteNews::Reduced { user_ref, qty, .. }) if q.user_ref == *user_ref => {
                    q.open = q.open.saturating_sub(*qty);
                    if q.open == 0 {
                        *slot = None;
                    }
                }
                _ => {}
            }
        }
    }
}

fn enter(
    payload: &mut Vec<u8>,
    user_ref: u32,
    side: usize,
    qty: u32,
    symbol: &str,
    price: u64,
    tif: u8,
) {
    let side = if side == 0 { b'B' } else { b'S' };
    let symbol = soupbin::left_justified(symbol);
    let m = ouch::EnterOrder::new(user_ref, side, qty, symbol, price, tif, b'Y');
    Inbound::Enter(&m, Options::default()).write(payload);
}

impl Quoter {
    fn take_ref(&mut self) -> u32 {
        let r = self.next_ref;
        self.next_ref += 1;
        r
    }

    fn apply(&mut self, news: &QuoteNews) {
        apply_news(&mut self.quotes, news);
    }

    /// Writes what is queued; a full socket buffer (the engine not reading) is waited out.
    /// With `failover`, a failed connection marks the session down (what was queued is
    /// dropped: it went to a node that is gone, and its replies will be missing) and
    /// queues until [`Quoter::reconnect`].
    fn flush_or_fail_over(&mut self, failover: bool) -> io::Result<()> {
        if self.down {
            return Ok(());
        }
        let stall = failover.then_some(FAILOVER_STALL);
        match self.flush(stall) {
            Err(_) if failover => {
                self.down = true;
                self.out.clear();
                self.forget_quotes();
                Ok(())
            }
            result => result,
        }
    }

    /// The new leader's connection: what queued while down goes out now.
    fn reconnect(&mut self, stream: std::net::TcpStream) -> io::Result<()> {
        if !self.down {
            // The old connection failed without a write error: what went out on it
            // since may be lost too.
            self.forget_quotes();
        }
        self.stream = stream;
        self.down = false;
        self.flush_or_fail_over(true)
    }

    /// Quotes entered or replaced by messages that may be lost are not replaced again (a
    /// chain of replaces from a lost order would all be rejected): new quotes start over.
    fn forget_quotes(&mut self) {
        for sides in &mut self.quotes {
            *sides = [None, None];
        }
    }

    /// Writes all of `out`; with `stall`, a socket that takes nothing for that long (a
    /// frozen or unreachable node) is an error.
    fn flush(&mut self, stall: Option<Duration>) -> io::Result<()> {
        let mut blocked_since: Option<Instant> = None;
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                    blocked_since = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let since = *blocked_since.get_or_insert_with(Instant::now);
                    if stall.is_some_and(|stall| since.elapsed() >= stall) {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the engine has not read for too long",
                        ));
                    }
                    std::thread::yield_now();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Listener {
    /// Resolves the oldest request answered by a reply carrying `user_ref`.
    fn resolve(&mut self, user_ref: u32) -> Option<u64> {
        let queue = self.pending.get_mut(&user_ref)?;
        let due = queue.pop_front();
        if queue.is_empty() {
            self.pending.remove(&user_ref);
        }
        if due.is_some() {
            self.pending_count -= 1;
        }
        due
    }
}

/// Counters while running.
#[derive(Default)]
struct Counters {
    replies: u64,
    /// When the last reply was read, ns from the start.
    last_reply_ns: u64,
    trades: u64,
    rejects: BTreeMap<String, u64>,
}

/// What the sender thread measured.
struct Sent {
    sent: u64,
    send_lag: Histogram<u64>,
    last_send: Duration,
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).expect("valid bounds")
}

/// Messages sent per wake-up at most: a sender that fell behind catches up in batches of
/// one write per session, not one write per message.
const SEND_BATCH_MAX: u64 = 1024;
/// A sleep ends this much before the due time; the rest is yielded away. The sender's
/// timer slack is set to 1 µs, so a sleep ends within a few µs of its deadline.
const SLEEP_EARLY_NS: u64 = 15_000;
/// Above this rate (messages closer than this) the sender does not yield-spin between
/// messages: it sleeps this long and sends what fell due, so it leaves the cores to the
/// engine and the receiver. Each message's latency still runs from its own due time.
const SEND_TICK_NS: u64 = 20_000;

/// The sender: wakes for the next due message (sleeping when it is far, yielding when it is
/// near, and at high rates sleeping a tick instead of yielding), then sends every message
/// due by then, each session's in one write. Every due
/// time is announced to the receiver before its message is written, and latency runs from
/// the due time, so batching changes how many system calls a message costs, not what is
/// measured (open loop).
#[allow(clippy::too_many_arguments)]
fn send_all(
    mut quoters: Vec<Quoter>,
    mut flow: Flow,
    total: u64,
    rate: u64,
    start: Instant,
    heartbeats: bool,
    dues: crossbeam::channel::Sender<Due>,
    news: crossbeam::channel::Receiver<QuoteNews>,
    reconnects: Option<crossbeam::channel::Receiver<(usize, std::net::TcpStream)>>,
    sent_so_far: &std::sync::atomic::AtomicU64,
) -> io::Result<Sent> {
    let failover = reconnects.is_some();
    let interval_ns = 1e9 / rate.max(1) as f64;
    let due_ns = |i: u64| (i as f64 * interval_ns) as u64;
    let mut send_lag = histogram();
    let mut next_heartbeat = Duration::from_secs(1);
    let mut dirty = vec![false; quoters.len()];
    // Precise sleeps (the default slack is 50 µs); without it, only less precise.
    let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1_000));
    let mut i = 0;
    while i < total {
        let now = start.elapsed().as_nanos() as u64;
        let due = due_ns(i);
        if now < due {
            let wait = due - now;
            if wait > SLEEP_EARLY_NS {
                std::thread::sleep(Duration::from_nanos(wait - SLEEP_EARLY_NS));
            } else if interval_ns < SEND_TICK_NS as f64 {
                std::thread::sleep(Duration::from_nanos(SEND_TICK_NS));
            } else {
                std::thread::yield_now();
            }
            continue;
        }
        if let Some(reconnects) = &reconnects {
            for (s, stream) in reconnects.try_iter() {
                quoters[s].reconnect(stream)?;
            }
        }
        for n in news.try_iter() {
            let session = match n {
                QuoteNews::Executed { session, .. }
                | QuoteNews::Gone { session, .. }
                | QuoteNews::Reduced { session, .. } => session,
            };
            quoters[session].apply(&n);
        }
        let first = i;
        while i < total && i - first < SEND_BATCH_MAX && due_ns(i) <= now {
            let s = (i % quoters.len() as u64) as usize;
            let user_ref = flow.next_message(&mut quoters[s]);
            let _ = dues.send(Due {
                session: s,
                user_ref,
                due_ns: due_ns(i),
            });
            dirty[s] = true;
            i += 1;
        }
        for (s, quoter) in quoters.iter_mut().enumerate() {
            if std::mem::take(&mut dirty[s]) {
                quoter.flush_or_fail_over(failover)?;
            }
        }
        // After the writes: a message is sent when its bytes are in the socket.
        let sent_at = start.elapsed().as_nanos() as u64;
        for k in first..i {
            send_lag.saturating_record(sent_at.saturating_sub(due_ns(k)).max(1));
        }
        let now = start.elapsed();
        if heartbeats && now >= next_heartbeat {
            next_heartbeat += Duration::from_secs(1);
            for q in quoters.iter_mut().filter(|q| !q.down) {
                soupbin::write_empty(&mut q.out, kind::CLIENT_HEARTBEAT);
                q.flush_or_fail_over(failover)?;
            }
        }
        sent_so_far.store(i, std::sync::atomic::Ordering::Relaxed);
    }
    // Sending ends here: the wait below for sessions still down is not sending time (it
    // counted, and a session no node took back cut the throughput by its 30 s).
    let last_send = start.elapsed();
    // Sessions still down at the end: their last messages go out once they are back.
    if let Some(reconnects) = &reconnects {
        let deadline = Instant::now() + FAILOVER_WAIT;
        while quoters.iter().any(|q| q.down) && Instant::now() < deadline {
            match reconnects.recv_timeout(Duration::from_millis(50)) {
                Ok((s, stream)) => quoters[s].reconnect(stream)?,
                Err(crossbeam::channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam::channel::RecvTimeoutError::Disconnected) => break,
            }
        }
    }
    Ok(Sent {
        sent: total,
        send_lag,
        last_send,
    })
}

/// Files the due times the sender announced.
fn take_dues(listeners: &mut [Listener], dues: &crossbeam::channel::Receiver<Due>) {
    for d in dues.try_iter() {
        let l = &mut listeners[d.session];
        l.pending.entry(d.user_ref).or_default().push_back(d.due_ns);
        l.pending_count += 1;
    }
}

fn run_target(options: &LoadOptions, addr: SocketAddr, target: Target) -> io::Result<LoadReport> {
    let mut poll = Poll::new()?;
    let mut quoters = Vec::new();
    let mut listeners = Vec::new();
    let mut addr = addr;
    for (i, (user, password)) in options.users.iter().enumerate() {
        let LoggedIn {
            stream: std_stream,
            next_ref,
            next_seq,
        } = match target {
            Target::Engine if i == 0 => {
                let (found, logged_in) = login_any(addr, &options.also, user, password)?;
                addr = found;
                logged_in
            }
            Target::Engine => login(addr, user, password)?,
            Target::Echo => LoggedIn {
                stream: std::net::TcpStream::connect(addr)?,
                next_ref: 1,
                next_seq: 1,
            },
        };
        std_stream.set_nodelay(true)?;
        let writer = std_stream.try_clone()?;
        std_stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std_stream);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        quoters.push(Quoter {
            stream: writer,
            down: false,
            out: Vec::with_capacity(1 << 12),
            next_ref,
            quotes: vec![[None, None]; options.instruments.len()],
        });
        listeners.push(Listener {
            stream,
            inbuf: Vec::with_capacity(1 << 16),
            pending: FxHashMap::default(),
            pending_count: 0,
            closed: false,
            next_seq,
            last_rx: Instant::now(),
            gone: false,
            at: addr,
        });
    }
    if quoters.is_empty() {
        return Err(io::Error::other(
            "no sessions: the configuration has no users",
        ));
    }
    let flow = Flow {
        rng: Rng::new(options.seed),
        mids: options.instruments.iter().map(|i| i.mid).collect(),
        instruments: options.instruments.clone(),
        ioc_percent: options.ioc_percent,
        payload: Vec::with_capacity(128),
    };
    let total = options
        .messages
        .unwrap_or(u64::MAX)
        .min((options.duration.as_secs_f64() * options.rate as f64).ceil() as u64);
    let label = match target {
        Target::Engine => "engine",
        Target::Echo => "baseline",
    };
    let (due_tx, due_rx) = crossbeam::channel::unbounded::<Due>();
    let (news_tx, news_rx) = crossbeam::channel::unbounded::<QuoteNews>();
    // With a cluster's addresses, sessions whose connection fails log in again at the
    // new leader and the sender gets their new connections.
    let cluster: Vec<SocketAddr> = match target {
        Target::Engine if !options.also.is_empty() => std::iter::once(options.connect)
            .chain(options.also.iter().copied())
            .collect(),
        _ => Vec::new(),
    };
    let (reconnect_tx, reconnect_rx) = crossbeam::channel::unbounded();
    let reconnects = (!cluster.is_empty()).then_some(reconnect_rx);
    let mut failovers = 0u64;
    let mut leader_hint: Option<SocketAddr> = None;
    let sent_so_far = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let sender = {
        let sent_so_far = std::sync::Arc::clone(&sent_so_far);
        let rate = options.rate;
        std::thread::Builder::new()
            .name("im-load-send".into())
            .spawn(move || {
                send_all(
                    quoters,
                    flow,
                    total,
                    rate,
                    start,
                    target == Target::Engine,
                    due_tx,
                    news_rx,
                    reconnects,
                    &sent_so_far,
                )
            })?
    };

    let mut latency = histogram();
    let mut window = histogram();
    let mut counters = Counters::default();
    let mut next_progress = Duration::from_secs(1);
    let mut next_heartbeat = Duration::ZERO;
    let mut drain_deadline: Option<Instant> = None;
    let mut sender_done = false;
    let mut events = Events::with_capacity(256);
    let mut scratch = vec![0u8; 1 << 16];
    loop {
        // A signal interrupts the wait (Ctrl-Z then fg, a debugger attaching): look again.
        match poll.poll(&mut events, Some(Duration::from_millis(5))) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => result?,
        }
        for event in events.iter() {
            let i = event.token().0;
            let listener = &mut listeners[i];
            loop {
                match listener.stream.read(&mut scratch) {
                    Ok(0) => {
                        listener.closed = true;
                        break;
                    }
                    Ok(n) => {
                        listener.last_rx = Instant::now();
                        listener.inbuf.extend_from_slice(&scratch[..n]);
                        // A short read drained the socket (epoll(7)): spare the read that
                        // would say WouldBlock; new bytes bring a new readiness event.
                        if n < scratch.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) if !cluster.is_empty() => {
                        listener.closed = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            // Due times after reading: a request's is queued before the request is
            // written, so every reply just read has its due time filed now.
            // Arrival: after the read, so no reply read here is stamped before its send.
            let recv_ns = start.elapsed().as_nanos() as u64;
            take_dues(&mut listeners, &due_rx);
            let listener = &mut listeners[i];
            let inbuf = std::mem::take(&mut listener.inbuf);
            let mut consumed = 0;
            while let Some(frame) =
                soupbin::next_frame(&inbuf[consumed..], 1 << 16).map_err(io::Error::other)?
            {
                consumed += frame.len;
                let answered = match target {
                    Target::Echo => echo_reply(frame.payload),
                    Target::Engine => engine_reply(
                        &frame,
                        i,
                        listener,
                        &mut counters,
                        &news_tx,
                        !cluster.is_empty(),
                    )?,
                };
                if let Some(user_ref) = answered
                    && let Some(due) = listener.resolve(user_ref)
                {
                    let rtt = recv_ns.saturating_sub(due).max(1);
                    latency.saturating_record(rtt);
                    window.saturating_record(rtt);
                    counters.replies += 1;
                    counters.last_reply_ns = recv_ns;
                }
            }
            listener.inbuf = inbuf;
            listener.inbuf.drain(..consumed);
        }
        // A cluster's leader went away: every session it held logs in at the new one.
        let past_drain = drain_deadline.is_some_and(|d| Instant::now() >= d);
        if !cluster.is_empty() && !past_drain {
            let mut resumed = false;
            for (i, listener) in listeners.iter_mut().enumerate() {
                if !listener.closed && listener.last_rx.elapsed() >= FAILOVER_STALL {
                    // Silent (frozen or unreachable node): no EOF will come.
                    listener.closed = true;
                }
                if !listener.closed || listener.gone {
                    continue;
                }
                let (user, password) = &options.users[i];
                let lost = Instant::now();
                let r = match resume(
                    &cluster,
                    leader_hint,
                    listener.at,
                    user,
                    password,
                    listener.next_seq,
                ) {
                    Ok(r) => r,
                    Err(e) => {
                        // The run goes on (and reports) without this session.
                        eprintln!("load: {user}: no node took the session back: {e}");
                        listener.gone = true;
                        continue;
                    }
                };
                let _ = poll.registry().deregister(&mut listener.stream);
                let writer = r.stream.try_clone()?;
                r.stream.set_nonblocking(true)?;
                listener.stream = TcpStream::from_std(r.stream);
                poll.registry()
                    .register(&mut listener.stream, Token(i), Interest::READABLE)?;
                // Bytes of the old connection's last partial packet are dropped; the
                // resumed stream starts on a packet boundary.
                listener.inbuf = r.rest;
                leader_hint = Some(r.addr);
                listener.at = r.addr;
                listener.next_seq = r.next_seq;
                listener.closed = false;
                listener.last_rx = Instant::now();
                failovers += 1;
                eprintln!(
                    "load: {user} logged in again at {} from message {} after {:.2?}",
                    r.addr,
                    r.next_seq,
                    lost.elapsed()
                );
                let _ = reconnect_tx.send((i, writer));
                resumed = true;
            }
            if resumed {
                // The others were not read while this thread logged in again.
                for l in listeners.iter_mut().filter(|l| !l.closed) {
                    l.last_rx = Instant::now();
                }
            }
        }
        let now = start.elapsed();
        if options.progress && now >= next_progress {
            next_progress += Duration::from_secs(1);
            let rejects: u64 = counters.rejects.values().sum();
            eprintln!(
                "load {label}: {:>4}s sent {:>10} replies {:>10} trades {:>8} rejects {:>6} last second p50 {:>8.1} us p99 {:>8.1} us",
                now.as_secs(),
                sent_so_far.load(std::sync::atomic::Ordering::Relaxed),
                counters.replies,
                counters.trades,
                rejects,
                window.value_at_percentile(50.0) as f64 / 1e3,
                window.value_at_percentile(99.0) as f64 / 1e3,
            );
            window.reset();
        }
        // Past the last send the sender's heartbeats stop: keep the sessions alive while
        // the last replies drain.
        if sender_done && now >= next_heartbeat {
            next_heartbeat = now + Duration::from_secs(1);
            if target == Target::Engine {
                let mut heartbeat = Vec::new();
                soupbin::write_empty(&mut heartbeat, kind::CLIENT_HEARTBEAT);
                for l in listeners.iter_mut().filter(|l| !l.closed) {
                    let _ = l.stream.write(&heartbeat);
                }
            }
        }
        if !sender_done && sender.is_finished() {
            sender_done = true;
            drain_deadline = Some(Instant::now() + options.drain);
            take_dues(&mut listeners, &due_rx);
        }
        let outstanding: u64 = listeners.iter().map(|l| l.pending_count).sum();
        if let Some(deadline) = drain_deadline
            && (outstanding == 0 || Instant::now() >= deadline)
        {
            break;
        }
        if listeners.iter().all(|l| l.closed) && sender_done {
            break;
        }
    }
    let sent = sender
        .join()
        .map_err(|_| io::Error::other("the sender thread panicked"))??;
    // Log out only now: a Logout Request right behind the last order would end the session
    // before its replies.
    if target == Target::Engine {
        let mut logout = Vec::new();
        soupbin::write_empty(&mut logout, kind::LOGOUT_REQUEST);
        for l in &mut listeners {
            let _ = l.stream.write(&logout);
        }
    }
    let missing: u64 = listeners.iter().map(|l| l.pending_count).sum();
    // A request never answered counts at what it waited until now, a lower bound: left
    // out, the worst round trips would vanish from the percentiles.
    let end_ns = start.elapsed().as_nanos() as u64;
    for l in &listeners {
        for due in l.pending.values().flatten() {
            latency.saturating_record(end_ns.saturating_sub(*due).max(1));
        }
    }
    if std::env::var_os("IRONMATCH_LOAD_DEBUG").is_some() {
        for (i, l) in listeners.iter().enumerate() {
            let mut keys: Vec<_> = l.pending.iter().collect();
            keys.sort();
            for (k, v) in keys.iter().take(5) {
                eprintln!("missing: session {i} ref {k} due {v:?}");
            }
        }
    }
    Ok(LoadReport {
        target: label,
        sent: sent.sent,
        replies: counters.replies,
        missing,
        failovers,
        trades: counters.trades,
        rejects: counters.rejects,
        send_seconds: sent.last_send.as_secs_f64(),
        reply_seconds: counters.last_reply_ns as f64 / 1e9,
        latency,
        send_lag: sent.send_lag,
    })
}

/// The request an echoed packet answers: the UserRefNum its reply would carry.
fn echo_reply(payload: &[u8]) -> Option<u32> {
    match decode_inbound(payload).ok()? {
        Inbound::Enter(m, _) => Some(m.user_ref.get()),
        Inbound::Replace(m, _) => Some(m.user_ref.get()),
        Inbound::Cancel(m, _) => Some(m.user_ref.get()),
        _ => None,
    }
}

/// Book-keeping for one server packet; returns the UserRefNum of the request it answers.
fn engine_reply(
    frame: &soupbin::Frame<'_>,
    session: usize,
    listener: &mut Listener,
    counters: &mut Counters,
    news: &crossbeam::channel::Sender<QuoteNews>,
    failover: bool,
) -> io::Result<Option<u32>> {
    let msg = match soupbin::decode_server(frame).map_err(io::Error::other)? {
        ServerPacket::Sequenced(msg) => {
            listener.next_seq += 1;
            msg
        }
        // A cluster node that stops leading says why and closes: fail over.
        ServerPacket::Debug(_) if failover => {
            listener.closed = true;
            return Ok(None);
        }
        ServerPacket::Debug(text) => {
            return Err(io::Error::other(format!(
                "the engine closed a session: {}",
                String::from_utf8_lossy(text)
            )));
        }
        ServerPacket::EndOfSession => {
            listener.closed = true;
            listener.gone = true;
            return Ok(None);
        }
        _ => return Ok(None),
    };
    let gone = |user_ref| {
        let _ = news.send(QuoteNews::Gone { session, user_ref });
        Some(user_ref)
    };
    Ok(match decode_outbound(msg).map_err(io::Error::other)? {
        Outbound::Accepted(m, _) => Some(m.user_ref.get()),
        Outbound::Replaced(m, _) => Some(m.user_ref.get()),
        Outbound::Canceled(m) => gone(m.user_ref.get()),
        Outbound::Rejected(m) => {
            *counters
                .rejects
                .entry(reject_name(m.reason.get()))
                .or_default() += 1;
            gone(m.user_ref.get())
        }
        Outbound::CancelReject(m) => Some(m.user_ref.get()),
        Outbound::Executed(m, _) => {
            let _ = news.send(QuoteNews::Executed {
                session,
                user_ref: m.user_ref.get(),
                qty: m.qty.get(),
            });
            if m.liquidity == b'R' {
                counters.trades += 1;
            }
            None
        }
        // Not an answer to a request: a quote of this session's, canceled (in part) to
        // prevent a trade with its own IOC. Ignored, it was replaced or canceled later
        // and the engine refused that as an unknown order (0x10).
        Outbound::AiqCanceled(m) => {
            let _ = news.send(QuoteNews::Reduced {
                session,
                user_ref: m.user_ref.get(),
                qty: m.decrement.get(),
            });
            None
        }
        _ => None,
    })
}

/// Prints the summary table: the engine's figures, and with a baseline its figures and the
/// engine's as a multiple of them.
pub fn print_summary(
    out: &mut impl Write,
    options: &LoadOptions,
    engine: &LoadReport,
    baseline: Option<&LoadReport>,
) -> io::Result<()> {
    writeln!(
        out,
        "\nironmatch load: {} sessions, {} instruments, rate {} msg/s, seed {}",
        options.users.len(),
        options.instruments.len(),
        options.rate,
        options.seed
    )?;
    let row = |out: &mut dyn Write, name: &str, e: String, b: Option<String>, r: Option<f64>| match (
        b, r,
    ) {
        (Some(b), Some(r)) => writeln!(out, "{name:<25} {e:>12} {b:>12} {r:>8.2}x"),
        (Some(b), None) => writeln!(out, "{name:<25} {e:>12} {b:>12}"),
        _ => writeln!(out, "{name:<25} {e:>12}"),
    };
    match baseline {
        Some(_) => writeln!(
            out,
            "{:<25} {:>12} {:>12} {:>9}",
            "", "engine", "baseline", "ratio"
        )?,
        None => writeln!(out, "{:<25} {:>12}", "", "engine")?,
    }
    row(
        out,
        "messages sent",
        engine.sent.to_string(),
        baseline.map(|b| b.sent.to_string()),
        None,
    )?;
    row(
        out,
        "replies",
        engine.replies.to_string(),
        baseline.map(|b| b.replies.to_string()),
        None,
    )?;
    row(
        out,
        "throughput (msg/s)",
        format!("{:.0}", engine.throughput()),
        baseline.map(|b| format!("{:.0}", b.throughput())),
        None,
    )?;
    for (name, p) in PERCENTILES {
        let e = engine.latency_us(p);
        let b = baseline.map(|b| b.latency_us(p));
        row(
            out,
            &format!("round trip {name} (us)"),
            format!("{e:.1}"),
            b.map(|b| format!("{b:.1}")),
            b.filter(|b| *b > 0.0).map(|b| e / b),
        )?;
    }
    // How late each message left against its due time, at the same percentiles: a
    // latency read beside the generator's own lag at that percentile (each message is
    // timed from its due time, so a late send counts in its round trip too).
    for (name, p) in PERCENTILES {
        row(
            out,
            &format!("generator lag {name} (us)"),
            format!("{:.1}", engine.send_lag_us(p)),
            baseline.map(|b| format!("{:.1}", b.send_lag_us(p))),
            None,
        )?;
    }
    row(
        out,
        "replies missing",
        engine.missing.to_string(),
        baseline.map(|b| b.missing.to_string()),
        None,
    )?;
    if engine.failovers > 0 {
        row(
            out,
            "sessions failed over",
            engine.failovers.to_string(),
            None,
            None,
        )?;
    }
    row(out, "trades", engine.trades.to_string(), None, None)?;
    let rejects: u64 = engine.rejects.values().sum();
    row(out, "rejects", rejects.to_string(), None, None)?;
    for (reason, n) in &engine.rejects {
        writeln!(out, "  {reason:<40} {n:>10}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The percentile distribution reads as HdrHistogram's: TotalCount is cumulative and
    /// ends at the histogram's count, and the footer gives the sub-bucket count.
    #[test]
    fn the_hgrm_file_has_cumulative_counts() {
        let mut h = histogram();
        for us in 1..=1_000u64 {
            h.record(us * 1_000).unwrap();
        }
        let mut out = Vec::new();
        write_hgrm(&h, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let rows: Vec<(f64, f64, u64)> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                )
            })
            .collect();
        assert!(rows.len() > 20, "{text}");
        assert!(rows.windows(2).all(|w| w[0].2 <= w[1].2), "{text}");
        assert_eq!(rows.last().unwrap().2, 1_000, "{text}");
        let median = rows.iter().find(|r| r.1 >= 0.5).unwrap();
        assert!(
            (median.0 - 500.0).abs() < 1.0 && median.2 == 500,
            "{median:?}"
        );
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
    }

    fn report(replies: u64, send_seconds: f64, reply_seconds: f64) -> LoadReport {
        LoadReport {
            target: "engine",
            sent: replies,
            replies,
            missing: 0,
            failovers: 0,
            trades: 0,
            rejects: BTreeMap::new(),
            send_seconds,
            reply_seconds,
            latency: Histogram::new(3).unwrap(),
            send_lag: Histogram::new(3).unwrap(),
        }
    }

    /// The generator's lag is reported at every percentile the round trip is, in the
    /// table and the JSON (until 2026-12-07 the table had p99 only, the JSON p50, p99 and
    /// max), and a row's name fits its column.
    #[test]
    fn the_generators_lag_is_reported_at_every_percentile() {
        let mut engine = report(1_000, 1.0, 1.0);
        for us in 1..=1_000u64 {
            engine.latency.record(us * 2_000).unwrap();
            engine.send_lag.record(us * 1_000).unwrap();
        }
        let json = engine.to_json();
        for (name, p) in PERCENTILES {
            let lag = json["send_lag_us"][name].as_f64().unwrap();
            assert_eq!(lag, engine.send_lag_us(p), "{name}");
        }
        let max = json["send_lag_us"]["max"].as_f64().unwrap();
        assert!((1_000.0..1_001.0).contains(&max), "{max}");
        assert!((json["send_lag_us"]["p50"].as_f64().unwrap() - 500.0).abs() < 1.0);
        let options = LoadOptions {
            connect: "127.0.0.1:1".parse().unwrap(),
            also: Vec::new(),
            users: vec![("MM1".into(), "pw1".into())],
            instruments: Vec::new(),
            rate: 1_000,
            duration: Duration::from_secs(1),
            messages: None,
            seed: 1,
            ioc_percent: 0,
            drain: Duration::from_secs(1),
            progress: false,
        };
        let mut out = Vec::new();
        print_summary(&mut out, &options, &engine, Some(&engine.clone())).unwrap();
        let text = String::from_utf8(out).unwrap();
        for (name, _) in PERCENTILES {
            let label = format!("generator lag {name} (us)");
            let line = text
                .lines()
                .find(|l| l.starts_with(&label))
                .unwrap_or_else(|| panic!("no {label} row: {text}"));
            // The label padded to its column (25), then the engine's and the baseline's
            // (12 each), as every other row with a baseline and no ratio.
            assert_eq!(line.len(), 25 + 1 + 12 + 1 + 12, "{line}");
        }
    }

    /// Throughput is what the target sustained: an engine whose last reply came 2.5 s
    /// after the last send (a backlog cleared during the drain) did not answer at the
    /// offered rate, though nothing is missing.
    #[test]
    fn throughput_counts_until_the_last_reply() {
        assert_eq!(report(1_500_000, 10.0, 12.5).throughput(), 120_000.0);
        // Keeping up: the last reply a round trip after the last send.
        assert_eq!(report(1_500_000, 10.0, 9.9).throughput(), 150_000.0);
        assert_eq!(report(0, 0.0, 0.0).throughput(), 0.0);
    }

    /// A fill of the order a quote replaced, arriving after the replace was sent, counts
    /// against the quote (the engine counts it in the chain's executed shares: a later
    /// replace sent without it asks for too little and is refused); an AIQ cancel takes
    /// shares off the quote (ignored, the quote stayed, and its next replace or cancel was
    /// refused as an unknown order, `0x10`).
    #[test]
    fn news_reach_the_quote_they_are_about() {
        let quote = |user_ref, prev_ref, open, executed| Quote {
            user_ref,
            prev_ref,
            open,
            executed,
        };
        let mut quotes = vec![[Some(quote(11, Some(10), 100, 30)), None]];
        apply_news(
            &mut quotes,
            &QuoteNews::Executed {
                session: 0,
                user_ref: 10,
                qty: 20,
            },
        );
        let q = quotes[0][0].as_ref().unwrap();
        assert_eq!((q.open, q.executed), (80, 50));
        apply_news(
            &mut quotes,
            &QuoteNews::Executed {
                session: 0,
                user_ref: 9,
                qty: 20,
            },
        );
        assert_eq!(
            quotes[0][0].as_ref().unwrap().open,
            80,
            "another order's fill"
        );
        apply_news(
            &mut quotes,
            &QuoteNews::Reduced {
                session: 0,
                user_ref: 11,
                qty: 80,
            },
        );
        assert!(quotes[0][0].is_none(), "canceled in full by the AIQ cancel");
    }
}
