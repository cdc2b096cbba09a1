//! `ironmatch replay`: verify a journal, rebuild the books, audit one order, export.
//!
//! Runs on the caller's thread, read-only (a torn tail is reported, not repaired). Every
//! CRC and sequence number is checked; the commands are re-run through a fresh matcher
//! built from the configuration (whose fingerprint must match the journal's).

use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

use crate::book::{BookConfig, Command, CommandBody, Event, EventBody, Matcher};
use crate::journal::{self, Entry, JournalError};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::types::{OrderId, OwnerId, Symbol, Timestamp, UserRef};

/// What to do besides verifying and rebuilding.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// Require the re-run's events to equal the journaled ones, byte for byte.
    pub verify_determinism: bool,
    /// Stop after this sequence number.
    pub until: Option<u64>,
    /// Print only this instrument's book.
    pub book: Option<Symbol>,
    /// Levels to print per side.
    pub depth: usize,
    /// Audit trail of one order: (user index, reference).
    pub order: Option<(OwnerId, UserRef)>,
    /// Machine-readable output.
    pub json: bool,
}

/// Totals of a replay.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    /// Records read.
    pub records: u64,
    /// Commands among them.
    pub commands: u64,
    /// Events among them.
    pub events: u64,
    /// Orders accepted.
    pub orders: u64,
    /// Trades (matches).
    pub trades: u64,
    /// Instruments configured.
    pub instruments: usize,
    /// First command's timestamp, ns since midnight.
    pub first_ts: Option<u64>,
    /// Last command's timestamp.
    pub last_ts: Option<u64>,
    /// Last sequence number read.
    pub last_seq: u64,
    /// Whether the re-run matched every journaled event.
    pub determinism_verified: bool,
    /// Snapshots found equal to the replayed state at their sequence number.
    pub snapshots_verified: u64,
    /// Snapshot files that do not load (recovery skips them).
    pub snapshots_damaged: u64,
    /// Snapshot files of another journal or book configuration (recovery skips them).
    pub snapshots_foreign: u64,
    /// Snapshots of this journal that load but differ from the replayed state where they
    /// were taken (recovery does not use them: it replays the whole journal instead).
    pub snapshots_differing: u64,
    /// Lines of the audit of `--order` (commands, causes and events).
    pub audited: u64,
    /// A torn tail at the end of the last segment (a write cut short by a crash, never
    /// acknowledged): left as it is, not replayed; `serve` cuts it at its next start.
    pub torn: Option<TornTail>,
    /// With `until`: the command whose events `until` cut (its sequence number, and how
    /// many of its events come after `until`). The command was re-run whole, so the books
    /// hold all its effects while the counts stop at `until`.
    pub until_inside: Option<(u64, u64)>,
    /// The journal holds the mark of a failed `fdatasync` (warned of on stderr).
    pub sync_failed: bool,
    /// An engine held the journal's lock when the replay began (warned of on stderr): it
    /// may have been writing, so a torn tail can be its batch in the middle of its write.
    pub in_use: bool,
}

/// Where a torn tail starts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TornTail {
    /// The segment file.
    pub path: String,
    /// Offset of the first byte not replayed.
    pub offset: u64,
    /// Bytes from there to the file's end.
    pub bytes: u64,
}

/// Whether command `c` names the audited order: one of `owner`'s references in `chain`
/// (the order's replace chain). A mass cancel or a disconnect is shown only as the cause of
/// a cancel of the order, like another user's command that traded with it.
///
/// A replace is the order's only if it replaces one of the chain's references: a replace
/// that took gave its new reference a link in the chain from the one it replaced, so a
/// replace naming a chain's reference only as its new one did not take (OUCH leaves the
/// reference of a failed replace free, and a later order may use it) or named a reference
/// in use. It is another order's, and so are its events ([`foreign_replace`]).
fn touches_command(c: &Command, owner: OwnerId, chain: &FxHashSet<UserRef>) -> bool {
    c.owner == owner
        && match &c.body {
            CommandBody::New(o) => chain.contains(&o.user_ref),
            CommandBody::Cancel { user_ref, .. } | CommandBody::Modify { user_ref, .. } => {
                chain.contains(user_ref)
            }
            CommandBody::Replace(x) => chain.contains(&x.orig_user_ref),
            CommandBody::InvalidReplace { orig_user_ref, .. } => chain.contains(orig_user_ref),
            CommandBody::GatewayReject { user_ref, .. } => chain.contains(user_ref),
            CommandBody::Disconnect
            | CommandBody::MassCancel { .. }
            | CommandBody::AccountQuery
            | CommandBody::Venue(_) => false,
        }
}

