//! The journal writer stage: batches of records appended with one `write` (and, with
//! `fsync = "always"`, one `fdatasync`), then the batch's events released to egress.
//! [`JournalAgent`] runs on its own thread or on the one shared with the gateway and the
//! matcher; either way egress sees only events it released after their write.
//!
//! With [metrics](crate::admin::metrics) set, each batch adds its records, bytes, size and
//! `write` / `fdatasync` durations, finishes the matcher's [`Mark`]s it covers (match to
//! journaled latency) and hands a mark of its own to egress.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::format::{Entry, HEADER_LEN, Header, RECORD_LEN_MAX, write_header, write_record};
use super::{BATCH_LEN_MAX, RECORDS_PER_INPUT_MAX};
use crate::admin::metrics::{EngineMetrics, Mark, MarkReader};
use crate::book::{Command, Event};
use crate::pipeline::{Agent, Record, Ring, Signal};
use crate::venue::VenueClock;

/// How often a held writer looks at its hold flag.
const HOLD_POLL: Duration = Duration::from_millis(1);

/// With `fsync = "never"`, the segment's data is pushed to disk in the background every
/// this many bytes, so that the `fdatasync` closing a full segment (which keeps a torn
/// segment from being followed by a valid one after a power loss) has little left to
/// write: without it, closing a 256 MiB segment wrote it all on the writer's path
/// (stalls of 100+ ms at 100,000 messages per second).
const WRITEBACK_BYTES: u64 = 4 << 20;

