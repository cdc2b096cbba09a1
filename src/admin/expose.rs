//! What the endpoint shows (admin thread): the stages' metrics as Prometheus text (encoded
//! by `prometheus-client` from the atomics at scrape time) and as JSON for `/status`.
//!
//! Nothing here writes to what the stages publish; every value is read with relaxed loads
//! (a book's top through its sequence number), so a scrape never slows a stage.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use serde_json::{Value, json};

use super::EngineView;
use super::metrics::{
    BookTop, CounterSet, HistogramSnapshot, OUCH_INBOUND, OUCH_OUTBOUND, ouch_type_of,
};
use crate::types::Price;

/// Nanoseconds per second, for durations shown in seconds.
const NS_PER_S: f64 = 1e9;

/// A registry whose only collector reads `view` at each scrape; metric names start with
/// `ironmatch_`.
pub fn registry(view: Arc<EngineView>) -> Registry {
    let mut registry = Registry::with_prefix("ironmatch");
    registry.register_collector(Box::new(EngineCollector(view)));
    registry
}

/// Encodes the engine's metrics from the atomics at each scrape.
#[derive(Debug)]
struct EngineCollector(Arc<EngineView>);

/// A histogram read at one moment, and what its values are divided by when shown (1e9:
/// nanoseconds shown as seconds).
struct Scaled<'a>(&'a HistogramSnapshot, f64);

impl Scaled<'_> {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> fmt::Result {
        let Scaled(h, scale) = *self;
        let buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .map(|b| *b as f64 / scale)
            .chain(std::iter::once(f64::INFINITY))
            .zip(h.buckets.iter().copied())
            .collect();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum as f64 / scale,
            h.count(),
            &buckets,
            None,
        )
    }
}

