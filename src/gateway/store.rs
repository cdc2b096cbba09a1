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
//! written: three chunks a user when the disk keeps up. A replay of older messages reads
//! the file through a window of [`WINDOW_BYTES`], on the gateway thread (fast from the page
//! cache; a cold read waits for the disk, and the other sessions with it). Message
//! positions are kept for one message in [`MARK_EVERY`], so the index takes an eighth of a
//! byte per message, not eight.
//!
//! A chunk whose write fails stays in memory (the first failure is logged): the files
//! share the journal's disk, and a disk that fails them fails the journal too.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use crossbeam::channel::{Sender, unbounded};

use crate::wire::soupbin::kind;

/// Longest framed message the store takes: the packet length field and type byte, and the
/// longest OUCH message ironmatch sends (well under this).
pub const MESSAGE_BYTES_MAX: usize = 3 + 512;
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

/// The thread that writes full chunks out, one for all the sessions of a gateway. It ends
/// when the last store holding its queue is dropped.
#[derive(Clone, Debug)]
pub struct Spiller {
    jobs: Sender<Job>,
}

impl Spiller {
    /// Starts the writing thread.
    pub fn start() -> io::Result<Spiller> {
        let (jobs, queue) = unbounded::<Job>();
        std::thread::Builder::new()
            .name("ironmatch-store".into())
            .spawn(move || {
                let mut reported = false;
                for job in queue {
                    let job = match job {
                        Job::Write(job) => job,
                        Job::Free(chunk) => {
                            drop(chunk);
                            continue;
                        }
                    };
                    if let Err(e) = job.run()
                        && !std::mem::replace(&mut reported, true)
                    {
                        eprintln!(
                            "ironmatch gateway: session store: writing a chunk out failed ({e}); such chunks stay in memory"
                        );
                    }
                }
            })?;
        Ok(Spiller { jobs })
    }

    /// A store file in `dir` for one session: an unnamed file (it leaves nothing behind
    /// when the engine stops, however it stops), rebuilt from the journal at each start.
    pub fn file_in(&self, dir: &Path) -> io::Result<SpillFile> {
        std::fs::create_dir_all(dir)?;
        Ok(SpillFile {
            file: Arc::new(tempfile::tempfile_in(dir)?),
            jobs: self.jobs.clone(),
        })
    }
}

/// One session's store file and the queue of the thread that writes it.
#[derive(Debug)]
pub struct SpillFile {
    file: Arc<File>,
    jobs: Sender<Job>,
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
    /// Logical bytes already written to the current connection.
    sent: u64,
    /// The chunk that holds byte `sent` (or ends there when it is the last).
    sent_chunk: usize,
    /// Logical start of the first packet at or after `sent`.
    next_packet: u64,
    /// Logical bytes stored when the current connection logged in: what it asked to be
    /// replayed ends here, and what follows is the live stream.
    replay_end: u64,
    /// Bytes of a written-out chunk from `window_start`, ending at a packet boundary.
    window: Vec<u8>,
    window_start: u64,
    /// Where full chunks go; `None`: they stay in memory.
    spill: Option<SpillFile>,
    /// Chunks handed to the thread and not yet seen written.
    handed: Vec<usize>,
}

