//! The Raft log and the state machine adaptor, on the raft thread.
//!
//! The log lives in the node's raft directory: `log` holds the entries back to back (each
//! `length u32 LE | CRC32C u32 LE | postcard of the entry`), `vote` the last vote,
//! `purged` the last purged log id. Appends are one `write` per call and, with
//! `fsync = "always"`, one `fdatasync` before openraft hears they are stored. Each append
//! begins with a mark (a frame of length 0 whose checksum field holds [`APPEND_MARK`]),
//! so that the log knows where its last append began. A torn
//! tail (a crash in the middle of an append) is cut off when the log is opened, including
//! a power loss that kept the later sectors of a multi-entry append and not an earlier
//! one ([`read_log`]); a
//! conflicting tail (a deposed leader's unreplicated entries) is cut by truncating the
//! file. In memory: each entry's place in the file (40 bytes an entry) and the most recent
//! entries, up to [`CACHE_COMMANDS_MAX`] commands, what replication and applying read in
//! the common case; older entries (a follower far behind, a node catching up) are read
//! back from the file.
//!
//! The state machine is the pipeline itself: applying a committed entry pushes its
//! commands into the matcher's ring, and the matcher and the journal writer do the rest.
//! What was applied is therefore what the journal holds: on start, the journal's command
//! count says which entry was applied last ([`RaftStore::open`]); commands of an entry
//! whose journaling a crash cut short are handed back to be applied first.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Cursor, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogState, RaftLogReader, RaftSnapshotBuilder, RaftStorage, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership, Vote,
};

use super::{Node, NodeId, TypeConfig};
use crate::book::Command;
use crate::journal::FsyncMode;
use crate::pipeline::{Record, Ring};

/// How long applying waits before trying a full matcher ring again.
const APPLY_RETRY: std::time::Duration = std::time::Duration::from_micros(500);

/// Framing of one log record: length and CRC32C.
const FRAME_LEN: usize = 8;
/// The checksum field of an append's mark (its length field is 0: no entry encodes to
/// nothing, and a zeroed sector reads as length 0 with checksum 0, not as a mark).
const APPEND_MARK: u32 = u32::from_le_bytes(*b"APND");
/// A disk sector: a write lost to a power loss reads back as whole sectors of zeros.
const SECTOR: u64 = 512;
/// Largest encoded entry read back: a batch of the journal's size at most, with room.
const ENTRY_BYTES_MAX: usize = 1 << 20;
/// Commands of the newest entries kept in memory (older ones are read from the file).
pub const CACHE_COMMANDS_MAX: usize = 1 << 18;

/// Where an entry is in the log file.
#[derive(Clone, Copy, Debug)]
struct Slot {
    log_id: LogId<NodeId>,
    /// Offset of its frame.
    at: u64,
    /// Length of its frame, header included.
    len: u32,
}

type StoreError = StorageError<NodeId>;

fn io_err(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

/// What the store holds, behind one lock (the raft thread is its only user).
struct Inner {
    dir: PathBuf,
    fsync: FsyncMode,
    log: File,
    /// The log file for reading entries back.
    reader: File,
    /// Length of the log file.
    log_len: u64,
    /// Every entry in the log, oldest first: `slots[i]` has index `slots[0].log_id.index + i`.
    slots: std::collections::VecDeque<Slot>,
    /// The newest entries, by index.
    cache: BTreeMap<u64, Entry<TypeConfig>>,
    /// Commands in `cache`.
    cached_commands: usize,
    purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    /// The matcher's ring; `None` for storage tests.
    apply: Option<Arc<Ring<Record>>>,
    /// Commands applied so far (journaled ones included).
    commands_applied: u64,
}

/// The log store and state machine, shared by openraft's log readers.
#[derive(Clone)]
pub struct RaftStore {
    inner: Arc<Mutex<Inner>>,
}

/// A recovered store and what must be applied before anything else.
pub struct Opened {
    /// The store.
    pub store: RaftStore,
    /// Commands of the last applied entry that the journal does not hold yet.
    pub resume: Vec<Command>,
    /// Entries in the log.
    pub entries: usize,
}

impl RaftStore {
    /// Opens (or creates) the log in `dir`. `journal_commands` is how many commands the
    /// node's journal holds: the entries that hold them are the ones applied. `apply` is
    /// the matcher's ring (`None`: entries are only counted, for storage tests).
    pub fn open(
        dir: &Path,
        fsync: FsyncMode,
        journal_commands: u64,
        apply: Option<Arc<Ring<Record>>>,
    ) -> io::Result<Opened> {
        // A log whose sync failed in this boot reads back from the page cache what may
        // not be on disk: taking it would acknowledge entries a power loss can still take.
        crate::journal::check_sync_failed(dir)?;
        let created = !dir.join("log").exists();
        if fsync == FsyncMode::Always {
            // Each new directory's entry synced in its parent (a `cluster.dir` whose
            // parents are new too).
            crate::journal::create_dir_durably(dir)?;
        } else {
            std::fs::create_dir_all(dir)?;
        }
        let vote = read_small(&dir.join("vote"))?;
        let purged: Option<LogId<NodeId>> = read_small(&dir.join("purged"))?.flatten();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("log"))?;
        if created && fsync == FsyncMode::Always {
            // The new file's entry in its directory outlives a power loss: else the
            // entries appended and synced later could vanish with their file.
            crate::journal::sync_dir_or_mark(dir)?;
        }
        let reader = File::open(dir.join("log"))?;
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            fsync,
            log,
            reader,
            log_len: 0,
            slots: std::collections::VecDeque::new(),
            cache: BTreeMap::new(),
            cached_commands: 0,
            purged,
            vote,
            last_applied: None,
            membership: StoredMembership::default(),
            apply,
            commands_applied: 0,
        };
        // One pass over the file, an entry at a time: what is kept is each entry's place
        // and the newest entries within the cache's budget, never the whole log.
        let mut applied = FindApplied::new(journal_commands);
        let valid = read_log(&dir.join("log"), |e, slot| {
            if purged.is_some_and(|p| e.log_id.index <= p.index) {
                return;
            }
            inner.slots.push_back(slot);
            applied.visit(&e, &mut inner);
            inner.cache_entry(e);
        })?;
        inner.log.set_len(valid)?;
        inner.log_len = valid;
        // What was read may be only in the page cache (a process killed between an
        // append's write and its sync): made durable before openraft takes it as stored and
        // answers for it, so that only an append that never returned can be torn.
        if fsync == FsyncMode::Always {
            crate::journal::sync_or_mark(&inner.log, dir)?;
            // And the directory: a file renamed into place (the vote, the purge point) by
            // a process killed before its directory sync is read now and must stay.
            crate::journal::sync_dir_or_mark(dir)?;
        }
        let resume = applied.finish(&mut inner)?;
        let count = inner.slots.len();
        Ok(Opened {
            store: RaftStore {
                inner: Arc::new(Mutex::new(inner)),
            },
            resume,
            entries: count,
        })
    }

    /// Commands of the entries applied so far (pushed, or being pushed, to the matcher).
    pub fn commands_applied(&self) -> u64 {
        self.lock().commands_applied
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("the raft store's lock is never poisoned")
    }
}

