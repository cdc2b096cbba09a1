//! A user's store of every sequenced message sent today, for replay by sequence number.
//!
//! The store grows all day, so it is kept in chunks: when one is full the next is
//! allocated, and nothing already stored is ever copied (a single growing buffer was copied
//! whole on the gateway thread each time it outgrew its reservation: a 26 ms stall for every
//! session at 100,000 messages a second). A message never spans two chunks. Positions in
//! the store are logical byte offsets over the chunks laid end to end.
//!
//! Memory stays bounded however long the day and whatever a member sends: a full chunk
//! that no connection is reading is written to a file of the user's own ([`Spiller`]) by a
//! thread beside the gateway, and freed once written. In memory stay the chunk being filled,
//! the one the stream is in (also while no connection is logged in), and chunks still being
//! written: three chunks a user when the disk keeps up, and two windows of
//! [`WINDOW_BYTES`] while a replay reads the file. Message positions are kept for one
//! message in [`MARK_EVERY`], so the index takes an eighth of a byte per message, not eight.
//!
//! A replay of older messages reads the file through windows of [`WINDOW_BYTES`], and the
//! reads are the same thread's too: the gateway asks for a window and goes on serving the
//! other sessions; the thread reads it and wakes the gateway, which then writes it out. The
//! window after it is read while one is being sent, so a replay from the page cache does not
//! wait, and one from the disk waits for the disk without holding up any other session
//! (until 2026-12-06 these reads ran on the gateway thread, and a cold read stalled every
//! session). A login that asks for a message in a written-out chunk is answered at once;
//! its stream starts once the window holding that message is read. A failed read the
//! stream waits for closes the connection ([`SessionStore::poll_read`]); a failed read
//! ahead is tried again when the stream gets there.
//!
//! A chunk whose write fails stays in memory (the first failure is logged): the files
//! share the journal's disk, and a disk that fails them fails the journal too. Should the
//! thread die (a panic: nothing in it is meant to), the read it held is seen dropped, not
//! waited for, and reads are done on the gateway's thread from then on ([`Exit`]).

use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crossbeam::channel::{Receiver, Sender, TryRecvError, bounded, unbounded};

use crate::wire::soupbin::kind;

/// Longest framed message the store takes: the packet length field and type byte, and the
/// longest OUCH message ironmatch sends (well under this).
pub const MESSAGE_BYTES_MAX: usize = 3 + 512;
/// The smallest chunk (`gateway.session_store_bytes`): eight of the longest messages.
pub const STORE_CHUNK_MIN: usize = 8 * MESSAGE_BYTES_MAX;
/// One message in this many has its position kept; the others are found from it by
/// walking packet lengths.
pub const MARK_EVERY: u64 = 64;
/// Bytes read from a store file at a time when a replay reaches written-out chunks.
pub const WINDOW_BYTES: usize = 64 << 10;

/// A chunk's write to its file: not done yet.
const PENDING: u8 = 0;
/// Written: the memory can go.
const WRITTEN: u8 = 1;
/// The write failed: the chunk stays in memory.
const FAILED: u8 = 2;

/// A chunk handed to the writing thread, readable while it is written.
#[derive(Debug)]
struct Handed {
    bytes: Vec<u8>,
    state: AtomicU8,
}

/// Where a chunk's bytes are.
#[derive(Debug)]
enum Chunk {
    /// Only in memory (the chunk being filled, or one not handed to the thread).
    Memory(Vec<u8>),
    /// In memory and being written to the file.
    Handed(Arc<Handed>),
    /// Only in the file.
    Written,
}

/// Work for the store's thread.
enum Job {
    /// A chunk to write out.
    Write(Write),
    /// A written chunk's memory to free there rather than on the gateway thread (a free of
    /// a chunk's megabytes can unmap them: a stall the gateway's connections would see).
    Free(Arc<Handed>),
    /// A window of a store file to read for a replay.
    Read(Read),
    /// The thread panics (a test of what follows its death).
    #[cfg(test)]
    Panic,
}

/// A chunk to write at `offset` of `file`.
struct Write {
    file: Arc<File>,
    offset: u64,
    chunk: Arc<Handed>,
}

impl Write {
    /// Writes the chunk and says so to its store.
    fn run(&self) -> io::Result<()> {
        let written = self.file.write_all_at(&self.chunk.bytes, self.offset);
        let state = if written.is_ok() { WRITTEN } else { FAILED };
        self.chunk.state.store(state, Ordering::Release);
        written
    }
}

/// A window to read: `len` bytes of `file` from `at`, a packet's start.
struct Read {
    file: Arc<File>,
    at: u64,
    len: usize,
    /// The login it was asked for (see [`SessionStore::login`]).
    login: u64,
    /// Read ahead of the stream, not waited for.
    ahead: bool,
    reply: Sender<Window>,
}

impl Read {
    /// Reads the window, ending it at its last whole packet.
    fn run(self) -> Window {
        let Read {
            file,
            at,
            len,
            login,
            ahead,
            ..
        } = self;
        let mut buf = vec![0; len];
        let bytes = file.read_exact_at(&mut buf, at).map(|()| {
            let mut end = 0;
            while end + 2 <= len {
                let packet = 2 + usize::from(u16::from_be_bytes([buf[end], buf[end + 1]]));
                if end + packet > len {
                    break;
                }
                end += packet;
            }
            buf.truncate(end);
            buf
        });
        Window {
            at,
            login,
            ahead,
            bytes,
        }
    }
}

/// The store thread's end. If it ends by a panic (nothing in it is meant to), its queue and
/// the read in hand are dropped first; this then wakes the gateway, whose sessions find
/// their reads dropped and do them on the gateway's thread from then on (as writes fail,
/// chunks stay in memory): slower, but no session waits forever for a window.
struct Exit {
    read_done: Arc<AtomicBool>,
    wake: Option<Arc<mio::Waker>>,
}

impl Drop for Exit {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // Not `eprintln!`, which panics if stderr fails: a panic while panicking aborts.
        let _ = writeln!(
            io::stderr(),
            "ironmatch gateway: the session store's thread stopped; store files are read on the gateway's thread and new chunks stay in memory"
        );
        self.read_done.store(true, Ordering::Release);
        if let Some(wake) = &self.wake {
            let _ = wake.wake();
        }
    }
}

/// A window read (or not) for a store: the bytes from `at` to the last whole packet.
#[derive(Debug)]
struct Window {
    at: u64,
    login: u64,
    ahead: bool,
    bytes: io::Result<Vec<u8>>,
}