/// Whether command `c` is a replace of another of `owner`'s orders naming one of the
/// chain's references as its new one (see [`touches_command`]): its answers (a rejection
/// with that reference) are not the audited order's.
fn foreign_replace(c: &Command, owner: OwnerId, chain: &FxHashSet<UserRef>) -> bool {
    c.owner == owner
        && match &c.body {
            CommandBody::Replace(x) => {
                chain.contains(&x.user_ref) && !chain.contains(&x.orig_user_ref)
            }
            CommandBody::InvalidReplace {
                orig_user_ref,
                user_ref,
                ..
            } => chain.contains(user_ref) && !chain.contains(orig_user_ref),
            _ => false,
        }
}

/// Whether command `c` is another request of `owner` reusing a reference the audited order
/// already took (`taken`): a resent Enter Order (a connector's retry after a reconnect)
/// or a Mass Cancel naming it. The matcher rejects it with that reference
/// (`DuplicateUserRef`); neither it nor its rejection is the order's, which was accepted,
/// traded or canceled as the lines before say.
fn reuses_taken_ref(c: &Command, owner: OwnerId, taken: &FxHashSet<UserRef>) -> bool {
    c.owner == owner
        && match &c.body {
            CommandBody::New(o) => taken.contains(&o.user_ref),
            CommandBody::MassCancel { user_ref, .. } => taken.contains(user_ref),
            _ => false,
        }
}

/// Whether event `e` is about the audited order: `owner`'s references in `chain`, or
/// `replacing` (the new reference of a replace of it that did not take, whose rejection
/// answers with it), or its venue and feed ids in `ids`.
fn touches_event(
    e: &Event,
    owner: OwnerId,
    chain: &FxHashSet<UserRef>,
    replacing: Option<UserRef>,
    ids: &FxHashSet<OrderId>,
) -> bool {
    let named = |r: UserRef| chain.contains(&r) || replacing == Some(r);
    match e.body {
        EventBody::Accepted { owner: o, order } => o == owner && named(order.user_ref),
        EventBody::Replaced {
            owner: o,
            orig_user_ref,
            order,
        } => o == owner && (named(order.user_ref) || named(orig_user_ref)),
        EventBody::Rejected {
            owner: o, user_ref, ..
        }
        | EventBody::Canceled {
            owner: o, user_ref, ..
        }
        | EventBody::AiqCanceled {
            owner: o, user_ref, ..
        }
        | EventBody::Executed {
            owner: o, user_ref, ..
        }
        | EventBody::Modified {
            owner: o, user_ref, ..
        }
        | EventBody::CancelRejected { owner: o, user_ref }
        | EventBody::Restated {
            owner: o, user_ref, ..
        }
        | EventBody::Repriced {
            owner: o, user_ref, ..
        } => o == owner && named(user_ref),
        EventBody::MdAdd { md_ref, .. }
        | EventBody::MdExecute { md_ref, .. }
        | EventBody::MdCancel { md_ref, .. }
        | EventBody::MdDelete { md_ref, .. } => ids.contains(&md_ref),
        EventBody::MdReplace {
            old_md_ref,
            new_md_ref,
            ..
        } => ids.contains(&old_md_ref) || ids.contains(&new_md_ref),
        _ => false,
    }
}