impl SessionStore {
    /// A store growing in chunks of `chunk_bytes` (at least a few messages), writing full
    /// chunks out through `spill` if given.
    pub fn new(chunk_bytes: usize, spill: Option<SpillFile>) -> SessionStore {
        let chunk_bytes = chunk_bytes.max(8 * MESSAGE_BYTES_MAX);
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
            replay_end: 0,
            window: Vec::new(),
            window_start: 0,
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
            self.advance();
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
    /// Returns the sequence number of the first message the client will get, or the
    /// error reading the store file.
    pub fn start_at(&mut self, requested: u64) -> io::Result<u64> {
        let next = self.next_seq();
        let first = if requested == 0 || requested > next {
            next
        } else {
            requested
        };
        let sent = if first == next {
            self.stored
        } else {
            self.offset_of(first)?
        };
        let was = self.sent_chunk;
        self.sent = sent;
        self.next_packet = sent;
        // The last chunk starting at or before `sent`.
        self.sent_chunk = self.chunk_starts.partition_point(|&s| s <= sent) - 1;
        self.replay_end = self.stored;
        self.window.clear();
        self.reap();
        self.release(was);
        self.fill_window()?;
        Ok(first)
    }

    /// The next bytes not yet written to the connection: the rest of the chunk (or of the
    /// window on a written-out chunk) the stream is in, ending at a packet boundary. Empty
    /// when all is sent.
    pub fn unsent(&self) -> &[u8] {
        if self.sent == self.stored {
            return &[];
        }
        let c = self.sent_chunk;
        let from = |start: u64| (self.sent - start) as usize;
        match &self.chunks[c] {
            Chunk::Memory(chunk) => &chunk[from(self.chunk_starts[c])..],
            Chunk::Handed(handed) => &handed.bytes[from(self.chunk_starts[c])..],
            Chunk::Written => &self.window[from(self.window_start)..],
        }
    }

    /// Records that the first `n` bytes of [`unsent`](Self::unsent) were written. An
    /// error is the store file's: the connection cannot be served.
    pub fn mark_sent(&mut self, n: usize) -> io::Result<()> {
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
        self.advance();
        self.fill_window()
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

    /// Bytes the store holds in memory: chunks (by capacity), the window and the index.
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
        chunks
            + self.window.capacity()
            + self.marks.capacity() * 8
            + self.chunk_starts.capacity() * 8
            + self.chunks.capacity() * std::mem::size_of::<Chunk>()
    }

    /// Where chunk `c` ends.
    fn end(&self, c: usize) -> u64 {
        self.chunk_starts.get(c + 1).copied().unwrap_or(self.stored)
    }

    /// Moves the stream to the next chunk while it is at the end of one that is not the
    /// last, handing the chunks it leaves to the writing thread.
    fn advance(&mut self) {
        while self.sent_chunk + 1 < self.chunks.len() && self.sent == self.end(self.sent_chunk) {
            self.sent_chunk += 1;
            self.release(self.sent_chunk - 1);
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

    /// Reads the written-out bytes the stream is at into the window, if it is not there.
    fn fill_window(&mut self) -> io::Result<()> {
        let c = self.sent_chunk;
        if self.sent == self.stored || !matches!(self.chunks[c], Chunk::Written) {
            return Ok(());
        }
        let window_end = self.window_start + self.window.len() as u64;
        if self.window_start <= self.sent && self.sent < window_end {
            return Ok(());
        }
        let Some(spill) = &self.spill else {
            unreachable!("only a store with a file writes chunks out")
        };
        let len = (self.end(c) - self.sent).min(WINDOW_BYTES as u64) as usize;
        self.window.resize(len, 0);
        self.window_start = self.sent;
        if let Err(e) = spill.file.read_exact_at(&mut self.window, self.sent) {
            self.window.clear();
            return Err(e);
        }
        // End the window at the last whole packet, walking from the next packet's start
        // (the stream may be in the middle of a packet).
        let mut at = (self.next_packet - self.sent) as usize;
        while at + 2 <= len {
            let packet =
                2 + usize::from(u16::from_be_bytes([self.window[at], self.window[at + 1]]));
            if at + packet > len {
                break;
            }
            at += packet;
        }
        self.window.truncate(at);
        Ok(())
    }

    /// The logical offset of message `seq` (1 to the count): from the last kept position
    /// before it, walking packet lengths. In written-out chunks the walk reads the file
    /// once for all the messages between two kept positions (twice where a chunk ends
    /// among them).
    fn offset_of(&self, seq: u64) -> io::Result<u64> {
        let i = seq - 1;
        let mut at = self.marks[(i / MARK_EVERY) as usize];
        // Bytes of the file from `read.0`.
        let mut read: (u64, Vec<u8>) = (0, Vec::new());
        for _ in 0..i % MARK_EVERY {
            let c = self.chunk_starts.partition_point(|&s| s <= at) - 1;
            let in_chunk = (at - self.chunk_starts[c]) as usize;
            let field = match &self.chunks[c] {
                Chunk::Memory(chunk) => &chunk[in_chunk..],
                Chunk::Handed(handed) => &handed.bytes[in_chunk..],
                Chunk::Written => {
                    let (from, bytes) = &mut read;
                    if !(*from <= at && at + 2 <= *from + bytes.len() as u64) {
                        let Some(spill) = &self.spill else {
                            unreachable!("only a store with a file writes chunks out")
                        };
                        let len = (self.end(c) - at).min(MARK_EVERY * MESSAGE_BYTES_MAX as u64);
                        bytes.resize(len as usize, 0);
                        spill.file.read_exact_at(bytes, at)?;
                        *from = at;
                    }
                    &read.1[(at - read.0) as usize..]
                }
            };
            at += 2 + u64::from(u16::from_be_bytes([field[0], field[1]]));
        }
        Ok(at)
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
        let spiller = Spiller::start().unwrap();
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
        let file = SpillFile {
            file: Arc::new(tempfile::tempfile().unwrap()),
            jobs,
        };
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
            assert_eq!(u.start_at(1).unwrap(), 1);
            let mut got = Vec::new();
            let mut rest = all[1_000..].iter();
            while !u.unsent().is_empty() {
                let n = u.unsent().len().min(700);
                got.extend_from_slice(&u.unsent()[..n]);
                u.mark_sent(n).unwrap();
                // The thread catches up now and then, after the stream entered its chunk.
                if got.len() % 3 == 0 {
                    for job in queue.try_iter() {
                        let Job::Write(job) = job else {
                            continue;
                        };
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

    #[test]
    fn replay_starts_where_asked() {
        let mut u = store();
        for m in [b"A1", b"B2", b"C3"] {
            u.append(|out| out.extend_from_slice(m));
        }
        assert_eq!(u.next_seq(), 4);
        assert_eq!(u.start_at(2).unwrap(), 2);
        assert_eq!(
            u.unsent(),
            &[0, 3, b'S', b'B', b'2', 0, 3, b'S', b'C', b'3']
        );
        assert_eq!(u.start_at(0).unwrap(), 4);
        assert!(u.unsent().is_empty());
        assert_eq!(
            u.start_at(99).unwrap(),
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
        assert_eq!(u.start_at(1).unwrap(), 1);
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
        u.mark_sent(n).unwrap();
        assert_eq!(u.live_unsent_len(), 43);
        while !u.unsent().is_empty() {
            let n = u.unsent().len().min(50);
            u.mark_sent(n).unwrap();
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
        assert_eq!(u.start_at(first).unwrap(), first);
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
        while !u.unsent().is_empty() {
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
            u.mark_sent(n).unwrap();
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
                u.mark_sent(n).unwrap();
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
        let bound = 3 * chunk + WINDOW_BYTES + 4096;
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
        u.start_at(1).unwrap();
        let mut got = Vec::new();
        let mut more = 0;
        while !u.unsent().is_empty() {
            let n = u.unsent().len().min(300);
            got.extend_from_slice(&u.unsent()[..n]);
            u.mark_sent(n).unwrap();
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
