//! Reading journals back: the segment walk shared by recovery and `ironmatch replay`.
//!
//! Every header and record is checked (magic, version, CRC32C, sequence continuity,
//! configuration fingerprint). A bad record is a *torn tail* only if it is in the last
//! segment and no valid record follows it: the write was cut by a crash, nothing after it
//! was acknowledged, and recovery truncates it with a warning. Anywhere else it is
//! corruption, and the error names the file and offset.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

use super::format::{
    Entry, FormatError, HEADER_LEN, Header, RECORD_LEN_MIN, VERSION_BATCH_INDEX,
    VERSION_MASS_CANCEL_SIDE, batch_index, frame_record, header_version, read_header, read_record,
    u64_at,
};
use crate::book::{BookConfig, Event, EventBody, Matcher};

/// The largest last segment of zeros recovery takes for one whose creation a crash cut
/// short (its header is one write and one sync): a page.
const ZEROED_SEGMENT_MAX: usize = 4096;

/// Why a journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file could not be read or repaired.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// A segment header is damaged.
    #[error("{path}: bad segment header: {error}")]
    Header {
        /// File.
        path: PathBuf,
        /// What is wrong.
        error: FormatError,
    },
    /// A record is damaged and valid records follow it.
    #[error(
        "{path}: corrupt record at offset {offset}: {error} (valid records follow, so this is not a torn write)"
    )]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Byte offset of the record.
        offset: u64,
        /// What is wrong.
        error: FormatError,
    },
    /// A whole record, its checksum holding, that this build cannot decode: written by a
    /// build with another record layout. Never truncated as a torn write.
    #[error(
        "{path}: record at offset {offset} is whole (its checksum holds) but this build cannot read it ({error}): was the journal written by another version of ironmatch? This build reads journal format versions {min} to {version}; nothing was changed on disk",
        min = super::format::VERSION_MIN,
        version = super::format::VERSION
    )]
    Undecodable {
        /// File.
        path: PathBuf,
        /// Byte offset of the record.
        offset: u64,
        /// What is wrong.
        error: FormatError,
    },
    /// Sequence numbers do not follow each other.
    #[error("{path}: offset {offset}: sequence {found}, expected {expected}")]
    Sequence {
        /// File.
        path: PathBuf,
        /// Byte offset.
        offset: u64,
        /// Expected number.
        expected: u64,
        /// Number found.
        found: u64,
    },
    /// A segment names another engine instance than the journal's first segment: a file
    /// of another journal (a copy or restore mixing two engines' directories). Every
    /// segment of one journal carries the instance chosen when it was created.
    #[error(
        "{path}: belongs to another journal: its header names engine instance {found:016x}, the journal's first segment {expected:016x} (a segment copied in from another engine's journal?); nothing was changed on disk"
    )]
    Instance {
        /// File.
        path: PathBuf,
        /// The first segment's instance.
        expected: u64,
        /// This segment's.
        found: u64,
    },
    /// The journal was written with another book configuration.
    #[error(
        "{path}: written with another book configuration (instruments and their price protection, users, pools, self-trade mode, or whether a [venue] trading day is configured changed); replaying it would not reproduce its events"
    )]
    Fingerprint {
        /// File.
        path: PathBuf,
    },
    /// The last segment is zeros beyond what a crash while creating it can leave: its
    /// records were lost (a power loss before they reached the disk), not merely torn.
    #[error(
        "{path}: the last segment is {len} bytes of zeros: its records never reached the disk (a power loss with fsync = \"never\"?); nothing was changed: remove the file to start without them"
    )]
    Zeroed {
        /// File.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// A report (of `ironmatch replay`) could not be written out.
    #[error("writing the report: {0}")]
    Output(io::Error),
    /// A snapshot covers records the journal does not hold.
    #[error("{path}: the snapshot covers records up to {seq}, the journal ends at {end}")]
    Ahead {
        /// Snapshot file.
        path: PathBuf,
        /// Its last record.
        seq: u64,
        /// The journal's last record.
        end: u64,
    },
    /// Re-running the commands does not give the journaled events.
    #[error("{path}: offset {offset}: sequence {seq}: {detail}")]
    Diverged {
        /// File.
        path: PathBuf,
        /// Byte offset.
        offset: u64,
        /// Record's sequence number.
        seq: u64,
        /// What differs.
        detail: String,
    },
}