/// Every reference `owner`'s order `r` had: a replace gives an order a new reference
/// (OUCH's, unique for the day), so the journal's `Replaced` events link them into one
/// chain, which an audit follows both ways from `r`. Looked up in maps: a quote replaced
/// all day long has a chain of thousands among millions of its owner's replaces.
fn replace_chain(
    dir: &Path,
    book: &BookConfig,
    until: Option<u64>,
    owner: OwnerId,
    r: UserRef,
) -> Result<FxHashSet<UserRef>, JournalError> {
    let mut back: FxHashMap<UserRef, UserRef> = FxHashMap::default();
    let mut forth: FxHashMap<UserRef, UserRef> = FxHashMap::default();
    journal::scan_journal(
        dir,
        Some(journal::fingerprint(book)),
        false,
        until,
        |_, entry| {
            if let Entry::Event(Event {
                body:
                    EventBody::Replaced {
                        owner: o,
                        orig_user_ref,
                        order,
                    },
                ..
            }) = entry
                && *o == owner
            {
                back.insert(order.user_ref, *orig_user_ref);
                forth.insert(*orig_user_ref, order.user_ref);
            }
            Ok(())
        },
    )?;
    let mut chain = FxHashSet::default();
    chain.insert(r);
    // Each step adds a reference not seen yet, so a reference used twice (which OUCH
    // forbids) cannot loop the walks.
    for links in [&back, &forth] {
        let mut at = r;
        while let Some(&next) = links.get(&at) {
            if !chain.insert(next) {
                break;
            }
            at = next;
        }
    }
    Ok(chain)
}

