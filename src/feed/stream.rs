//! The feed's message stream: journaled market-data events turned into ITCH 5.0 messages,
//! and the store that keeps them for retransmission.
//!
//! The stream is a pure function of the journal (its first segment's creation time and its
//! `Md*` events, in journal order) and the instrument list, so the publisher, a restarted
//! publisher and `ironmatch replay --itch` all produce the same bytes. Messages are kept in
//! file form: a 2-byte big-endian length, then the message. That is both a plain ITCH 5.0
//! file (what Nasdaq distributes) and a run of MoldUDP64 message blocks.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;

use crate::book::{BookConfig, DayEvent, Event, EventBody};
use crate::journal::{Entry, JournalError, Place};
use crate::types::{BookSide, InstrumentId, Timestamp};
use crate::wire::itch::{Body, MESSAGE_LEN_MAX, Message, StockDirectory};

/// One instrument as the feed names it.
#[derive(Clone, Copy, Debug)]
struct Listing {
    stock: [u8; 8],
    round_lot: u32,
    /// The trading state the journal's Trading Actions left, and their reason: what the
    /// directory announces.
    state: u8,
    reason: [u8; 4],
}

/// A displayed order on the book, as the feed has published it.
#[derive(Clone, Copy, Debug)]
struct Shown {
    price: u32,
    shares: u32,
}

/// Why an event cannot be published: the events contradict each other (a journal this
/// build did not write, or a bug).
#[derive(Debug, thiserror::Error)]
#[error("feed: {0}")]
pub struct StreamError(pub String);

/// Turns journaled events into ITCH messages in file form, keeping the set of displayed
/// orders so that every message refers to an order the feed has shown.
#[derive(Debug)]
pub struct Translator {
    listings: Vec<Listing>,
    attribution: bool,
    /// A venue with a trading day: the day's System Events come from the journal.
    scheduled: bool,
    /// The day's start of messages has gone out (from the start without a trading day):
    /// a Trading Action before it (a venue halt the day before ended with, journaled
    /// before the day's `O`) is announced by the directory that follows the `O`, not
    /// ahead of it.
    opened: bool,
    shown: FxHashMap<u64, Shown>,
    messages: u64,
}

/// The blocks (2-byte length, then the message) of framed bytes as [`push_framed`] writes
/// them; stops at a block cut short (never the case for bytes this module wrote).
pub fn blocks(framed: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let prefix = framed.get(at..at + 2)?;
        let len = 2 + usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        let block = framed.get(at..at + len)?;
        at += len;
        Some(block)
    })
}

/// Appends `msg` in file form to `out`.
pub fn push_framed(out: &mut Vec<u8>, msg: &Message) {
    let mut buf = [0u8; MESSAGE_LEN_MAX];
    let len = msg.encode(&mut buf);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&buf[..len]);
}

fn side_byte(side: BookSide) -> u8 {
    match side {
        BookSide::Bid => b'B',
        BookSide::Ask => b'S',
    }
}

impl Translator {
    /// A translator for the instruments of `book`; Stock Locate is the instrument's index
    /// plus one. With `attribution`, adds carry the entering firm (`F`).
    pub fn new(book: &BookConfig, attribution: bool) -> Translator {
        Translator {
            listings: book
                .instruments
                .iter()
                .map(|i| Listing {
                    stock: i.symbol.0,
                    round_lot: i.lot,
                    state: b'T',
                    reason: *b"    ",
                })
                .collect(),
            attribution,
            scheduled: book.scheduled,
            opened: !book.scheduled,
            shown: FxHashMap::default(),
            messages: 0,
        }
    }

    /// Messages produced so far (the stream's last sequence number).
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Displayed orders currently on the book.
    pub fn shown_orders(&self) -> usize {
        self.shown.len()
    }

    fn emit(&mut self, out: &mut Vec<u8>, locate: u16, ts: u64, body: Body) {
        push_framed(
            out,
            &Message {
                locate,
                tracking: 0,
                ts,
                body,
            },
        );
        self.messages += 1;
    }