/// A thread that `fdatasync`s the files it is handed, off the writer's path.
#[derive(Debug)]
struct Writeback {
    files: crossbeam::channel::Sender<File>,
    /// Segment length when writeback was last asked for.
    asked_at: u64,
    /// The first error of a background `fdatasync`, for the writer to stop on.
    failed: Arc<std::sync::OnceLock<(io::ErrorKind, String)>>,
    /// The thread, joined when the writer goes (after the sync it may be running).
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writeback {
    /// Ends the thread (its queue closed) and joins it, so that a stopped engine leaves
    /// no thread of its own behind.
    fn drop(&mut self) {
        let (closed, _) = crossbeam::channel::bounded(0);
        drop(std::mem::replace(&mut self.files, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Writeback {
    fn start() -> io::Result<Writeback> {
        let (files, queue) = crossbeam::channel::bounded::<File>(1);
        let failed = Arc::new(std::sync::OnceLock::new());
        let report = Arc::clone(&failed);
        let thread = std::thread::Builder::new()
            .name("im-writeback".into())
            .spawn(move || {
                for file in queue {
                    if let Err(e) = file.sync_data() {
                        // The file is the writer's (a `dup`, one open file description):
                        // Linux reports a failed writeback once per description, so the
                        // writer's own fdatasync would not see it. It reads this instead.
                        let _ = report.set((e.kind(), e.to_string()));
                    }
                }
            })?;
        Ok(Writeback {
            files,
            asked_at: 0,
            failed,
            thread: Some(thread),
        })
    }

    /// The background writeback's error, if one came: data already written may not be
    /// on disk, nor readable back, so nothing more may be acknowledged.
    fn error(&self) -> io::Result<()> {
        match self.failed.get() {
            None => Ok(()),
            Some((kind, message)) => Err(io::Error::new(
                *kind,
                format!("background writeback failed: {message}"),
            )),
        }
    }

    /// Asks for `file` (now `len` bytes) to be written back if `WRITEBACK_BYTES` were
    /// appended since the last time and the thread is free.
    fn poke(&mut self, file: &File, len: u64) {
        if len < self.asked_at + WRITEBACK_BYTES {
            return;
        }
        if self.files.is_empty()
            && let Ok(clone) = file.try_clone()
            && self.files.try_send(clone).is_ok()
        {
            self.asked_at = len;
        }
    }
}

/// When the writer forces data to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncMode {
    /// Never: acknowledged facts survive a process crash, not a power loss.
    Never,
    /// After every batch, before its events are released: they survive a power loss too.
    Always,
}

impl FsyncMode {
    /// Parses the configuration value.
    pub fn parse(text: &str) -> Option<FsyncMode> {
        match text {
            "never" => Some(FsyncMode::Never),
            "always" => Some(FsyncMode::Always),
            _ => None,
        }
    }
}

/// What one [`JournalWriter::commit_timed`] wrote and how long it took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitTimes {
    /// Bytes written.
    pub bytes: u64,
    /// The batch's `write`.
    pub write: Duration,
    /// The batch's `fdatasync` (`fsync = "always"` only).
    pub sync: Option<Duration>,
    /// The `fdatasync` that closed the previous segment, if this batch started a new one.
    pub rotation_sync: Option<Duration>,
}

/// Appends records to the current segment, rotating at a size limit.
#[derive(Debug)]
pub struct JournalWriter {
    dir: PathBuf,
    fsync: FsyncMode,
    segment_bytes_max: u64,
    header: Header,
    file: File,
    file_len: u64,
    next_seq: u64,
    buf: Vec<u8>,
    /// Records staged in the current batch: the next one's index in it.
    staged: u16,
    events: Vec<Event>,
    /// Woken after each batch is written (the feed publisher follows the files).
    followers: Option<Arc<Signal>>,
    /// While set, the writer holds each batch before writing it (a stalled disk, for tests).
    hold: Option<Arc<AtomicBool>>,
    /// Background writeback of the current segment (`fsync = "never"` only).
    writeback: Option<Writeback>,
    /// The last record written (made durable with `fsync = "always"`), for the snapshot
    /// writer.
    written: Arc<AtomicU64>,
    /// What the writer released to egress, for a cluster's new leader (see [`Released`]).
    released: Arc<Released>,
}

/// The lock file in a journal directory.
pub const LOCK_NAME: &str = "LOCK";

/// The file a failed `fdatasync` leaves in a journal directory (with `fsync = "always"`).
/// Linux reports a failed writeback once and may mark the pages clean: until the machine
/// restarts, their page-cache copies read back as if they were on disk, so a start in the
/// same boot would recover them and serve them as acknowledged while a power loss can still
/// take them. It holds the boot's id (a line), then the error; see [`check_sync_failed`].
pub const SYNC_FAILED_NAME: &str = "SYNC-FAILED";

/// This boot of the machine (Linux's `boot_id`), if known.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_string())
}

/// Leaves [`SYNC_FAILED_NAME`] in `dir` after `error`, as well as it can. It matters only
/// until the machine restarts, while the page cache is what a start reads, so it is not
/// synced (the disk that failed the sync would likely fail that too, and the marker would
/// be missing): written and renamed, then the directory synced if the disk still takes it.
/// If even the write fails, the error itself still stops the engine.
fn mark_sync_failed(dir: &Path, error: &io::Error) {
    let text = format!("{}\n{error}\n", boot_id().unwrap_or_default());
    if write_file_atomically(dir, SYNC_FAILED_NAME, text.as_bytes(), false).is_ok() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
}

/// `fdatasync` of `file`, leaving the marker in `dir` if it fails (the journal's, and a
/// cluster node's Raft log in its own directory).
pub fn sync_or_mark(file: &File, dir: &Path) -> io::Result<()> {
    file.sync_data().inspect_err(|e| mark_sync_failed(dir, e))
}

/// Syncs directory `dir` itself (the names in it: a file created, or renamed into place);
/// if that fails, leaves [`SYNC_FAILED_NAME`] in it as [`sync_or_mark`] does.
pub fn sync_dir_or_mark(dir: &Path) -> io::Result<()> {
    sync_dir(&File::open(dir)?).inspect_err(|e| mark_sync_failed(dir, e))
}

#[cfg(test)]
thread_local! {
    /// Tests: the next directory syncs on this thread fail (a directory's `fsync` does not
    /// fail on demand otherwise).
    pub(crate) static FAIL_DIR_SYNC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn sync_dir(dir: &File) -> io::Result<()> {
    #[cfg(test)]
    if FAIL_DIR_SYNC.with(|f| f.get()) {
        return Err(io::Error::other("directory sync failed (a test's)"));
    }
    dir.sync_all()
}

/// Refuses a journal (or a Raft log directory) whose `fdatasync` failed in this boot of
/// the machine (see [`SYNC_FAILED_NAME`]), naming the error and what to do. After a restart of the machine
/// the page cache is gone and what reads back is what the disk holds: the marker is
/// removed and the start goes on. Without a boot id to compare (not Linux), the start is
/// refused until the operator removes the marker.
pub fn check_sync_failed(dir: &Path) -> io::Result<()> {
    let path = dir.join(SYNC_FAILED_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let (marked, error) = text.split_once('\n').unwrap_or((text.as_str(), ""));
    // An empty marker (its content, written unsynced, did not outlive a crash: in the same
    // boot the page cache would hold it) is an earlier boot's too. One written without a
    // boot id (it could not be read then) tells nothing: refused.
    match boot_id() {
        Some(now) if text.is_empty() || (!marked.is_empty() && now != marked) => {
            eprintln!(
                "ironmatch: {}: an fdatasync failed before the machine restarted ({}); what reads back now is what the disk holds: going on",
                dir.display(),
                error.trim()
            );
            std::fs::remove_file(&path)?;
            File::open(dir)?.sync_all()
        }
        _ => Err(io::Error::other(format!(
            "{}: an fdatasync failed in this boot of the machine ({}): what was written after the last good sync may read back from the page cache without being on disk, and this start would take it as acknowledged. Check the disk, then restart the machine (the first start after removes {SYNC_FAILED_NAME}), or remove {} to take the directory as it reads now",
            dir.display(),
            error.trim(),
            path.display()
        ))),
    }
}

/// How long [`lock_dir`] waits for a journal's lock that is taken before it refuses.
///
/// A lock whose engine stopped can still be held for a moment: the `flock` belongs to the
/// open file, and a child process that another thread of the same process started (a
/// `fork` or `posix_spawn` while the engine ran) holds a copy of every open file until its
/// `exec` closes them. An embedder (or a test harness) that runs programs beside an engine
/// it stops and restarts on one journal met that copy as "in use by another ironmatch".
/// Another engine's lock lasts far longer than this, and is refused after it.
pub const LOCK_PATIENCE: Duration = Duration::from_secs(2);

/// Takes the journal directory's exclusive lock (an advisory `flock` on its `LOCK` file,
/// created if need be), or fails, naming the directory, if another process (or another
/// engine in this one) holds it for [`LOCK_PATIENCE`]. The lock lasts as long as the
/// returned file; the kernel drops it when the process ends, however it ends.
pub fn lock_dir(dir: &Path) -> io::Result<File> {
    lock_dir_within(dir, LOCK_PATIENCE)
}

/// [`lock_dir`], waiting at most `patience` for a lock that is taken.
fn lock_dir_within(dir: &Path, patience: Duration) -> io::Result<File> {
    create_dir_durably(dir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_NAME))?;
    let deadline = Instant::now() + patience;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "journal {}: in use by another ironmatch (its {LOCK_NAME} file stayed locked for {patience:?}): one engine per journal directory",
                        dir.display()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// Creates `dir` and its missing ancestors, each one's entry synced in its parent, so
/// that a directory made today (a trading day's journal) outlives a power loss as the
/// segments synced in it must.
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .collect();
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

/// Writes `bytes` as file `name` of `dir` whole or not at all: to `name.tmp`, then renamed
/// over `name`. With `sync`, the file is synced before the rename and the directory after
/// it, so the new contents outlive a power loss once this returns. Returns the path.
pub fn write_file_atomically(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    sync: bool,
) -> io::Result<PathBuf> {
    replace_file(dir, name, bytes, sync, false)
}

/// [`write_file_atomically`] with `sync`, for a file a start must never read back from the
/// page cache alone (a Raft node's vote: the one it gave, lost in a power loss after a
/// restart answered for it, lets it vote twice in a term): a failed `fsync` of the file
/// or of the directory leaves [`SYNC_FAILED_NAME`] in `dir`, as [`sync_or_mark`] does for
/// a log, so the directory is refused until the machine restarts.
pub fn write_file_atomically_or_mark(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    replace_file(dir, name, bytes, true, true)
}

fn replace_file(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    sync: bool,
    mark: bool,
) -> io::Result<PathBuf> {
    let marked = |e: &io::Error| {
        if mark {
            mark_sync_failed(dir, e)
        }
    };
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        if sync {
            file.sync_all().inspect_err(marked)?;
        }
    }
    std::fs::rename(&tmp, &path)?;
    if sync {
        sync_dir(&File::open(dir)?).inspect_err(marked)?;
    }
    Ok(path)
}

/// The file name of the segment starting at `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.imj")
}

impl JournalWriter {
    /// A writer appending to `path` (an existing segment of `len` bytes, or a new one if
    /// `path` is `None`), whose next record is `next_seq`.
    pub fn open(
        dir: &Path,
        header: Header,
        last_segment: Option<(&Path, u64)>,
        next_seq: u64,
        fsync: FsyncMode,
        segment_bytes_max: u64,
    ) -> io::Result<JournalWriter> {
        std::fs::create_dir_all(dir)?;
        let (file, file_len) = match last_segment {
            Some((path, len)) => {
                let file = OpenOptions::new().append(true).open(path)?;
                if fsync == FsyncMode::Always {
                    // A crash between a batch's write and its fdatasync leaves records in
                    // the page cache only, and recovery has just read them as the journal:
                    // make them durable before any of them is served again. So too the
                    // segment's name: a process killed between a new segment's file sync
                    // and its directory's left an entry that a power loss could still
                    // take, with every record appended to it since.
                    sync_or_mark(&file, dir)?;
                    sync_dir_or_mark(dir)?;
                }
                (file, len)
            }
            None => (
                create_segment(
                    dir,
                    &Header {
                        first_seq: next_seq,
                        ..header
                    },
                )?,
                HEADER_LEN as u64,
            ),
        };
        Ok(JournalWriter {
            dir: dir.to_path_buf(),
            fsync,
            segment_bytes_max,
            header,
            file,
            file_len,
            next_seq,
            // A batch is up to BATCH_LEN_MAX ring records, each up to RECORDS_PER_INPUT_MAX
            // journal records (a match is three).
            buf: Vec::with_capacity(
                RECORDS_PER_INPUT_MAX * BATCH_LEN_MAX * RECORD_LEN_MAX + RECORD_LEN_MAX,
            ),
            staged: 0,
            events: Vec::with_capacity(RECORDS_PER_INPUT_MAX * BATCH_LEN_MAX),
            followers: None,
            hold: None,
            writeback: match fsync {
                FsyncMode::Never => Some(Writeback::start()?),
                FsyncMode::Always => None,
            },
            written: Arc::new(AtomicU64::new(next_seq - 1)),
            released: Arc::new(Released::default()),
        })
    }

    /// Wakes `signal`'s thread after every batch written (and at shutdown).
    pub fn set_follower_signal(&mut self, signal: Arc<Signal>) {
        self.followers = Some(signal);
    }

    /// Makes the writer hold each batch, before writing it, while `hold` is set: a stalled
    /// disk on demand, so tests can show that no reply leaves before its batch is written.
    pub fn set_hold(&mut self, hold: Arc<AtomicBool>) {
        self.hold = Some(hold);
    }

    /// The sequence number of the last record written (with `fsync = "always"`, made
    /// durable), published after each batch: whoever reads it may rely on every record up
    /// to it being in the files.
    pub fn written(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.written)
    }

    /// What this writer has released to egress, published after each batch.
    pub fn released(&self) -> Arc<Released> {
        Arc::clone(&self.released)
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Adds a record to the current batch.
    pub fn stage(&mut self, entry: &Entry) {
        // The pipeline's batches are far shorter; a batch written in one go of any length
        // goes through `stage_bounded`, which commits before the index runs out.
        debug_assert!(
            self.staged < u16::MAX,
            "a batch past 65,535 records: stage it with stage_bounded"
        );
        write_record(&mut self.buf, self.next_seq, self.staged, entry);
        self.staged = self.staged.saturating_add(1);
        self.next_seq += 1;
    }

    /// [`stage`](Self::stage), committing the batch first when it holds as many records as
    /// a record's index in its batch can number (65,535): for a batch of any length, such
    /// as the end of the day's cancels of every resting order, written in one go. Past that
    /// count the indexes stayed at the last, and a power loss in such a batch's write made
    /// the start refuse the journal instead of cutting the torn batch.
    pub fn stage_bounded(&mut self, entry: &Entry) -> io::Result<()> {
        if self.staged == u16::MAX {
            self.commit()?;
        }
        self.stage(entry);
        Ok(())
    }

    /// Writes the batch (rotating first if the segment would pass its limit) and, with
    /// `fsync = "always"`, makes it durable.
    pub fn commit(&mut self) -> io::Result<()> {
        self.commit_timed().map(|_| ())
    }

    /// [`commit`](Self::commit), saying how long its system calls took.
    pub fn commit_timed(&mut self) -> io::Result<CommitTimes> {
        let mut times = CommitTimes::default();
        if self.buf.is_empty() {
            return Ok(times);
        }
        if let Some(writeback) = &self.writeback {
            writeback.error()?;
        }
        if self.file_len + self.buf.len() as u64 > self.segment_bytes_max
            && self.file_len > HEADER_LEN as u64
        {
            times.rotation_sync = Some(self.rotate()?);
        }
        let start = Instant::now();
        self.file.write_all(&self.buf)?;
        times.write = start.elapsed();
        times.bytes = self.buf.len() as u64;
        self.file_len += self.buf.len() as u64;
        self.buf.clear();
        self.staged = 0;
        match (&mut self.writeback, self.fsync) {
            (_, FsyncMode::Always) => {
                let start = Instant::now();
                sync_or_mark(&self.file, &self.dir)?;
                times.sync = Some(start.elapsed());
            }
            (Some(writeback), FsyncMode::Never) => writeback.poke(&self.file, self.file_len),
            (None, FsyncMode::Never) => {}
        }
        self.written.store(self.next_seq - 1, Ordering::Release);
        Ok(times)
    }

    /// Closes the current segment durably and starts the next; returns how long the
    /// closing `fdatasync` took.
    fn rotate(&mut self) -> io::Result<Duration> {
        // The batch about to be written starts the new segment.
        let staged = self.buf_first_seq();
        let start = Instant::now();
        match self.fsync {
            FsyncMode::Always => sync_or_mark(&self.file, &self.dir)?,
            FsyncMode::Never => self.file.sync_data()?,
        }
        // The background writeback shares this file's description, and Linux reports a
        // failed writeback once per description: if the thread's sync took the error, this
        // one succeeded, and the segment would close with a hole (a damaged segment before
        // a whole one, which a start refuses). Its error, looked at again, stops the
        // rotation before the new segment takes a batch.
        if let Some(writeback) = &self.writeback {
            writeback.error()?;
        }
        let synced = start.elapsed();
        self.file = create_segment(
            &self.dir,
            &Header {
                first_seq: staged,
                ..self.header
            },
        )?;
        self.file_len = HEADER_LEN as u64;
        if let Some(writeback) = &mut self.writeback {
            writeback.asked_at = 0;
        }
        Ok(synced)
    }

    /// Sequence number of the first staged record.
    fn buf_first_seq(&self) -> u64 {
        u64::from_le_bytes(self.buf[4..12].try_into().expect("a staged record"))
    }
}

/// Counts of what the journal writer has written and released to egress, for a cluster
/// node that becomes the leader: it takes logins only once every command it applied has
/// its events in egress's ring (see [`crate::cluster`]), so a client logging in with its
/// next sequence number finds its whole stream there.
#[derive(Debug, Default)]
pub struct Released {
    /// Commands written whose events are all in egress's ring (those the journal held at
    /// start included: the server sets that base before the writer runs; after that the
    /// writer is the only one to write either count). A batch can end between a command
    /// and its last event: the writer counts a command once a later command's record came,
    /// or once the matcher says all its records are out and none is left to take.
    pub commands: AtomicU64,
    /// Events pushed to egress's ring since start. Stored before `commands`: who reads
    /// `commands` first (Acquire) then this has at least those commands' events.
    pub events: AtomicU64,
}

/// The journal writer stage as an agent: each `do_work` appends one batch (one `write`,
/// with `fsync = "always"` one `fdatasync`), and only then releases the batch's events to
/// egress. Done once a [`Record::Shutdown`] went through.
pub struct JournalAgent {
    writer: JournalWriter,
    input: Arc<Ring<Record>>,
    output: Arc<Ring<Record>>,
    done: bool,
    metrics: Option<Arc<EngineMetrics>>,
    /// Records taken from `input` so far (the shutdown marker aside), for [`Mark`]s.
    taken_total: u64,
    /// Events released to `output` so far, for [`Mark`]s.
    released_total: u64,
    marks: MarkReader,
    /// When the last batch was written (ns since midnight), for marks that arrive after
    /// their records were written (the matcher marks a batch once it is done with it, and
    /// on its own thread the writer may have written it by then).
    last_commit_ns: u64,
    /// The clock for metrics (the gateway's).
    clock: VenueClock,
    /// The last command taken: the records after it are its events
    /// ([`Record::for_each_event`] builds a [`Record::Rested`]'s from it).
    command: Option<Command>,
    /// Commands taken since start.
    commands_taken: u64,
    /// Of those, the ones counted in [`Released::commands`].
    commands_released: u64,
    /// The matcher's count of commands whose records are all in `input`
    /// ([`crate::engine::MatcherAgent::completed`]).
    matched: Arc<AtomicU64>,
}

impl JournalAgent {
    /// The stage between `input` (from the matcher) and `output` (to egress); `matched`
    /// is the matcher's [`crate::engine::MatcherAgent::completed`].
    pub fn new(
        writer: JournalWriter,
        input: Arc<Ring<Record>>,
        output: Arc<Ring<Record>>,
        matched: Arc<AtomicU64>,
    ) -> Self {
        JournalAgent {
            writer,
            input,
            output,
            done: false,
            metrics: None,
            taken_total: 0,
            released_total: 0,
            marks: MarkReader::default(),
            last_commit_ns: 0,
            clock: VenueClock::utc(),
            command: None,
            commands_taken: 0,
            commands_released: 0,
            matched,
        }
    }

    /// Commands taken whose events are all released: every one but the last taken, and
    /// the last too if the matcher counts it complete and nothing is left in `input`
    /// (records pushed before the matcher's count are visible once it is read).
    fn commands_complete(&self) -> u64 {
        let matched = self.matched.load(Ordering::Acquire);
        let last_done = matched >= self.commands_taken && self.input.is_empty();
        self.commands_taken - u64::from(self.commands_taken > 0 && !last_done)
    }

    /// Adds the commands newly complete to [`Released::commands`]; called after a batch's
    /// events went to egress, and when idle (the matcher's count may come after the last
    /// record).
    fn release_commands(&mut self) {
        if self.commands_released == self.commands_taken {
            return;
        }
        let complete = self.commands_complete();
        if complete > self.commands_released {
            // This thread is its only writer: a load and a store, not a locked add.
            let r = &self.writer.released;
            r.commands.store(
                r.commands.load(Ordering::Relaxed) + (complete - self.commands_released),
                Ordering::Release,
            );
            self.commands_released = complete;
        }
    }

    /// Publishes what it writes, and how fast, into `metrics`.
    pub fn set_metrics(&mut self, metrics: Arc<EngineMetrics>) {
        self.clock = metrics.clock.clone();
        self.metrics = Some(metrics);
    }

    /// The ring from the matcher (its depth is a metric).
    pub fn input(&self) -> &Arc<Ring<Record>> {
        &self.input
    }

    /// After a batch of `records` journal records was written as `times` says: counters,
    /// histograms, and the matcher's marks this batch finished.
    fn count_batch(&mut self, records: u64, times: &CommitTimes) -> u64 {
        let Some(m) = &self.metrics else {
            return 0;
        };
        if records == 0 {
            return 0;
        }
        let j = &m.journal;
        j.records.add(records);
        j.bytes.add(times.bytes);
        j.batch_records.record(records, 1);
        j.write_ns.record(times.write.as_nanos() as u64, 1);
        for sync in [times.rotation_sync, times.sync].into_iter().flatten() {
            j.fsync_ns.record(sync.as_nanos() as u64, 1);
        }
        let now = self.clock.now().0;
        self.marks.finish(
            &m.to_journal_marks,
            self.taken_total,
            now,
            &j.match_to_journaled,
        );
        self.last_commit_ns = now;
        now
    }

    /// With nothing to write: finishes marks whose records were written before the mark
    /// came, at the time of the last write (a mark stamped after it counts 0).
    fn finish_late_marks(&mut self) {
        if let Some(m) = &self.metrics {
            self.marks.finish(
                &m.to_journal_marks,
                self.taken_total,
                self.last_commit_ns,
                &m.journal.match_to_journaled,
            );
        }
    }
}

impl Agent for JournalAgent {
    fn role(&self) -> &'static str {
        "journal"
    }

    /// Appends up to [`BATCH_LEN_MAX`] records. A write error stops the process: nothing
    /// may be acknowledged that is not in the journal.
    fn do_work(&mut self) -> usize {
        let w = &mut self.writer;
        let mut taken = 0;
        // Ring records taken (the matcher's marks count these) and journal records
        // written (a fill's ring record is three).
        let mut records = 0u64;
        let mut written = 0u64;
        let mut shutdown = false;
        // Every event of the batch is pushed to egress's ring below, and with `shared`
        // threading egress drains it only after this turn: take no record whose events
        // might not fit (one ring record makes up to RECORDS_PER_INPUT_MAX). Read once:
        // only this thread fills that ring.
        let room = self.output.room();
        while taken < BATCH_LEN_MAX {
            if w.events.len() + RECORDS_PER_INPUT_MAX > room {
                break;
            }
            match self.input.try_pop() {
                Some(Record::Command(c)) => {
                    w.stage(&Entry::Command(c));
                    self.command = Some(c);
                    self.commands_taken += 1;
                    records += 1;
                    written += 1;
                }
                // An event, or a group of them from the matcher (`Record::Fill`, ...),
                // expanded here.
                Some(
                    record @ (Record::Event(_)
                    | Record::Fill(_)
                    | Record::Removed(_)
                    | Record::Rested(_)),
                ) => {
                    record.for_each_event(self.command.as_ref(), |e| {
                        w.stage(&Entry::Event(e));
                        w.events.push(e);
                    });
                    records += 1;
                    written += record.journal_records();
                }
                Some(Record::Shutdown) => {
                    shutdown = true;
                    taken += 1;
                    break;
                }
                None => break,
            }
            taken += 1;
        }
        if taken == 0 {
            self.finish_late_marks();
            self.release_commands();
            return 0;
        }
        while w.hold.as_ref().is_some_and(|h| h.load(Ordering::Acquire)) {
            std::thread::sleep(HOLD_POLL);
        }
        let times = match w.commit_timed() {
            Ok(times) => times,
            Err(e) => {
                eprintln!(
                    "ironmatch journal: cannot write to {}: {e}; stopping",
                    w.dir.display()
                );
                std::process::exit(74);
            }
        };
        // Marks whose records were all written by an earlier batch count at that write, not
        // at this one (under steady load the writer rarely idles to finish them).
        self.finish_late_marks();
        self.taken_total += records;
        let journaled_ns = self.count_batch(written, &times);
        // The mark goes before the events, so egress never takes events without it.
        let w = &mut self.writer;
        let released = w.events.len() as u64;
        if let (Some(m), true) = (&self.metrics, released > 0) {
            self.released_total += released;
            m.to_egress_marks.push(Mark {
                end: self.released_total,
                weight: released,
                at_ns: journaled_ns,
            });
        }
        // Only now may the batch's events be acknowledged.
        for e in w.events.drain(..) {
            self.output.push(Record::Event(e));
        }
        // This thread is their only writer: a load and a store, not a locked add.
        let r = &w.released;
        r.events.store(
            r.events.load(Ordering::Relaxed) + released,
            Ordering::Release,
        );
        self.release_commands();
        let w = &self.writer;
        if let Some(signal) = &w.followers {
            signal.notify();
        }
        if shutdown {
            self.output.push(Record::Shutdown);
            self.done = true;
        }
        self.output.notify();
        taken
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn prepare_sleep(&mut self) -> bool {
        if !self.input.prepare_sleep() {
            return false;
        }
        // The matcher may have counted the last command complete after the last look; a
        // wake-up lost to that race costs at most the runner's longest sleep.
        if self.commands_complete() > self.commands_released {
            self.input.woke();
            return false;
        }
        true
    }

    fn woke(&mut self) {
        self.input.woke();
    }
}

/// Creates a segment file with its header, durably (file and directory entry).
fn create_segment(dir: &Path, header: &Header) -> io::Result<File> {
    let path = dir.join(segment_name(header.first_seq));
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)?;
    file.write_all(&write_header(header))?;
    // A failed sync leaves the mark that refuses a start in this boot, as a batch's does.
    file.sync_all().inspect_err(|e| mark_sync_failed(dir, e))?;
    sync_dir_or_mark(dir)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nested directories are all created, and creating them again is a no-op. (That each
    /// new one is synced in its parent has no effect a test can see; it was checked under
    /// strace: one fsync per directory created, none when they exist.)
    #[test]
    fn directories_are_created_with_their_ancestors() {
        let base = std::env::temp_dir().join(format!("ironmatch-mkdir-{}", std::process::id()));
        let dir = base.join("journal").join("2026-12-07");
        create_dir_durably(&dir).unwrap();
        assert!(dir.is_dir());
        create_dir_durably(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&base);
    }

    /// A lock still held for a moment after its engine let it go (by a copy of the open
    /// file: what a child process started beside the engine holds until its `exec`; a
    /// `try_clone` is that copy) is waited for and taken; one held throughout the patience
    /// is refused, naming the directory. (CI saw the first: a test restarting an engine on
    /// its journal was refused while another test's `replay` child was starting.)
    #[test]
    fn a_lock_let_go_in_a_moment_is_taken_and_one_kept_is_refused() {
        let dir = std::env::temp_dir().join(format!(
            "ironmatch-lockwait-{}-{}",
            std::process::id(),
            crate::venue::epoch_ns()
        ));
        let first = lock_dir(&dir).unwrap();
        let copy = first.try_clone().unwrap();
        drop(first);
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(copy);
        });
        let second = lock_dir(&dir).expect("taken once the copy is closed");
        releaser.join().unwrap();
        let refused = lock_dir_within(&dir, Duration::from_millis(50)).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::WouldBlock);
        let text = refused.to_string();
        assert!(
            text.contains("in use by another ironmatch") && text.contains(&*dir.to_string_lossy()),
            "{text}"
        );
        drop(second);
        drop(lock_dir_within(&dir, Duration::ZERO).expect("free again"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A new segment's directory sync that fails leaves the mark that refuses a start in
    /// this boot (it was a plain error: the next start, in the same boot, appended to a
    /// segment whose name a power loss could still take), and so does one at the open of
    /// an existing segment with `fsync = "always"`, which syncs the directory too.
    #[test]
    fn a_segments_failed_directory_sync_is_marked() {
        let header = Header {
            instance: 7,
            first_seq: 1,
            fingerprint: 9,
            created_ns: 1,
        };
        let dir = std::env::temp_dir().join(format!(
            "ironmatch-segdirsync-{}-{}",
            std::process::id(),
            crate::venue::epoch_ns()
        ));
        FAIL_DIR_SYNC.with(|f| f.set(true));
        let failed = JournalWriter::open(&dir, header, None, 1, FsyncMode::Never, 1 << 30);
        FAIL_DIR_SYNC.with(|f| f.set(false));
        assert!(failed.is_err());
        assert!(dir.join(SYNC_FAILED_NAME).exists(), "marked");
        std::fs::remove_dir_all(&dir).unwrap();
        let writer = JournalWriter::open(&dir, header, None, 1, FsyncMode::Always, 1 << 30);
        drop(writer.unwrap());
        let segment = dir.join(segment_name(1));
        let len = std::fs::metadata(&segment).unwrap().len();
        FAIL_DIR_SYNC.with(|f| f.set(true));
        let failed = JournalWriter::open(
            &dir,
            header,
            Some((&segment, len)),
            1,
            FsyncMode::Always,
            1 << 30,
        );
        FAIL_DIR_SYNC.with(|f| f.set(false));
        assert!(failed.is_err(), "the open syncs the directory");
        assert!(dir.join(SYNC_FAILED_NAME).exists(), "marked");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A batch staged past what a record's index can number is committed in parts, each
    /// record's index its place in its own part (past 65,535 the indexes stayed at the
    /// last, and a torn end of such a batch was refused instead of cut).
    #[test]
    fn a_batch_of_any_length_keeps_its_indexes() {
        let (dir, mut w) = test_writer("long-batch", FsyncMode::Never);
        let cmd = Command {
            ts: crate::types::Timestamp(1),
            owner: crate::types::OwnerId(0),
            body: crate::book::CommandBody::AccountQuery,
        };
        let n = 70_000u64;
        for _ in 0..n {
            w.stage_bounded(&Entry::Command(cmd)).unwrap();
        }
        w.commit().unwrap();
        let bytes = std::fs::read(dir.join(segment_name(1))).unwrap();
        let mut at = HEADER_LEN;
        let mut seen = 0u64;
        while at < bytes.len() {
            let (seq, _, len) = super::super::format::read_record(&bytes[at..]).unwrap();
            let index = super::super::format::batch_index(&bytes[at..]);
            assert_eq!(
                u64::from(index),
                (seq - 1) % u64::from(u16::MAX),
                "record {seq}"
            );
            seen += 1;
            at += len;
        }
        assert_eq!(seen, n);
        drop(w);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A writer on a new journal in a temporary directory of its own (`tag` in its name).
    fn test_writer(tag: &str, fsync: FsyncMode) -> (std::path::PathBuf, JournalWriter) {
        let dir = std::env::temp_dir().join(format!(
            "ironmatch-{tag}-{}-{}",
            std::process::id(),
            crate::venue::epoch_ns()
        ));
        let header = Header {
            instance: 7,
            first_seq: 1,
            fingerprint: 9,
            created_ns: 1,
        };
        let writer = JournalWriter::open(&dir, header, None, 1, fsync, 1 << 30).unwrap();
        (dir, writer)
    }

    /// A background writeback that fails (here an `fdatasync` on a pipe, which Linux
    /// refuses) stops the writer at its next batch, before anything more is released: the
    /// error went to the writeback thread alone (it was printed, and the engine went on
    /// acknowledging).
    #[test]
    fn a_failed_background_writeback_stops_the_writer() {
        let (dir, mut w) = test_writer("writeback", FsyncMode::Never);
        let cmd = Command {
            ts: crate::types::Timestamp(1),
            owner: crate::types::OwnerId(0),
            body: crate::book::CommandBody::AccountQuery,
        };
        w.stage(&Entry::Command(cmd));
        w.commit_timed().unwrap();
        let (_reader, pipe) = io::pipe().unwrap();
        let writeback = w.writeback.as_ref().unwrap();
        writeback
            .files
            .send(File::from(std::os::fd::OwnedFd::from(pipe)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while writeback.failed.get().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        w.stage(&Entry::Command(cmd));
        let e = w.commit_timed().unwrap_err();
        assert!(e.to_string().contains("background writeback failed"), "{e}");
        assert_eq!(
            w.written.load(Ordering::Acquire),
            1,
            "the second batch not written"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// With `fsync = "always"`, a failed `fdatasync` (here on a pipe, which Linux refuses)
    /// leaves the marker: a start in this boot of the machine is refused, naming the error;
    /// one after a restart of the machine (another boot id) removes it and goes on.
    #[test]
    fn a_failed_sync_marks_the_journal_until_the_machine_restarts() {
        let (dir, mut w) = test_writer("sync-failed", FsyncMode::Always);
        check_sync_failed(&dir).unwrap();
        let (_reader, pipe) = io::pipe().unwrap();
        w.file = File::from(std::os::fd::OwnedFd::from(pipe));
        w.stage(&Entry::Command(Command {
            ts: crate::types::Timestamp(1),
            owner: crate::types::OwnerId(0),
            body: crate::book::CommandBody::AccountQuery,
        }));
        let failed = w.commit_timed().unwrap_err();
        assert_eq!(w.written.load(Ordering::Acquire), 0, "nothing released");
        let refused = check_sync_failed(&dir).unwrap_err().to_string();
        assert!(refused.contains("failed in this boot"), "{refused}");
        assert!(refused.contains(&failed.to_string()), "{refused}");
        std::fs::write(
            dir.join(SYNC_FAILED_NAME),
            "another boot\nInput/output error\n",
        )
        .unwrap();
        check_sync_failed(&dir).unwrap();
        assert!(
            !dir.join(SYNC_FAILED_NAME).exists(),
            "removed after a restart"
        );
        // Its content lost to a crash (it is written unsynced): an earlier boot too.
        std::fs::write(dir.join(SYNC_FAILED_NAME), "").unwrap();
        check_sync_failed(&dir).unwrap();
        assert!(
            !dir.join(SYNC_FAILED_NAME).exists(),
            "an empty marker is an earlier boot's"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