/// Replays the journal in `dir`, writing the report to `out`.
pub fn replay(
    dir: &Path,
    book: &BookConfig,
    options: &ReplayOptions,
    out: &mut impl Write,
) -> Result<Summary, JournalError> {
    // A directory with no journal at all is a mistyped path, not an empty trading day
    // (an engine's journal has a segment from its start).
    let segments = journal::segment_paths(dir).map_err(|source| JournalError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if segments.is_empty() {
        return Err(JournalError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no journal segment (*.imj) here",
            ),
        });
    }
    let sync_failed = warn_if_sync_failed(dir);
    let in_use = warn_if_in_use(dir);
    // What a snapshot must name to be this journal's: its instance and this configuration.
    let owner = (
        journal::first_header(dir)?.map_or(0, |h| h.instance),
        journal::fingerprint(book),
    );
    let mut matcher = Matcher::new(book);
    let mut summary = Summary {
        instruments: book.instruments.len(),
        determinism_verified: options.verify_determinism,
        sync_failed,
        in_use,
        ..Summary::default()
    };
    let mut produced: Vec<Event> = Vec::new();
    let mut next_expected = 0usize;
    let mut ids: FxHashSet<OrderId> = FxHashSet::default();
    // The audited order's references, over its replaces.
    let chain = match options.order {
        Some((owner, r)) => replace_chain(dir, book, options.until, owner, r)?,
        None => FxHashSet::default(),
    };
    // The new reference of the current command if it replaces the audited order.
    let mut replacing: Option<UserRef> = None;
    // The last command that did not name the audited order, until one of its events does.
    let mut cause: Option<(u64, Command)> = None;
    // Whether the current command is another order's replace naming the audited order's
    // reference as its new one: none of its events is the audited order's.
    let mut other_order = false;
    // The chain's references that a command of the audit already introduced (its entry,
    // its replaces): a later request naming one as its own is another's.
    let mut taken: FxHashSet<UserRef> = FxHashSet::default();
    let started = Instant::now();
    // Snapshots are checked against the replayed state where they were taken.
    let mut snapshots = journal::snapshot::snapshot_paths(dir)
        .map_err(|source| JournalError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .into_iter()
        .peekable();
    let mut sessions = vec![0u64; book.owners.len()];
    // The last command's sequence number and the events journaled after it so far.
    let mut last_command = (0u64, 0usize);
    let scan = journal::scan_journal(dir, Some(owner.1), false, options.until, |place, entry| {
        summary.records += 1;
        summary.last_seq = place.seq;
        if summary.records.is_multiple_of(1_000_000) && !options.json {
            eprintln!(
                "replay: {} records, {:.1} M records/s",
                summary.records,
                summary.records as f64 / started.elapsed().as_secs_f64() / 1e6
            );
        }
        match entry {
            Entry::Command(c) => {
                // Every event the re-run gave for the command before must have been
                // journaled before this one. (Only the journal's last command may be
                // short of its events: a crash cut them off, and `serve` journals them
                // on its next start.)
                if options.verify_determinism && next_expected < produced.len() {
                    return Err(JournalError::Diverged {
                        path: place.path.to_path_buf(),
                        offset: place.offset,
                        seq: place.seq,
                        detail: format!(
                            "the command before has {} journaled events, the re-run gives {}: first missing {:?}",
                            next_expected,
                            produced.len(),
                            produced[next_expected]
                        ),
                    });
                }
                summary.commands += 1;
                last_command = (place.seq, 0);
                summary.first_ts.get_or_insert(c.ts.0);
                summary.last_ts = Some(c.ts.0);
                produced.clear();
                next_expected = 0;
                matcher.apply(c, &mut produced);
                cause = None;
                replacing = None;
                other_order = false;
                if let Some((owner, _)) = options.order {
                    other_order =
                        foreign_replace(c, owner, &chain) || reuses_taken_ref(c, owner, &taken);
                    if !other_order && touches_command(c, owner, &chain) {
                        match &c.body {
                            CommandBody::New(o) => {
                                taken.insert(o.user_ref);
                            }
                            // Once it took (a Replaced event put it in the chain): a
                            // failed replace leaves its reference free, and a later
                            // request may take it, a mass cancel of this order too.
                            CommandBody::Replace(x) if chain.contains(&x.user_ref) => {
                                taken.insert(x.user_ref);
                            }
                            _ => {}
                        }
                        replacing = match &c.body {
                            CommandBody::Replace(x) if chain.contains(&x.orig_user_ref) => {
                                Some(x.user_ref)
                            }
                            CommandBody::InvalidReplace {
                                orig_user_ref,
                                user_ref,
                                ..
                            } if chain.contains(orig_user_ref) => Some(*user_ref),
                            _ => None,
                        };
                        audit_line(out, options.json, place.seq, "command", c)?;
                        summary.audited += 1;
                    } else {
                        // Printed if one of its events touches the order: another
                        // user's order that traded with it, a cancel by the venue.
                        cause = Some((place.seq, *c));
                    }
                }
            }
            Entry::Event(e) => {
                summary.events += 1;
                last_command.1 += 1;
                match e.body {
                    EventBody::Accepted { .. } => summary.orders += 1,
                    EventBody::Executed {
                        liquidity: crate::book::Liquidity::Removed,
                        ..
                    } => summary.trades += 1,
                    _ => {}
                }
                if options.verify_determinism {
                    let again = produced.get(next_expected);
                    if !again
                        .is_some_and(|a| crate::journal::replays_as_journaled(place.version, a, e))
                    {
                        return Err(JournalError::Diverged {
                            path: place.path.to_path_buf(),
                            offset: place.offset,
                            seq: place.seq,
                            detail: format!("journaled {e:?}, the re-run gives {again:?}"),
                        });
                    }
                    next_expected += 1;
                }
                if let Some((owner, _)) = options.order {
                    if let EventBody::Accepted { owner: o, order }
                    | EventBody::Replaced {
                        owner: o, order, ..
                    } = e.body
                        && o == owner
                        && chain.contains(&order.user_ref)
                    {
                        ids.insert(order.order_id);
                    }
                    if let EventBody::Restated {
                        owner: o,
                        user_ref,
                        md_ref,
                        ..
                    } = e.body
                        && o == owner
                        && chain.contains(&user_ref)
                    {
                        ids.insert(md_ref);
                    }
                    if !other_order && touches_event(e, owner, &chain, replacing, &ids) {
                        // An expiry takes effect at whatever command comes first after
                        // its time: that command is not its cause.
                        let expired = matches!(
                            e.body,
                            EventBody::Canceled {
                                reason: crate::book::CancelReason::Expired,
                                ..
                            }
                        );
                        if let Some((seq, c)) = cause.take()
                            && !expired
                        {
                            audit_line(out, options.json, seq, "cause", &c)?;
                            summary.audited += 1;
                        }
                        audit_line(out, options.json, place.seq, "event", e)?;
                        summary.audited += 1;
                    }
                }
            }
        }
        if let Entry::Event(e) = entry
            && let Some(n) = e
                .body
                .owner()
                .and_then(|o| sessions.get_mut(usize::from(o.0)))
        {
            *n += 1;
        }
        while let Some((seq, path)) = snapshots.next_if(|(seq, _)| *seq <= place.seq) {
            if seq == place.seq {
                check_snapshot(
                    &path,
                    owner,
                    place.seq,
                    &matcher,
                    &sessions,
                    &mut summary,
                    options.verify_determinism,
                )?;
            }
        }
        Ok(())
    })?;
    if options.until.is_some_and(|u| u == summary.last_seq) && produced.len() > last_command.1 {
        summary.until_inside = Some((last_command.0, (produced.len() - last_command.1) as u64));
    }
    summary.torn = scan.torn.map(|(path, offset, bytes)| TornTail {
        path: path.display().to_string(),
        offset,
        bytes,
    });
    // A snapshot of this journal past its last record proves records were lost (recovery
    // removes such a snapshot, whose sequence numbers will be reused, and starts from an
    // older one or from the journal's start). A damaged one proves nothing: recovery skips
    // it with a warning, and so does the report (counted as damaged).
    if options.until.is_none() {
        for (seq, path) in snapshots {
            match load_snapshot(&path, owner) {
                Loaded::Ours(_) => {
                    return Err(JournalError::Ahead {
                        path,
                        seq,
                        end: summary.last_seq,
                    });
                }
                Loaded::Foreign(_) | Loaded::Gone => {}
                Loaded::Damaged(why) => damaged(&path, &why, &mut summary),
            }
        }
    }
    if options.order.is_none() {
        report(out, &summary, &matcher, book, options).map_err(JournalError::Output)?;
    }
    out.flush().map_err(JournalError::Output)?;
    Ok(summary)
}

