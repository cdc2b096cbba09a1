//! A live gateway session driven by arbitrary bytes: the checker behind the
//! `gateway_session` fuzz target and its bounded property test (`tests/hostile.rs`).
//!
//! Runs on the caller's thread against a whole engine ([`Server`]) on loopback with a
//! fresh journal. The bytes decode to structured OUCH messages after a real login: each
//! field takes, most of the time, a value from its OUCH set (so orders rest, trade, get
//! replaced and canceled) and otherwise any value at all (bytes outside printable ASCII,
//! enumerations outside their set, prices between the limit and market ranges, huge
//! quantities, repeated and lower UserRefNums). A second session keeps a quote on each
//! side so that orders trade. What must hold, checked after every message:
//! - every message is answered (at least one sequenced message before the Account Query
//!   sent behind it as a barrier), and the session stays open;
//! - every outbound message decodes, and its alpha fields are printable ASCII;
//! - the next expected UserRefNum never goes down;
//! - a Debug packet of any length (one message in 32 comes after one) is ignored.
//!
//! At the end the engine stops (it must stop cleanly), and the journal must replay with
//! every event equal to the journaled one (`replay --verify-determinism`).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use zerocopy::big_endian::{U16, U32, U64};

use crate::client::{Client, Received};
use crate::config::Config;
use crate::replay::{ReplayOptions, replay};
use crate::server::Server;
use crate::wire::ouch::{self, Inbound, Options, Outbound, inbound, is_alpha};

/// Messages sent per run at most, so one input stays a bounded amount of work.
pub const MESSAGES_MAX: usize = 48;
/// How long an answer may take before the run fails (generous: the machine is shared).
const ANSWER_WAIT_MAX: Duration = Duration::from_secs(10);
/// The instrument's middle price, $150.00.
const MID: u64 = 1_500_000;

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Structured messages sent.
    pub sent: usize,
    /// Sequenced messages received in answer (barriers not counted).
    pub answers: usize,
    /// Of those, Rejected.
    pub rejected: usize,
    /// Of those, Order Accepted.
    pub accepted: usize,
    /// Rejected messages by OUCH reason code (codes above 0x1F counted at 0).
    pub reject_codes: [usize; 32],
    /// Commands the journal replayed.
    pub commands_replayed: u64,
}

/// Reads the input as a stream of choices; past its end every choice is 0.
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// One of `valid` 15 times in 16, otherwise any byte.
    fn pick(&mut self, valid: &[u8]) -> u8 {
        let b = self.u8();
        if b < 240 {
            valid[usize::from(b) % valid.len()]
        } else {
            self.u8()
        }
    }

    fn alpha<const N: usize>(&mut self, usual: &[u8; N]) -> [u8; N] {
        let mut field = *usual;
        if self.u8() >= 248 {
            let at = usize::from(self.u8()) % N;
            field[at] = self.u8();
        }
        field
    }

    fn qty(&mut self) -> u32 {
        match self.u8() {
            0..=239 => 1 + u32::from(self.u8()) * 3,
            240..=247 => 0,
            248..=251 => 1_000_000,
            _ => self.u32(),
        }
    }

    fn price(&mut self) -> u64 {
        match self.u8() {
            0..=231 => MID - 2_000 + u64::from(self.u8() % 40) * 100,
            232..=235 => ouch_price_edge(self.u8()),
            _ => u64::from(self.u32()),
        }
    }

    fn options(&mut self) -> Options {
        let mut o = Options::default();
        if self.u8() < 160 {
            return o;
        }
        let present = self.u8();
        if present & 1 != 0 {
            o.min_qty = Some(u32::from(self.u8()));
        }
        if present & 2 != 0 {
            o.max_floor = Some(u32::from(self.u8()));
        }
        if present & 4 != 0 {
            o.firm = Some(self.alpha(b"FZA "));
        }
        if present & 8 != 0 {
            o.customer_type = Some(self.pick(b"RN "));
        }
        if present & 16 != 0 {
            o.post_only = Some(self.pick(b"PN"));
        }
        if present & 32 != 0 {
            o.price_type = Some(self.pick(b"LLLP"));
        }
        if present & 64 != 0 {
            o.trade_now = Some(self.pick(b"YN "));
        }
        if present & 128 != 0 {
            let seconds = self.u8();
            o.expire_time = Some(u32::from(seconds) << (self.u8() % 24));
            // With trade now too, sometimes a handling instruction or discretion (refused
            // but for their "none"), drawn from bytes already read, so that stored inputs
            // keep the messages they were kept for.
            if present & 64 != 0 {
                match seconds % 8 {
                    0 => o.handle_inst = Some(b"  NIB"[usize::from(seconds / 8 % 5)]),
                    1 => o.discretion_price = Some(u64::from(seconds & 16 != 0) * MID),
                    _ => {}
                }
            }
        }
        o
    }
}