/// The thread that writes full chunks out and reads windows back, one for all the
/// sessions of a gateway. It ends when the last store holding its queue is dropped.
#[derive(Clone, Debug)]
pub struct Spiller {
    jobs: Sender<Job>,
    /// Set when a read is done, before `wake` is called.
    read_done: Arc<AtomicBool>,
}

impl Spiller {
    /// Starts the thread. After each read it sets [`Self::read_done`] and calls `wake`
    /// (the gateway's `mio` waker), so that the gateway collects the window
    /// ([`SessionStore::poll_read`]).
    pub fn start(wake: Option<Arc<mio::Waker>>) -> io::Result<Spiller> {
        let (jobs, queue) = unbounded::<Job>();
        let read_done = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&read_done);
        std::thread::Builder::new()
            .name("ironmatch-store".into())
            .spawn(move || {
                // Declared first, so dropped last: after the queue and a job in hand.
                let _exit = Exit {
                    read_done: Arc::clone(&done),
                    wake: wake.clone(),
                };
                let mut reported = false;
                for job in queue {
                    match job {
                        Job::Write(job) => {
                            if let Err(e) = job.run()
                                && !std::mem::replace(&mut reported, true)
                            {
                                eprintln!(
                                    "ironmatch gateway: session store: writing a chunk out failed ({e}); such chunks stay in memory"
                                );
                            }
                        }
                        Job::Free(chunk) => drop(chunk),
                        #[cfg(test)]
                        Job::Panic => panic!("the store thread's death, asked for by a test"),
                        Job::Read(read) => {
                            let reply = read.reply.clone();
                            // The store may be gone (its user's session ended): nobody
                            // waits for the window then.
                            if reply.send(read.run()).is_ok() {
                                done.store(true, Ordering::Release);
                                if let Some(wake) = &wake {
                                    // A failed wake delays the window to the gateway's
                                    // next round (its poll timeout at most).
                                    let _ = wake.wake();
                                }
                            }
                        }
                    }
                }
            })?;
        Ok(Spiller { jobs, read_done })
    }

    /// Set when a read is done; the gateway clears it and collects what its sessions read.
    pub fn read_done(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.read_done)
    }

    /// A store file in `dir` for one session: an unnamed file (it leaves nothing behind
    /// when the engine stops, however it stops), rebuilt from the journal at each start.
    pub fn file_in(&self, dir: &Path) -> io::Result<SpillFile> {
        std::fs::create_dir_all(dir)?;
        Ok(SpillFile::new(
            tempfile::tempfile_in(dir)?,
            self.jobs.clone(),
        ))
    }
}

/// One session's store file, the queue of the thread that writes and reads it, and where
/// that thread answers the session's read in flight.
#[derive(Debug)]
pub struct SpillFile {
    file: Arc<File>,
    jobs: Sender<Job>,
    /// One read is in flight at a time: its window comes back here. The read alone holds
    /// the sending end, so a read the thread dropped (it died) is seen, not waited for.
    window: Option<Receiver<Window>>,
}

impl SpillFile {
    fn new(file: File, jobs: Sender<Job>) -> SpillFile {
        SpillFile {
            file: Arc::new(file),
            jobs,
            window: None,
        }
    }
}

/// The sequenced messages of one user, framed as SoupBinTCP Sequenced Data packets, and
/// how far the user's connection has been sent them.
#[derive(Debug)]
pub struct SessionStore {
    /// The chunks, each of `chunk_bytes` capacity; the last is always in memory.
    chunks: Vec<Chunk>,
    /// Logical offset of each chunk's first byte.
    chunk_starts: Vec<u64>,
    chunk_bytes: usize,
    /// Logical start of message `k * MARK_EVERY + 1` at index `k`.
    marks: Vec<u64>,
    /// Messages stored.
    count: u64,
    /// Logical bytes stored.
    stored: u64,
    /// Logical bytes already written to the current connection (or passed over to reach
    /// the message its login asked for).
    sent: u64,
    /// The chunk that holds byte `sent` (or ends there when it is the last).
    sent_chunk: usize,
    /// Logical start of the first packet at or after `sent`.
    next_packet: u64,
    /// Messages still to pass over from `sent` before the stream starts: a login's
    /// message is found from the kept position before it, and in a written-out chunk
    /// only once the window there is read.
    skip: u64,
    /// Logical bytes stored when the current connection logged in: what it asked to be
    /// replayed ends here, and what follows is the live stream.
    replay_end: u64,
    /// Bytes of a written-out chunk from `window_start`, ending at a packet boundary.
    window: Vec<u8>,
    window_start: u64,
    /// A window read ahead (or a failed read), not yet taken as `window`.
    ready: Option<Window>,
    /// Whether a read is in flight (its window comes back through the spill file).
    reading: bool,
    /// Logins so far: a read's failure counts only for the login that asked for it (an
    /// earlier login's failed read is dropped and read again).
    login: u64,
    /// A read failed: the connection cannot be served ([`Self::take_failed`]).
    failed: Option<io::Error>,
    /// Where full chunks go; `None`: they stay in memory.
    spill: Option<SpillFile>,
    /// Chunks handed to the thread and not yet seen written.
    handed: Vec<usize>,
}

impl SessionStore {
    /// A store growing in chunks of `chunk_bytes` (at least a few messages), writing full
    /// chunks out through `spill` if given.
    pub fn new(chunk_bytes: usize, spill: Option<SpillFile>) -> SessionStore {
        let chunk_bytes = chunk_bytes.max(STORE_CHUNK_MIN);
        SessionStore {
            chunks: vec![Chunk::Memory(Vec::with_capacity(chunk_bytes))],
            chunk_starts: vec![0],
            chunk_bytes,
            marks: Vec::new(),
            count: 0,
            stored: 0,
            sent: 0,
            sent_chunk: 0,
            next_packet: 0,
            skip: 0,
            replay_end: 0,
            window: Vec::new(),
            window_start: 0,
            ready: None,
            reading: false,
            login: 0,
            failed: None,
            spill,
            handed: Vec::new(),
        }
    }

    /// Sequence number of the next message.
    pub fn next_seq(&self) -> u64 {
        self.count + 1
    }