/// Warns, on stderr, when the journal in `dir` holds the mark of a failed `fdatasync`
/// ([`journal::SYNC_FAILED_NAME`]): `serve` refuses it in the boot that failed, because
/// records written after the last good sync may read back from the page cache without
/// being on disk. A report or an export read from it says nothing of that by itself.
/// Returns whether it warned. Reads only: the mark stays for `serve` to judge.
pub fn warn_if_sync_failed(dir: &Path) -> bool {
    let path = dir.join(journal::SYNC_FAILED_NAME);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return false;
    };
    let error = text.split_once('\n').map_or("", |(_, e)| e).trim();
    eprintln!(
        "replay: warning: {}: an fdatasync of this journal failed ({}); if the machine has not restarted since, records after the last good sync may be read from the page cache and not be on disk",
        path.display(),
        if error.is_empty() {
            "no error recorded"
        } else {
            error
        }
    );
    true
}

/// Warns, on stderr, when an engine holds the journal's lock ([`journal::LOCK_NAME`]):
/// the replay reads a journal being written, whose last batch may be mid-write (reported
/// as a torn tail that the writer is still completing). Returns whether it warned. Takes
/// the lock for a moment when it is free (a `serve` starting then waits for it:
/// [`journal::LOCK_PATIENCE`]); never creates the file.
pub fn warn_if_in_use(dir: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(journal::LOCK_NAME))
    else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!(
                "replay: warning: {}: a running engine holds this journal: it may be writing, and a torn tail may be its batch in the middle of a write",
                dir.display()
            );
            true
        }
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

/// What a snapshot file is to the journal replayed.
enum Loaded {
    /// Of this journal.
    Ours(Box<journal::snapshot::Snapshot>),
    /// Of another journal or configuration (why): it proves nothing about this one.
    Foreign(&'static str),
    /// Removed since it was listed (`serve` keeps the two newest).
    Gone,
    /// It does not load (why).
    Damaged(String),
}

/// Loads the snapshot at `path` and says what it is to the journal `(instance,
/// fingerprint)`: for the snapshots inside the journal (compared with the replayed state)
/// and those past its end (which prove records lost) alike.
fn load_snapshot(path: &Path, (instance, fingerprint): (u64, u64)) -> Loaded {
    let loaded = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| journal::snapshot::decode_snapshot(&b).map_err(|e| e.to_string()));
    match loaded {
        Ok(s) => match s.foreign_to(instance, fingerprint) {
            Some(why) => Loaded::Foreign(why),
            None => Loaded::Ours(Box::new(s)),
        },
        Err(_) if !path.exists() => Loaded::Gone,
        Err(why) => Loaded::Damaged(why),
    }
}

/// Warns of a damaged snapshot and counts it.
fn damaged(path: &Path, why: &str, summary: &mut Summary) {
    eprintln!(
        "replay: warning: {}: damaged snapshot ({why}); recovery skips it",
        path.display()
    );
    summary.snapshots_damaged += 1;
}