fn ouch_price_edge(b: u8) -> u64 {
    const EDGES: [u64; 8] = [
        0,
        1,
        super::ingress::LIMIT_PRICE_MAX,
        super::ingress::LIMIT_PRICE_MAX + 1,
        super::ingress::MARKET_PRICE_MIN,
        0x7FFF_FFFF,
        u64::MAX,
        MID + 1,
    ];
    EDGES[usize::from(b) % EDGES.len()]
}

/// A new UserRefNum: mostly the next one, sometimes the same, a lower or any one.
fn new_ref(r: &mut Bytes<'_>, last_ref: &mut u32) -> u32 {
    let next = last_ref.saturating_add(1);
    let chosen = match r.u8() {
        0..=223 => next,
        224..=239 => *last_ref,
        240..=247 => last_ref.saturating_sub(1),
        _ => r.u32(),
    };
    // The engine's high-water mark may have moved to `chosen`; never fall behind it, or
    // every later message would be a repeat.
    *last_ref = (*last_ref).max(chosen);
    chosen
}

/// The bytes of the next structured message, or `None` when the input is used up.
fn next_message(r: &mut Bytes<'_>, last_ref: &mut u32) -> Option<Vec<u8>> {
    if r.done() {
        return None;
    }
    let mut out = Vec::with_capacity(64);
    match r.u8() % 6 {
        0 | 1 => {
            let mut m = ouch::EnterOrder::new(
                new_ref(r, last_ref),
                r.pick(b"BSTE"),
                r.qty(),
                r.alpha(b"AAPL    "),
                r.price(),
                r.pick(b"0000333335"),
                r.pick(b"YYYYNAPLM"),
            );
            m.capacity = r.pick(b"APRO");
            m.iso = r.pick(b"NY");
            m.cross_type = r.pick(b"NNNNNNNO");
            m.clordid = r.alpha(b"FUZZ-CLORDID  ");
            let o = r.options();
            Inbound::Enter(&m, o).write(&mut out);
        }
        2 => {
            let orig = last_ref.saturating_sub(u32::from(r.u8() % 4));
            let m = ouch::ReplaceOrder {
                msg_type: inbound::REPLACE,
                orig_user_ref: U32::new(orig),
                user_ref: U32::new(new_ref(r, last_ref)),
                qty: U32::new(r.qty()),
                price: U64::new(r.price()),
                tif: r.pick(b"03"),
                display: r.pick(b"YNP"),
                iso: r.pick(b"N"),
                clordid: r.alpha(b"FUZZ-REPLACE  "),
                appendage_len: U16::ZERO,
            };
            let o = r.options();
            Inbound::Replace(&m, o).write(&mut out);
        }
        3 => {
            let m = ouch::CancelOrder {
                msg_type: inbound::CANCEL,
                user_ref: U32::new(last_ref.saturating_sub(u32::from(r.u8() % 4))),
                qty: U32::new(if r.u8() < 128 { 0 } else { r.qty() }),
            };
            Inbound::Cancel(&m, Options::default()).write(&mut out);
        }
        4 => {
            let m = ouch::ModifyOrder {
                msg_type: inbound::MODIFY,
                user_ref: U32::new(last_ref.saturating_sub(u32::from(r.u8() % 4))),
                side: r.pick(b"STEB"),
                qty: U32::new(r.qty()),
            };
            Inbound::Modify(&m, Options::default()).write(&mut out);
        }
        _ => {
            let user_ref = new_ref(r, last_ref);
            let usual = if r.u8() < 128 {
                b"        "
            } else {
                b"AAPL    "
            };
            let m = ouch::MassCancelRequest {
                msg_type: inbound::MASS_CANCEL,
                user_ref: U32::new(user_ref),
                firm: r.alpha(b"FZA "),
                symbol: r.alpha(usual),
                appendage_len: U16::ZERO,
            };
            let side = (r.u8() >= 128).then(|| r.pick(b"BS"));
            let o = Options {
                side,
                ..Options::default()
            };
            Inbound::MassCancel(&m, o).write(&mut out);
        }
    }
    Some(out)
}