impl Inner {
    fn sync(&self) -> io::Result<()> {
        match self.fsync {
            FsyncMode::Always => crate::journal::sync_or_mark(&self.log, &self.dir),
            FsyncMode::Never => Ok(()),
        }
    }

    /// Keeps `e` in memory, dropping the oldest cached entries beyond the budget.
    fn cache_entry(&mut self, e: Entry<TypeConfig>) {
        self.cached_commands += commands_in(&e);
        self.cache.insert(e.log_id.index, e);
        while self.cached_commands > CACHE_COMMANDS_MAX && self.cache.len() > 1 {
            let (_, old) = self.cache.pop_first().expect("more than one entry");
            self.cached_commands -= commands_in(&old);
        }
    }

    /// The entry at `index`, from memory or from the file.
    fn entry(&self, index: u64) -> io::Result<Option<Entry<TypeConfig>>> {
        if let Some(e) = self.cache.get(&index) {
            return Ok(Some(e.clone()));
        }
        let Some(first) = self.slots.front().map(|s| s.log_id.index) else {
            return Ok(None);
        };
        let Some(slot) = index
            .checked_sub(first)
            .and_then(|i| self.slots.get(i as usize))
        else {
            return Ok(None);
        };
        let mut frame = vec![0u8; slot.len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&self.reader, &mut frame, slot.at)?;
        let crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
        if crc32c::crc32c(&frame[FRAME_LEN..]) != crc {
            return Err(io::Error::other(format!(
                "raft log entry {index} at byte {} fails its CRC",
                slot.at
            )));
        }
        postcard::from_bytes(&frame[FRAME_LEN..])
            .map(Some)
            .map_err(io::Error::other)
    }

    /// Drops the entries from `index` on: the file is cut at the first one's frame.
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        let _ = self.cache.split_off(&index);
        self.cached_commands = self.cache.values().map(commands_in).sum();
        let Some(first) = self.slots.front().map(|s| s.log_id.index) else {
            return Ok(());
        };
        let keep = index.saturating_sub(first) as usize;
        if keep >= self.slots.len() {
            return Ok(());
        }
        let at = self.slots[keep].at;
        self.slots.truncate(keep);
        self.log.set_len(at)?;
        self.log_len = at;
        crate::journal::sync_or_mark(&self.log, &self.dir)
    }

    /// Rewrites the log file with the entries after a purge.
    fn rewrite(&mut self) -> io::Result<()> {
        let first = self.slots.front().map(|s| s.log_id.index);
        let last = self.slots.back().map(|s| s.log_id.index);
        let mut buf = Vec::new();
        // Synced whole before it replaces the log: one append.
        mark_append(&mut buf);
        let mut slots = std::collections::VecDeque::new();
        if let (Some(first), Some(last)) = (first, last) {
            for index in first..=last {
                let e = self
                    .entry(index)?
                    .ok_or_else(|| io::Error::other(format!("raft log entry {index} missing")))?;
                let at = buf.len() as u64;
                encode(&mut buf, &e);
                slots.push_back(Slot {
                    log_id: e.log_id,
                    at,
                    len: (buf.len() as u64 - at) as u32,
                });
            }
        }
        // A mark after the entries too: they were all synced, so no later damage among
        // them may pass for a torn last append.
        mark_append(&mut buf);
        let tmp = self.dir.join("log.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&buf)?;
        crate::journal::sync_or_mark(&file, &self.dir)?;
        std::fs::rename(&tmp, self.dir.join("log"))?;
        crate::journal::sync_dir_or_mark(&self.dir)?;
        self.log = OpenOptions::new().append(true).open(self.dir.join("log"))?;
        self.reader = File::open(self.dir.join("log"))?;
        self.log_len = buf.len() as u64;
        self.slots = slots;
        Ok(())
    }
}

fn commands_in(e: &Entry<TypeConfig>) -> usize {
    match &e.payload {
        EntryPayload::Normal(batch) => batch.commands.len().max(1),
        _ => 1,
    }
}

/// Writes an append's mark: where the entries after it (to the next mark) were written in
/// one `write` (and, with `fsync = "always"`, synced before the next append began).
fn mark_append(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.extend_from_slice(&APPEND_MARK.to_le_bytes());
}