/// Compares the snapshot at `path`, if it belongs to the journal `(instance,
/// fingerprint)`, with the replayed state after record `seq`.
fn check_snapshot(
    path: &Path,
    owner: (u64, u64),
    seq: u64,
    matcher: &Matcher,
    sessions: &[u64],
    summary: &mut Summary,
    verify_determinism: bool,
) -> Result<(), JournalError> {
    let snapshot = match load_snapshot(path, owner) {
        Loaded::Ours(s) => s,
        Loaded::Foreign(why) => {
            eprintln!(
                "replay: warning: {}: snapshot {why}; recovery skips it",
                path.display()
            );
            summary.snapshots_foreign += 1;
            return Ok(());
        }
        Loaded::Gone => return Ok(()),
        Loaded::Damaged(why) => {
            damaged(path, &why, summary);
            return Ok(());
        }
    };
    // As recovery does with it: not used, the journal alone decides; warned and counted.
    let differs = if snapshot.body.sessions != sessions {
        Some("session counts")
    } else if snapshot.body.book != matcher.state() {
        Some("books")
    } else {
        None
    };
    match differs {
        // The re-run is checked against what the live engine did: a snapshot of its state
        // that the re-run does not reach is a divergence.
        Some(what) if verify_determinism => {
            return Err(JournalError::Diverged {
                path: path.to_path_buf(),
                offset: 0,
                seq,
                detail: format!("the snapshot's {what} differ from the replayed state"),
            });
        }
        Some(what) => {
            eprintln!(
                "replay: warning: {}: the snapshot's {what} differ from the state replayed to record {seq}; recovery does not use it (it replays the whole journal)",
                path.display()
            );
            summary.snapshots_differing += 1;
        }
        None => summary.snapshots_verified += 1,
    }
    Ok(())
}

/// One line of an audit: `kind` is `command` (names the order), `cause` (a command that
/// does not name it but caused the event after it) or `event`.
fn audit_line<T: std::fmt::Debug + serde::Serialize>(
    out: &mut impl Write,
    json: bool,
    seq: u64,
    kind: &str,
    value: &T,
) -> Result<(), JournalError> {
    if json {
        writeln!(
            out,
            "{{\"seq\":{seq},\"{kind}\":{}}}",
            serde_json::to_string(value).unwrap_or_default()
        )
    } else {
        writeln!(out, "{seq:>12} {kind:7} {value:?}")
    }
    .map_err(JournalError::Output)
}