/// Checks that an outbound message decodes and that its alpha fields are printable ASCII;
/// returns its type and, for a Rejected, its reason code.
fn check_outbound(msg: &[u8]) -> (u8, u16) {
    let decoded = ouch::decode_outbound(msg).expect("the engine sends valid OUCH");
    let alpha_ok = match decoded {
        Outbound::Accepted(a, o) => {
            let codes = [a.side, a.tif, a.display, a.capacity, a.iso, a.cross_type];
            is_alpha(&a.symbol)
                && is_alpha(&a.clordid)
                && is_alpha(&codes)
                && o.firm.is_none_or(|f| is_alpha(&f))
        }
        Outbound::Replaced(a, o) => {
            let codes = [a.side, a.tif, a.display, a.capacity, a.iso, a.cross_type];
            is_alpha(&a.symbol)
                && is_alpha(&a.clordid)
                && is_alpha(&codes)
                && o.firm.is_none_or(|f| is_alpha(&f))
        }
        Outbound::Rejected(j) => is_alpha(&j.clordid),
        Outbound::MassCancelResponse(x, _) => is_alpha(&x.firm) && is_alpha(&x.symbol),
        Outbound::Modified(m) => is_alpha(&[m.side]),
        _ => true,
    };
    assert!(
        alpha_ok,
        "an alpha field outside printable ASCII: {decoded:?}"
    );
    let code = match decoded {
        Outbound::Rejected(j) => j.reason.get(),
        _ => 0,
    };
    (msg[0], code)
}

/// Sends an Account Query behind whatever was sent and reads up to its answer; returns the
/// message types before it and the next expected UserRefNum.
fn through_barrier(c: &mut Client) -> io::Result<(Vec<(u8, u16)>, u32)> {
    c.send(&Inbound::AccountQuery(Options::default()))?;
    let mut types = Vec::new();
    loop {
        let (_, msg) = c
            .recv_message(ANSWER_WAIT_MAX)?
            .ok_or_else(|| io::Error::other("no answer in time"))?;
        let (kind, code) = check_outbound(&msg);
        if kind == ouch::outbound::ACCOUNT_QUERY_RESPONSE {
            let Ok(Outbound::AccountQueryResponse(q)) = ouch::decode_outbound(&msg) else {
                unreachable!("checked above");
            };
            return Ok((types, q.next_user_ref.get()));
        }
        types.push((kind, code));
    }
}

/// A configuration of one instrument and two users (`FZ1`/`pw1`, `FZ2`/`pw2`) journaling
/// in `dir`, no feed, no trading day.
pub(crate) fn config_text(dir: &std::path::Path) -> String {
    format!(
        r#"
[gateway]
listen = "127.0.0.1:0"
login_timeout_ms = 2000
heartbeat_interval_ms = 1000
client_timeout_ms = 30000
session_store_bytes = 65536

[pipeline]
ring_capacity = 256

[book]
orders_max = 4096
levels_max = 1024

[journal]
dir = "{}"

[marketdata]
enabled = false

[[instruments]]
symbol = "AAPL"
tick_size = "0.01"
lot_size = 1
min_price = "0.01"
max_price = "1000.00"
max_qty = 100000
ref_price = "150.00"
band_bps = 1000

[[users]]
username = "FZ1"
password = "pw1"
firm = "FZA"
cancel_on_disconnect = false
orders_per_sec = 1000000
burst = 1000000

[[users]]
username = "FZ2"
password = "pw2"
firm = "FZB"
cancel_on_disconnect = false
orders_per_sec = 1000000
burst = 1000000
"#,
        dir.display()
    )
}