    /// The start of day, stamped `ts` (see [`preamble_stamp`]). Without a trading day (no
    /// `[venue]`): System Event `O` and `S`, the directory (a Stock Directory and a Trading
    /// Action `T` per instrument), System Event `Q`. With one, nothing: the journal's System
    /// Events carry the day, and the directory follows its `O`.
    pub fn preamble(&mut self, ts: u64, out: &mut Vec<u8>) {
        if self.scheduled {
            return;
        }
        // The journal's creation time (ns since the epoch) as the time of day it was, in
        // UTC as every stamp of a venue without a day.
        let ts = ts % Timestamp::DAY_NS;
        self.emit(out, 0, ts, Body::SystemEvent { code: b'O' });
        self.emit(out, 0, ts, Body::SystemEvent { code: b'S' });
        self.directory(ts, out);
        self.emit(out, 0, ts, Body::SystemEvent { code: b'Q' });
    }

    /// One Stock Directory per instrument, then one Trading Action per instrument: its
    /// state as the journal's Trading Actions left it (`T` unless one came before the
    /// day's start of messages).
    fn directory(&mut self, ts: u64, out: &mut Vec<u8>) {
        for i in 0..self.listings.len() {
            let l = self.listings[i];
            let directory = StockDirectory {
                stock: l.stock,
                market_category: b' ',
                financial_status: b' ',
                round_lot_size: l.round_lot,
                // The engine takes only multiples of the lot.
                round_lots_only: b'Y',
                issue_classification: b'Q',
                issue_subtype: *b"Z ",
                authenticity: b'P',
                short_sale_threshold: b' ',
                ipo_flag: b' ',
                luld_tier: b' ',
                etp_flag: b' ',
                etp_leverage: 0,
                inverse: b'N',
            };
            self.emit(out, locate(i), ts, Body::StockDirectory(directory));
        }
        for i in 0..self.listings.len() {
            let l = self.listings[i];
            let action = Body::TradingAction {
                stock: l.stock,
                state: l.state,
                reserved: b' ',
                reason: l.reason,
            };
            self.emit(out, locate(i), ts, action);
        }
    }

    fn listing(&self, instrument: InstrumentId) -> Result<(u16, [u8; 8]), StreamError> {
        let i = usize::from(instrument.0);
        self.listings
            .get(i)
            .map(|l| (locate(i), l.stock))
            .ok_or_else(|| StreamError(format!("event for unknown instrument {}", instrument.0)))
    }

    fn take(&mut self, md_ref: u64, shares: u32, what: &str) -> Result<Shown, StreamError> {
        let Some(s) = self.shown.get_mut(&md_ref) else {
            return Err(StreamError(format!(
                "{what} of order {md_ref}, not on the feed"
            )));
        };
        if shares > s.shares {
            return Err(StreamError(format!(
                "{what} of {shares} shares of order {md_ref}, which shows {}",
                s.shares
            )));
        }
        s.shares -= shares;
        let now = *s;
        if now.shares == 0 {
            self.shown.remove(&md_ref);
        }
        Ok(now)
    }

    fn add(&mut self, md_ref: u64, price: u32, shares: u32) -> Result<(), StreamError> {
        if shares == 0 || self.shown.insert(md_ref, Shown { price, shares }).is_some() {
            return Err(StreamError(format!("add of order {md_ref} twice or empty")));
        }
        Ok(())
    }

    /// Appends the ITCH messages of one journal record (none for commands and order-entry
    /// events); an event that contradicts the feed so far is an error naming its place.
    pub fn record(
        &mut self,
        place: Place<'_>,
        entry: &Entry,
        out: &mut Vec<u8>,
    ) -> Result<(), JournalError> {
        let Entry::Event(e) = entry else {
            return Ok(());
        };
        self.event(e, out).map_err(|e| JournalError::Diverged {
            path: place.path.to_path_buf(),
            offset: place.offset,
            seq: place.seq,
            detail: e.to_string(),
        })
    }