/// Whether an append's mark starts at `pos` in `bytes`.
fn mark_at(bytes: &[u8], pos: usize) -> bool {
    bytes.get(pos..pos + FRAME_LEN).is_some_and(|h| {
        h[..4] == [0; 4] && u32::from_le_bytes(h[4..].try_into().expect("4 bytes")) == APPEND_MARK
    })
}

fn encode(buf: &mut Vec<u8>, e: &Entry<TypeConfig>) {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_LEN]);
    let bytes = postcard::to_extend(e, std::mem::take(buf)).expect("an entry serializes");
    *buf = bytes;
    let len = (buf.len() - start - FRAME_LEN) as u32;
    let crc = crc32c::crc32c(&buf[start + FRAME_LEN..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The entry whose frame starts at `pos` in `bytes`, and the frame's length, if a whole
/// frame is there, its checksum holds and it decodes.
fn frame_at(bytes: &[u8], pos: usize) -> Option<(Entry<TypeConfig>, usize)> {
    let header = bytes.get(pos..pos + FRAME_LEN)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len > ENTRY_BYTES_MAX {
        return None;
    }
    let body = bytes.get(pos + FRAME_LEN..pos + FRAME_LEN + len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let entry = postcard::from_bytes::<Entry<TypeConfig>>(body).ok()?;
    Some((entry, FRAME_LEN + len))
}

/// Finds, in the pass over the log at open, the entry holding the journal's last command:
/// it and those before it are applied; the commands of that entry after the journal's last
/// one are handed back to be applied first.
struct FindApplied {
    journal_commands: u64,
    /// Commands of the entries visited so far.
    done: u64,
    resume: Vec<Command>,
}

impl FindApplied {
    fn new(journal_commands: u64) -> Self {
        FindApplied {
            journal_commands,
            done: 0,
            resume: Vec::new(),
        }
    }

    /// The log's next entry, in order.
    fn visit(&mut self, e: &Entry<TypeConfig>, inner: &mut Inner) {
        if self.done >= self.journal_commands {
            return;
        }
        match &e.payload {
            EntryPayload::Normal(batch) => {
                let k = batch.commands.len() as u64;
                if self.done + k > self.journal_commands {
                    let from = (self.journal_commands - self.done) as usize;
                    self.resume.extend_from_slice(&batch.commands[from..]);
                }
                self.done += k;
            }
            EntryPayload::Membership(m) => {
                inner.membership = StoredMembership::new(Some(e.log_id), m.clone());
            }
            EntryPayload::Blank => {}
        }
        inner.last_applied = Some(e.log_id);
    }

    /// After the last entry: the commands to apply first, or an error if the journal holds
    /// more commands than the log.
    fn finish(self, inner: &mut Inner) -> io::Result<Vec<Command>> {
        if self.done < self.journal_commands {
            return Err(io::Error::other(format!(
                "the journal holds {} commands, the raft log in {} only {}: this node's \
                 journal was not written by this cluster (wipe the journal and the raft \
                 directory to rejoin from the leader)",
                self.journal_commands,
                inner.dir.display(),
                self.done
            )));
        }
        inner.commands_applied = self.done;
        Ok(self.resume)
    }
}

/// Reads the log's entries in order, one at a time, handing each with its place to
/// `visit`, up to a torn tail (cut: an append a crash interrupted, never acknowledged);
/// returns the length of the valid prefix. A damaged entry with whole entries after it is
/// damage to entries this node may have acknowledged to a leader (cutting them could lose
/// a committed command: the log is refused, as the journal refuses such a record), unless
/// it is a torn last append: a power loss can keep the later sectors of a multi-entry
/// append's write and not an earlier one, leaving a sector of zeros with whole entries
/// after it. Appends are written one at a time, each (with `fsync = "always"`) synced
/// before the next begins, so only the last can be torn, and nothing in it was
/// acknowledged. Such a gap is cut when the log marks its appends, the damage lies after
/// the last mark (no mark follows it: the whole entries after it are the last append's)
/// and a sector (512 bytes at a multiple of 512 in the file) between the damage and the
/// next whole entry is all zeros, or the damage's own sector is from the damage on (at
/// least a frame header's 8 bytes: that sector may also hold the append before, written
/// earlier); flipped bits are damage, not a lost write. A log written before appends were
/// marked keeps the refusal.
fn read_log(path: &Path, mut visit: impl FnMut(Entry<TypeConfig>, Slot)) -> io::Result<u64> {
    use std::io::{Read, Seek};
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = io::BufReader::with_capacity(1 << 20, file);
    // Fills `buf` unless the file ends first.
    let read_full = |reader: &mut io::BufReader<File>, buf: &mut [u8]| match reader.read_exact(buf)
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    };
    let mut pos = 0u64;
    let mut marked = false;
    let mut body = Vec::new();
    loop {
        let mut header = [0u8; FRAME_LEN];
        if !read_full(&mut reader, &mut header)? {
            break;
        }
        if mark_at(&header, 0) {
            marked = true;
            pos += FRAME_LEN as u64;
            continue;
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len > ENTRY_BYTES_MAX {
            break;
        }
        body.resize(len, 0);
        if !read_full(&mut reader, &mut body)? || crc32c::crc32c(&body) != crc {
            break;
        }
        let Ok(entry) = postcard::from_bytes::<Entry<TypeConfig>>(&body) else {
            break;
        };
        let frame = FRAME_LEN + len;
        let slot = Slot {
            log_id: entry.log_id,
            at: pos,
            len: frame as u32,
        };
        visit(entry, slot);
        pos += frame as u64;
    }
    if pos < file_len {
        let mut rest = Vec::new();
        let mut file = File::open(path)?;
        file.seek(io::SeekFrom::Start(pos))?;
        file.read_to_end(&mut rest)?;
        if let Some(next) = (1..rest.len()).find(|&at| frame_at(&rest, at).is_some()) {
            let zeros = |s: u64| {
                let at = (s * SECTOR - pos) as usize;
                rest[at..at + SECTOR as usize].iter().all(|&b| b == 0)
            };
            let mut sectors = pos.div_ceil(SECTOR)..(pos + next as u64) / SECTOR;
            // Or the sector the damage starts in, from there on (it may also hold the tail
            // of the append before, written earlier): at least a frame header of zeros.
            let head = ((SECTOR - pos % SECTOR) % SECTOR) as usize;
            let head_zeros =
                (FRAME_LEN..=next).contains(&head) && rest[..head].iter().all(|&b| b == 0);
            // A later mark: between the damage and the next whole entry (the next append's
            // own, if the damage ended the one before), or among the frames after it (bytes
            // are scanned only across gaps, so an entry's content cannot pass for a mark;
            // damaged bytes that do only refuse the log).
            let mut later_mark = (1..next).any(|a| mark_at(&rest, a));
            let mut at = next;
            while at < rest.len() {
                if mark_at(&rest, at) {
                    later_mark = true;
                    break;
                }
                match frame_at(&rest, at) {
                    Some((_, len)) => at += len,
                    None => match (at + 1..rest.len())
                        .find(|&a| mark_at(&rest, a) || frame_at(&rest, a).is_some())
                    {
                        Some(a) => at = a,
                        None => break,
                    },
                }
            }
            let torn_append = marked && !later_mark && (head_zeros || sectors.any(zeros));
            if !torn_append {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: damaged entry at offset {pos} with whole entries after it: not a torn append, so not cut (entries after it may have been acknowledged); to rebuild this node, remove its journal and raft directories and let it catch up from the cluster",
                        path.display()
                    ),
                ));
            }
            eprintln!(
                "ironmatch cluster: {}: cut a torn last append at offset {pos} ({} bytes: a sector of zeros with whole entries of the same append after it, a write a power loss interrupted)",
                path.display(),
                rest.len()
            );
        } else if marked && (1..rest.len()).any(|a| mark_at(&rest, a)) {
            // No whole entry after the damage, but a mark: an append began after the
            // damaged one (a rewritten log's closing mark, an empty append), so the damaged
            // one was synced before it: damage, not a torn write.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: damaged entry at offset {pos} with a later append's mark after it: not a torn append, so not cut (it may have been acknowledged); to rebuild this node, remove its journal and raft directories and let it catch up from the cluster",
                    path.display()
                ),
            ));
        } else {
            eprintln!(
                "ironmatch cluster: {}: cut a torn tail of {} bytes",
                path.display(),
                rest.len()
            );
        }
    }
    Ok(pos)
}

