//! The whole pipeline wired in one place, in order. Used by `ironmatch serve` and by tests.
//!
//! ```text
//! 1 gateway (mio) ─ring─► 2 matcher ─ring─► 3 journal writer ─ring─► 4 gateway egress
//! ```
//! Stop: set the shutdown flag (SIGINT/SIGTERM do) or call [`Server::stop`]. The gateway
//! stops accepting and reading, sends a shutdown marker behind the last command, and
//! when the marker comes back out of egress every reply has been written: clients get
//! End of Session and every thread ends. Beside the pipeline, two threads follow the
//! journal files: the snapshot thread and the feed publisher (ITCH over MoldUDP64). They
//! end last: a final snapshot, the feed's End of Session.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam::sync::Parker;
use mio::net::TcpListener;
use mio::{Poll, Waker};

use crate::book::{BookConfig, Event, Matcher};
use crate::config::Config;
use crate::engine::run_matcher;
use crate::feed::{PublisherStart, spawn_publisher};
use crate::gateway::{self, Gateway};
use crate::journal::snapshot::{self, SnapshotterStart};
use crate::journal::{self, Entry, Header, JournalWriter, SegmentScan, run_journal};
use crate::pipeline::{Record, Ring, Wake, pin};

/// A running engine.
pub struct Server {
    local_addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    waker: Arc<Waker>,
    threads: Vec<JoinHandle<()>>,
    /// Set once the pipeline has ended: the journal followers then catch up and end.
    followers_stop: Arc<AtomicBool>,
    /// The snapshot thread and the feed publisher.
    followers: Vec<JoinHandle<()>>,
    feed_retransmission: Option<SocketAddr>,
    /// The gateway's admission counters.
    admission: Arc<gateway::AdmissionCounters>,
}

impl Server {
    /// Binds the listener and starts every stage. Returns once the engine accepts logins.
    pub fn start(config: &Config) -> io::Result<Server> {
        let book = config
            .book_config()
            .map_err(|(k, m)| io::Error::other(format!("{k}: {m}")))?;
        let p = &config.pipeline;
        let shutdown = Arc::new(AtomicBool::new(false));
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), gateway::WAKER)?);
        let matcher_parker = Parker::new();

        // Rings: gateway -> matcher (here), matcher -> journal writer (in `spawn_core`),
        // journal writer -> gateway egress (here).
        let to_matcher: Arc<Ring<Record>> = Arc::new(Ring::new(
            p.ring_capacity,
            Wake::Thread(matcher_parker.unparker().clone()),
        ));
        let to_egress: Arc<Ring<Record>> =
            Arc::new(Ring::new(p.ring_capacity, Wake::Poll(Arc::clone(&waker))));

        let addr: SocketAddr = config.gateway.listen.parse().map_err(io::Error::other)?;
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let mut threads = Vec::new();

        // 1 + 4: the gateway owns every socket, for ingress and egress.
        let mut gateway = Gateway::new(
            config,
            poll,
            listener,
            Arc::clone(&to_matcher),
            Arc::clone(&to_egress),
            Arc::clone(&shutdown),
        )?;
        let admission = gateway.admission_counters();

        // Recovery: the journal rebuilds the books and every session's stream.
        let opened = open_journal(config, &book, |e| gateway.restore(e))?;
        let scan = &opened.scan;
        if scan.records > 0 {
            let from = match opened.snapshot {
                Some(seq) => format!("snapshot at {seq} + {} records", scan.next_seq - 1 - seq),
                None => "no snapshot".to_string(),
            };
            eprintln!(
                "ironmatch: recovered {} journal records from {} ({from}; next sequence {})",
                scan.records, config.journal.dir, scan.next_seq
            );
        }
        let (matcher, mut writer) = (opened.matcher, opened.writer);
        let followers_stop = Arc::new(AtomicBool::new(false));
        let mut followers = Vec::new();
        if let Some(start) = opened.snapshotter {
            followers.push(snapshot::spawn_snapshotter(
                start,
                Arc::clone(&followers_stop),
            )?);
        }
        // The feed follows the journal too (woken by the writer, or reading on a timer).
        let mut feed_retransmission = None;
        if config.marketdata.enabled {
            let start = PublisherStart {
                dir: config.journal.dir.clone().into(),
                book: book.clone(),
                marketdata: config.marketdata.clone(),
                core: config.pipeline.feed_core,
                live_from: writer.next_seq(),
            };
            let publisher = spawn_publisher(start, Arc::clone(&followers_stop))?;
            if config.marketdata.poll_interval_us == 0 {
                writer.set_follower_signal(publisher.signal);
            }
            feed_retransmission = Some(publisher.retransmission_addr);
            followers.push(publisher.thread);
        }

        let core = p.gateway_core;
        threads.push(spawn("im-gateway", move || {
            pin(core, "gateway");
            if let Err(e) = gateway.run() {
                eprintln!("ironmatch gateway: stopped on error: {e}");
            }
        })?);

        // 2 + 3: the matcher and the journal writer.
        let core = spawn_core(
            matcher,
            writer,
            config,
            (to_matcher, matcher_parker),
            to_egress,
        )?;
        threads.extend(core.threads);

        Ok(Server {
            local_addr,
            shutdown,
            waker,
            threads,
            followers_stop,
            followers,
            feed_retransmission,
            admission,
        })
    }

    /// The gateway's admission counters now (accepted, evicted, timed out, logins).
    pub fn admission(&self) -> gateway::AdmissionStats {
        self.admission.stats()
    }

    /// Where the gateway listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the feed's retransmission server listens, if the feed is enabled.
    pub fn feed_retransmission_addr(&self) -> Option<SocketAddr> {
        self.feed_retransmission
    }

    /// The flag that starts a graceful shutdown when set (for signal handlers).
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shutdown)
    }

    /// Starts a graceful shutdown and waits for it.
    pub fn stop(self) -> io::Result<()> {
        self.shutdown.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        self.wait()
    }

    /// Waits until every stage has ended. Errs if one panicked.
    pub fn wait(self) -> io::Result<()> {
        let mut failed = Vec::new();
        for t in self.threads {
            let name = t.thread().name().unwrap_or("?").to_string();
            if t.join().is_err() {
                failed.push(name);
            }
        }
        self.followers_stop.store(true, Ordering::SeqCst);
        for t in self.followers {
            let name = t.thread().name().unwrap_or("?").to_string();
            if t.join().is_err() {
                failed.push(name);
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "stage threads panicked: {failed:?}"
            )))
        }
    }
}