/// One counter family with one label, from a [`CounterSet`].
fn counter_set(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    set: &CounterSet,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in set.values() {
        let labels = [(label, value)];
        ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// OUCH message counts by type letter and name.
fn ouch_counts(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    set: &CounterSet,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (message, count) in set.values() {
        let letter = ouch_type_of(message).map(String::from).unwrap_or_default();
        let labels = [("type", letter.as_str()), ("message", message)];
        ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let view = &*self.0;
        let m = &*view.metrics;
        {
            let mut info = encoder.encode_descriptor(
                "build",
                "The engine's version and threading mode (value 1).",
                None,
                MetricType::Info,
            )?;
            info.encode_info(&[
                ("version", env!("CARGO_PKG_VERSION")),
                ("threading", view.threading),
            ])?;
        }
        let uptime = m.started.elapsed().as_secs_f64();
        ConstGauge::new(uptime).encode(encoder.encode_descriptor(
            "uptime",
            "Time since the engine started.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?)?;

        // 1 + 4: the gateway.
        let g = &m.gateway;
        ouch_counts(
            &mut encoder,
            "ouch_messages_in",
            "OUCH messages received from sessions, by type.",
            &g.messages_in,
        )?;
        ouch_counts(
            &mut encoder,
            "ouch_messages_out",
            "OUCH messages sequenced for sessions, by type.",
            &g.messages_out,
        )?;
        ConstGauge::new(g.sessions_connected.get() as i64).encode(encoder.encode_descriptor(
            "sessions_connected",
            "Sessions logged in now.",
            None,
            MetricType::Gauge,
        )?)?;
        self.encode_sessions(&mut encoder)?;
        self.encode_admission(&mut encoder)?;

        // 2: the matcher.
        let mm = &m.matcher;
        counter_set(
            &mut encoder,
            "commands",
            "Commands the matcher applied, by kind.",
            "kind",
            &mm.commands,
        )?;
        counter_set(
            &mut encoder,
            "rejects",
            "Requests rejected, by reason.",
            "reason",
            &mm.rejects,
        )?;
        counter_set(
            &mut encoder,
            "cancels",
            "Cancel events (partial or whole), by reason.",
            "reason",
            &mm.cancels,
        )?;
        self.encode_instruments(&mut encoder)?;

        // 3: the journal writer.
        let j = &m.journal;
        ConstCounter::new(j.records.get()).encode(encoder.encode_descriptor(
            "journal_records",
            "Journal records written (commands and events).",
            None,
            MetricType::Counter,
        )?)?;
        ConstCounter::new(j.bytes.get()).encode(encoder.encode_descriptor(
            "journal_written",
            "Bytes written to the journal.",
            Some(&Unit::Bytes),
            MetricType::Counter,
        )?)?;
        Scaled(&j.batch_records.snapshot(), 1.0).encode(encoder.encode_descriptor(
            "journal_batch_records",
            "Records per journal batch (one write each).",
            None,
            MetricType::Histogram,
        )?)?;
        Scaled(&j.write_ns.snapshot(), NS_PER_S).encode(encoder.encode_descriptor(
            "journal_write_duration",
            "Duration of each journal batch's write.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?)?;
        Scaled(&j.fsync_ns.snapshot(), NS_PER_S).encode(encoder.encode_descriptor(
            "journal_fsync_duration",
            "Duration of each journal fdatasync (per batch with fsync = always, and at each segment rotation).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?)?;

        self.encode_latency(&mut encoder)?;
        self.encode_rings(&mut encoder)
    }
}

impl EngineCollector {
    fn encode_sessions(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let view = &*self.0;
        let sessions = &view.metrics.gateway.sessions;
        let mut family = encoder.encode_descriptor(
            "session_logged_in",
            "1 while a connection is logged in as the user.",
            None,
            MetricType::Gauge,
        )?;
        for (user, s) in view.users.iter().zip(sessions.iter()) {
            let labels = [("user", user.as_str())];
            ConstGauge::new(s.logged_in.get() as i64).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "session_messages",
            "Sequenced messages stored for the user today (the next outbound sequence number is one more).",
            None,
            MetricType::Gauge,
        )?;
        for (user, s) in view.users.iter().zip(sessions.iter()) {
            let labels = [("user", user.as_str())];
            ConstGauge::new(s.messages.get() as i64).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn encode_admission(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let a = self.0.admission.stats();
        for (name, help, value) in [
            (
                "connections_accepted",
                "TCP connections accepted by the gateway.",
                a.accepted,
            ),
            (
                "connections_evicted",
                "Pending connections closed to admit newer ones (pending_max or pending_per_address_max).",
                a.evicted + a.evicted_same_address,
            ),
            (
                "connections_refused",
                "New connections closed at once for want of a pending slot.",
                a.refused,
            ),
            (
                "login_timeouts",
                "Connections closed for not logging in within login_timeout_ms.",
                a.login_timeouts,
            ),
            ("logins", "Logins accepted.", a.logins),
            ("logins_rejected", "Logins rejected.", a.logins_rejected),
        ] {
            ConstCounter::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        Ok(())
    }

    fn encode_instruments(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let view = &*self.0;
        let instruments = &view.metrics.matcher.instruments;
        let by_symbol = || view.symbols.iter().zip(instruments.iter());
        let mut family = encoder.encode_descriptor(
            "trades",
            "Trades (matches), by instrument.",
            None,
            MetricType::Counter,
        )?;
        for (symbol, i) in by_symbol() {
            let labels = [("symbol", symbol.as_str())];
            ConstCounter::new(i.trades.get()).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "shares_traded",
            "Shares traded, by instrument.",
            None,
            MetricType::Counter,
        )?;
        for (symbol, i) in by_symbol() {
            let labels = [("symbol", symbol.as_str())];
            ConstCounter::new(i.shares.get()).encode(family.encode_family(&labels)?)?;
        }
        let tops: Vec<BookTop> = instruments
            .iter()
            .map(|i| i.top.read().unwrap_or_default())
            .collect();
        let mut family = encoder.encode_descriptor(
            "trading_state",
            "1 for the trading state in force for the instrument (the venue halt counts), 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        for (symbol, top) in view.symbols.iter().zip(&tops) {
            for (code, name) in STATES {
                let labels = [("symbol", symbol.as_str()), ("state", name)];
                ConstGauge::new(i64::from(top.state == code))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "resting_orders",
            "Orders resting in the book (displayed, reserve and hidden), as of the matcher's last publication (at most 100 ms old).",
            None,
            MetricType::Gauge,
        )?;
        for (symbol, top) in view.symbols.iter().zip(&tops) {
            let labels = [("symbol", symbol.as_str())];
            ConstGauge::new(top.resting_orders as i64).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "best_price",
            "Best bid and offer price, by instrument and side (absent when that side is empty).",
            None,
            MetricType::Gauge,
        )?;
        for (symbol, top) in view.symbols.iter().zip(&tops) {
            for (side, level) in [("bid", top.bid), ("ask", top.ask)] {
                if let Some((price, _, _)) = level {
                    let labels = [("symbol", symbol.as_str()), ("side", side)];
                    ConstGauge::new(price as f64 / Price::SCALE as f64)
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "best_open_shares",
            "Shares open at the best bid and offer (displayed, reserve and hidden), by instrument and side.",
            None,
            MetricType::Gauge,
        )?;
        for (symbol, top) in view.symbols.iter().zip(&tops) {
            for (side, level) in [("bid", top.bid), ("ask", top.ask)] {
                let labels = [("symbol", symbol.as_str()), ("side", side)];
                let open = level.map_or(0, |(_, _, open)| open);
                ConstGauge::new(open as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn encode_latency(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let m = &self.0.metrics;
        let mut family = encoder.encode_descriptor(
            "stage_latency",
            "Latency per pipeline stage: receipt_to_match (gateway receipt to the matcher batch), match_to_journaled (end of the matcher batch to the end of the journal write), journaled_to_written (journal release to the egress round that writes to the socket).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (stage, h) in [
            ("receipt_to_match", &m.matcher.receipt_to_match),
            ("match_to_journaled", &m.journal.match_to_journaled),
            ("journaled_to_written", &m.gateway.journaled_to_written),
        ] {
            let labels = [("stage", stage)];
            Scaled(&h.snapshot(), NS_PER_S).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "latency_marks_dropped",
            "Batch marks that found their queue full, so their records are missing from stage_latency (expected 0).",
            None,
            MetricType::Counter,
        )?;
        for (stage, marks) in [
            ("match_to_journaled", &m.to_journal_marks),
            ("journaled_to_written", &m.to_egress_marks),
        ] {
            let labels = [("stage", stage)];
            ConstCounter::new(marks.dropped.get()).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn encode_rings(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let rings = &self.0.rings;
        let mut family = encoder.encode_descriptor(
            "ring_depth",
            "Records waiting in each ring between stages.",
            None,
            MetricType::Gauge,
        )?;
        for (name, ring) in rings {
            let labels = [("ring", *name)];
            ConstGauge::new(ring.len() as i64).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "ring_capacity",
            "Records each ring between stages holds.",
            None,
            MetricType::Gauge,
        )?;
        for (name, ring) in rings {
            let labels = [("ring", *name)];
            ConstGauge::new(ring.capacity() as i64).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Trading states by their ITCH Stock Trading Action code.
const STATES: [(u8, &str); 4] = [
    (b'T', "trading"),
    (b'H', "halted"),
    (b'P', "paused"),
    (b'Q', "quotation_only"),
];

/// The name of a trading state code (`None` before the matcher's first publication).
fn state_name(code: u8) -> Option<&'static str> {
    STATES.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// A price as the decimal text OUCH clients know ("150.2500").
fn price_text(ticks: u64) -> String {
    Price(ticks).to_string()
}

fn level_json(level: Option<(u64, u64, u64)>) -> Value {
    match level {
        Some((price, shown, open)) => json!({
            "price": price_text(price),
            "shown_shares": shown,
            "open_shares": open,
        }),
        None => Value::Null,
    }
}

fn counts_json(set: &CounterSet) -> Value {
    Value::Object(
        set.values()
            .map(|(name, count)| (name.to_string(), json!(count)))
            .collect(),
    )
}

fn histogram_json(h: &HistogramSnapshot, scale: f64) -> Value {
    let buckets: Vec<Value> = h
        .bounds
        .iter()
        .map(|b| json!(*b as f64 / scale))
        // The last bucket has no upper bound: `null` (a number for every other bound, so
        // a typed reader takes the list as optional numbers).
        .chain(std::iter::once(Value::Null))
        .zip(h.buckets.iter())
        .map(|(le, count)| json!({ "le": le, "count": count }))
        .collect();
    json!({
        "count": h.count(),
        "sum": h.sum as f64 / scale,
        "buckets": buckets,
    })
}

/// `/status`: the same numbers as `/metrics`, plus each instrument's top of book and
/// state and each session's state and sequence numbers.
pub fn status_json(view: &EngineView) -> Value {
    let m = &*view.metrics;
    let instruments: Vec<Value> = view
        .symbols
        .iter()
        .zip(m.matcher.instruments.iter())
        .map(|(symbol, i)| {
            let top = i.top.read();
            json!({
                "symbol": symbol,
                "state": top.and_then(|t| state_name(t.state)),
                "bid": level_json(top.and_then(|t| t.bid)),
                "ask": level_json(top.and_then(|t| t.ask)),
                "resting_orders": top.map(|t| t.resting_orders),
                "book_as_of_ns": top.map(|t| t.as_of_ns),
                "trades": i.trades.get(),
                "shares_traded": i.shares.get(),
            })
        })
        .collect();
    let sessions: Vec<Value> = view
        .users
        .iter()
        .zip(m.gateway.sessions.iter())
        .map(|(user, s)| {
            let messages = s.messages.get();
            json!({
                "user": user,
                "logged_in": s.logged_in.get() == 1,
                "next_outbound_seq": messages + 1,
                "messages_stored": messages,
            })
        })
        .collect();
    let a = view.admission.stats();
    let j = &m.journal;
    json!({
        "engine": {
            "version": env!("CARGO_PKG_VERSION"),
            "threading": view.threading,
            "uptime_seconds": m.started.elapsed().as_secs_f64(),
        },
        "venue": {
            "trading_day": view.day.as_ref().map(|d| d.0.clone()),
            "session": view.day.as_ref().map(|d| d.1.clone()),
            "phase": crate::admin::metrics::phase_name(m.matcher.day_phase.get()),
            "venue_halted": m.matcher.venue_halted.get() == 1,
        },
        "instruments": instruments,
        "sessions": sessions,
        "counters": {
            "ouch_messages_in": by_letter(&m.gateway.messages_in, &OUCH_INBOUND),
            "ouch_messages_out": by_letter(&m.gateway.messages_out, &OUCH_OUTBOUND),
            "sessions_connected": m.gateway.sessions_connected.get(),
            "commands": counts_json(&m.matcher.commands),
            "rejects": counts_json(&m.matcher.rejects),
            "cancels": counts_json(&m.matcher.cancels),
            "trades": m.matcher.instruments.iter().map(|i| i.trades.get()).sum::<u64>(),
            "shares_traded": m.matcher.instruments.iter().map(|i| i.shares.get()).sum::<u64>(),
            "journal_records": j.records.get(),
            "journal_written_bytes": j.bytes.get(),
            "latency_marks_dropped": {
                "match_to_journaled": m.to_journal_marks.dropped.get(),
                "journaled_to_written": m.to_egress_marks.dropped.get(),
            },
            "connections": {
                "accepted": a.accepted,
                "evicted": a.evicted + a.evicted_same_address,
                "refused": a.refused,
                "login_timeouts": a.login_timeouts,
                "logins": a.logins,
                "logins_rejected": a.logins_rejected,
            },
        },
        "rings": view.rings.iter().map(|(name, ring)| json!({
            "ring": name,
            "depth": ring.len(),
            "capacity": ring.capacity(),
        })).collect::<Vec<_>>(),
        "latency_seconds": {
            "receipt_to_match": histogram_json(&m.matcher.receipt_to_match.snapshot(), NS_PER_S),
            "match_to_journaled": histogram_json(&m.journal.match_to_journaled.snapshot(), NS_PER_S),
            "journaled_to_written": histogram_json(&m.gateway.journaled_to_written.snapshot(), NS_PER_S),
        },
        "journal": {
            "batch_records": histogram_json(&j.batch_records.snapshot(), 1.0),
            "write_seconds": histogram_json(&j.write_ns.snapshot(), NS_PER_S),
            "fsync_seconds": histogram_json(&j.fsync_ns.snapshot(), NS_PER_S),
        },
    })
}

/// OUCH counts keyed by type letter: `{"O": {"message": "enter_order", "count": 3}, ...}`.
fn by_letter(set: &CounterSet, types: &[(u8, &str)]) -> Value {
    Value::Object(
        types
            .iter()
            .zip(set.values())
            .map(|((letter, _), (name, count))| {
                (
                    char::from(*letter).to_string(),
                    json!({ "message": name, "count": count }),
                )
            })
            .collect(),
    )
}