/// Writes, as the store writes them, a log of `appends` (each its entries' command
/// counts; entries numbered from 1, term 1) to `dir/log`, and returns each append's byte
/// range (its mark included): for the `raft_log` fuzz target, which damages such logs.
#[doc(hidden)]
pub fn write_log_for_fuzzing(
    dir: &Path,
    appends: &[Vec<usize>],
) -> io::Result<Vec<std::ops::Range<u64>>> {
    let mut buf = Vec::new();
    let mut ranges = Vec::new();
    let mut index = 0;
    for append in appends {
        let start = buf.len() as u64;
        mark_append(&mut buf);
        for &commands in append {
            index += 1;
            let command = Command {
                ts: crate::types::Timestamp(index),
                owner: crate::types::OwnerId(0),
                body: crate::book::CommandBody::AccountQuery,
            };
            let entry = Entry::<TypeConfig> {
                log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(super::Batch {
                    commands: vec![command; commands],
                }),
            };
            encode(&mut buf, &entry);
        }
        ranges.push(start..buf.len() as u64);
    }
    std::fs::write(dir.join("log"), &buf)?;
    Ok(ranges)
}

fn read_small<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => postcard::from_bytes(&b).map(Some).map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes a small file atomically ([`crate::journal::write_file_atomically`]); with `sync`,
/// a failed sync of the file or the directory leaves `SYNC-FAILED` in `dir`
/// ([`crate::journal::write_file_atomically_or_mark`]).
fn write_small<T: serde::Serialize>(
    dir: &Path,
    name: &str,
    value: &T,
    sync: bool,
) -> io::Result<()> {
    let bytes = postcard::to_allocvec(value).map_err(io::Error::other)?;
    if sync {
        // A failed sync leaves the marker the log's does: not read again in this boot.
        crate::journal::write_file_atomically_or_mark(dir, name, &bytes).map(drop)
    } else {
        crate::journal::write_file_atomically(dir, name, &bytes, false).map(drop)
    }
}

impl RaftLogReader<TypeConfig> for RaftStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let inner = self.lock();
        let (Some(first), Some(last)) = (
            inner.slots.front().map(|s| s.log_id.index),
            inner.slots.back().map(|s| s.log_id.index),
        ) else {
            return Ok(Vec::new());
        };
        let from = match range.start_bound() {
            std::ops::Bound::Included(&i) => i,
            std::ops::Bound::Excluded(&i) => i + 1,
            std::ops::Bound::Unbounded => first,
        }
        .max(first);
        let to = match range.end_bound() {
            std::ops::Bound::Included(&i) => i,
            std::ops::Bound::Excluded(&i) => i.saturating_sub(1),
            std::ops::Bound::Unbounded => last,
        }
        .min(last);
        if range.end_bound() == std::ops::Bound::Excluded(&0) || from > to {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((to - from + 1) as usize);
        for index in from..=to {
            match inner.entry(index) {
                Ok(Some(e)) => out.push(e),
                Ok(None) => break,
                Err(e) => {
                    return Err(StoreError::IO {
                        source: StorageIOError::read_logs(io_err(e)),
                    });
                }
            }
        }
        Ok(out)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for RaftStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StoreError> {
        // The snapshot policy is `Never`: the log is kept whole, and a node that rejoins
        // catches up from it. Snapshots of the matcher for Raft are not done yet.
        Err(StoreError::IO {
            source: StorageIOError::write_snapshot(
                None,
                io_err(io::Error::other("raft snapshots are not implemented")),
            ),
        })
    }
}