    /// Appends the ITCH messages of one journaled event (none for order-entry events).
    pub fn event(&mut self, event: &Event, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let ts = event.ts.0;
        match event.body {
            EventBody::MdAdd {
                instrument,
                md_ref,
                side,
                qty,
                price,
                firm,
            } => {
                let (loc, stock) = self.listing(instrument)?;
                let price = price4(price.0)?;
                self.add(md_ref.0, price, qty.0)?;
                let attribution = self.attribution.then_some(firm.0);
                let body = Body::AddOrder {
                    order_ref: md_ref.0,
                    side: side_byte(side),
                    shares: qty.0,
                    stock,
                    price,
                    attribution,
                };
                self.emit(out, loc, ts, body);
            }
            EventBody::MdExecute {
                instrument,
                md_ref,
                qty,
                price,
                match_id,
            } => {
                let (loc, _) = self.listing(instrument)?;
                let shown = self.take(md_ref.0, qty.0, "execution")?;
                let price = price4(price.0)?;
                let body = if price == shown.price {
                    Body::OrderExecuted {
                        order_ref: md_ref.0,
                        shares: qty.0,
                        match_number: match_id.0,
                    }
                } else {
                    Body::OrderExecutedWithPrice {
                        order_ref: md_ref.0,
                        shares: qty.0,
                        match_number: match_id.0,
                        printable: b'Y',
                        price,
                    }
                };
                self.emit(out, loc, ts, body);
            }
            EventBody::MdCancel {
                instrument,
                md_ref,
                qty,
            } => {
                let (loc, _) = self.listing(instrument)?;
                self.take(md_ref.0, qty.0, "cancel")?;
                let body = Body::OrderCancel {
                    order_ref: md_ref.0,
                    shares: qty.0,
                };
                self.emit(out, loc, ts, body);
            }
            EventBody::MdDelete { instrument, md_ref } => {
                let (loc, _) = self.listing(instrument)?;
                if self.shown.remove(&md_ref.0).is_none() {
                    return Err(StreamError(format!(
                        "delete of order {}, not on the feed",
                        md_ref.0
                    )));
                }
                self.emit(
                    out,
                    loc,
                    ts,
                    Body::OrderDelete {
                        order_ref: md_ref.0,
                    },
                );
            }
            EventBody::MdReplace {
                instrument,
                old_md_ref,
                new_md_ref,
                qty,
                price,
            } => {
                let (loc, _) = self.listing(instrument)?;
                if self.shown.remove(&old_md_ref.0).is_none() {
                    return Err(StreamError(format!(
                        "replace of order {}, not on the feed",
                        old_md_ref.0
                    )));
                }
                let price = price4(price.0)?;
                self.add(new_md_ref.0, price, qty.0)?;
                let body = Body::OrderReplace {
                    old_ref: old_md_ref.0,
                    new_ref: new_md_ref.0,
                    shares: qty.0,
                    price,
                };
                self.emit(out, loc, ts, body);
            }
            EventBody::MdTrade {
                instrument,
                side,
                qty,
                price,
                match_id,
            } => {
                let (loc, stock) = self.listing(instrument)?;
                let body = Body::Trade {
                    // The hidden order was never published: its reference means nothing.
                    order_ref: 0,
                    side: side_byte(side),
                    shares: qty.0,
                    stock,
                    price: price4(price.0)?,
                    match_number: match_id.0,
                };
                self.emit(out, loc, ts, body);
            }
            EventBody::SystemEvent { event: day } => {
                self.emit(out, 0, ts, Body::SystemEvent { code: day.code() });
                if day == DayEvent::StartOfMessages {
                    self.opened = true;
                    self.directory(ts, out);
                }
            }
            EventBody::TradingAction {
                instrument,
                state,
                reason,
            } => {
                let (loc, stock) = self.listing(instrument)?;
                let listing = &mut self.listings[usize::from(loc) - 1];
                listing.state = state.code();
                listing.reason = reason;
                if !self.opened {
                    return Ok(());
                }
                let body = Body::TradingAction {
                    stock,
                    state: state.code(),
                    reserved: b' ',
                    reason,
                };
                self.emit(out, loc, ts, body);
            }
            _ => {}
        }
        Ok(())
    }
}