    /// Appends one OUCH message as the next sequenced message. `write` writes the message.
    pub fn append(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let full = match self.chunks.last() {
            Some(Chunk::Memory(chunk)) => chunk.capacity() - chunk.len() < MESSAGE_BYTES_MAX,
            _ => unreachable!("the last chunk is in memory"),
        };
        if full {
            // A new chunk: what is stored stays where it is.
            self.chunk_starts.push(self.stored);
            self.chunks
                .push(Chunk::Memory(Vec::with_capacity(self.chunk_bytes)));
            self.reap();
            self.settle();
            self.release(self.chunks.len() - 2);
        } else if !self.handed.is_empty() {
            // Free written chunks as soon as they are seen written, not at the next chunk.
            self.reap();
        }
        if self.count.is_multiple_of(MARK_EVERY) {
            self.marks.push(self.stored);
        }
        let Some(Chunk::Memory(chunk)) = self.chunks.last_mut() else {
            unreachable!("the last chunk is in memory")
        };
        let start = chunk.len();
        chunk.extend_from_slice(&[0, 0, kind::SEQUENCED]);
        write(chunk);
        let len = chunk.len() - start;
        assert!(len <= MESSAGE_BYTES_MAX, "an OUCH message of {len} bytes");
        let packet_len = u16::try_from(len - 2).expect("OUCH messages are short");
        chunk[start..start + 2].copy_from_slice(&packet_len.to_be_bytes());
        self.count += 1;
        self.stored += len as u64;
    }

    /// Positions the stream for a login asking for `requested` (0 = only new messages).
    /// Returns the sequence number of the first message the client will get. Nothing is
    /// read here: a message in a written-out chunk is reached once its window is read.
    pub fn start_at(&mut self, requested: u64) -> u64 {
        let next = self.next_seq();
        let first = if requested == 0 || requested > next {
            next
        } else {
            requested
        };
        let (sent, skip) = if first == next {
            (self.stored, 0)
        } else {
            let i = first - 1;
            (self.marks[(i / MARK_EVERY) as usize], i % MARK_EVERY)
        };
        let was = self.sent_chunk;
        self.sent = sent;
        self.next_packet = sent;
        self.skip = skip;
        // The last chunk starting at or before `sent`.
        self.sent_chunk = self.chunk_starts.partition_point(|&s| s <= sent) - 1;
        self.replay_end = self.stored;
        self.login += 1;
        self.failed = None;
        self.window.clear();
        self.reap();
        self.release(was);
        self.settle();
        first
    }

    /// The next bytes not yet written to the connection: the rest of the chunk (or of the
    /// window on a written-out chunk) the stream is in, ending at a packet boundary. Empty
    /// when all is sent, and while the stream waits for a window to be read.
    pub fn unsent(&self) -> &[u8] {
        if self.skip > 0 {
            return &[];
        }
        self.at_sent()
    }

    /// The stored bytes from `sent` on that are at hand: the rest of its chunk or of the
    /// window there (empty at the end, or where the window is not read yet).
    fn at_sent(&self) -> &[u8] {
        if self.sent == self.stored {
            return &[];
        }
        let c = self.sent_chunk;
        let from = |start: u64| (self.sent - start) as usize;
        match &self.chunks[c] {
            Chunk::Memory(chunk) => &chunk[from(self.chunk_starts[c])..],
            Chunk::Handed(handed) => &handed.bytes[from(self.chunk_starts[c])..],
            Chunk::Written if self.in_window(self.sent) => &self.window[from(self.window_start)..],
            Chunk::Written => &[],
        }
    }

    /// Whether byte `at` is in the window.
    fn in_window(&self, at: u64) -> bool {
        self.window_start <= at && at < self.window_start + self.window.len() as u64
    }

    /// Records that the first `n` bytes of [`unsent`](Self::unsent) were written. A read
    /// it asks for that fails (without the thread, it reads here) is for
    /// [`take_failed`](Self::take_failed).
    pub fn mark_sent(&mut self, n: usize) {
        let sent = self.sent + n as u64;
        let next_packet = {
            let unsent = self.unsent();
            debug_assert!(n <= unsent.len());
            // Every packet starting in the bytes sent ends in `unsent` (it ends at a
            // packet boundary), so its length field is there.
            let mut at = self.next_packet;
            while at < sent {
                let i = (at - self.sent) as usize;
                at += 2 + u64::from(u16::from_be_bytes([unsent[i], unsent[i + 1]]));
            }
            at
        };
        self.sent = sent;
        self.next_packet = next_packet;
        self.settle();
    }

    /// Whether the store waits on its file: a read in flight
    /// ([`poll_read`](Self::poll_read) takes its window once the thread has read it), or
    /// a failed read not yet reported.
    pub fn waiting(&self) -> bool {
        self.reading || self.failed.is_some()
    }

    /// Whether the stream has bytes to send that are not at hand yet: it waits for a read
    /// of the store file (the server's disk, not the client, holds it up).
    pub fn waiting_for_read(&self) -> bool {
        self.sent < self.stored && self.unsent().is_empty()
    }

    /// The error of a failed read of the store file, once: the connection cannot be
    /// served (its next login reads again).
    pub fn take_failed(&mut self) -> Option<io::Error> {
        self.failed.take()
    }

