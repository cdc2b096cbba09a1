//! Following a journal while it is written: records as the writer appends them, across
//! segment rotations. This is how the snapshot thread reads, and how a standby would.
//!
//! The writer appends with `write`, so every byte below the file's size is complete: a
//! record cut at the end of what is there is simply not finished yet and is read on the
//! next poll. A finished record with a bad checksum is corruption.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::format::{Entry, FormatError, HEADER_LEN, header_version, read_header, read_record};
use super::reader::{JournalError, Place, read_header_from, segment_paths};
use super::writer::segment_name;

/// Bytes read per poll at most, so a follower far behind still returns regularly.
const READ_MAX: u64 = 4 << 20;

struct Segment {
    path: PathBuf,
    file: File,
    /// Bytes read and not yet consumed; `buf[0]` is at file offset `base`.
    buf: Vec<u8>,
    base: u64,
    /// The format version in its header.
    version: u16,
}

/// Reads a journal's records from a sequence number on, as they are appended.
pub struct Follower {
    dir: PathBuf,
    fingerprint: u64,
    next_seq: u64,
    segment: Option<Segment>,
    /// The engine instance of the first segment opened: every later one must name it.
    instance: Option<u64>,
    /// The writer's count of records written (and, with `fsync = "always"`, made
    /// durable): records past it are in the file but not yet promised, and wait.
    limit: Option<Arc<AtomicU64>>,
}

impl Follower {
    /// A follower of the journal in `dir` whose first record visited is `next_seq`.
    pub fn new(dir: &Path, fingerprint: u64, next_seq: u64) -> Follower {
        Follower {
            dir: dir.to_path_buf(),
            fingerprint,
            next_seq,
            segment: None,
            instance: None,
            limit: None,
        }
    }

    /// Refuses a segment that names another engine instance than `instance` (the journal's,
    /// from its first segment), for a follower that starts in a later segment.
    pub fn of_instance(mut self, instance: u64) -> Follower {
        self.instance = Some(instance);
        self
    }

    /// Visits only records up to the writer's [`written`](super::JournalWriter::written)
    /// count: a record the writer has put in the file but not yet made durable (it is
    /// between its batch's write and fdatasync) waits for the next poll.
    pub fn limited_to(mut self, written: Arc<AtomicU64>) -> Follower {
        self.limit = Some(written);
        self
    }

    /// The sequence number of the next record to visit.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Visits the records appended since the last poll (at most about 4 MiB of them).
    /// Returns how many were visited; 0 when there is nothing new yet.
    pub fn poll(
        &mut self,
        mut visit: impl FnMut(Place<'_>, &Entry) -> Result<(), JournalError>,
    ) -> Result<usize, JournalError> {
        let mut visited = 0;
        loop {
            if self.segment.is_none() && !self.open_segment()? {
                return Ok(visited);
            }
            let seg = self.segment.as_mut().expect("opened above");
            let io = |path: &Path| {
                let path = path.to_path_buf();
                move |source| JournalError::Io { path, source }
            };
            let got = (&seg.file)
                .take(READ_MAX)
                .read_to_end(&mut seg.buf)
                .map_err(io(&seg.path))?;
            let limit = self
                .limit
                .as_ref()
                .map_or(u64::MAX, |written| written.load(Ordering::Acquire));
            let mut held = false;
            let mut pos = 0;
            while pos < seg.buf.len() {
                match read_record(&seg.buf[pos..]) {
                    Ok((seq, _, _)) if seq > limit => {
                        held = true;
                        break;
                    }
                    Ok((seq, entry, len)) => {
                        let place = Place {
                            path: &seg.path,
                            offset: seg.base + pos as u64,
                            seq,
                            version: seg.version,
                        };
                        if seq > self.next_seq || (seq < self.next_seq && visited > 0) {
                            return Err(JournalError::Sequence {
                                path: seg.path.clone(),
                                offset: place.offset,
                                expected: self.next_seq,
                                found: seq,
                            });
                        }
                        if seq == self.next_seq {
                            visit(place, &entry)?;
                            self.next_seq += 1;
                            visited += 1;
                        }
                        pos += len;
                    }
                    Err(FormatError::Truncated { .. }) => break,
                    Err(error) => {
                        return Err(JournalError::Corrupt {
                            path: seg.path.clone(),
                            offset: seg.base + pos as u64,
                            error,
                        });
                    }
                }
            }
            seg.buf.drain(..pos);
            seg.base += pos as u64;
            if held || got as u64 == READ_MAX || visited > 0 {
                return Ok(visited);
            }
            // Nothing new here. Has the writer moved on to the next segment? It creates
            // that file only after its last write to this one, so one more read now
            // sees everything this segment will ever hold.
            let next = self.dir.join(segment_name(self.next_seq));
            if next == seg.path || !next.exists() {
                return Ok(visited);
            }
            let mut rest = Vec::new();
            (&seg.file).read_to_end(&mut rest).map_err(io(&seg.path))?;
            if !rest.is_empty() {
                seg.buf.extend_from_slice(&rest);
                continue;
            }
            if !seg.buf.is_empty() {
                return Err(JournalError::Corrupt {
                    path: seg.path.clone(),
                    offset: seg.base,
                    error: FormatError::Truncated {
                        needed: seg.buf.len() + 1,
                        present: seg.buf.len(),
                    },
                });
            }
            self.segment = None;
        }
    }

    /// Opens the segment holding `next_seq`; `false` if it is not there (or not complete) yet.
    fn open_segment(&mut self) -> Result<bool, JournalError> {
        let paths = segment_paths(&self.dir).map_err(|source| JournalError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let first_seq = |p: &PathBuf| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
        };
        let Some(path) = paths
            .iter()
            .rfind(|p| first_seq(p).is_some_and(|f| f <= self.next_seq))
        else {
            return Ok(false);
        };
        let io = |source: io::Error| JournalError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        let Some(head) = read_header_from(&mut file).map_err(io)? else {
            return Ok(false);
        };
        let header = read_header(&head).map_err(|error| JournalError::Header {
            path: path.clone(),
            error,
        })?;
        if header.fingerprint != self.fingerprint {
            return Err(JournalError::Fingerprint { path: path.clone() });
        }
        let expected = *self.instance.get_or_insert(header.instance);
        if header.instance != expected {
            return Err(JournalError::Instance {
                path: path.clone(),
                expected,
                found: header.instance,
            });
        }
        self.segment = Some(Segment {
            path: path.clone(),
            file,
            buf: Vec::new(),
            base: HEADER_LEN as u64,
            version: header_version(&head),
        });
        Ok(true)
    }
}