impl RaftStorage<TypeConfig> for RaftStore {
    type LogReader = RaftStore;
    type SnapshotBuilder = RaftStore;

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let sync = inner.fsync == FsyncMode::Always;
        write_small(&inner.dir, "vote", vote, sync).map_err(|e| StoreError::IO {
            source: StorageIOError::write_vote(io_err(e)),
        })?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StoreError> {
        Ok(self.lock().vote)
    }

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StoreError> {
        let inner = self.lock();
        let last = inner.slots.back().map(|s| s.log_id).or(inner.purged);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn append_to_log<I>(&mut self, entries: I) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
    {
        let mut inner = self.lock();
        let mut buf = Vec::new();
        mark_append(&mut buf);
        let base = inner.log_len;
        for e in entries {
            let at = buf.len() as u64;
            encode(&mut buf, &e);
            inner.slots.push_back(Slot {
                log_id: e.log_id,
                at: base + at,
                len: (buf.len() as u64 - at) as u32,
            });
            inner.cache_entry(e);
        }
        let written = inner.log.write_all(&buf).and_then(|()| inner.sync());
        inner.log_len += buf.len() as u64;
        written.map_err(|e| StoreError::IO {
            source: StorageIOError::write_logs(io_err(e)),
        })
    }

    async fn delete_conflict_logs_since(
        &mut self,
        log_id: LogId<NodeId>,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.truncate(log_id.index).map_err(|e| StoreError::IO {
            source: StorageIOError::write_logs(io_err(e)),
        })
    }

    async fn purge_logs_upto(&mut self, log_id: LogId<NodeId>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let kept = inner.cache.split_off(&(log_id.index + 1));
        inner.cache = kept;
        inner.cached_commands = inner.cache.values().map(commands_in).sum();
        while inner
            .slots
            .front()
            .is_some_and(|s| s.log_id.index <= log_id.index)
        {
            inner.slots.pop_front();
        }
        inner.purged = Some(log_id);
        let dir = inner.dir.clone();
        write_small(&dir, "purged", &Some(log_id), true)
            .and_then(|()| inner.rewrite())
            .map_err(|e| StoreError::IO {
                source: StorageIOError::write_logs(io_err(e)),
            })
    }

    async fn last_applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StoreError> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    /// Pushes each committed entry's commands into the matcher's ring, in order. A full
    /// ring makes this wait (the matcher's backpressure reaches Raft), asleep on the
    /// runtime, so the raft thread's other tasks (heartbeats, votes, appends) go on.
    async fn apply_to_state_machine(
        &mut self,
        entries: &[Entry<TypeConfig>],
    ) -> Result<Vec<()>, StoreError> {
        let ring = {
            let mut inner = self.lock();
            for e in entries {
                inner.last_applied = Some(e.log_id);
                match &e.payload {
                    EntryPayload::Normal(batch) => {
                        inner.commands_applied += batch.commands.len() as u64;
                    }
                    EntryPayload::Membership(m) => {
                        inner.membership = StoredMembership::new(Some(e.log_id), m.clone());
                    }
                    EntryPayload::Blank => {}
                }
            }
            inner.apply.clone()
        };
        if let Some(ring) = ring {
            for e in entries {
                if let EntryPayload::Normal(batch) = &e.payload {
                    for c in &batch.commands {
                        let mut record = Record::Command(*c);
                        while let Err(back) = ring.try_push(record) {
                            record = back;
                            ring.notify();
                            tokio::time::sleep(APPLY_RETRY).await;
                        }
                    }
                }
            }
            ring.notify();
        }
        Ok(vec![(); entries.len()])
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StoreError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta<NodeId, Node>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StoreError> {
        Err(StoreError::IO {
            source: StorageIOError::write_snapshot(
                None,
                io_err(io::Error::other("raft snapshots are not implemented")),
            ),
        })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::CommandBody;
    use crate::types::{OwnerId, Timestamp};
    use openraft::CommittedLeaderId;

    fn temp(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "ironmatch-raft-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entry(term: u64, index: u64, commands: usize) -> Entry<TypeConfig> {
        let cmd = Command {
            ts: Timestamp(index),
            owner: OwnerId(0),
            body: CommandBody::AccountQuery,
        };
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(super::super::Batch {
                commands: vec![cmd; commands],
            }),
        }
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// With `fsync = "always"`, a failed `fdatasync` of the log (here on a pipe, which
    /// Linux refuses) fails the append and leaves the marker: the log is not opened again in
    /// this boot of the machine (its page cache may hold entries the disk does not); after
    /// a restart of the machine (another boot id in the marker) it is.
    #[test]
    fn a_failed_log_sync_refuses_the_log_until_the_machine_restarts() {
        let dir = temp("sync-failed");
        let store = RaftStore::open(&dir, FsyncMode::Always, 0, None)
            .unwrap()
            .store;
        let (_reader, pipe) = io::pipe().unwrap();
        store.lock().log = File::from(std::os::fd::OwnedFd::from(pipe));
        let failed = run(async {
            let mut s = store.clone();
            s.append_to_log([entry(1, 1, 1)]).await
        });
        assert!(failed.is_err(), "the append reports the failed sync");
        drop(store);
        let refused = RaftStore::open(&dir, FsyncMode::Always, 0, None)
            .err()
            .expect("refused in this boot")
            .to_string();
        assert!(refused.contains("failed in this boot"), "{refused}");
        std::fs::write(
            dir.join(crate::journal::SYNC_FAILED_NAME),
            "another boot\nInput/output error\n",
        )
        .unwrap();
        assert!(RaftStore::open(&dir, FsyncMode::Always, 0, None).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `dir` is refused at open for a sync that failed in this boot; then removed.
    fn refused_in_this_boot(dir: &Path) {
        let refused = RaftStore::open(dir, FsyncMode::Always, 0, None)
            .err()
            .expect("refused in this boot")
            .to_string();
        assert!(refused.contains("failed in this boot"), "{refused}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A vote whose sync failed may be in the page cache only: the node must not read it
    /// back in this boot (it could vote again in that term after a power loss), so the
    /// directory is marked as for the log. The sync is made to fail by a FIFO where the
    /// vote's temporary file goes (`fsync` of a FIFO fails with EINVAL).
    #[test]
    fn a_failed_vote_sync_refuses_the_directory_until_the_machine_restarts() {
        let dir = temp("vote-sync-failed");
        let store = RaftStore::open(&dir, FsyncMode::Always, 0, None)
            .unwrap()
            .store;
        let fifo = dir.join("vote.tmp");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Read and write: the open returns at once, and the write below does not block.
        let _held = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        let failed = run(async {
            let mut s = store.clone();
            s.save_vote(&Vote::new(3, 2)).await
        });
        assert!(failed.is_err(), "the vote reports the failed sync");
        drop(store);
        std::fs::remove_file(&fifo).unwrap();
        refused_in_this_boot(&dir);
        // The directory's sync after the rename: the new vote is in place, maybe only in
        // the page cache. Refused the same way.
        let dir = temp("vote-dir-sync-failed");
        let store = RaftStore::open(&dir, FsyncMode::Always, 0, None)
            .unwrap()
            .store;
        crate::journal::FAIL_DIR_SYNC.with(|f| f.set(true));
        let failed = run(async {
            let mut s = store.clone();
            s.save_vote(&Vote::new(3, 2)).await
        });
        crate::journal::FAIL_DIR_SYNC.with(|f| f.set(false));
        assert!(failed.is_err(), "the vote reports the failed sync");
        assert!(
            dir.join("vote").exists(),
            "renamed into place before the sync"
        );
        drop(store);
        refused_in_this_boot(&dir);
        // The directory's own syncs at open (the new log's name, what a killed process
        // renamed into place): the same.
        let dir = temp("open-dir-sync-failed");
        crate::journal::FAIL_DIR_SYNC.with(|f| f.set(true));
        let failed = RaftStore::open(&dir, FsyncMode::Always, 0, None).map(drop);
        crate::journal::FAIL_DIR_SYNC.with(|f| f.set(false));
        assert!(failed.is_err(), "the open reports the failed sync");
        refused_in_this_boot(&dir);
    }

    #[test]
    fn the_log_and_the_vote_survive_a_reopen_and_a_torn_tail_is_cut() {
        let dir = temp("reopen");
        run(async {
            let mut s = RaftStore::open(&dir, FsyncMode::Never, 0, None)
                .unwrap()
                .store;
            s.save_vote(&Vote::new(3, 2)).await.unwrap();
            s.append_to_log((1..=5).map(|i| entry(1, i, 2)))
                .await
                .unwrap();
            s.delete_conflict_logs_since(LogId::new(CommittedLeaderId::new(1, 1), 4))
                .await
                .unwrap();
            s.append_to_log([entry(2, 4, 3)]).await.unwrap();
        });
        // A torn append at the end.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("log"))
            .unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        // The journal holds 7 commands: entries 1..3 (6) and one of entry 4's three.
        let opened = RaftStore::open(&dir, FsyncMode::Never, 7, None).unwrap();
        assert_eq!(opened.entries, 4);
        assert_eq!(opened.resume.len(), 2);
        run(async {
            let mut s = opened.store;
            assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
            let state = s.get_log_state().await.unwrap();
            assert_eq!(state.last_log_id.unwrap().index, 4);
            assert_eq!(state.last_log_id.unwrap().leader_id.term, 2);
            let (applied, _) = s.last_applied_state().await.unwrap();
            assert_eq!(applied.unwrap().index, 4);
            let got = s.try_get_log_entries(2..4).await.unwrap();
            assert_eq!(
                got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
                [2, 3]
            );
        });
        // A journal ahead of the log is refused.
        assert!(RaftStore::open(&dir, FsyncMode::Never, 100, None).is_err());

        // Kept only when the test fails.
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_entry_with_entries_after_it_is_refused_not_cut() {
        let dir = temp("damaged");
        run(async {
            let mut s = RaftStore::open(&dir, FsyncMode::Never, 0, None)
                .unwrap()
                .store;
            s.append_to_log((1..=5).map(|i| entry(1, i, 2)))
                .await
                .unwrap();
        });
        let path = dir.join("log");
        let good = std::fs::read(&path).unwrap();
        // One bit of the second entry's body flipped: entries 3 to 5 follow it (in the
        // same append: flipped bits are damage, not a lost write).
        assert!(mark_at(&good, 0), "the append's mark");
        let (_, first) = frame_at(&good, FRAME_LEN).unwrap();
        let first = FRAME_LEN + first;
        let mut bad = good.clone();
        bad[first + FRAME_LEN + 3] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        let refused = RaftStore::open(&dir, FsyncMode::Never, 0, None)
            .err()
            .unwrap();
        assert_eq!(refused.kind(), io::ErrorKind::InvalidData, "{refused}");
        assert_eq!(std::fs::read(&path).unwrap(), bad, "nothing was cut");
        // The same damage in the last entry is a torn append: cut, four entries left.
        let (_, second) = frame_at(&good, first).unwrap();
        let mut at = first + second;
        for _ in 0..2 {
            at += frame_at(&good, at).unwrap().1;
        }
        let mut torn = good.clone();
        torn[at + FRAME_LEN + 3] ^= 0x10;
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(
            RaftStore::open(&dir, FsyncMode::Never, 0, None)
                .unwrap()
                .entries,
            4
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A power loss during an append of several entries can keep its later sectors and
    /// not an earlier one: a sector of zeros with whole entries after it. In the last
    /// append (nothing of it acknowledged) it is cut; in an earlier one (synced, perhaps
    /// acknowledged) or in a log written before appends were marked it is refused.
    #[test]
    fn a_torn_last_append_is_cut_and_an_earlier_one_refused() {
        let dir = temp("torn-append");
        // Entries of 200 commands span sectors.
        let appends = [(1..=3), (4..=9)];
        run(async {
            let mut s = RaftStore::open(&dir, FsyncMode::Never, 0, None)
                .unwrap()
                .store;
            for range in appends.clone() {
                s.append_to_log(range.map(|i| entry(1, i, 200)))
                    .await
                    .unwrap();
            }
        });
        let path = dir.join("log");
        let good = std::fs::read(&path).unwrap();
        let (frames, marks) = layout(&good);
        assert_eq!((frames.len(), marks.len()), (9, 2));
        // Zeros over the first whole sector after `from`, which must end before `before`.
        let zeroed = |from: usize, before: usize| {
            let sector = from.div_ceil(512) * 512;
            assert!(sector + 512 <= before, "a whole sector in between");
            let mut bytes = good.clone();
            bytes[sector..sector + 512].fill(0);
            bytes
        };
        let open = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            RaftStore::open(&dir, FsyncMode::Never, 0, None)
        };
        // In the last append (entries 4 to 9): entry 5 lost a sector, 6 to 9 are whole.
        let torn = zeroed(frames[4], frames[6]);
        assert_eq!(open(&torn).unwrap().entries, 4, "cut at entry 5");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            good[..frames[4]],
            "the file is cut there"
        );
        // In the first append, with the second append's mark after it: refused, whether
        // whole entries of the first append follow the gap, or the mark comes next (the
        // first append's last entry zeroed from its start to its sector's end).
        let head = {
            let end = frames[2].div_ceil(512) * 512;
            assert!(end - frames[2] >= FRAME_LEN && end < marks[1], "{end}");
            let mut bytes = good.clone();
            bytes[frames[2]..end].fill(0);
            bytes
        };
        for earlier in [zeroed(frames[0], frames[2]), head] {
            let refused = open(&earlier).err().expect("refused");
            assert_eq!(refused.kind(), io::ErrorKind::InvalidData, "{refused}");
            assert_eq!(std::fs::read(&path).unwrap(), earlier, "nothing was cut");
        }
        // The first append's last entry damaged, with nothing whole after it but the
        // second append's mark: refused too.
        let mut flipped = good[..marks[1] + FRAME_LEN].to_vec();
        flipped[frames[2] + FRAME_LEN + 1] ^= 0x40;
        let refused = open(&flipped).err().expect("refused");
        assert_eq!(refused.kind(), io::ErrorKind::InvalidData, "{refused}");
        // A log written before appends were marked: the same gap is refused.
        let unmarked: Vec<u8> = good
            .iter()
            .enumerate()
            .filter(|(i, _)| !marks.iter().any(|m| (m..&(m + FRAME_LEN)).contains(&i)))
            .map(|(_, b)| *b)
            .collect();
        let shift = 2 * FRAME_LEN;
        let old = {
            let sector = (frames[4] - shift).div_ceil(512) * 512;
            let mut bytes = unmarked.clone();
            bytes[sector..sector + 512].fill(0);
            bytes
        };
        let refused = open(&old).err().expect("refused");
        assert_eq!(refused.kind(), io::ErrorKind::InvalidData, "{refused}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The frames of a log: each entry's start, and each mark's.
    fn layout(bytes: &[u8]) -> (Vec<usize>, Vec<usize>) {
        let (mut frames, mut marks, mut at) = (Vec::new(), Vec::new(), 0);
        while at < bytes.len() {
            if mark_at(bytes, at) {
                marks.push(at);
                at += FRAME_LEN;
            } else {
                frames.push(at);
                at += frame_at(bytes, at).expect("a whole entry").1;
            }
        }
        (frames, marks)
    }

    /// A last append whose first sector was lost where it shares a sector with the append
    /// before (zeros from its mark to that sector's end, its later sectors whole) is cut
    /// at its mark; and a log rewritten after a purge (all of it synced) ends with a mark,
    /// so a gap in it is refused, not cut as if it were a torn last append.
    #[test]
    fn a_lost_head_sector_is_cut_and_a_rewritten_log_is_not() {
        let dir = temp("head-sector");
        run(async {
            let mut s = RaftStore::open(&dir, FsyncMode::Never, 0, None)
                .unwrap()
                .store;
            s.append_to_log([entry(1, 1, 3)]).await.unwrap();
            s.append_to_log((2..=4).map(|i| entry(1, i, 200)))
                .await
                .unwrap();
        });
        let path = dir.join("log");
        let good = std::fs::read(&path).unwrap();
        let (frames, marks) = layout(&good);
        let mark = marks[1];
        let boundary = mark.div_ceil(512) * 512;
        assert!(mark % 512 != 0 && boundary - mark >= FRAME_LEN && boundary < frames[2]);
        let mut torn = good.clone();
        torn[mark..boundary].fill(0);
        std::fs::write(&path, &torn).unwrap();
        let opened = RaftStore::open(&dir, FsyncMode::Never, 0, None).unwrap();
        assert_eq!(opened.entries, 1, "cut at the last append's mark");
        assert_eq!(std::fs::read(&path).unwrap(), good[..mark]);
        // Appends after the cut, then a purge of the first entry: the log is rewritten.
        run(async {
            let mut s = opened.store;
            s.append_to_log((2..=4).map(|i| entry(1, i, 200)))
                .await
                .unwrap();
            s.purge_logs_upto(LogId::new(CommittedLeaderId::new(1, 1), 1))
                .await
                .unwrap();
        });
        let rewritten = std::fs::read(&path).unwrap();
        let (frames, marks) = layout(&rewritten);
        assert_eq!(frames.len(), 3);
        assert_eq!(
            marks.last(),
            Some(&(rewritten.len() - FRAME_LEN)),
            "a mark at the end"
        );
        let sector = frames[0].div_ceil(512) * 512;
        assert!(sector + 512 <= frames[2]);
        let mut gap = rewritten.clone();
        gap[sector..sector + 512].fill(0);
        std::fs::write(&path, &gap).unwrap();
        let refused = RaftStore::open(&dir, FsyncMode::Never, 0, None)
            .err()
            .expect("refused");
        assert_eq!(refused.kind(), io::ErrorKind::InvalidData, "{refused}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_leader_takes_logins_only_once_egress_holds_every_applied_command() {
        use super::super::{Catchup, ClusterRole};
        use crate::journal::Released;
        use std::sync::atomic::Ordering;
        let dir = temp("catchup");
        run(async {
            let mut s = RaftStore::open(&dir, FsyncMode::Never, 0, None)
                .unwrap()
                .store;
            s.apply_to_state_machine(&[entry(1, 1, 3)]).await.unwrap();
            let released = Arc::new(Released::default());
            let role = ClusterRole::default();
            let mut catchup = Catchup {
                applied: s.clone(),
                released: Arc::clone(&released),
                term: None,
            };
            let set = |commands: u64, events: u64| {
                released.events.store(events, Ordering::Release);
                released.commands.store(commands, Ordering::Release);
            };
            set(2, 5);
            assert!(
                !catchup.caught_up(1, &role),
                "one applied command not released"
            );
            set(3, 9);
            assert!(catchup.caught_up(1, &role));
            assert_eq!(role.egress_target(), 9);
            // Kept for the term while new commands are applied and still in the pipeline.
            s.apply_to_state_machine(&[entry(1, 2, 4)]).await.unwrap();
            assert!(catchup.caught_up(1, &role));
            assert_eq!(role.egress_target(), 9);
            // A new term (this node led, lost, leads again) checks again.
            assert!(!catchup.caught_up(2, &role));
            set(7, 20);
            assert!(catchup.caught_up(2, &role));
            assert_eq!(role.egress_target(), 20);
        });

        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn entries_beyond_the_memory_budget_are_read_back_from_the_file() {
        let dir = temp("budget");
        let per = 1_100;
        let n = (CACHE_COMMANDS_MAX / per + 20) as u64;
        run(async {
            let mut s = RaftStore::open(&dir, FsyncMode::Never, 0, None)
                .unwrap()
                .store;
            s.append_to_log((1..=n).map(|i| entry(1, i, per)))
                .await
                .unwrap();
            {
                let inner = s.lock();
                assert!(inner.cached_commands <= CACHE_COMMANDS_MAX);
                assert!(!inner.cache.contains_key(&1), "the oldest left memory");
                assert_eq!(inner.slots.len() as u64, n);
            }
        });
        // Reopened with the journal holding 5 entries and 7 commands of the sixth: the
        // open reads the file an entry at a time and keeps only the newest in memory.
        let journal = per as u64 * 5 + 7;
        let opened = RaftStore::open(&dir, FsyncMode::Never, journal, None).unwrap();
        assert_eq!(opened.entries as u64, n);
        assert_eq!(opened.resume.len(), per - 7);
        run(async {
            let mut s = opened.store;
            {
                let inner = s.lock();
                assert!(inner.cached_commands <= CACHE_COMMANDS_MAX);
                assert!(inner.cached_commands + per > CACHE_COMMANDS_MAX);
                assert_eq!(inner.cache.keys().next_back(), Some(&n));
                assert!(!inner.cache.contains_key(&1), "the oldest left memory");
                assert_eq!(inner.commands_applied, per as u64 * 6);
                assert_eq!(inner.last_applied.map(|l| l.index), Some(6));
            }
            // Old (from the file) and new (from memory) entries, across the boundary.
            let got = s.try_get_log_entries(1..=n).await.unwrap();
            assert_eq!(got.len() as u64, n);
            for (i, e) in got.iter().enumerate() {
                assert_eq!(*e, entry(1, i as u64 + 1, per));
            }
            // A conflicting tail cut inside the file part, then a new entry after it.
            s.delete_conflict_logs_since(LogId::new(CommittedLeaderId::new(1, 1), 3))
                .await
                .unwrap();
            s.append_to_log([entry(2, 3, 5)]).await.unwrap();
            let got = s.try_get_log_entries(..).await.unwrap();
            assert_eq!(
                got,
                vec![entry(1, 1, per), entry(1, 2, per), entry(2, 3, 5)]
            );
        });
        let opened = RaftStore::open(&dir, FsyncMode::Never, 0, None).unwrap();
        assert_eq!(opened.entries, 3);

        let _ = std::fs::remove_dir_all(&dir);
    }
}