fn locate(index: usize) -> u16 {
    // The configuration limits instruments far below u16::MAX.
    u16::try_from(index + 1).unwrap_or(u16::MAX)
}

fn price4(price: u64) -> Result<u32, StreamError> {
    u32::try_from(price).map_err(|_| StreamError(format!("price {price} does not fit price4")))
}

/// Messages between two entries of the store's sparse index.
const INDEX_STRIDE: u64 = 64;

/// The stream's messages on disk (a plain ITCH 5.0 file), with a sparse index to find a
/// sequence number: what the retransmission server answers from. Written and read by the
/// publisher thread only.
#[derive(Debug)]
pub struct FeedStore {
    path: PathBuf,
    file: File,
    len: u64,
    messages: u64,
    /// Byte offset of message `k * INDEX_STRIDE + 1`.
    index: Vec<u64>,
    read_buf: Vec<u8>,
}

impl FeedStore {
    /// Creates (or truncates) the store at `path`: the stream is always rebuilt from the
    /// journal, so what a previous run left there is not trusted.
    pub fn create(path: &Path) -> io::Result<FeedStore> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(FeedStore {
            path: path.to_path_buf(),
            file,
            len: 0,
            messages: 0,
            index: Vec::new(),
            read_buf: Vec::new(),
        })
    }

    /// Where the store is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Messages stored: the last sequence number.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Appends framed messages (whole blocks, as [`Translator`] writes them).
    pub fn append(&mut self, framed: &[u8]) -> io::Result<()> {
        let mut at = 0usize;
        for block in blocks(framed) {
            if self.messages.is_multiple_of(INDEX_STRIDE) {
                self.index.push(self.len + at as u64);
            }
            at += block.len();
            self.messages += 1;
        }
        self.file.write_all(framed)?;
        self.len += framed.len() as u64;
        Ok(())
    }

    /// Framed messages from sequence number `first` on, as many as fit in `bytes_max`
    /// bytes and at most `count_max`: the blocks of one retransmission packet. Empty if
    /// `first` is 0 or beyond the stream.
    pub fn read(
        &mut self,
        first: u64,
        count_max: u64,
        bytes_max: usize,
    ) -> io::Result<(&[u8], u64)> {
        if first == 0 || first > self.messages || count_max == 0 {
            return Ok((&[], 0));
        }
        let slot = (first - 1) / INDEX_STRIDE;
        let start = self.index[slot as usize];
        let skip = (first - 1) % INDEX_STRIDE;
        // Enough for the messages skipped and the packet, capped at the file's end.
        let want = (skip as usize + 1) * (2 + MESSAGE_LEN_MAX) + bytes_max;
        let end = (start + want as u64).min(self.len);
        self.read_buf.resize((end - start) as usize, 0);
        self.file.read_exact_at(&mut self.read_buf, start)?;
        let buf = &self.read_buf;
        let mut at = 0usize;
        for _ in 0..skip {
            at += 2 + usize::from(u16::from_be_bytes([buf[at], buf[at + 1]]));
        }
        let from = at;
        let mut count = 0u64;
        let available = self.messages - first + 1;
        while count < count_max.min(available) && at + 2 <= buf.len() {
            let block = 2 + usize::from(u16::from_be_bytes([buf[at], buf[at + 1]]));
            if at + block > buf.len() || at + block - from > bytes_max {
                break;
            }
            at += block;
            count += 1;
        }
        Ok((&self.read_buf[from..at], count))
    }
}