fn temp_dir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!(
        "ironmatch-gateway-session-{}-{n}-{nanos}",
        std::process::id()
    ))
}

/// Runs one session from `data` and checks it (see the module doc); panics on a failure.
pub fn exercise(data: &[u8]) -> Outcome {
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let config = Config::parse(&config_text(&dir), "gateway_session").expect("valid config");
    let server = Server::start(&config).expect("engine starts");
    let outcome = run(&server, data);
    server.stop().expect("the engine stops cleanly");
    let outcome = outcome.unwrap_or_else(|e| panic!("session failed: {e}"));
    let book = config.book_config().expect("valid config");
    let options = ReplayOptions {
        verify_determinism: true,
        ..ReplayOptions::default()
    };
    let summary = replay(&dir, &book, &options, &mut io::sink())
        .unwrap_or_else(|e| panic!("the journal does not replay: {e}"));
    assert!(summary.determinism_verified);
    std::fs::remove_dir_all(&dir).ok();
    Outcome {
        commands_replayed: summary.commands,
        ..outcome
    }
}

fn login(server: &Server, user: &str, password: &str) -> io::Result<Client> {
    let mut c = Client::connect(server.local_addr())?;
    match c.login(user, password, 1)? {
        Received::LoginAccepted { .. } => Ok(c),
        other => Err(io::Error::other(format!("login refused: {other:?}"))),
    }
}

fn run(server: &Server, data: &[u8]) -> io::Result<Outcome> {
    // The other side of the market: a quote each side, so fuzzed orders can trade.
    let mut maker = login(server, "FZ2", "pw2")?;
    maker.limit(1, b'S', 500, "AAPL", MID + 500)?;
    maker.limit(2, b'B', 500, "AAPL", MID - 500)?;
    through_barrier(&mut maker)?;
    let mut c = login(server, "FZ1", "pw1")?;
    drive(&mut c, data, MESSAGES_MAX)
}

/// Sends up to `messages_max` structured messages from `data` on a logged-in session whose
/// next UserRefNum is 1 and whose instrument `AAPL` trades around $150, checking each
/// answer (see the module doc). Also used by `tests/hostile.rs` beside honest sessions.
pub fn drive(c: &mut Client, data: &[u8], messages_max: usize) -> io::Result<Outcome> {
    let mut r = Bytes { data, pos: 0 };
    let mut last_ref = 0u32;
    let mut next_expected = 0u32;
    let mut outcome = Outcome::default();
    while outcome.sent < messages_max {
        // One message in 32 comes after a Debug packet of any length up to the field's
        // 65,535 (most longer than the gateway's packet limit, which a Debug packet may
        // pass), sent in two writes split anywhere: it is ignored, and the message after
        // it is answered as ever.
        if r.u8() < 8 {
            let len = 1 + usize::from(u16::from_be_bytes([r.u8(), r.u8()]) % u16::MAX);
            let mut debug = Vec::with_capacity(2 + len);
            debug.extend_from_slice(&(len as u16).to_be_bytes());
            debug.push(crate::wire::soupbin::kind::DEBUG);
            debug.resize(2 + len, b'.');
            let split = debug.len() * usize::from(r.u8()) / 256;
            c.send_raw(&debug[..split])?;
            c.send_raw(&debug[split..])?;
        }
        let Some(msg) = next_message(&mut r, &mut last_ref) else {
            break;
        };
        c.send_packet(crate::wire::soupbin::kind::UNSEQUENCED, &msg)?;
        outcome.sent += 1;
        let (types, next) = through_barrier(c)?;
        if types.is_empty() {
            return Err(io::Error::other(format!("no answer to {msg:02x?}")));
        }
        if next < next_expected {
            return Err(io::Error::other(format!(
                "next UserRefNum went down from {next_expected} to {next} after {msg:02x?}"
            )));
        }
        next_expected = next;
        outcome.answers += types.len();
        for (kind, code) in types {
            match kind {
                ouch::outbound::REJECTED => {
                    outcome.rejected += 1;
                    let at = usize::from(code);
                    outcome.reject_codes[if at < 32 { at } else { 0 }] += 1;
                }
                ouch::outbound::ACCEPTED => outcome.accepted += 1,
                _ => {}
            }
        }
    }
    Ok(outcome)
}