fn report(
    out: &mut impl Write,
    summary: &Summary,
    matcher: &Matcher,
    book: &BookConfig,
    options: &ReplayOptions,
) -> io::Result<()> {
    let view = matcher.view();
    let mut books = Vec::new();
    for (i, spec) in book.instruments.iter().enumerate() {
        if options.book.is_some_and(|s| s != spec.symbol) {
            continue;
        }
        let levels = |side: usize| -> Vec<(String, u64, usize)> {
            let mut levels: Vec<(String, u64, usize)> = Vec::new();
            for o in &view.sides[i][side] {
                let price = o.price.to_string();
                if let Some(l) = levels.last_mut().filter(|l| l.0 == price) {
                    l.1 += u64::from(o.open);
                    l.2 += 1;
                } else if levels.len() == options.depth {
                    break;
                } else {
                    levels.push((price, u64::from(o.open), 1));
                }
            }
            levels
        };
        books.push((spec.symbol.to_string(), levels(0), levels(1)));
    }
    if options.json {
        let value = serde_json::json!({
            "summary": summary,
            "books": books.iter().map(|(s, b, a)| serde_json::json!({"symbol": s, "bids": b, "asks": a})).collect::<Vec<_>>(),
        });
        return writeln!(out, "{value}");
    }
    let span = |ts: Option<u64>| ts.map_or("-".to_string(), |t| Timestamp(t).to_string());
    writeln!(
        out,
        "records {} (commands {}, events {}), last sequence {}\norders accepted {}, trades {}, instruments {}\ntime span {} .. {}{}",
        summary.records,
        summary.commands,
        summary.events,
        summary.last_seq,
        summary.orders,
        summary.trades,
        summary.instruments,
        span(summary.first_ts),
        span(summary.last_ts),
        if summary.determinism_verified {
            "\ndeterminism: every journaled event equals the re-run's"
        } else {
            ""
        }
    )?;
    if let Some((command, after)) = summary.until_inside {
        writeln!(
            out,
            "--until {} falls among the events of the command at {command}: the books show that command's whole effect, {after} events of which come after {} and are not counted",
            summary.last_seq, summary.last_seq
        )?;
    }
    if let Some(t) = &summary.torn {
        // One write of the journal's writer is one batch, of at most 65,535 records (a
        // start's catch-up, such as the day's end canceling every resting order, writes
        // that many at once; the pipeline's batches are far shorter): a crash can cut only
        // that one short. A longer tail is more than one write lost, which only a power
        // loss with `fsync = "never"` leaves (its writes are acknowledged before they
        // reach the disk).
        let one_write_max = (usize::from(u16::MAX) + 1) as u64 * journal::RECORD_LEN_MAX as u64;
        let what = if t.bytes <= one_write_max {
            "a write cut short, never acknowledged".to_string()
        } else {
            format!(
                "longer than one write can be ({one_write_max} bytes): writes lost to a power loss under fsync = \"never\", acknowledged records among them"
            )
        };
        writeln!(
            out,
            "torn tail: {} from offset {} ({} bytes, {what}): not replayed; serve cuts it at its next start",
            t.path, t.offset, t.bytes
        )?;
    }
    if summary.snapshots_verified
        + summary.snapshots_damaged
        + summary.snapshots_foreign
        + summary.snapshots_differing
        > 0
    {
        writeln!(
            out,
            "snapshots: {} equal to the replayed state, {} differing from it (not used by recovery), {} damaged, {} of another journal or configuration",
            summary.snapshots_verified,
            summary.snapshots_differing,
            summary.snapshots_damaged,
            summary.snapshots_foreign
        )?;
    }
    for (symbol, bids, asks) in books {
        writeln!(
            out,
            "\n{symbol}\n{:>14} {:>12} {:>7} | {:>14} {:>12} {:>7}",
            "bid", "shares", "orders", "ask", "shares", "orders"
        )?;
        for k in 0..bids.len().max(asks.len()) {
            let cell = |l: Option<&(String, u64, usize)>| {
                l.map_or(format!("{:>14} {:>12} {:>7}", "", "", ""), |l| {
                    format!("{:>14} {:>12} {:>7}", l.0, l.1, l.2)
                })
            };
            writeln!(out, "{} | {}", cell(bids.get(k)), cell(asks.get(k)))?;
        }
    }
    Ok(())
}

/// Parses `USER:REF` against `usernames`: the journal's users (the names it kept, or the
/// configuration's for an older build's journal).
pub fn parse_order(text: &str, usernames: &[String]) -> io::Result<(OwnerId, UserRef)> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--order {text:?}: expected USER:REF, e.g. MM1:42"),
        )
    };
    let (user, r) = text.split_once(':').ok_or_else(bad)?;
    let owner = usernames
        .iter()
        .position(|u| u.eq_ignore_ascii_case(user))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "--order: no user {user:?} among the journal's users ({})",
                    usernames.join(", ")
                ),
            )
        })?;
    // Journals of `serve` hold OUCH references (UserRefNum, 32 bits); caller keys exist
    // only for programs that embed the core.
    let r: u32 = r.parse().map_err(|_| bad())?;
    Ok((OwnerId(owner as u16), UserRef(u64::from(r))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_named_by_user_and_reference() {
        let users = ["MM1".to_string(), "MM2".to_string()];
        assert_eq!(
            parse_order("mm2:42", &users).unwrap(),
            (OwnerId(1), UserRef(42))
        );
        assert_eq!(
            parse_order("MM1:4294967295", &users).unwrap(),
            (OwnerId(0), UserRef(u64::from(u32::MAX)))
        );
        // Beyond OUCH's 32-bit UserRefNum: no order of a `serve` journal has it.
        for bad in ["MM1", "MM1:", "MM1:x", "MM1:-1", "MM3:1", "MM1:4294967296"] {
            let e = parse_order(bad, &users).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
    }
}