/// Where a record is.
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    /// Segment file.
    pub path: &'a Path,
    /// Byte offset in it.
    pub offset: u64,
    /// Sequence number.
    pub seq: u64,
    /// The segment's format version.
    pub version: u16,
}

/// How a walk ended.
#[derive(Clone, Debug, Default)]
pub struct SegmentScan {
    /// The first segment's header, if there is a segment.
    pub header: Option<Header>,
    /// The last segment and its valid length.
    pub last_segment: Option<(PathBuf, u64)>,
    /// The sequence number the next record gets.
    pub next_seq: u64,
    /// Records read.
    pub records: u64,
    /// A torn tail found in the last segment: file, offset, bytes after it.
    pub torn: Option<(PathBuf, u64, u64)>,
}

/// Segment files in `dir`, in order.
pub fn segment_paths(dir: &Path) -> io::Result<Vec<PathBuf>> {
    files_ending(dir, ".imj")
}

/// The header of the journal's first segment (its creation time starts the feed's day);
/// `None` if the journal has no complete segment yet.
pub fn first_header(dir: &Path) -> Result<Option<Header>, JournalError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| JournalError::Io { path, source }
    };
    let paths = segment_paths(dir).map_err(io(dir))?;
    let Some(path) = paths.first() else {
        return Ok(None);
    };
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let Some(head) = read_header_from(&mut file).map_err(io(path))? else {
        return Ok(None);
    };
    // The only segment, zeros within a page: a crash while creating it, which recovery
    // removes and [`scan_journal`] skips: no header yet. Zeros beyond a page are records
    // that never reached the disk, refused as [`scan_journal`] refuses them (not as a
    // header that is not one).
    if paths.len() == 1 && head.iter().all(|&b| b == 0) {
        let len = file.metadata().map_err(io(path))?.len();
        if len <= ZEROED_SEGMENT_MAX as u64 {
            return Ok(None);
        }
        let bytes = std::fs::read(path).map_err(io(path))?;
        if bytes.iter().all(|&b| b == 0) {
            return Err(JournalError::Zeroed {
                path: path.clone(),
                len: bytes.len() as u64,
            });
        }
    }
    read_header(&head)
        .map(Some)
        .map_err(|error| JournalError::Header {
            path: path.clone(),
            error,
        })
}

/// Files in `dir` whose name ends with `suffix`, sorted; none if `dir` does not exist.
pub(super) fn files_ending(dir: &Path, suffix: &str) -> io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_str().is_some_and(|p| p.ends_with(suffix)))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    paths.sort();
    Ok(paths)
}