/// What the start of day is stamped with, from the journal's creation time: that time on
/// one node; in a cluster midnight (`at_midnight`), ITCH time 0, because each node's
/// journal was created at its own moment while the feed must be the same bytes on every
/// node (a listener fills a gap from whichever node leads). The journal's feed settings
/// keep which of the two its first run used ([`FeedSettings::start_at_midnight`](super::FeedSettings::start_at_midnight)).
pub fn preamble_stamp(created_ns: u64, at_midnight: bool) -> u64 {
    if at_midnight { 0 } else { created_ns }
}

/// Writes the journal's whole feed to `out` as a plain ITCH 5.0 file: the very bytes the
/// live feed carried (and the publisher's store holds). Returns the message count.
pub fn export_itch(
    dir: &Path,
    book: &BookConfig,
    attribution: bool,
    at_midnight: bool,
    out: &mut impl Write,
) -> Result<u64, crate::journal::JournalError> {
    use crate::journal::{fingerprint, first_header, scan_journal};
    let io_error = |source: io::Error| JournalError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let header = first_header(dir)?.ok_or_else(|| {
        io_error(io::Error::new(
            io::ErrorKind::NotFound,
            "no journal segment",
        ))
    })?;
    let mut translator = Translator::new(book, attribution);
    let mut buf = Vec::with_capacity(1 << 20);
    translator.preamble(preamble_stamp(header.created_ns, at_midnight), &mut buf);
    scan_journal(dir, Some(fingerprint(book)), false, None, |place, entry| {
        translator.record(place, entry, &mut buf)?;
        if buf.len() >= 1 << 20 {
            out.write_all(&buf).map_err(io_error)?;
            buf.clear();
        }
        Ok(())
    })?;
    out.write_all(&buf).map_err(io_error)?;
    out.flush().map_err(io_error)?;
    Ok(translator.messages())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::flow::test_config;
    use crate::types::{Firm, MatchId, OrderId, Price, Qty};
    use crate::wire::itch::file_messages;

    fn decoded(bytes: &[u8]) -> Vec<Message> {
        file_messages(bytes)
            .map(|m| Message::decode(m.unwrap()).unwrap())
            .collect()
    }

    /// An event in the last hour of a 25-hour day.
    fn ev(body: EventBody) -> Event {
        Event {
            ts: Timestamp(Timestamp::DAY_NS + 5),
            body,
        }
    }

    #[test]
    fn preamble_lists_every_instrument() {
        let book = test_config(crate::book::StpMode::CancelResting);
        let mut t = Translator::new(&book, false);
        let mut out = Vec::new();
        t.preamble(3 * Timestamp::DAY_NS + 7, &mut out);
        let msgs = decoded(&out);
        let n = book.instruments.len();
        assert_eq!(msgs.len(), 3 + 2 * n);
        assert_eq!(t.messages(), msgs.len() as u64);
        assert!(msgs.iter().all(|m| m.ts == 7), "ns since midnight");
        let kinds: String = msgs.iter().map(|m| m.body.kind() as char).collect();
        assert_eq!(kinds, format!("SS{}{}S", "R".repeat(n), "H".repeat(n)));
        assert_eq!(msgs[2].locate, 1);
        let Body::StockDirectory(d) = msgs[2].body else {
            panic!("a Stock Directory");
        };
        assert_eq!(
            d.stock, book.instruments[0].symbol.0,
            "locate 1 is the first instrument"
        );
    }

    #[test]
    fn events_become_itch_with_the_right_choices() {
        let book = test_config(crate::book::StpMode::CancelResting);
        let instrument = InstrumentId(0);
        let mut t = Translator::new(&book, true);
        let mut out = Vec::new();
        let add = |r: u64, qty: u32, price: u64| {
            ev(EventBody::MdAdd {
                instrument,
                md_ref: OrderId(r),
                side: BookSide::Bid,
                qty: Qty(qty),
                price: Price(price),
                firm: Firm(*b"MMA "),
            })
        };
        t.event(&add(10, 100, 5000), &mut out).unwrap();
        let exec = |r: u64, qty: u32, price: u64| {
            ev(EventBody::MdExecute {
                instrument,
                md_ref: OrderId(r),
                qty: Qty(qty),
                price: Price(price),
                match_id: MatchId(1),
            })
        };
        t.event(&exec(10, 30, 5000), &mut out).unwrap();
        t.event(&exec(10, 30, 4900), &mut out).unwrap();
        // Hidden executions are trades without a reference; order-entry events add nothing.
        let trade = EventBody::MdTrade {
            instrument,
            side: BookSide::Ask,
            qty: Qty(5),
            price: Price(5000),
            match_id: MatchId(2),
        };
        t.event(&ev(trade), &mut out).unwrap();
        let query = EventBody::AccountQueried {
            owner: crate::types::OwnerId(0),
            next_user_ref: crate::types::UserRef(1),
        };
        t.event(&ev(query), &mut out).unwrap();
        // The rest executes: the order is gone, so a later delete is an error.
        t.event(&exec(10, 40, 5000), &mut out).unwrap();
        assert_eq!(t.shown_orders(), 0);
        let kinds: String = decoded(&out)
            .iter()
            .map(|m| m.body.kind() as char)
            .collect();
        assert_eq!(kinds, "FECPE");
        // Stamps count from the venue's midnight as the events do, past 24 hours on a day
        // of 25 (the fall-back day): not wrapped to the early hours.
        assert!(decoded(&out).iter().all(|m| m.ts == Timestamp::DAY_NS + 5));
        assert!(matches!(
            decoded(&out)[2].body,
            Body::OrderExecutedWithPrice { price: 4900, .. }
        ));
        let delete = EventBody::MdDelete {
            instrument,
            md_ref: OrderId(10),
        };
        assert!(t.event(&ev(delete), &mut out).is_err());
        assert!(t.event(&exec(11, 1, 1), &mut out).is_err());
        t.event(&add(12, 10, 5000), &mut out).unwrap();
        assert!(
            t.event(&exec(12, 11, 5000), &mut out).is_err(),
            "more than shown"
        );
    }

    #[test]
    fn store_reads_any_range_within_the_packet_limit() {
        let dir = std::env::temp_dir().join(format!("ironmatch-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut store = FeedStore::create(&dir.join("feed.itch")).unwrap();
        // 300 messages of growing size, appended in uneven batches.
        let mut all = Vec::new();
        let mut batch = Vec::new();
        for i in 1..=300u64 {
            let len = 11 + (i % 30) as usize;
            batch.extend_from_slice(&(len as u16).to_be_bytes());
            batch.push(b'z');
            batch.extend_from_slice(&i.to_be_bytes());
            batch.extend(std::iter::repeat_n(0u8, len - 9));
            if i % 7 == 0 || i == 300 {
                store.append(&batch).unwrap();
                all.extend_from_slice(&batch);
                batch.clear();
            }
        }
        assert_eq!(store.messages(), 300);
        let blocks: Vec<&[u8]> = file_messages(&all).map(Result::unwrap).collect();
        for first in [1u64, 2, 63, 64, 65, 128, 200, 299, 300] {
            let (bytes, count) = store.read(first, 10, 200).unwrap();
            let bytes = bytes.to_vec();
            assert!(count >= 1 && bytes.len() <= 200);
            let got: Vec<&[u8]> = file_messages(&bytes).map(Result::unwrap).collect();
            assert_eq!(got.len() as u64, count);
            assert_eq!(got[..], blocks[first as usize - 1..][..count as usize]);
        }
        assert_eq!(store.read(0, 5, 200).unwrap().1, 0);
        assert_eq!(store.read(301, 5, 200).unwrap().1, 0);
        assert_eq!(store.read(299, 5, 1400).unwrap().1, 2, "not past the end");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