    /// Takes the window a read brought, if it is done. `Ok(true)`: the stream has bytes
    /// to write now ([`unsent`](Self::unsent)). An error is a failed read's (as
    /// [`take_failed`](Self::take_failed)): the connection cannot be served.
    pub fn poll_read(&mut self) -> io::Result<bool> {
        if !self.waiting() {
            return Ok(false);
        }
        let had = !self.unsent().is_empty();
        self.settle();
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(!had && !self.unsent().is_empty()),
        }
    }

    /// Bytes stored and not yet written to the connection, all chunks together.
    pub fn unsent_len(&self) -> u64 {
        self.stored - self.sent
    }

    /// Bytes of the live stream (stored since the connection logged in) not yet written:
    /// how far the reader is behind, leaving out the replay it asked for at login, which
    /// may be the whole day's messages (a login asking for message 1).
    pub fn live_unsent_len(&self) -> u64 {
        self.stored - self.sent.max(self.replay_end)
    }

    /// Bytes left of the packet the stream is in the middle of: 0 at a packet boundary.
    /// No other bytes may go to the connection before these (a Server Heartbeat or Debug
    /// packet would land inside the packet and break the client's framing). They are all
    /// in [`unsent`](Self::unsent).
    pub fn packet_rest(&self) -> usize {
        (self.next_packet - self.sent) as usize
    }

    /// Bytes the store holds in memory: chunks (by capacity), the windows and the index.
    #[cfg(test)]
    fn resident_bytes(&self) -> usize {
        let chunks: usize = self
            .chunks
            .iter()
            .map(|c| match c {
                Chunk::Memory(chunk) => chunk.capacity(),
                Chunk::Handed(handed) => handed.bytes.capacity(),
                Chunk::Written => 0,
            })
            .sum();
        let ready = match &self.ready {
            Some(Window { bytes: Ok(b), .. }) => b.capacity(),
            _ => 0,
        };
        chunks
            + self.window.capacity()
            + ready
            + self.marks.capacity() * 8
            + self.chunk_starts.capacity() * 8
            + self.chunks.capacity() * std::mem::size_of::<Chunk>()
    }

    /// Where chunk `c` ends.
    fn end(&self, c: usize) -> u64 {
        self.chunk_starts.get(c + 1).copied().unwrap_or(self.stored)
    }

    /// Brings the stream to where it can go on: moves it to the next chunk at the end of
    /// one, passes over the messages a login skips, takes a window that was read, asks
    /// for the one it needs, and for the one after it. Never waits.
    fn settle(&mut self) {
        self.receive();
        loop {
            // Onto the next chunk at the end of one that is not the last, handing the
            // chunks left behind to the writing thread.
            while self.sent_chunk + 1 < self.chunks.len() && self.sent == self.end(self.sent_chunk)
            {
                self.sent_chunk += 1;
                self.release(self.sent_chunk - 1);
            }
            if self.sent < self.stored
                && matches!(self.chunks[self.sent_chunk], Chunk::Written)
                && !self.in_window(self.sent)
                && !self.take_ready()
            {
                if self.failed.is_some() {
                    return;
                }
                // Ask for the window (unless a read is in flight) and wait for it; a read
                // done here (the thread is gone) is there at once.
                self.request(self.sent, false);
                if !self.take_ready() {
                    return;
                }
            }
            if self.skip == 0 {
                break;
            }
            let bytes = self.at_sent();
            debug_assert!(bytes.len() >= 2, "a skipped message is stored");
            let len = 2 + u64::from(u16::from_be_bytes([bytes[0], bytes[1]]));
            self.sent += len;
            self.next_packet = self.sent;
            self.skip -= 1;
        }
        // Read the next window ahead while this one is sent.
        if self.in_window(self.sent) {
            self.request(self.window_start + self.window.len() as u64, true);
        }
    }

    /// Takes the window read ahead as the window if it holds `sent`; drops it if it does
    /// not (a read for an earlier login's position). A failed read the stream waited for
    /// becomes the error [`take_failed`](Self::take_failed) and
    /// [`poll_read`](Self::poll_read) return; an earlier login's, or one read ahead, is
    /// dropped (the window is read again when the stream needs it).
    fn take_ready(&mut self) -> bool {
        let Some(ready) = self.ready.take() else {
            return false;
        };
        match ready.bytes {
            Err(_) if ready.login != self.login || ready.ahead => false,
            Err(e) => {
                self.failed = Some(io::Error::new(
                    e.kind(),
                    format!("reading the session store file: {e}"),
                ));
                false
            }
            Ok(bytes) if ready.at <= self.sent && self.sent < ready.at + bytes.len() as u64 => {
                self.window = bytes;
                self.window_start = ready.at;
                true
            }
            Ok(_) => false,
        }
    }

    /// Collects the read in flight, if it is done.
    fn receive(&mut self) {
        if !self.reading {
            return;
        }
        let Some(receiver) = self.spill.as_ref().and_then(|s| s.window.as_ref()) else {
            return;
        };
        match receiver.try_recv() {
            Ok(window) => {
                self.reading = false;
                self.ready = Some(window);
            }
            Err(TryRecvError::Empty) => return,
            // The thread dropped the read: it died. The window is asked for again, and
            // read here ([`Self::request`]: the thread's queue is gone with it).
            Err(TryRecvError::Disconnected) => self.reading = false,
        }
        if let Some(spill) = &mut self.spill {
            spill.window = None;
        }
    }

    /// Asks the thread for the window from `at` (a packet's start; `ahead`: ahead of the
    /// stream) if `at` is in a written-out chunk and no read is in flight or ready.
    /// Without the thread (it is gone), reads here.
    fn request(&mut self, at: u64, ahead: bool) {
        if self.reading || self.ready.is_some() || at >= self.stored {
            return;
        }
        let c = self.chunk_starts.partition_point(|&s| s <= at) - 1;
        if !matches!(self.chunks[c], Chunk::Written) {
            return;
        }
        let len = (self.end(c) - at).min(WINDOW_BYTES as u64) as usize;
        let Some(spill) = &mut self.spill else {
            unreachable!("only a store with a file writes chunks out")
        };
        let (reply, window) = bounded(1);
        let read = Read {
            file: Arc::clone(&spill.file),
            at,
            len,
            login: self.login,
            ahead,
            reply,
        };
        match spill.jobs.send(Job::Read(read)) {
            Ok(()) => {
                spill.window = Some(window);
                self.reading = true;
            }
            Err(crossbeam::channel::SendError(job)) => {
                let Job::Read(read) = job else {
                    unreachable!("the job sent")
                };
                self.ready = Some(read.run());
            }
        }
    }

    /// Hands chunk `c` to the writing thread if it is full (not the last) and the stream
    /// is not in it.
    fn release(&mut self, c: usize) {
        if c + 1 >= self.chunks.len() || c == self.sent_chunk {
            return;
        }
        let Some(spill) = &self.spill else {
            return;
        };
        let Chunk::Memory(chunk) = &mut self.chunks[c] else {
            return;
        };
        let handed = Arc::new(Handed {
            bytes: std::mem::take(chunk),
            state: AtomicU8::new(PENDING),
        });
        let job = Job::Write(Write {
            file: Arc::clone(&spill.file),
            offset: self.chunk_starts[c],
            chunk: Arc::clone(&handed),
        });
        if spill.jobs.send(job).is_ok() {
            self.handed.push(c);
        } else {
            // The thread is gone (it never ends before the stores): keep the chunk.
            handed.state.store(FAILED, Ordering::Relaxed);
        }
        self.chunks[c] = Chunk::Handed(handed);
    }

    /// Frees the memory of the chunks the thread has written, but for the one the stream
    /// is in (its bytes stay where [`unsent`](Self::unsent) finds them).
    fn reap(&mut self) {
        let (chunks, streaming, spill) = (&mut self.chunks, self.sent_chunk, &self.spill);
        self.handed.retain(|&c| {
            let Chunk::Handed(handed) = &chunks[c] else {
                return false;
            };
            match handed.state.load(Ordering::Acquire) {
                _ if c == streaming => true,
                PENDING => true,
                WRITTEN => {
                    if let (Chunk::Handed(handed), Some(spill)) =
                        (std::mem::replace(&mut chunks[c], Chunk::Written), spill)
                    {
                        // If the thread is gone, the chunk is freed here.
                        let _ = spill.jobs.send(Job::Free(handed));
                    }
                    false
                }
                // A failed write keeps the chunk in memory: readable, never lost.
                _ => false,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in chunks of 1,024 bytes, all in memory.
    fn store() -> SessionStore {
        SessionStore::new(1024, None)
    }

    /// A store in chunks of `chunk_bytes` writing full chunks to an unnamed file in the
    /// system's temporary directory.
    fn spilling(chunk_bytes: usize) -> SessionStore {
        let spiller = Spiller::start(None).unwrap();
        let file = spiller.file_in(&std::env::temp_dir()).unwrap();
        SessionStore::new(chunk_bytes, Some(file))
    }

    impl SessionStore {
        /// Waits until the thread has written every chunk handed to it but the one the
        /// stream is in, and frees them.
        fn wait_written(&mut self) {
            loop {
                self.reap();
                if self.handed.iter().all(|&c| c == self.sent_chunk) {
                    return;
                }
                std::thread::yield_now();
            }
        }

        /// Waits for the reads in flight (the thread's), taking their windows.
        fn wait_read(&mut self) {
            while self.waiting() {
                self.poll_read().unwrap();
                std::thread::yield_now();
            }
        }

        /// Chunks only in the file.
        fn written_out(&self) -> usize {
            self.chunks
                .iter()
                .filter(|c| matches!(c, Chunk::Written))
                .count()
        }
    }

    /// A store in chunks of `chunk_bytes` whose chunks are written only when the test
    /// runs the jobs it receives.
    fn held(chunk_bytes: usize) -> (SessionStore, crossbeam::channel::Receiver<Job>) {
        let (jobs, queue) = unbounded();
        let file = SpillFile::new(tempfile::tempfile().unwrap(), jobs);
        (SessionStore::new(chunk_bytes, Some(file)), queue)
    }

    /// The stream enters chunks still being written, and they are written meanwhile (or
    /// their writes fail): it reads on from memory, then from the file, losing nothing.
    #[test]
    fn chunks_written_or_failing_while_read_lose_nothing() {
        let all = messages(2_000);
        let framed: Vec<u8> = all.iter().flat_map(|(_, f)| f.clone()).collect();
        for fail in [false, true] {
            let (mut u, queue) = held(0);
            for (body, _) in &all[..1_000] {
                u.append(|out| out.extend_from_slice(body));
            }
            assert_eq!(u.start_at(1), 1);
            let mut got = Vec::new();
            let mut rest = all[1_000..].iter();
            let mut writes = Vec::new();
            let mut rounds = 0;
            while u.unsent_len() > 0 {
                rounds += 1;
                assert!(rounds < 100_000, "the stream stopped at byte {}", got.len());
                // Reads are done at once; writes wait.
                for job in queue.try_iter() {
                    match job {
                        Job::Write(job) => writes.push(job),
                        Job::Read(read) => read.reply.clone().send(read.run()).unwrap(),
                        Job::Free(_) | Job::Panic => {}
                    }
                }
                u.poll_read().unwrap();
                let n = u.unsent().len().min(700);
                got.extend_from_slice(&u.unsent()[..n]);
                u.mark_sent(n);
                // The thread catches up now and then, after the stream entered its chunk.
                if got.len() % 3 == 0 {
                    for job in writes.drain(..) {
                        if fail {
                            job.chunk.state.store(FAILED, Ordering::Release);
                        } else {
                            job.run().unwrap();
                        }
                    }
                }
                for (body, _) in rest.by_ref().take(2) {
                    u.append(|out| out.extend_from_slice(body));
                }
            }
            assert!(
                got == framed,
                "the stream read back differs (failing: {fail})"
            );
            if fail {
                assert_eq!(u.written_out(), 0, "a chunk not written stays in memory");
            } else {
                assert!(u.written_out() > 10, "chunks were read from the file");
            }
        }
    }

    /// Runs the read jobs waiting in `queue` (the writes too), answering each read with
    /// what the file gives, or with an error when `fail`. Returns the reads run.
    fn run_jobs(queue: &crossbeam::channel::Receiver<Job>, fail: bool) -> usize {
        let mut reads = 0;
        for job in queue.try_iter() {
            match job {
                Job::Write(job) => job.run().unwrap(),
                Job::Read(read) => {
                    reads += 1;
                    let window = if fail {
                        Window {
                            at: read.at,
                            login: read.login,
                            ahead: read.ahead,
                            bytes: Err(io::Error::other("a bad sector")),
                        }
                    } else {
                        read.reply.clone().send(read.run()).unwrap();
                        continue;
                    };
                    read.reply.send(window).unwrap();
                }
                Job::Free(_) | Job::Panic => {}
            }
        }
        reads
    }

    /// A store held as [`held`], with its thread's queue, the messages in it (as
    /// [`messages`] gives them) and those framed end to end.
    struct WrittenOut {
        u: SessionStore,
        queue: crossbeam::channel::Receiver<Job>,
        all: Vec<(Vec<u8>, Vec<u8>)>,
        framed: Vec<u8>,
    }

    /// A store held as [`held`] with `n` of [`messages`] in it and its full chunks
    /// written out (the stream left them: a login for new messages only).
    fn written_out_store(n: u32) -> WrittenOut {
        let all = messages(n);
        let framed: Vec<u8> = all.iter().flat_map(|(_, f)| f.clone()).collect();
        let (mut u, queue) = held(0);
        for (body, _) in &all {
            u.append(|out| out.extend_from_slice(body));
        }
        assert_eq!(u.start_at(0), u64::from(n) + 1);
        run_jobs(&queue, false);
        u.reap();
        assert!(
            matches!(u.chunks[0], Chunk::Written) && u.written_out() > 10,
            "the test reads from the file"
        );
        WrittenOut {
            u,
            queue,
            all,
            framed,
        }
    }

    /// Sends `u`'s stream to its end, as a socket that takes every byte would, with
    /// `between` (the store thread's work, say) and a poll for reads after each write.
    fn stream_to_end(u: &mut SessionStore, mut between: impl FnMut()) -> Vec<u8> {
        let mut got = Vec::new();
        let mut rounds = 0;
        while u.unsent_len() > 0 {
            rounds += 1;
            assert!(rounds < 100_000, "the stream stopped at byte {}", got.len());
            let n = u.unsent().len();
            got.extend_from_slice(&u.unsent()[..n]);
            u.mark_sent(n);
            between();
            u.poll_read().unwrap();
        }
        got
    }

    /// A login into written-out chunks is answered at once; nothing is read on the
    /// caller's thread: the stream starts once the thread has read the window, and the
    /// window after it is asked for as soon as that one is taken.
    #[test]
    fn a_replay_of_written_out_chunks_waits_for_the_thread_not_on_it() {
        let WrittenOut {
            mut u,
            queue,
            all,
            framed,
        } = written_out_store(3_000);
        assert_eq!(u.start_at(1), 1);
        assert!(u.reading, "a read is asked for");
        assert!(
            u.unsent().is_empty(),
            "nothing to send before the window is read"
        );
        assert!(!u.poll_read().unwrap(), "the read is not done");
        assert_eq!(run_jobs(&queue, false), 1);
        assert!(u.poll_read().unwrap(), "the window is there");
        assert!(u.reading, "the next window is asked for at once");
        let got = stream_to_end(&mut u, || {
            run_jobs(&queue, false);
        });
        assert!(got == framed, "the stream read back differs");
        // From a message in the middle of a written-out chunk: found from the kept
        // position before it once that window is read.
        assert_eq!(u.start_at(1_000), 1_000);
        assert_eq!(u.unsent_len(), framed.len() as u64 - u.marks[15]);
        // The walk from there may cross into the next chunk, another read.
        let mut reads = 0;
        while u.unsent().is_empty() {
            assert!(u.reading, "a read is asked for");
            reads += run_jobs(&queue, false);
            assert!(reads <= 3, "{reads} reads to reach message 1,000");
            u.poll_read().unwrap();
        }
        let from: usize = all[..999].iter().map(|(_, f)| f.len()).sum();
        assert_eq!(u.unsent_len(), (framed.len() - from) as u64);
        assert!(framed[from..].starts_with(u.unsent()));
    }

    /// The store's thread dying with a read in hand drops the read and the thread's queue:
    /// the stream does not wait for that read forever; the window is read on the caller's
    /// thread, and so are the rest, to the end of the replay, exact.
    #[test]
    fn a_read_dropped_by_a_dead_thread_is_done_here() {
        let WrittenOut {
            mut u,
            queue,
            framed,
            ..
        } = written_out_store(2_000);
        assert_eq!(u.start_at(1), 1);
        assert!(u.reading, "a read is asked for");
        drop(queue);
        assert!(u.waiting());
        assert!(u.poll_read().unwrap(), "the window is read here");
        let got = stream_to_end(&mut u, || {});
        assert!(got == framed, "the stream read back differs");
    }

    /// The store's own thread, dying: its queue is gone (a job sent is refused, so reads
    /// and writes are done or kept on the caller's side) by the time it flags the gateway.
    #[test]
    fn the_store_thread_flags_its_death_after_its_queue_is_gone() {
        let spiller = Spiller::start(None).unwrap();
        let read_done = spiller.read_done();
        spiller.jobs.send(Job::Panic).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !read_done.load(Ordering::Acquire) {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread's death is flagged"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let chunk = Arc::new(Handed {
            bytes: Vec::new(),
            state: AtomicU8::new(PENDING),
        });
        assert!(
            spiller.jobs.send(Job::Free(chunk)).is_err(),
            "the queue went before the flag"
        );
    }

    /// A store thread that ends by a panic says so to the gateway: the flag its sessions'
    /// reads are collected on is set (and its waker woken), so they find their reads gone.
    #[test]
    fn a_store_thread_that_panics_flags_the_gateway() {
        let read_done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&read_done);
        let ended = std::thread::spawn(move || {
            let _exit = Exit {
                read_done: flag,
                wake: None,
            };
            panic!("a store thread's panic, on purpose");
        })
        .join();
        assert!(ended.is_err());
        assert!(read_done.load(Ordering::Acquire));
        // An orderly end (the last store dropped) flags nothing.
        let quiet = Arc::new(AtomicBool::new(false));
        drop(Exit {
            read_done: Arc::clone(&quiet),
            wake: None,
        });
        assert!(!quiet.load(Ordering::Acquire));
    }

    /// A read that fails is the connection's error, once; a later login tries again.
    #[test]
    fn a_failed_read_is_an_error_and_a_later_login_reads_again() {
        let WrittenOut {
            mut u, queue, all, ..
        } = written_out_store(2_000);
        assert_eq!(u.start_at(1), 1);
        assert_eq!(run_jobs(&queue, true), 1);
        let e = u.poll_read().unwrap_err();
        assert!(e.to_string().contains("a bad sector"), "{e}");
        assert!(u.unsent().is_empty());
        assert!(!u.poll_read().unwrap(), "reported once");
        assert!(u.take_failed().is_none(), "reported once");
        assert_eq!(u.start_at(1), 1);
        assert_eq!(run_jobs(&queue, false), 1);
        assert!(u.poll_read().unwrap(), "read again at the next login");
        assert_eq!(u.unsent()[..2], all[0].1[..2]);
    }

    /// A read that fails while its connection is gone (nobody polls it) is dropped at
    /// the next login, which reads again; a failure taken up by an append (a new chunk
    /// settles the stream) is still reported.
    #[test]
    fn a_failed_read_is_reported_to_its_login_only_and_never_lost() {
        let WrittenOut {
            mut u,
            queue,
            framed,
            ..
        } = written_out_store(2_000);
        // A login, a read asked for, the client gone; the read fails unseen.
        u.start_at(1);
        assert_eq!(run_jobs(&queue, true), 1);
        // The next login: the earlier login's failure is not its own.
        assert_eq!(u.start_at(1), 1);
        assert!(u.take_failed().is_none(), "an earlier login's failure");
        assert!(u.reading, "read again");
        assert_eq!(run_jobs(&queue, false), 1);
        assert!(u.poll_read().unwrap());
        assert!(framed.starts_with(u.unsent()));
        // This login's read fails, and an append settles the stream before the gateway
        // polls: the failure waits to be reported.
        u.start_at(2);
        // The read ahead for the login before is in flight: it fails, not this login's.
        assert_eq!(run_jobs(&queue, true), 1);
        assert!(
            !u.poll_read().unwrap(),
            "an earlier login's failure is dropped"
        );
        assert!(u.reading, "and the window read again");
        assert_eq!(run_jobs(&queue, true), 1);
        for _ in 0..20 {
            u.append(|out| out.extend_from_slice(&[b'N'; 300]));
        }
        assert!(u.waiting(), "a failure to report");
        assert!(u.waiting_for_read());
        let e = u.poll_read().unwrap_err();
        assert!(e.to_string().contains("a bad sector"), "{e}");
        assert!(!u.waiting());
    }

    /// What one step of [`any_interleaving_gives_each_login_its_exact_stream`] does.
    #[derive(Clone, Debug)]
    enum Step {
        /// A message of this many bytes (modulo 300) is stored.
        Append(u16),
        /// A login asks for this number (modulo the messages stored + 2; 0: new only).
        Login(u16),
        /// The socket takes up to this many bytes.
        Send(u16),
        /// The thread writes the chunks handed to it (or the writes fail).
        Writes(bool),
        /// The thread answers the reads asked of it (or they fail).
        Reads(bool),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u16..300).prop_map(Step::Append),
            1 => any::<u16>().prop_map(Step::Login),
            4 => (1u16..3_000).prop_map(Step::Send),
            2 => any::<bool>().prop_map(Step::Writes),
            3 => prop_oneof![9 => Just(false), 1 => Just(true)].prop_map(Step::Reads),
        ]
    }

    proptest::proptest! {
        /// Appends, logins, sends, and the thread's writes and reads (some failing) in any
        /// order: each connection gets exactly the messages from the number its login
        /// asked for, in order, nothing lost or doubled, with no packet cut by a control
        /// packet; a failed read ends the connection (as the gateway closes it), and the
        /// next login gets its stream whole.
        #[test]
        fn any_interleaving_gives_each_login_its_exact_stream(
            steps in proptest::collection::vec(step(), 1..400),
        ) {
            let (mut u, queue) = held(0);
            let mut framed: Vec<Vec<u8>> = Vec::new();
            let (mut writes, mut reads) = (Vec::new(), Vec::new());
            // The connection: the first number it was sent, and the bytes it got.
            let mut conn: Option<(u64, Vec<u8>)> = None;
            let take_jobs = |writes: &mut Vec<Write>, reads: &mut Vec<Read>| {
                for job in queue.try_iter() {
                    match job {
                        Job::Write(w) => writes.push(w),
                        Job::Read(r) => reads.push(r),
                        Job::Free(_) | Job::Panic => {}
                    }
                }
            };
            let send = |u: &mut SessionStore, conn: &mut Option<(u64, Vec<u8>)>, n: usize| {
                let Some((_, got)) = conn.as_mut() else {
                    return;
                };
                let unsent = u.unsent();
                assert!(u.packet_rest() <= unsent.len(), "a packet's rest is at hand");
                let k = n.min(unsent.len());
                got.extend_from_slice(&unsent[..k]);
                u.mark_sent(k);
                if u.take_failed().is_some() {
                    *conn = None;
                }
            };
            for step in steps {
                take_jobs(&mut writes, &mut reads);
                match step {
                    Step::Append(len) => {
                        let body: Vec<u8> = (0..len % 300).map(|b| b'A' + (b % 26) as u8).collect();
                        u.append(|out| out.extend_from_slice(&body));
                        let mut f = ((body.len() + 1) as u16).to_be_bytes().to_vec();
                        f.push(b'S');
                        f.extend_from_slice(&body);
                        framed.push(f);
                    }
                    Step::Login(seq) => {
                        let count = framed.len() as u64;
                        let asked = u64::from(seq) % (count + 2);
                        let first = u.start_at(asked);
                        let expected = if asked == 0 || asked > count + 1 { count + 1 } else { asked };
                        assert_eq!(first, expected);
                        conn = Some((first, Vec::new()));
                    }
                    Step::Send(n) => send(&mut u, &mut conn, usize::from(n)),
                    Step::Writes(fail) => {
                        for w in writes.drain(..) {
                            if fail {
                                w.chunk.state.store(FAILED, Ordering::Release);
                            } else {
                                w.run().unwrap();
                            }
                        }
                    }
                    Step::Reads(fail) => {
                        for r in reads.drain(..) {
                            let (at, login, ahead) = (r.at, r.login, r.ahead);
                            let reply = r.reply.clone();
                            let window = if fail {
                                Window {
                                    at,
                                    login,
                                    ahead,
                                    bytes: Err(io::Error::other("bad sector")),
                                }
                            } else {
                                r.run()
                            };
                            reply.send(window).unwrap();
                        }
                        // The gateway polls the stores of its connections.
                        if conn.is_some() && u.waiting() && u.poll_read().is_err() {
                            conn = None;
                        }
                    }
                }
                if let Some((first, got)) = &conn {
                    let expected = framed[(*first - 1) as usize..].concat();
                    assert!(expected.starts_with(got), "from {first}: the bytes differ");
                    if u.skip == 0 {
                        assert_eq!(u.unsent_len(), (expected.len() - got.len()) as u64);
                    }
                }
            }
            // Then nothing fails: a connection (a new login from 1 if the last one ended,
            // or has a failure to report) gets the rest of its stream.
            if u.take_failed().is_some() {
                conn = None;
            }
            if conn.is_none() {
                u.start_at(1);
                conn = Some((1, Vec::new()));
            }
            let mut rounds = 0;
            while u.unsent_len() > 0 {
                rounds += 1;
                assert!(rounds < 10_000, "the stream stopped");
                take_jobs(&mut writes, &mut reads);
                for w in writes.drain(..) {
                    w.run().unwrap();
                }
                for r in reads.drain(..) {
                    r.reply.clone().send(r.run()).unwrap();
                }
                u.poll_read().unwrap();
                send(&mut u, &mut conn, usize::MAX);
                assert!(conn.is_some(), "no read fails now");
            }
            let (first, got) = conn.unwrap();
            let expected = framed[(first - 1) as usize..].concat();
            assert!(got == expected, "from {first}: the stream differs");
        }
    }

    #[test]
    fn replay_starts_where_asked() {
        let mut u = store();
        for m in [b"A1", b"B2", b"C3"] {
            u.append(|out| out.extend_from_slice(m));
        }
        assert_eq!(u.next_seq(), 4);
        assert_eq!(u.start_at(2), 2);
        assert_eq!(
            u.unsent(),
            &[0, 3, b'S', b'B', b'2', 0, 3, b'S', b'C', b'3']
        );
        assert_eq!(u.start_at(0), 4);
        assert!(u.unsent().is_empty());
        assert_eq!(
            u.start_at(99),
            4,
            "beyond the end: resynchronise at the real next number"
        );
    }

    #[test]
    fn a_replay_asked_for_at_login_is_not_a_backlog() {
        let mut u = SessionStore::new(0, None);
        for _ in 0..100 {
            u.append(|out| out.extend_from_slice(&[b'A'; 40]));
        }
        assert_eq!(u.start_at(1), 1);
        assert_eq!(u.unsent_len(), 100 * 43);
        assert_eq!(
            u.live_unsent_len(),
            0,
            "the replay is not the reader's backlog"
        );
        u.append(|out| out.extend_from_slice(&[b'L'; 40]));
        assert_eq!(
            u.live_unsent_len(),
            43,
            "live messages behind the replay are"
        );
        let n = u.unsent().len();
        u.mark_sent(n);
        assert_eq!(u.live_unsent_len(), 43);
        while !u.unsent().is_empty() {
            let n = u.unsent().len().min(50);
            u.mark_sent(n);
        }
        assert_eq!((u.unsent_len(), u.live_unsent_len()), (0, 0));
        u.append(|out| out.extend_from_slice(&[b'M'; 40]));
        assert_eq!(u.live_unsent_len(), 43);
    }

    /// Messages of every length up to 300 bytes, framed as the store frames them.
    fn messages(n: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let body: Vec<u8> = (0..(i % 300) as u8).map(|b| b'A' + b % 26).collect();
                let mut framed = ((body.len() + 1) as u16).to_be_bytes().to_vec();
                framed.push(b'S');
                framed.extend_from_slice(&body);
                (body, framed)
            })
            .collect()
    }

    /// Reads the whole stream from message `first` with writes of uneven sizes, checking
    /// at each step where the packet being written ends.
    fn read_back(u: &mut SessionStore, first: u64, framed: &[Vec<u8>]) {
        assert_eq!(u.start_at(first), first);
        u.wait_read();
        let expected: Vec<u8> = framed[(first - 1) as usize..].concat();
        assert_eq!(u.unsent_len(), expected.len() as u64);
        // Where each packet of the replay starts, from its start.
        let starts: Vec<usize> = framed[(first - 1) as usize..]
            .iter()
            .scan(0, |at, f| {
                let start = *at;
                *at += f.len();
                Some(start)
            })
            .collect();
        let mut got = Vec::new();
        let mut step = 1usize;
        loop {
            u.wait_read();
            if u.unsent().is_empty() {
                break;
            }
            let next = starts
                .iter()
                .find(|&&start| start >= got.len())
                .map_or(expected.len(), |&start| start);
            assert_eq!(u.packet_rest(), next - got.len(), "at byte {}", got.len());
            assert!(
                u.packet_rest() <= u.unsent().len(),
                "the packet's rest can be written at once (at byte {})",
                got.len()
            );
            let n = u.unsent().len().min(step);
            got.extend_from_slice(&u.unsent()[..n]);
            u.mark_sent(n);
            step = step * 7 % 1_000 + 1;
        }
        assert_eq!(got.len(), expected.len(), "from message {first}");
        assert!(got == expected, "from message {first}: the bytes differ");
        assert_eq!(u.unsent_len(), 0);
    }

    /// Many messages over many small chunks, read back from every starting number with
    /// writes of uneven sizes: the bytes are the messages in order, nothing lost or doubled.
    /// Once with every chunk in memory, once with the full ones written out.
    #[test]
    fn chunks_read_back_from_any_number() {
        let all = messages(3_000);
        let framed: Vec<Vec<u8>> = all.iter().map(|(_, f)| f.clone()).collect();
        // The smallest chunks the store takes.
        // With chunks larger than the window, windows end inside chunks (at a packet's end).
        for mut u in [
            SessionStore::new(0, None),
            spilling(0),
            spilling(2 * WINDOW_BYTES + 1_000),
        ] {
            for (body, _) in &all {
                u.append(|out| out.extend_from_slice(body));
            }
            assert!(u.chunks.len() > 2, "the test spans chunks");
            assert_eq!(u.next_seq(), 3_001);
            for first in [1u64, 2, 63, 64, 65, 137, 1_499, 2_999, 3_000, 3_001] {
                u.wait_written();
                read_back(&mut u, first, &framed);
            }
            if u.spill.is_some() {
                assert!(u.written_out() >= 2, "the chunks were read from the file");
            }
            // New messages after everything was sent, across a chunk boundary, come out too.
            for i in 0..200u32 {
                u.append(|out| out.extend_from_slice(&[b'Z'; 250][..(i % 250) as usize]));
            }
            let mut got = 0u64;
            while !u.unsent().is_empty() {
                let n = u.unsent().len();
                got += n as u64;
                u.mark_sent(n);
            }
            assert_eq!(got, (0..200u64).map(|i| 3 + i % 250).sum::<u64>());
        }
    }

    /// A day's messages with no reader, then with a reader far behind: the store keeps
    /// at most the chunk being filled, the one being read and one being written in
    /// memory, and the reader still gets every message.
    #[test]
    fn memory_stays_bounded_however_much_is_stored() {
        let chunk = 8 * MESSAGE_BYTES_MAX;
        let mut u = spilling(chunk);
        let all = messages(20_000);
        // Beside the chunks: the window being sent and the one read ahead.
        let bound = 3 * chunk + 2 * WINDOW_BYTES + 4096;
        let mut peak = 0;
        for (body, _) in &all {
            u.append(|out| out.extend_from_slice(body));
            u.wait_written();
            peak = peak.max(u.resident_bytes());
        }
        let stored = u.unsent_len() + u.sent;
        assert!(stored > 100 * chunk as u64, "{stored} bytes stored");
        // The chunk and offset vectors grow with the day: a few bytes per chunk.
        let index = u.chunks.len() * (std::mem::size_of::<Chunk>() + 8) * 2 + 20_000 / 64 * 16;
        assert!(
            peak <= bound + index,
            "{peak} bytes in memory for {stored} stored"
        );
        // A reader from message 1, one packet at a time while more is stored.
        u.start_at(1);
        let mut got = Vec::new();
        let mut more = 0;
        loop {
            u.wait_read();
            if u.unsent().is_empty() {
                break;
            }
            let n = u.unsent().len().min(300);
            got.extend_from_slice(&u.unsent()[..n]);
            u.mark_sent(n);
            if more < 2_000 {
                u.append(|out| out.extend_from_slice(b"live"));
                more += 1;
            }
            u.wait_written();
            assert!(u.resident_bytes() <= bound + index + 4096);
        }
        let mut expected: Vec<u8> = all.iter().flat_map(|(_, f)| f.clone()).collect();
        for _ in 0..more {
            expected.extend_from_slice(&[0, 5, b'S', b'l', b'i', b'v', b'e']);
        }
        assert!(got == expected, "the stream read back differs");
    }
}