/// Reads the segment header at the start of `file`, leaving the file just after it;
/// `None` if the file is shorter than a header (a segment being created).
pub(super) fn read_header_from(file: &mut impl io::Read) -> io::Result<Option<[u8; HEADER_LEN]>> {
    let mut head = [0u8; HEADER_LEN];
    match file.read_exact(&mut head) {
        Ok(()) => Ok(Some(head)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether any whole record (its checksum holding) starts after `from`: used to tell a
/// torn tail from corruption.
fn valid_record_after(bytes: &[u8], from: usize) -> bool {
    whole_records_after(bytes, from).next().is_some()
}

/// The whole records (their checksums holding) that start after `from`, as (offset,
/// record), found at any byte offset.
fn whole_records_after(bytes: &[u8], from: usize) -> impl Iterator<Item = (usize, &[u8])> {
    (from + 1..bytes.len().saturating_sub(RECORD_LEN_MIN - 1))
        .filter_map(move |o| frame_record(&bytes[o..]).ok().map(|r| (o, r)))
}

/// The unit in which a disk loses a write in a power loss (a sector): zeros in such a unit
/// are a write that never reached it, where a flipped bit is damage.
const SECTOR: usize = 512;

/// Whether the damage at `from` in the last segment `bytes` is the last batch's write cut
/// short by a power loss, its pages on disk out of order: a sector of zeros (at a
/// multiple of [`SECTOR`] in the file) between the damaged record's start and the first
/// whole record after it, and every whole record after it of the damaged record's batch
/// (its sequence number past `next_seq`, the damaged record's, and its batch begun at or
/// before it: its sequence number less its index in its batch). With `fsync = "always"`
/// that batch's `fdatasync` had not returned (the writer writes a batch only once the one
/// before is synced), so none of its events had left: cutting it loses nothing anyone was
/// told. A record after the damage whose batch began after it, or flipped bits without a
/// sector of zeros, is damage to what was written before: refused. So is anything in a
/// segment of a version before [`VERSION_BATCH_INDEX`], whose records carry no index.
fn torn_last_batch(bytes: &[u8], from: usize, next_seq: u64) -> bool {
    if header_version(bytes) < VERSION_BATCH_INDEX {
        return false;
    }
    let mut after = whole_records_after(bytes, from).peekable();
    let Some(&(next_whole, _)) = after.peek() else {
        return false;
    };
    let zeroed = (from / SECTOR * SECTOR..next_whole)
        .step_by(SECTOR)
        .filter(|at| at + SECTOR <= next_whole)
        .any(|at| bytes[at..at + SECTOR].iter().all(|&b| b == 0));
    zeroed
        && after.all(|(_, record)| {
            let seq = u64_at(record, 4);
            seq > next_seq
                && seq
                    .checked_sub(u64::from(batch_index(record)))
                    .is_some_and(|began| began <= next_seq)
        })
}

/// Walks the records of the journal in `dir` in order, calling `visit` for each, up to
/// and including sequence `until` if given. With `repair`, a torn tail is truncated;
/// without, it is only reported. `fingerprint`, if given, must match every segment's.
pub fn scan_journal(
    dir: &Path,
    fingerprint: Option<u64>,
    repair: bool,
    until: Option<u64>,
    mut visit: impl FnMut(Place<'_>, &Entry) -> Result<(), JournalError>,
) -> Result<SegmentScan, JournalError> {
    let paths = segment_paths(dir).map_err(|source| JournalError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut scan = SegmentScan {
        next_seq: 1,
        ..SegmentScan::default()
    };
    for (i, path) in paths.iter().enumerate() {
        let last = i + 1 == paths.len();
        let bytes = std::fs::read(path).map_err(|source| JournalError::Io {
            path: path.clone(),
            source,
        })?;
        // A crash while creating the segment: it holds nothing (a header cut short, or
        // the file's length reached the disk and its bytes did not: zeros). Zeros beyond
        // a page are records lost, not a creation cut short: refused, not removed.
        let zeros = bytes.iter().all(|&b| b == 0);
        if last && zeros && bytes.len() > ZEROED_SEGMENT_MAX {
            return Err(JournalError::Zeroed {
                path: path.clone(),
                len: bytes.len() as u64,
            });
        }
        if last && (bytes.len() < HEADER_LEN || zeros) {
            eprintln!(
                "ironmatch journal: warning: {}: {} bytes, no complete header: {}",
                path.display(),
                bytes.len(),
                if repair {
                    "removing it"
                } else {
                    "skipped (read only: left as it is)"
                }
            );
            if repair {
                std::fs::remove_file(path).map_err(|source| JournalError::Io {
                    path: path.clone(),
                    source,
                })?;
            }
            continue;
        }
        let header = read_header(&bytes).map_err(|error| JournalError::Header {
            path: path.clone(),
            error,
        })?;
        if fingerprint.is_some_and(|f| f != header.fingerprint) {
            return Err(JournalError::Fingerprint { path: path.clone() });
        }
        if let Some(first) = scan.header
            && first.instance != header.instance
        {
            return Err(JournalError::Instance {
                path: path.clone(),
                expected: first.instance,
                found: header.instance,
            });
        }
        if header.first_seq != scan.next_seq {
            return Err(JournalError::Sequence {
                path: path.clone(),
                offset: 0,
                expected: scan.next_seq,
                found: header.first_seq,
            });
        }
        scan.header.get_or_insert(header);
        let mut offset = HEADER_LEN;
        while offset < bytes.len() {
            match read_record(&bytes[offset..]) {
                Ok((seq, entry, len)) => {
                    if until.is_some_and(|u| seq > u) {
                        scan.last_segment = Some((path.clone(), offset as u64));
                        return Ok(scan);
                    }
                    if seq != scan.next_seq {
                        return Err(JournalError::Sequence {
                            path: path.clone(),
                            offset: offset as u64,
                            expected: scan.next_seq,
                            found: seq,
                        });
                    }
                    visit(
                        Place {
                            path,
                            offset: offset as u64,
                            seq,
                            version: header_version(&bytes),
                        },
                        &entry,
                    )?;
                    scan.next_seq += 1;
                    scan.records += 1;
                    offset += len;
                }
                Err(error) if !error.may_be_torn() => {
                    // Written whole (its checksum holds), so never torn: truncating it
                    // would throw away facts clients were told. Refused, named.
                    return Err(JournalError::Undecodable {
                        path: path.clone(),
                        offset: offset as u64,
                        error,
                    });
                }
                Err(error)
                    if last
                        && (!valid_record_after(&bytes, offset)
                            || torn_last_batch(&bytes, offset, scan.next_seq)) =>
                {
                    let after = (bytes.len() - offset) as u64;
                    let gap = if valid_record_after(&bytes, offset) {
                        " with a sector of zeros, in the last batch, written out of order by a power loss before its fdatasync returned (the rest of that batch follows it; none of it was acknowledged)"
                    } else {
                        ""
                    };
                    eprintln!(
                        "ironmatch journal: warning: {}: torn record at offset {offset} ({error}, {after} bytes){gap}: {}",
                        path.display(),
                        if repair { "truncating" } else { "ignored" }
                    );
                    if repair {
                        truncate(path, offset as u64)?;
                    }
                    scan.torn = Some((path.clone(), offset as u64, after));
                    break;
                }
                Err(error) => {
                    return Err(JournalError::Corrupt {
                        path: path.clone(),
                        offset: offset as u64,
                        error,
                    });
                }
            }
        }
        scan.last_segment = Some((path.clone(), offset as u64));
    }
    Ok(scan)
}

fn truncate(path: &Path, len: u64) -> Result<(), JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new().write(true).open(path).map_err(io)?;
    file.set_len(len).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Whether `journaled`, in a segment of format `version`, is what a build of that version
/// wrote for the event this build replays as `again`: the same event, or, before
/// [`VERSION_MASS_CANCEL_SIDE`], for a mass cancel limited to a side, the `MassCanceled`
/// such a build wrote (no side, every other field the same). Recovery, the snapshot thread
/// and `replay --verify-determinism` all compare through it.
pub(crate) fn replays_as_journaled(version: u16, again: &Event, journaled: &Event) -> bool {
    if again == journaled {
        return true;
    }
    let EventBody::MassCanceledSide {
        owner,
        user_ref,
        firm,
        symbol,
        count,
        ..
    } = again.body
    else {
        return false;
    };
    version < VERSION_MASS_CANCEL_SIDE
        && *journaled
            == Event {
                ts: again.ts,
                body: EventBody::mass_canceled(owner, user_ref, firm, symbol, None, count),
            }
}

/// Re-runs journaled commands through a matcher and checks each journaled event against
/// the one the matcher produces again: recovery, the snapshot thread and replay share it.
#[derive(Debug)]
pub struct Replayer {
    matcher: Matcher,
    expected: VecDeque<Event>,
    produced: Vec<Event>,
    sessions: Vec<u64>,
}

impl Replayer {
    /// Continues from `matcher`, whose users have sent `sessions[i]` sequenced messages.
    pub fn new(matcher: Matcher, sessions: Vec<u64>) -> Replayer {
        Replayer {
            matcher,
            expected: VecDeque::new(),
            produced: Vec::new(),
            sessions,
        }
    }

    /// Takes the next record. `on_event` gets each journaled event once it is checked.
    pub fn feed(
        &mut self,
        place: Place<'_>,
        entry: &Entry,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<(), JournalError> {
        let diverged = |detail: String| JournalError::Diverged {
            path: place.path.to_path_buf(),
            offset: place.offset,
            seq: place.seq,
            detail,
        };
        match entry {
            Entry::Command(command) => {
                if !self.expected.is_empty() {
                    return Err(diverged(format!(
                        "a command, but {} events of the previous one are missing",
                        self.expected.len()
                    )));
                }
                self.produced.clear();
                self.matcher.apply(command, &mut self.produced);
                self.expected.extend(self.produced.iter().copied());
            }
            Entry::Event(event) => match self.expected.pop_front() {
                Some(again) if replays_as_journaled(place.version, &again, event) => {
                    self.count(event);
                    on_event(event);
                }
                Some(again) => {
                    return Err(diverged(format!(
                        "journaled {event:?}, replay gives {again:?}"
                    )));
                }
                None => {
                    return Err(diverged(format!("an event no command produced: {event:?}")));
                }
            },
        }
        Ok(())
    }

    fn count(&mut self, event: &Event) {
        if let Some(owner) = event.body.owner()
            && let Some(n) = self.sessions.get_mut(usize::from(owner.0))
        {
            *n += 1;
        }
    }

    /// Whether every event of the last command has been seen (a snapshot may be taken).
    pub fn at_boundary(&self) -> bool {
        self.expected.is_empty()
    }

    /// The matcher.
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// Per user: sequenced messages so far.
    pub fn sessions(&self) -> &[u64] {
        &self.sessions
    }

    /// The matcher, the events of the last command not journaled yet (counted in the
    /// sessions), and the sessions' counts.
    pub fn finish(mut self) -> (Matcher, Vec<Event>, Vec<u64>) {
        let pending: Vec<Event> = std::mem::take(&mut self.expected).into_iter().collect();
        for event in &pending {
            self.count(event);
        }
        (self.matcher, pending, self.sessions)
    }
}

/// State rebuilt from a journal.
#[derive(Debug)]
pub struct Recovery {
    /// The matcher after every journaled command.
    pub matcher: Matcher,
    /// How the walk ended (where to append, the next sequence number).
    pub scan: SegmentScan,
    /// Events of the last command that the journal does not hold yet (its batch was cut
    /// by the crash): they must be journaled before anything else.
    pub pending: Vec<Event>,
    /// Per user: sequenced messages, the pending events' included.
    pub sessions: Vec<u64>,
    /// The snapshot recovery started from (its last sequence number), if any.
    pub snapshot: Option<u64>,
}

/// Rebuilds the matcher from the journal in `dir` (repairing a torn tail): from the newest
/// usable snapshot if there is one, re-running only the commands after it, otherwise
/// from the start; each re-run command's events are checked against the journaled ones.
/// `on_event` gets every journaled event in order (the sessions' streams are rebuilt from
/// them), then the pending ones.
pub fn recover(
    dir: &Path,
    book: &BookConfig,
    mut on_event: impl FnMut(&Event),
) -> Result<Recovery, JournalError> {
    let fingerprint = super::fingerprint(book);
    let snapshot = usable_snapshot(dir, book, fingerprint)?;
    let recovery = match snapshot {
        None => recover_from(dir, book, None, &mut on_event)?,
        Some((snapshot, matcher)) => {
            let seq = snapshot.seq;
            let covered = (seq, matcher, snapshot.body.sessions);
            let mut delivered = 0usize;
            let mut counted = |e: &Event| {
                delivered += 1;
                on_event(e);
            };
            match recover_from(dir, book, Some(covered), &mut counted) {
                Err(JournalError::Ahead { end, .. }) => {
                    // The journal ends before the snapshot: it lost records the snapshot
                    // had seen (a power loss with fsync = "never"). Those sequence numbers
                    // will be reused, so the snapshot must go. Every journaled event has
                    // been delivered by the first pass already.
                    remove_snapshots_after(dir, end)?;
                    // An older snapshot inside the journal saves re-running the whole day.
                    match usable_snapshot(dir, book, fingerprint)? {
                        Some((older, matcher)) => {
                            let covered = (older.seq, matcher, older.body.sessions);
                            match recover_from(dir, book, Some(covered), &mut |_| {}) {
                                Err(JournalError::Diverged { .. }) => {
                                    recover_from(dir, book, None, &mut |_| {})?
                                }
                                other => other?,
                            }
                        }
                        None => recover_from(dir, book, None, &mut |_| {})?,
                    }
                }
                Err(e @ JournalError::Diverged { .. }) => {
                    // The snapshot loads but disagrees with the journal (its session
                    // counts, or the commands after it re-run differently): like a damaged
                    // one, it is not used, and the journal alone decides (a divergence in
                    // a full replay is refused). The events delivered before the
                    // disagreement are not delivered again.
                    eprintln!(
                        "ironmatch journal: warning: the snapshot at {seq} disagrees with the journal ({e}): replaying the whole journal instead"
                    );
                    let mut seen = 0usize;
                    recover_from(dir, book, None, &mut |e| {
                        seen += 1;
                        if seen > delivered {
                            on_event(e);
                        }
                    })?
                }
                other => other?,
            }
        }
    };
    for event in &recovery.pending {
        on_event(event);
    }
    Ok(recovery)
}

/// One recovery pass, from `snapshot` (its last sequence number, matcher and session
/// counts) or from the start. `on_event` gets the journaled events; the caller delivers
/// the pending ones.
fn recover_from(
    dir: &Path,
    book: &BookConfig,
    snapshot: Option<(u64, Matcher, Vec<u64>)>,
    on_event: &mut impl FnMut(&Event),
) -> Result<Recovery, JournalError> {
    let owners = book.owners.len();
    let (covered, mut replayer) = match snapshot {
        Some((seq, matcher, sessions)) => (seq, Replayer::new(matcher, sessions)),
        None => (0, Replayer::new(Matcher::new(book), vec![0; owners])),
    };
    let mut prefix = vec![0u64; owners];
    let scan = scan_journal(
        dir,
        Some(super::fingerprint(book)),
        true,
        None,
        |place, entry| {
            if place.seq > covered {
                return replayer.feed(place, entry, on_event);
            }
            // Covered by the snapshot: only the sessions' streams need these events.
            if let Entry::Event(event) = entry {
                on_event(event);
                if let Some(n) = event
                    .body
                    .owner()
                    .and_then(|o| prefix.get_mut(usize::from(o.0)))
                {
                    *n += 1;
                }
            }
            if place.seq == covered && prefix != replayer.sessions() {
                return Err(JournalError::Diverged {
                    path: place.path.to_path_buf(),
                    offset: place.offset,
                    seq: place.seq,
                    detail: format!(
                        "the snapshot counts {:?} messages per user, the journal {prefix:?}",
                        replayer.sessions()
                    ),
                });
            }
            Ok(())
        },
    )?;
    if scan.next_seq <= covered {
        return Err(JournalError::Ahead {
            path: dir.join(super::snapshot::snapshot_name(covered)),
            seq: covered,
            end: scan.next_seq - 1,
        });
    }
    let (matcher, pending, sessions) = replayer.finish();
    Ok(Recovery {
        matcher,
        scan,
        pending,
        sessions,
        snapshot: (covered > 0).then_some(covered),
    })
}

/// The newest snapshot of this journal that loads, and its matcher. Damaged ones and ones
/// of another journal or configuration are skipped with a warning (recovery then replays
/// more of the journal); snapshots with no journal at all are removed.
fn usable_snapshot(
    dir: &Path,
    book: &BookConfig,
    fingerprint: u64,
) -> Result<Option<(super::snapshot::Snapshot, Matcher)>, JournalError> {
    use super::snapshot::{decode_snapshot, snapshot_paths};
    let io = |source| JournalError::Io {
        path: dir.to_path_buf(),
        source,
    };
    super::snapshot::remove_partial(dir).map_err(io)?;
    let snapshots = snapshot_paths(dir).map_err(io)?;
    if snapshots.is_empty() {
        return Ok(None);
    }
    let segments = segment_paths(dir).map_err(io)?;
    let Some(first) = segments.first() else {
        eprintln!(
            "ironmatch journal: warning: {}: snapshots without a journal: removing them",
            dir.display()
        );
        remove_snapshots_after(dir, 0)?;
        return Ok(None);
    };
    // Only the first segment's header: snapshots belong to the journal it created. One
    // that does not read (another format version, damage, a segment cut at its creation)
    // is the scan's to judge: the snapshots are left as they are, so a start the scan
    // refuses changes nothing on disk.
    let instance = std::fs::File::open(first)
        .ok()
        .and_then(|mut file| read_header_from(&mut file).ok().flatten())
        .and_then(|head| read_header(&head).ok())
        .map(|h| h.instance);
    let Some(instance) = instance else {
        return Ok(None);
    };
    for (_, path) in snapshots.iter().rev() {
        let loaded = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| decode_snapshot(&b).map_err(|e| e.to_string()))
            .and_then(|s| match s.foreign_to(instance, fingerprint) {
                Some(why) => Err(why.to_string()),
                None => Matcher::from_state(book, &s.body.book).map(|m| (s, m)),
            });
        match loaded {
            Ok(found) => return Ok(Some(found)),
            Err(why) => eprintln!(
                "ironmatch journal: warning: {}: snapshot not used: {why}",
                path.display()
            ),
        }
    }
    Ok(None)
}

/// Removes the snapshots covering records after `seq`.
fn remove_snapshots_after(dir: &Path, seq: u64) -> Result<(), JournalError> {
    for (covered, path) in
        super::snapshot::snapshot_paths(dir).map_err(|source| JournalError::Io {
            path: dir.to_path_buf(),
            source,
        })?
    {
        if covered > seq {
            eprintln!(
                "ironmatch journal: warning: {}: removing a snapshot beyond the journal's end",
                path.display()
            );
            std::fs::remove_file(&path).map_err(|source| JournalError::Io { path, source })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::{Command, CommandBody};
    use crate::journal::format::{write_header, write_record};
    use crate::types::{OwnerId, Timestamp};

    /// Records in the batch of [`one_batch`].
    const N: u64 = 200;

    /// A last segment of `version` holding one batch: records 1..=N at indexes 0..N.
    /// Returns its bytes and each record's offset.
    fn one_batch(version: u16) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = write_header(&Header {
            instance: 1,
            first_seq: 1,
            fingerprint: 0,
            created_ns: 0,
        })
        .to_vec();
        bytes[8..10].copy_from_slice(&version.to_le_bytes());
        let mut offsets = Vec::new();
        for seq in 1..=N {
            offsets.push(bytes.len());
            write_record(&mut bytes, seq, (seq - 1) as u16, &entry());
        }
        (bytes, offsets)
    }

    /// Every record's entry: one length for all of them.
    fn entry() -> Entry {
        Entry::Command(Command {
            ts: Timestamp(1),
            owner: OwnerId(1),
            body: CommandBody::AccountQuery,
        })
    }

    /// The record at `offset` written again with `seq` and `index` (the same length: the
    /// sequence number and the index are in the fixed head, the entry is the same).
    fn rewrite(bytes: &mut [u8], offset: usize, seq: u64, index: u16) {
        let mut record = Vec::new();
        write_record(&mut record, seq, index, &entry());
        let len = frame_record(&bytes[offset..]).unwrap().len();
        assert_eq!(record.len(), len);
        bytes[offset..offset + len].copy_from_slice(&record);
    }

    /// The sector at 1024 zeroed: the damaged record, its offset and sequence number.
    fn zeroed(bytes: &mut [u8], offsets: &[usize]) -> (usize, u64) {
        bytes[1024..1024 + SECTOR].fill(0);
        holding(offsets, 1024)
    }

    /// The offset and sequence number of the record holding byte `at`.
    fn holding(offsets: &[usize], at: usize) -> (usize, u64) {
        let i = offsets.iter().rposition(|&o| o <= at).unwrap();
        (offsets[i], i as u64 + 1)
    }

    /// The rule's every condition, each alone refusing a gap the rule otherwise cuts: the
    /// segment's version, the sector of zeros, and each whole record after it being of the
    /// damaged record's batch (later in sequence, its batch begun at or before it, an index
    /// no larger than its sequence number).
    #[test]
    fn a_gap_is_a_torn_batch_only_when_every_condition_holds() {
        let (mut bytes, offsets) = one_batch(VERSION_BATCH_INDEX);
        assert!(
            *offsets.last().unwrap() > 1024 + 2 * SECTOR,
            "records after the gap"
        );
        let (from, next_seq) = zeroed(&mut bytes, &offsets);
        assert!(torn_last_batch(&bytes, from, next_seq), "the gap is cut");
        let last = *offsets.last().unwrap();

        for version in [1, 2] {
            let (mut old, _) = one_batch(version);
            zeroed(&mut old, &offsets);
            assert!(!torn_last_batch(&old, from, next_seq), "version {version}");
        }

        // A bit flipped in the batch, whole records of it after: damage, not a lost write.
        let (mut flipped, _) = one_batch(VERSION_BATCH_INDEX);
        flipped[1100] ^= 0x10;
        let (damaged, seq) = holding(&offsets, 1100);
        assert!(frame_record(&flipped[damaged..]).is_err());
        assert!(
            !torn_last_batch(&flipped, damaged, seq),
            "no sector of zeros"
        );

        for (what, seq, index) in [
            (
                "a record not after the damaged one",
                next_seq,
                next_seq as u16 - 1,
            ),
            ("a record of a later batch", N, 0),
            (
                "a record of a batch begun after the damaged one",
                N,
                (N - 1 - next_seq) as u16,
            ),
            ("an index above its sequence number", N, N as u16 + 1),
        ] {
            let mut bytes = bytes.clone();
            rewrite(&mut bytes, last, seq, index);
            assert!(!torn_last_batch(&bytes, from, next_seq), "{what}");
        }
        // The same record rewritten with its own place: cut again (the rewrite is sound).
        rewrite(&mut bytes, last, N, N as u16 - 1);
        assert!(torn_last_batch(&bytes, from, next_seq));
    }

    /// A mass cancel limited to a side, journaled before format 5 as `MassCanceled` (no
    /// side), replays as it was written in a segment of such a version, and only there:
    /// the same record in a version 5 segment, or with any other field changed, diverges.
    /// Its command, written then with the book side, reads as the side it named.
    #[test]
    fn a_mass_cancel_by_side_of_an_older_format_replays() {
        use crate::book::flow::test_config;
        use crate::book::{Echo, NewOrder, StpMode, TimeInForce};
        use crate::types::{BookSide, Price, Qty, Side, Symbol, UserRef};
        // The command's side as format 4 wrote it reads as the side it named.
        for (book, side) in [(BookSide::Bid, Side::Buy), (BookSide::Ask, Side::Sell)] {
            let old = postcard::to_allocvec(&Some(book)).unwrap();
            assert_eq!(old, postcard::to_allocvec(&Some(side)).unwrap());
            assert_eq!(
                postcard::from_bytes::<Option<Side>>(&old).unwrap(),
                Some(side)
            );
        }
        let config = test_config(StpMode::CancelResting);
        let firm = config.owners[0].firm;
        let order = NewOrder {
            user_ref: UserRef(1),
            side: Side::Sell,
            qty: Qty(10),
            symbol: Symbol::from_str_padded("AAA").unwrap(),
            price: Some(Price(1_000_100)),
            tif: TimeInForce::Day,
            hidden: false,
            post_only: false,
            min_qty: Qty(0),
            max_floor: Qty(0),
            firm,
            echo: Echo::default(),
        };
        let commands = [
            Command {
                ts: Timestamp(1),
                owner: OwnerId(0),
                body: CommandBody::New(order),
            },
            Command {
                ts: Timestamp(2),
                owner: OwnerId(0),
                body: CommandBody::MassCancel {
                    user_ref: UserRef(2),
                    firm,
                    symbol: Symbol::BLANK,
                    side: Some(Side::SellShort),
                },
            },
        ];
        // The records this build journals, and the form a build of format 4 wrote.
        let mut journal = Vec::new();
        let mut matcher = Matcher::new(&config);
        for c in &commands {
            let mut events = Vec::new();
            matcher.apply(c, &mut events);
            journal.push(Entry::Command(*c));
            journal.extend(events.into_iter().map(Entry::Event));
        }
        let last = journal.len() - 1;
        let Entry::Event(Event {
            ts,
            body:
                EventBody::MassCanceledSide {
                    owner,
                    user_ref,
                    firm,
                    symbol,
                    side: Side::SellShort,
                    count: 1,
                },
        }) = journal[last]
        else {
            panic!(
                "not a mass cancel of one order by side: {:?}",
                journal[last]
            );
        };
        let as_format_4 = |count| {
            let mut old = journal.clone();
            old[last] = Entry::Event(Event {
                ts,
                body: EventBody::MassCanceled {
                    owner,
                    user_ref,
                    firm,
                    symbol,
                    count,
                },
            });
            old
        };
        let events = |journal: &[Entry]| -> Vec<Event> {
            journal
                .iter()
                .filter_map(|e| match e {
                    Entry::Event(e) => Some(*e),
                    Entry::Command(_) => None,
                })
                .collect()
        };
        let path = Path::new("test.imj");
        let replay = |version: u16, journal: &[Entry]| {
            let mut replayer = Replayer::new(Matcher::new(&config), vec![0; config.owners.len()]);
            let mut seen = Vec::new();
            for (i, entry) in journal.iter().enumerate() {
                let place = Place {
                    path,
                    offset: 0,
                    seq: i as u64 + 1,
                    version,
                };
                replayer.feed(place, entry, &mut |e| seen.push(*e))?;
            }
            Ok::<_, JournalError>(seen)
        };
        for version in [4, 5] {
            let seen = replay(version, &journal).unwrap();
            assert_eq!(seen, events(&journal), "version {version}");
        }
        let old = as_format_4(1);
        for version in [1, 4] {
            let seen = replay(version, &old).unwrap();
            assert_eq!(seen, events(&old), "what was journaled goes on");
        }
        for (version, journal) in [(5, old), (4, as_format_4(2))] {
            match replay(version, &journal) {
                Err(JournalError::Diverged { seq, .. }) => assert_eq!(seq, journal.len() as u64),
                other => panic!("version {version}: not diverged: {other:?}"),
            }
        }
    }
}