/// Stages 2 and 3, running: feed commands into `to_matcher`, take events from `to_egress`.
pub struct CoreStages {
    /// The stage threads; they end after a [`Record::Shutdown`] went through.
    pub threads: Vec<JoinHandle<()>>,
}

/// Starts the matcher and the journal writer between two rings the caller provides
/// (the gateway in `serve`, a benchmark's own loop in `pipeline/in_process`).
/// `to_matcher` comes with the parker of the matcher thread it wakes.
pub fn spawn_core(
    matcher: Matcher,
    writer: JournalWriter,
    config: &Config,
    to_matcher: (Arc<Ring<Record>>, Parker),
    to_egress: Arc<Ring<Record>>,
) -> io::Result<CoreStages> {
    let p = &config.pipeline;
    let wait = config.wait_strategy();
    let (to_matcher, matcher_parker) = to_matcher;
    let journal_parker = Parker::new();
    let to_journal: Arc<Ring<Record>> = Arc::new(Ring::new(
        p.ring_capacity,
        Wake::Thread(journal_parker.unparker().clone()),
    ));
    let mut threads = Vec::new();

    // 2: the matcher, the single sequencer.
    let (input, output, core) = (to_matcher, Arc::clone(&to_journal), p.matcher_core);
    threads.push(spawn("im-matcher", move || {
        pin(core, "matcher");
        run_matcher(matcher, &input, &output, wait, &matcher_parker);
    })?);

    // 3: the journal writer appends, then releases events to egress.
    let (input, output, core) = (to_journal, to_egress, p.journal_core);
    threads.push(spawn("im-journal", move || {
        pin(core, "journal");
        run_journal(writer, &input, &output, wait, &journal_parker);
    })?);
    Ok(CoreStages { threads })
}

/// A recovered journal, ready to append to.
pub struct OpenedJournal {
    /// The matcher after every journaled command.
    pub matcher: Matcher,
    /// The writer, positioned to append.
    pub writer: JournalWriter,
    /// How the walk ended.
    pub scan: SegmentScan,
    /// The snapshot recovery started from (its last sequence number), if any.
    pub snapshot: Option<u64>,
    /// Where the snapshot thread starts, if snapshots are configured.
    pub snapshotter: Option<SnapshotterStart>,
}

/// Recovers the journal in `config.journal.dir`: `on_event` gets every recovered event
/// (to rebuild session streams). Returns the matcher and a writer positioned to append,
/// with any events the crash left unjournaled already written.
pub fn open_journal(
    config: &Config,
    book: &BookConfig,
    on_event: impl FnMut(&Event),
) -> io::Result<OpenedJournal> {
    let dir = Path::new(&config.journal.dir);
    let recovery = journal::recover(dir, book, on_event).map_err(io::Error::other)?;
    let fingerprint = journal::fingerprint(book);
    let header = recovery.scan.header.unwrap_or_else(|| {
        let now = snapshot::now_ns();
        Header {
            instance: now ^ u64::from(std::process::id()).rotate_left(32),
            first_seq: 1,
            fingerprint,
            created_ns: now,
        }
    });
    let last = recovery
        .scan
        .last_segment
        .as_ref()
        .map(|(p, len)| (p.as_path(), *len));
    let mut writer = JournalWriter::open(
        dir,
        header,
        last,
        recovery.scan.next_seq,
        config.fsync_mode(),
        config.journal.segment_bytes_max,
    )?;
    for event in &recovery.pending {
        writer.stage(&Entry::Event(*event));
    }
    writer.commit()?;
    let interval = config.journal.snapshot_interval_records;
    let snapshotter = (interval > 0).then(|| SnapshotterStart {
        dir: dir.to_path_buf(),
        book: book.clone(),
        instance: header.instance,
        state: recovery.matcher.state(),
        sessions: recovery.sessions.clone(),
        next_seq: writer.next_seq(),
        interval,
        last_snapshot: recovery.snapshot.unwrap_or(0),
    });
    Ok(OpenedJournal {
        matcher: recovery.matcher,
        writer,
        scan: recovery.scan,
        snapshot: recovery.snapshot,
        snapshotter,
    })
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.to_string()).spawn(f)
}
