//! The whole pipeline wired in one place, in order. Used by `ironmatch serve` and by tests.
//!
//! ```text
//! 1 gateway (mio) ─ring─► 2 matcher ─ring─► 3 journal writer ─ring─► 4 gateway egress
//! ```
//! Each stage is an [`Agent`](crate::pipeline::Agent); `[pipeline] threading` decides the
//! threads: `dedicated` runs the gateway (1 + 4), the matcher (2) and the journal writer
//! (3) on a thread each; `shared` runs them in turn on one thread (a batch runs to
//! completion, no wake-up on its path); `auto` picks from the cores the process may use.
//! Stop: set the shutdown flag (SIGINT/SIGTERM do) or call [`Server::stop`]. The gateway
//! stops accepting and reading, sends a shutdown marker behind the last command, and
//! when the marker comes back out of egress every reply has been written: clients get
//! End of Session if the session is over (without a `[venue]`, at every stop; with one,
//! once the day's end of messages passed) and every thread ends. Beside the pipeline,
//! threads follow the journal files: the feed publisher (ITCH over MoldUDP64) and, unless
//! the matcher takes them itself, the snapshot thread. They end last: a final snapshot, the
//! feed's End of Session (as the clients'). The operator's endpoint
//! (`[admin]`, thread `im-admin`) reads what the stages publish and stops after them.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam::sync::Parker;
use mio::net::TcpListener;
use mio::{Poll, Waker};

use crate::admin::metrics::EngineMetrics;
use crate::admin::{AdminListener, AdminServer, EngineView};
use crate::book::{BookConfig, Event, Matcher};
use crate::config::{ADMIN_TOKEN_ENV, Config};
use crate::engine::MatcherAgent;
use crate::feed::{PublisherStart, spawn_publisher};
use crate::gateway::{self, Gateway};
use crate::journal::pinned::Pinned;
use crate::journal::snapshot::{self, SnapshotSource, SnapshotterStart};
use crate::journal::{self, Entry, Header, JournalAgent, JournalWriter, SegmentScan};
use crate::pipeline::{AgentRunner, CompositeAgent, IdleStrategy, Record, Ring, Threading, Wake};
use crate::types::Symbol;
use crate::venue::VenueClock;

/// A running engine.
pub struct Server {
    local_addr: SocketAddr,
    /// Where the raft thread listens, in a cluster.
    raft_addr: Option<SocketAddr>,
    shutdown: Arc<AtomicBool>,
    waker: Arc<Waker>,
    threads: Vec<JoinHandle<()>>,
    /// Set once the pipeline has ended: the journal followers then catch up and end.
    followers_stop: Arc<AtomicBool>,
    /// The snapshot thread and the feed publisher.
    followers: Vec<JoinHandle<()>>,
    feed_retransmission: Option<SocketAddr>,
    feed_session: Option<String>,
    /// The SoupBinTCP session name announced (the journal's).
    session: String,
    /// The gateway's admission counters.
    admission: Arc<gateway::AdmissionCounters>,
    /// The threading mode in use, and why.
    threading: Threading,
    threading_why: String,
    /// The operator's endpoint, if configured.
    admin: Option<AdminServer>,
    /// The trading day served, with a `[venue]`.
    day: Option<jiff::civil::Date>,
    /// Set when the day's End of Messages was sequenced (the engine then stops by itself).
    day_over: Arc<AtomicBool>,
    /// Set when the gateway stopped the engine because its poll failed.
    gateway_failed: Arc<AtomicBool>,
    /// The journal directory's lock, dropped once the writer and every follower (the
    /// snapshot thread, the feed publisher) have ended.
    journal_lock: Option<std::fs::File>,
}

impl Server {
    /// Binds the listener and starts every stage. Returns once the engine accepts logins.
    pub fn start(config: &Config) -> io::Result<Server> {
        Server::start_with(config, None)
    }

    /// Like [`Server::start`]; while `journal_hold` is set, the journal writer holds each
    /// batch before writing it (a stalled disk on demand, for tests).
    pub fn start_with(
        config: &Config,
        journal_hold: Option<Arc<AtomicBool>>,
    ) -> io::Result<Server> {
        // Books no allocation could hold are refused first: recovering the day below
        // already builds them.
        let book = config
            .book_config()
            .map_err(|(k, m)| io::Error::other(format!("{k}: {m}")))?;
        let follower = snapshot_follower_runs(config);
        check_serve_memory(config, &book, 1 + u64::from(follower)).map_err(io::Error::other)?;
        // A cluster node's Raft log whose sync failed in this boot is refused here, before
        // the journal's recovery and the listeners (the log itself is opened later).
        if let Some(cluster) = config.cluster_settings() {
            journal::check_sync_failed(&cluster.dir)?;
        }
        // With a trading day: the day's own journal directory and session names.
        let schedule = config.schedule();
        let day = match schedule.as_ref() {
            None => None,
            Some(s) => {
                let mut day = s.trading_day(jiff::Timestamp::now());
                // A day whose journal already holds its End of Messages is over whatever
                // the clock says (a later `system_end` configured since, a clock stepped
                // back across it): its plan would have nothing left to send, and the
                // engine would idle through the next day. The next one starts. A journal
                // whose sync failed in this boot is not judged by what reads back.
                loop {
                    let dir = config.for_day(day).journal.dir;
                    journal::check_sync_failed(Path::new(&dir))?;
                    if !day_ended(config, day)? {
                        break;
                    }
                    let next = day.tomorrow().expect("not the last day of the calendar");
                    eprintln!(
                        "ironmatch: trading day {day} already ended (its journal holds its end of messages); starting {next}"
                    );
                    day = next;
                }
                Some(day)
            }
        };
        if let (Some(schedule), Some(day)) = (&schedule, day) {
            close_earlier_day(config, schedule, day);
        }
        // The halts the day before ended under, for a new day's journal: read before today's
        // journal is recovered, so that two days' books are never held at once.
        let carried = match day {
            Some(day) if no_records(Path::new(&config.for_day(day).journal.dir)) => {
                carried_halts(config, day)?
            }
            _ => Vec::new(),
        };
        let day_config;
        let config = match day {
            Some(day) => {
                day_config = config.for_day(day);
                &day_config
            }
            None => config,
        };
        let book = config
            .book_config()
            .map_err(|(k, m)| io::Error::other(format!("{k}: {m}")))?;
        let p = &config.pipeline;
        let (threading, threading_why) = config.threading().choose();
        // The admin endpoint first: an address it may not use stops the engine here.
        let env_token = std::env::var(ADMIN_TOKEN_ENV).ok();
        let admin_listener = match config.admin.resolve(env_token.as_deref()) {
            Ok(Some(settings)) => Some(AdminListener::bind(&settings)?),
            Ok(None) => None,
            Err(why) => return Err(io::Error::new(io::ErrorKind::PermissionDenied, why)),
        };
        let shutdown = Arc::new(AtomicBool::new(false));
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), gateway::WAKER)?);
        let matcher_parker = Parker::new();

        // Rings: gateway -> matcher (here), matcher -> journal writer (in `core_agents`),
        // journal writer -> gateway egress (here). On one thread nobody needs waking.
        // In a cluster the gateway's ring goes to the raft thread instead, which feeds the
        // matcher's ring with committed commands (and wakes the shared thread's poll).
        let shared = threading == Threading::Shared;
        let cluster = config.cluster_settings();
        let to_matcher: Arc<Ring<Record>> = Arc::new(Ring::new(
            p.ring_capacity,
            match (shared, cluster.is_some()) {
                (true, false) => Wake::None,
                (true, true) => Wake::Poll(Arc::clone(&waker)),
                (false, _) => Wake::Thread(matcher_parker.unparker().clone()),
            },
        ));
        let proposals = cluster.as_ref().map(|_| {
            let (notify, wake) = crate::cluster::proposer_wake();
            (notify, Arc::new(Ring::<Record>::new(p.ring_capacity, wake)))
        });
        let to_egress: Arc<Ring<Record>> = Arc::new(Ring::new(
            p.ring_capacity,
            if shared {
                Wake::None
            } else {
                Wake::Poll(Arc::clone(&waker))
            },
        ));

        let addr: SocketAddr = config.gateway.listen.parse().map_err(io::Error::other)?;
        let listener = TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("gateway.listen {addr}: {e}")))?;
        let local_addr = listener.local_addr()?;
        // This node's Raft port too, before any thread starts.
        let raft_listener = cluster.as_ref().map(crate::cluster::bind).transpose()?;

        // 1 + 4: the gateway owns every socket, for ingress and egress.
        let mut gateway = Gateway::new(
            config,
            poll,
            Arc::clone(&waker),
            listener,
            proposals
                .as_ref()
                .map_or_else(|| Arc::clone(&to_matcher), |(_, r)| Arc::clone(r)),
            Arc::clone(&to_egress),
            Arc::clone(&shutdown),
        )?;
        let admission = gateway.admission_counters();

        // Recovery: the journal rebuilds the books and every session's stream.
        let mut opened = open_journal(config, &book, |e| gateway.restore(e))?;
        // Where this run's records start: the feed's settings are pinned as a new
        // journal's if nothing came before them (the carried halts below are this run's).
        let live_from = opened.writer.next_seq();
        // A new day's journal starts under the halts the day before ended with.
        if let Some(day) = day
            && opened.scan.records == 0
            && !carried.is_empty()
        {
            let OpenedJournal {
                matcher,
                writer,
                snapshotter,
                ..
            } = &mut opened;
            journal_carried(day, &carried, matcher, writer)?;
            // Snapshots count from after them (a matcher-side snapshot writer numbers its
            // records from `next_seq`).
            if let Some(start) = snapshotter {
                start.state = matcher.state();
                start.next_seq = writer.next_seq();
            }
        }
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
        // The sessions keep the name the journal's streams were announced under. A journal
        // with no record that has the file keeps it too: logins are not journaled, so
        // Login Accepted may have announced it already.
        let journal_dir = Path::new(&config.journal.dir);
        let (sessions, pinned) = gateway::SessionSettings::pin(
            journal_dir,
            &config.gateway,
            scan.next_seq <= 1 && gateway::SessionSettings::read(journal_dir)?.is_none(),
            cluster.is_some(),
        )?;
        match pinned {
            Pinned::KeptOverConfiguration => eprintln!(
                "ironmatch: [gateway] session {:?} differs from the name this journal's sessions were announced under ({:?}): the journal's is kept, so that members' connectors see one session; the configuration's applies from the next journal",
                config.gateway.session, sessions.session
            ),
            Pinned::Assumed => eprintln!(
                "ironmatch: this journal's sessions were started by a build that did not keep their name; the configuration's ({:?}) is taken for it from now on",
                sessions.session
            ),
            Pinned::New | Pinned::Kept => {}
        }
        gateway.set_session(&sessions.session);
        // Owners are known by their place in [[users]]: the journal's names must be those.
        if gateway::UserNames::pin(
            journal_dir,
            &gateway::UserNames::of(&config.users),
            scan.next_seq <= 1,
        )? == Pinned::Assumed
        {
            eprintln!(
                "ironmatch: this journal's owners were named by a build that did not keep their names; the configuration's are taken for them from now on"
            );
        }
        let day_over = Arc::new(AtomicBool::new(false));
        let gateway_failed = gateway.failure_flag();
        if let (Some(schedule), Some(day)) = (&schedule, day) {
            let last = opened.matcher.last_day_event();
            let plan = gateway::DayPlan::resume(schedule.transitions(day), last);
            eprintln!(
                "ironmatch: trading day {day} ({}), session {}, journal {}; last transition {last:?}",
                schedule.tz_name, sessions.session, config.journal.dir
            );
            gateway.set_day(plan, Arc::clone(&day_over));
        }
        // In a cluster: the Raft log, and which of its entries the journal holds.
        let raft = match &cluster {
            Some(settings) => {
                let role = Arc::new(crate::cluster::ClusterRole::default());
                gateway.set_cluster(Arc::clone(&role));
                let commands = count_commands(Path::new(&config.journal.dir))?;
                let raft = crate::cluster::store::RaftStore::open(
                    &settings.dir,
                    settings.fsync,
                    commands,
                    Some(Arc::clone(&to_matcher)),
                )?;
                eprintln!(
                    "ironmatch cluster: node {}: raft log in {} ({} entries; journal holds {commands} commands, {} more to apply)",
                    settings.node_id,
                    settings.dir.display(),
                    raft.entries,
                    raft.resume.len()
                );
                for c in &raft.resume {
                    to_matcher.push(Record::Command(*c));
                }
                // Commands the journal held at start count as released: their events are
                // in the sessions' recovered streams.
                let released = opened.writer.released();
                released.commands.store(commands, Ordering::Release);
                Some((settings.clone(), raft.store, role, released))
            }
            None => None,
        };
        // From here on threads start. The server holds each as it starts, so that a start
        // failing after some did stops and joins them (its drop, as for a running server)
        // instead of leaving them running beside a caller that may start again. Built
        // before the matcher and the writer are taken out of `opened`, so that on such a
        // failure they are dropped (the writer's writeback joined) before the server
        // releases the journal's lock.
        let mut server = Server {
            raft_addr: None,
            local_addr,
            shutdown,
            waker: Arc::clone(&waker),
            threads: Vec::new(),
            followers_stop: Arc::new(AtomicBool::new(false)),
            followers: Vec::new(),
            feed_retransmission: None,
            feed_session: None,
            session: sessions.session.clone(),
            admission: Arc::clone(&admission),
            threading,
            threading_why,
            admin: None,
            day,
            day_over: Arc::clone(&day_over),
            gateway_failed,
            journal_lock: Some(opened.lock),
        };
        let (matcher, mut writer) = (opened.matcher, opened.writer);
        // What the stages publish for the endpoint, only if there is one; the gateway's
        // sessions start with their recovered streams.
        let metrics = admin_listener.as_ref().map(|_| {
            Arc::new(EngineMetrics::new(
                book.instruments.len(),
                book.owners.len(),
                p.ring_capacity,
                config
                    .schedule()
                    .map_or_else(VenueClock::utc, |s| VenueClock::new(s.tz)),
            ))
        });
        if let Some(m) = &metrics {
            gateway.set_metrics(Arc::clone(m));
        }
        if let Some(hold) = journal_hold {
            writer.set_hold(hold);
        }
        let followers_stop = Arc::clone(&server.followers_stop);
        let mut snapshot_taker = None;
        if let Some(start) = opened.snapshotter {
            match config
                .snapshot_source()
                .resolve(threading != Threading::Shared)
            {
                SnapshotSource::Follower | SnapshotSource::Auto => {
                    server.followers.push(snapshot::spawn_snapshotter(
                        start,
                        Arc::clone(&followers_stop),
                        writer.written(),
                    )?)
                }
                SnapshotSource::Matcher => {
                    let (taker, thread) = snapshot::spawn_snapshot_writer(
                        start,
                        writer.written(),
                        Arc::clone(&followers_stop),
                    )?;
                    snapshot_taker = Some(taker);
                    server.followers.push(thread);
                }
            }
        }
        // The feed follows the journal too (woken by the writer, or reading on a timer).
        if config.marketdata.enabled {
            let start = PublisherStart {
                dir: config.journal.dir.clone().into(),
                book: book.clone(),
                marketdata: config.marketdata.clone(),
                core: config.pipeline.feed_core,
                live_from,
                cluster: raft.as_ref().map(|(_, _, role, _)| Arc::clone(role)),
                written: Some(writer.written()),
                day_over: (schedule.is_some() && day.is_some()).then(|| Arc::clone(&day_over)),
            };
            let publisher = spawn_publisher(start, Arc::clone(&followers_stop))?;
            if config.marketdata.poll_interval_us == 0 {
                writer.set_follower_signal(publisher.signal);
            }
            server.feed_retransmission = Some(publisher.retransmission_addr);
            server.feed_session = Some(publisher.session.clone());
            server.followers.push(publisher.thread);
        }

        // The stages as agents (with a thread per stage, started 2, 3, then 1 + 4); the
        // threading mode decides the threads.
        let wait = config.wait_strategy();
        let (mut matcher, mut journal, journal_parker) = core_agents(
            matcher,
            writer,
            p.ring_capacity,
            threading,
            Arc::clone(&to_matcher),
            Arc::clone(&to_egress),
        );
        if let Some(m) = &metrics {
            matcher.set_metrics(Arc::clone(m));
            journal.set_metrics(Arc::clone(m));
        }
        if let Some(taker) = snapshot_taker {
            matcher.set_snapshots(taker);
        }
        let actions = admin_listener.as_ref().map(|_| {
            let wake = Arc::clone(&waker);
            let (sender, receiver) = crate::admin::actions::queue(Arc::new(move || {
                let _ = wake.wake();
            }));
            gateway.set_actions(receiver);
            sender
        });
        server.admin = match admin_listener.zip(metrics) {
            Some((listener, metrics)) => Some(
                listener.serve(EngineView {
                    metrics,
                    rings: vec![
                        ("to_matcher", Arc::clone(&to_matcher)),
                        ("to_journal", Arc::clone(journal.input())),
                        ("to_egress", Arc::clone(&to_egress)),
                    ],
                    admission: Arc::clone(&admission),
                    symbols: config
                        .instruments
                        .iter()
                        .map(|i| i.symbol.clone())
                        .collect(),
                    users: config.users.iter().map(|u| u.username.clone()).collect(),
                    threading: threading.name(),
                    actions,
                    day: day.map(|d| (d.to_string(), sessions.session.clone())),
                })?,
            ),
            None => None,
        };
        gateway.set_deadline(matcher.deadline());
        match threading {
            Threading::Shared => {
                // One thread, each batch run to completion in pipeline order; idle, it
                // sleeps in the gateway's poll. It runs on the gateway's core: the
                // matcher's and the journal's have no thread of their own to pin.
                if p.matcher_core.is_some() || p.journal_core.is_some() {
                    eprintln!(
                        "ironmatch: warning: pipeline.matcher_core and pipeline.journal_core are not used with shared threading (one thread, on pipeline.gateway_core)"
                    );
                }
                let all = CompositeAgent::new(
                    "pipeline",
                    vec![Box::new(gateway), Box::new(matcher), Box::new(journal)],
                );
                let idle = IdleStrategy::new(wait, Parker::new());
                let runner = AgentRunner::start(Box::new(all), idle, p.gateway_core)?;
                server.threads.push(runner.into_thread());
            }
            Threading::Dedicated | Threading::Auto => {
                // Downstream first: a stage ends on the shutdown marker coming down its
                // ring, so the stages that started before a spawn failed are stopped by
                // pushing the marker into the first one's ring, which nothing else feeds
                // until the gateway (or the raft thread) runs. Started first, the gateway
                // would wait for its marker to come back through stages that never ran,
                // and a dropped server leave it running, the journal locked.
                spawn_core_agents(
                    matcher,
                    journal,
                    config,
                    (&to_matcher, matcher_parker),
                    journal_parker,
                    &mut server.threads,
                )?;
                let gateway = AgentRunner::start(
                    Box::new(gateway),
                    IdleStrategy::new(wait, Parker::new()),
                    p.gateway_core,
                )
                .inspect_err(|_| stop_from(&to_matcher))?;
                server.threads.push(gateway.into_thread());
            }
        }

        // R: the raft thread, last: the stages it feeds are running.
        if let (
            Some((settings, store, role, released)),
            Some((notify, proposals)),
            Some(listener),
        ) = (raft, proposals, raft_listener)
        {
            // The raft thread feeds the matcher's ring: until it runs, nothing else does.
            // Without it the stages would not end (the gateway's marker goes to it), so a
            // failed start sends the marker down the pipeline itself.
            let node = crate::cluster::spawn(
                settings,
                listener,
                store,
                proposals,
                notify,
                Arc::clone(&to_matcher),
                role,
                released,
            )
            .inspect_err(|_| stop_from(&to_matcher))?;
            server.raft_addr = Some(node.raft_addr);
            server.threads.push(node.thread);
        }

        Ok(server)
    }

    /// Where the operator's endpoint listens, if `[admin] listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    /// The trading day served (with a `[venue]`).
    pub fn day(&self) -> Option<jiff::civil::Date> {
        self.day
    }

    /// Whether the day's End of Messages was sequenced: the engine then drains and stops
    /// by itself, and `serve` starts the next day.
    pub fn day_over(&self) -> bool {
        self.day_over.load(Ordering::SeqCst)
    }

    /// The flag behind [`Server::day_over`], readable after [`Server::wait`].
    pub fn day_over_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.day_over)
    }

    /// The threading mode the server runs in (`auto` resolved) and why it was chosen.
    pub fn threading(&self) -> (Threading, &str) {
        (self.threading, &self.threading_why)
    }

    /// The gateway's admission counters now (accepted, evicted, timed out, logins).
    pub fn admission(&self) -> gateway::AdmissionStats {
        self.admission.stats()
    }

    /// Where the gateway listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the raft thread listens, with `[cluster]`.
    pub fn raft_addr(&self) -> Option<SocketAddr> {
        self.raft_addr
    }

    /// The SoupBinTCP session name Login Accepted announces: the journal's
    /// ([`gateway::SessionSettings`]).
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The MoldUDP64 session the feed publishes (the journal's), if the feed is enabled.
    pub fn feed_session(&self) -> Option<&str> {
        self.feed_session.as_deref()
    }

    /// Where the feed's retransmission server listens, if the feed is enabled.
    pub fn feed_retransmission_addr(&self) -> Option<SocketAddr> {
        self.feed_retransmission
    }

    /// The flag that starts a graceful shutdown when set (for signal handlers).
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shutdown)
    }

    /// Starts a graceful shutdown and waits for it: every stage ended and joined, the
    /// journal writer's background writeback included (on a disk that hangs, as long as
    /// its last `fdatasync` takes; a dropped server waits at most [`DROP_PATIENCE`]).
    pub fn stop(mut self) -> io::Result<()> {
        self.request_stop();
        self.join()
    }

    /// Waits until every stage has ended. Errs if one panicked, or if the gateway stopped
    /// the engine because its poll failed.
    pub fn wait(mut self) -> io::Result<()> {
        self.join()
    }

    /// Asks every stage to end, after draining what it holds.
    fn request_stop(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    /// Joins the stages, then the journal's followers, then stops the operator endpoint;
    /// afterwards the server holds no thread. Errs if one panicked.
    fn join(&mut self) -> io::Result<()> {
        let mut failed = Vec::new();
        for t in std::mem::take(&mut self.threads) {
            let name = t.thread().name().unwrap_or("?").to_string();
            if t.join().is_err() {
                failed.push(name);
            }
        }
        self.followers_stop.store(true, Ordering::SeqCst);
        for t in std::mem::take(&mut self.followers) {
            let name = t.thread().name().unwrap_or("?").to_string();
            if t.join().is_err() {
                failed.push(name);
            }
        }
        // Nothing of this engine touches the journal any more.
        self.journal_lock = None;
        // Last, so the endpoint can be watched while the engine drains.
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        if !failed.is_empty() {
            Err(io::Error::other(format!(
                "stage threads panicked: {failed:?}"
            )))
        } else if self.gateway_failed.load(Ordering::SeqCst) {
            // Drained like an operator's stop, but a failure: `serve` exits 1 for it.
            Err(io::Error::other(
                "the gateway's poll of its sockets failed: the engine drained and stopped",
            ))
        } else {
            Ok(())
        }
    }
}

/// How long a dropped [`Server`] waits for its stages to end.
pub const DROP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

impl Drop for Server {
    /// A server dropped without [`Server::stop`] or [`Server::wait`] stops as `stop` does:
    /// its stages drain (everything accepted is journaled and answered), then its threads
    /// are joined, so that nothing of it runs on and its journal is closed when the drop
    /// returns. It does not wait for ever: while the dropping thread panics it only asks
    /// the engine to stop, and stages that have not ended within [`DROP_PATIENCE`] (one
    /// that panicked leaves the others waiting for its records) are left running, said on
    /// stderr.
    fn drop(&mut self) {
        if self.threads.is_empty() && self.followers.is_empty() && self.admin.is_none() {
            return;
        }
        self.request_stop();
        // Stages left running may still write the journal: its lock stays taken (for the
        // process's life), so that no other engine opens the journal beside them.
        if std::thread::panicking() {
            std::mem::forget(self.journal_lock.take());
            return;
        }
        let deadline = std::time::Instant::now() + DROP_PATIENCE;
        while !self.threads.iter().all(JoinHandle::is_finished) {
            if std::time::Instant::now() >= deadline {
                eprintln!(
                    "ironmatch: the engine's stages did not end within {DROP_PATIENCE:?} of \
                     its drop; left running, its journal locked"
                );
                std::mem::forget(self.journal_lock.take());
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if let Err(e) = self.join() {
            eprintln!("ironmatch: {e}");
        }
    }
}

/// Stages 2 and 3, running: feed commands into `to_matcher`, take events from `to_egress`.
pub struct CoreStages {
    /// The stage threads; they end after a [`Record::Shutdown`] went through.
    pub threads: Vec<JoinHandle<()>>,
}

/// Starts the matcher and the journal writer, a thread each, between two rings the caller
/// provides (the gateway in `serve`, a benchmark's own loop in `pipeline/in_process`).
/// `to_matcher` comes with the parker of the matcher thread it wakes.
pub fn spawn_core(
    matcher: Matcher,
    writer: JournalWriter,
    config: &Config,
    to_matcher: (Arc<Ring<Record>>, Parker),
    to_egress: Arc<Ring<Record>>,
) -> io::Result<CoreStages> {
    let (to_matcher, matcher_parker) = to_matcher;
    let (matcher, journal, journal_parker) = core_agents(
        matcher,
        writer,
        config.pipeline.ring_capacity,
        Threading::Dedicated,
        Arc::clone(&to_matcher),
        to_egress,
    );
    let mut threads = Vec::new();
    let started = spawn_core_agents(
        matcher,
        journal,
        config,
        (&to_matcher, matcher_parker),
        journal_parker,
        &mut threads,
    );
    if let Err(e) = started {
        // The matcher, if it started, ended on the marker: nothing is left running.
        for t in threads {
            let _ = t.join();
        }
        return Err(e);
    }
    Ok(CoreStages { threads })
}

/// Sends the shutdown marker down the pipeline from the matcher's ring, when what feeds it
/// (the gateway, or the raft thread) did not start: every stage that did ends on it.
fn stop_from(to_matcher: &Ring<Record>) {
    to_matcher.push(Record::Shutdown);
    to_matcher.notify();
}

/// Starts the matcher and the journal writer, a thread each, adding each to `threads` as
/// it starts. If the writer's thread cannot start, the matcher's ends: the shutdown marker
/// is pushed into `to_matcher`, whose producer must not have started yet.
fn spawn_core_agents(
    matcher: MatcherAgent,
    journal: JournalAgent,
    config: &Config,
    to_matcher: (&Arc<Ring<Record>>, Parker),
    journal_parker: Parker,
    threads: &mut Vec<JoinHandle<()>>,
) -> io::Result<()> {
    let p = &config.pipeline;
    let wait = config.wait_strategy();
    let (to_matcher, matcher_parker) = to_matcher;
    // 2: the matcher, the single sequencer.
    let idle = IdleStrategy::new(wait, matcher_parker);
    let matcher = AgentRunner::start(Box::new(matcher), idle, p.matcher_core)?;
    threads.push(matcher.into_thread());
    // 3: the journal writer appends, then releases events to egress.
    let idle = IdleStrategy::new(wait, journal_parker);
    let journal = AgentRunner::start(Box::new(journal), idle, p.journal_core)
        .inspect_err(|_| stop_from(to_matcher))?;
    threads.push(journal.into_thread());
    Ok(())
}

/// Stages 2 and 3 as agents between `to_matcher` and `to_egress`, with the ring between
/// them, and the parker its consumer (the journal writer) sleeps on when it has a thread of
/// its own. In `shared` mode the caller runs them in turn on its own thread: the bench's
/// loop does so for `pipeline/in_process`.
pub fn core_agents(
    matcher: Matcher,
    writer: JournalWriter,
    ring_capacity: usize,
    threading: Threading,
    to_matcher: Arc<Ring<Record>>,
    to_egress: Arc<Ring<Record>>,
) -> (MatcherAgent, JournalAgent, Parker) {
    let journal_parker = Parker::new();
    let wake = match threading {
        Threading::Shared => Wake::None,
        Threading::Dedicated | Threading::Auto => Wake::Thread(journal_parker.unparker().clone()),
    };
    let to_journal: Arc<Ring<Record>> = Arc::new(Ring::new(ring_capacity, wake));
    let matcher = MatcherAgent::new(matcher, to_matcher, Arc::clone(&to_journal));
    let journal = JournalAgent::new(writer, to_journal, to_egress, matcher.completed());
    (matcher, journal, journal_parker)
}

/// Whether a start with `config` runs the snapshot follower, which re-runs the journal
/// through books of its own (snapshots on, and the follower chosen for them, as
/// [`Server::start`] chooses).
pub fn snapshot_follower_runs(config: &Config) -> bool {
    config.journal.snapshot_interval_records > 0
        && config
            .snapshot_source()
            .resolve(config.threading().choose().0 != Threading::Shared)
            == SnapshotSource::Follower
}

/// Refuses books this process could not hold, before anything is allocated: the least
/// [`Matcher::new`] allocates for `book` ([`Matcher::memory_floor`]), against the memory
/// the process may use (the machine's memory and swap, or less under a cgroup's
/// `memory.max`). Past that limit the allocation would abort the process with the
/// allocator's message, or, overcommitted, the kernel would kill it later; an operator's
/// extra zero in `orders_max` is named instead. `copies`: the sets of books the command
/// holds at once (2 where the snapshot follower re-runs the journal through books of its
/// own). Nothing is checked where the limit cannot be read (not Linux).
pub fn check_book_memory(book: &BookConfig, copies: u64) -> Result<(), String> {
    let need = Matcher::memory_floor(book).saturating_mul(copies);
    let Some(limit) = memory_limit() else {
        return Ok(());
    };
    if need <= limit {
        return Ok(());
    }
    let gib = |bytes: u64| bytes as f64 / f64::from(1u32 << 30);
    let follower = if copies > 1 {
        " (with the snapshot follower's copy)"
    } else {
        ""
    };
    Err(format!(
        "book.orders_max = {} and book.levels_max = {}: the books need at least {:.1} \
         GiB{follower}, more than the {:.1} GiB this process may use (memory and swap, or \
         its cgroup's memory.max and memory.swap.max)",
        book.orders_max,
        book.levels_max,
        gib(need),
        gib(limit)
    ))
}

/// What `serve` reserves at start besides the books: a session store chunk for every user
/// (`gateway.session_store_bytes`, reserved when the gateway is built) and the pipeline's
/// rings (`pipeline.ring_capacity` records each, every slot written as the ring is made:
/// gateway to matcher, matcher to journal writer, journal writer to egress, and in a
/// cluster gateway to Raft).
pub fn pipeline_reserve(config: &Config) -> u64 {
    let stores =
        (config.users.len() as u64).saturating_mul(config.gateway.session_store_bytes as u64);
    let rings = 3 + u64::from(config.cluster_settings().is_some());
    // A ring's slot is its record and crossbeam's stamp.
    let slot = (std::mem::size_of::<Record>() + std::mem::size_of::<usize>()) as u64;
    let ring_bytes = (config.pipeline.ring_capacity as u64)
        .saturating_mul(slot)
        .saturating_mul(rings);
    stores.saturating_add(ring_bytes)
}

/// [`check_book_memory`], then the books with what `serve` reserves besides them
/// ([`pipeline_reserve`]): a session store chunk of 64 GiB passed the configuration's
/// bounds and aborted the start with the allocator's message.
pub fn check_serve_memory(config: &Config, book: &BookConfig, copies: u64) -> Result<(), String> {
    check_book_memory(book, copies)?;
    let Some(limit) = memory_limit() else {
        return Ok(());
    };
    let books = Matcher::memory_floor(book).saturating_mul(copies);
    let reserve = pipeline_reserve(config);
    let need = books.saturating_add(reserve);
    if need <= limit {
        return Ok(());
    }
    let gib = |bytes: u64| bytes as f64 / f64::from(1u32 << 30);
    Err(format!(
        "gateway.session_store_bytes = {} (reserved for each of {} users) and \
         pipeline.ring_capacity = {}: with the books they need at least {:.1} GiB ({:.1} \
         GiB besides the books), more than the {:.1} GiB this process may use (memory and \
         swap, or its cgroup's memory.max and memory.swap.max)",
        config.gateway.session_store_bytes,
        config.users.len(),
        config.pipeline.ring_capacity,
        gib(need),
        gib(reserve),
        gib(limit)
    ))
}

/// The memory this process may use, in bytes: `MemTotal` and `SwapTotal` of
/// `/proc/meminfo`, or less under cgroup v2 limits: the lowest `memory.max` of its cgroup
/// and the cgroups above it, plus the swap they allow (the lowest `memory.swap.max`, at
/// most `SwapTotal`); `None` if `/proc/meminfo` does not read.
fn memory_limit() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let machine = meminfo_total(&meminfo)?;
    let swap = meminfo_field(&meminfo, "SwapTotal").unwrap_or(0);
    let Some(own) = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| Some(text.lines().find_map(|l| l.strip_prefix("0::"))?.to_owned()))
    else {
        return Some(machine);
    };
    let lowest = |file: &str| {
        Path::new(own.trim())
            .ancestors()
            .filter_map(|dir| {
                let path = Path::new("/sys/fs/cgroup")
                    .join(dir.strip_prefix("/").unwrap_or(dir))
                    .join(file);
                cgroup_max(&std::fs::read_to_string(path).ok()?)
            })
            .min()
    };
    match lowest("memory.max") {
        Some(ram) => Some(
            machine
                .min(ram.saturating_add(lowest("memory.swap.max").map_or(swap, |s| s.min(swap)))),
        ),
        None => Some(machine),
    }
}

/// A field of `/proc/meminfo`'s text in bytes.
fn meminfo_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb.saturating_mul(1024))
}

/// `MemTotal` plus `SwapTotal` of `/proc/meminfo`'s text, in bytes.
fn meminfo_total(text: &str) -> Option<u64> {
    Some(
        meminfo_field(text, "MemTotal")?
            .saturating_add(meminfo_field(text, "SwapTotal").unwrap_or(0)),
    )
}

/// A cgroup's `memory.max` or `memory.swap.max`: a number of bytes, or `max` (no limit:
/// `None`).
fn cgroup_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Commands in the journal in `dir` (a cluster node's applied entries hold as many).
fn count_commands(dir: &Path) -> io::Result<u64> {
    let mut commands = 0u64;
    journal::scan_journal(dir, None, false, None, |_, entry| {
        if matches!(entry, Entry::Command(_)) {
            commands += 1;
        }
        Ok(())
    })
    .map_err(io::Error::other)?;
    Ok(commands)
}

/// Ends the journal of the last trading day before `today` if the engine was down at that
/// day's end: the transitions it missed (end of market hours, of system hours, of
/// messages) are applied at their scheduled times with what they do (Day orders canceled
/// at the close, every resting order at the end of system hours) and journaled, as if the
/// engine had run to the end. So that day's journal ends as every day's does, and the
/// audit of an order resting at the crash shows its end-of-day cancel. Nothing is sent: the
/// day's sessions and feed are over (`replay --itch` exports the records).
///
/// A day that cannot be ended (another book configuration since, a damaged journal) is
/// left as it is, with a warning: today's start does not wait on yesterday's journal.
fn close_earlier_day(base: &Config, schedule: &crate::venue::Schedule, today: jiff::civil::Date) {
    // Newest first, every one: a day that could not be ended (its warning said so) is
    // tried again at each start, even once later days have ended (the walk used to stop
    // at the first day that ended, and such a day was never tried again). A day that
    // ended costs the read of its journal's last 64 KiB.
    for day in earlier_days(base, today) {
        let config = base.for_day(day);
        let dir = Path::new(&config.journal.dir);
        if journal::segment_paths(dir).map_or(true, |s| s.is_empty()) {
            continue;
        }
        if ends_the_day(dir) == Some(true) {
            continue;
        }
        match end_day(&config, schedule, day) {
            Ok(0) => {}
            Ok(n) => eprintln!(
                "ironmatch: trading day {day}: the engine was down at its end; its journal ({}) now ends with the {n} transitions it missed",
                dir.display()
            ),
            Err(e) => eprintln!(
                "ironmatch: warning: trading day {day}: its journal ({}) could not be ended ({e}); left as it is",
                dir.display()
            ),
        }
    }
}

/// The trading days before `today` with a directory under `[journal] dir`, newest first.
fn earlier_days(base: &Config, today: jiff::civil::Date) -> Vec<jiff::civil::Date> {
    let Ok(entries) = std::fs::read_dir(Path::new(&base.journal.dir)) else {
        return Vec::new();
    };
    let mut days: Vec<jiff::civil::Date> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str()?.parse::<jiff::civil::Date>().ok())
        .filter(|d| *d < today)
        .collect();
    days.sort_unstable_by(|a, b| b.cmp(a));
    days
}

/// The request number of the operator's commands a new day's journal starts with to carry
/// the halts the day before ended under ([`carried_halts`]): no operator's request, whose
/// numbers are the clock in microseconds.
pub const CARRIED_REQUEST: u64 = 0;

/// The halts the last trading day before `today` with a journal ended under, for the new
/// day to start under: the venue halt (the kill switch), then each instrument an operator
/// left halted, paused or in quotation only, with the operator's reason (a circuit
/// breaker's pause is not carried: it ends by itself). A halt pulled after an incident holds
/// until an operator lifts it, not only until midnight.
///
/// Read from that day's operator commands that took effect, in its journal (read whole,
/// under its lock, as recovery reads it): no matcher is rebuilt, so a journal of another
/// book configuration is read too (an instrument no longer configured is left out when they
/// are journaled). A journal that cannot be read (damage) carries nothing, with a warning;
/// one in use by another engine refuses the start (what it ended under cannot be known, and
/// guessing could lift a kill switch).
fn carried_halts(
    base: &Config,
    today: jiff::civil::Date,
) -> io::Result<Vec<crate::book::OperatorAction>> {
    use crate::book::{
        Command, CommandBody, EventBody, OperatorAction, OperatorOutcome, TradingState,
        VenueCommand,
    };
    let Some((day, config)) = earlier_days(base, today)
        .into_iter()
        .map(|d| (d, base.for_day(d)))
        .find(|(_, c)| {
            journal::segment_paths(Path::new(&c.journal.dir)).is_ok_and(|s| !s.is_empty())
        })
    else {
        return Ok(Vec::new());
    };
    let dir = Path::new(&config.journal.dir);
    let lock = journal::lock_dir(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "trading day {day}: which halts it ended under cannot be read for trading day {today} to start under them: {e}"
            ),
        )
    })?;
    // Each instrument's state as the operator last set it (with its reason), in order of
    // first mention, and the venue halt.
    let mut states: Vec<(Symbol, TradingState, [u8; 4])> = Vec::new();
    let mut venue_halted = false;
    let mut pending = None;
    let scanned = journal::scan_journal(dir, None, false, None, |_, entry| {
        match entry {
            Entry::Command(Command {
                body: CommandBody::Venue(VenueCommand::Operator { action, .. }),
                ..
            }) => pending = Some(*action),
            Entry::Command(_) => pending = None,
            Entry::Event(Event {
                body:
                    EventBody::OperatorDone {
                        outcome: OperatorOutcome::Done { .. },
                        ..
                    },
                ..
            }) => match pending.take() {
                Some(OperatorAction::SetState {
                    symbol,
                    state,
                    reason,
                    ..
                }) => match states.iter_mut().find(|(s, ..)| *s == symbol) {
                    Some(known) => *known = (symbol, state, reason),
                    None => states.push((symbol, state, reason)),
                },
                Some(OperatorAction::VenueHalt(on)) => venue_halted = on,
                _ => {}
            },
            Entry::Event(_) => {}
        }
        Ok(())
    });
    drop(lock);
    if let Err(e) = scanned {
        eprintln!(
            "ironmatch: warning: trading day {day}: its journal ({}) could not be read to learn which halts it ended under ({e}); trading day {today} starts without them",
            dir.display()
        );
        return Ok(Vec::new());
    }
    let mut actions = Vec::new();
    if venue_halted {
        actions.push(OperatorAction::VenueHalt(true));
    }
    for (symbol, state, reason) in states {
        if state != TradingState::Trading {
            actions.push(OperatorAction::SetState {
                symbol,
                state,
                reason,
                cancel_resting: false,
            });
        }
    }
    Ok(actions)
}

/// Journals `actions` ([`carried_halts`]) as the first commands of day `today`'s empty
/// journal, in one batch (one write; the venue halt first, so that a power loss tearing
/// the write keeps it before any instrument's): operator's commands
/// ([`CARRIED_REQUEST`]) at time 0, before the day's start of messages, so that the day
/// replays as it ran. An instrument no longer configured is left out.
fn journal_carried(
    today: jiff::civil::Date,
    actions: &[crate::book::OperatorAction],
    matcher: &mut Matcher,
    writer: &mut JournalWriter,
) -> io::Result<()> {
    use crate::book::{CommandBody, OperatorAction, VenueCommand};
    let mut events = Vec::new();
    let mut said = Vec::new();
    for action in actions {
        match action {
            OperatorAction::SetState { symbol, state, .. } => {
                if matcher.instrument(*symbol).is_none() {
                    said.push(format!(
                        "{} (no longer configured: left out)",
                        symbol.as_str()
                    ));
                    continue;
                }
                said.push(format!("{} {state:?}", symbol.as_str()));
            }
            _ => said.push("the venue halt".to_string()),
        }
        let command = CommandBody::Venue(VenueCommand::Operator {
            request: CARRIED_REQUEST,
            action: *action,
        });
        let at = crate::types::Timestamp(0);
        apply_and_stage(matcher, writer, &mut events, command, at)?;
    }
    writer.commit()?;
    eprintln!(
        "ironmatch: trading day {today} starts under the halts the day before ended with: {} (an operator lifts them once the day's start of messages is sent)",
        said.join(", ")
    );
    Ok(())
}

/// Whether the journal in `dir` holds no record (no directory or segment yet, or segments
/// with their header only), read from its end ([`tail_entries`]). A torn tail was already
/// cut by [`day_ended`]'s recovery; one that still does not read as whole records counts as
/// holding some (the start fails on it). The start checks again after recovery.
fn no_records(dir: &Path) -> bool {
    journal::segment_paths(dir).map_or(true, |segments| segments.is_empty())
        || tail_entries(dir).is_some_and(|entries| entries.is_empty())
}

/// Whether the journal in `dir` holds the day's End of Messages near its end, read from
/// its last 64 KiB of records only (a day's journal is not re-run to learn that it ended),
/// in the last segment and, if it holds fewer, the ones before ([`tail_entries`]). A few
/// records may follow the end (a timer, a disconnect or an operator's command taken in the
/// same round). `None` for a tail that does not read as whole records (torn by a crash,
/// or damaged): only recovery can tell (see [`day_ended`]).
fn ends_the_day(dir: &Path) -> Option<bool> {
    use crate::book::{DayEvent, EventBody};
    tail_entries(dir).map(|entries| {
        entries.iter().any(|entry| {
            matches!(
                entry,
                Entry::Event(Event {
                    body: EventBody::SystemEvent {
                        event: DayEvent::EndOfMessages
                    },
                    ..
                })
            )
        })
    })
}

/// Whether `day`'s journal holds its End of Messages, for the start to know the day is
/// over. A clean tail without it says no at once (a restart in the middle of the day
/// re-runs nothing more); otherwise recovery, the judge of a journal, says (a tail that
/// ends the day may hide damage before it; a torn one may follow the end), under the
/// journal's lock. A journal recovery cannot read (another book configuration since) is
/// taken as its tail says.
fn day_ended(config: &Config, day: jiff::civil::Date) -> io::Result<bool> {
    let day_config = config.for_day(day);
    let dir = Path::new(&day_config.journal.dir);
    if journal::segment_paths(dir)?.is_empty() {
        return Ok(false);
    }
    let tail = ends_the_day(dir);
    if tail == Some(false) {
        return Ok(false);
    }
    let book = day_config
        .book_config()
        .map_err(|(k, m)| io::Error::other(format!("{k}: {m}")))?;
    let lock = journal::lock_dir(dir)?;
    let ended = match journal::recover(dir, &book, |_| {}) {
        Ok(recovery) => {
            recovery.matcher.last_day_event() == Some(crate::book::DayEvent::EndOfMessages)
        }
        // A segment of another journal is refused, not read past: its tail says nothing
        // about this day.
        Err(e @ journal::JournalError::Instance { .. }) => return Err(io::Error::other(e)),
        Err(_) => tail == Some(true),
    };
    drop(lock);
    Ok(ended)
}

/// The journal's last 64 KiB of records, in the last segment and, if it holds fewer, the
/// ones before (a rotation leaves a last segment with its header only, or a few records);
/// `None` if a tail does not read as whole records to the end (torn by a crash).
fn tail_entries(dir: &Path) -> Option<Vec<Entry>> {
    /// Bytes read from the end: many records.
    const TAIL: u64 = 64 << 10;
    let segments = journal::segment_paths(dir).ok()?;
    let mut budget = TAIL;
    let mut entries = Vec::new();
    for segment in segments.iter().rev() {
        let (mut older, read) = segment_tail(segment, budget)?;
        older.append(&mut entries);
        entries = older;
        if read >= budget {
            break;
        }
        budget -= read;
    }
    Some(entries)
}

/// The records in the last `budget` bytes of journal segment `path` (none after a header
/// alone), from the first offset whose records follow one another to the end of the file,
/// each with its checksum, and how many bytes were read (all of its records if fewer than
/// `budget`); `None` if they do not read so (a torn or damaged tail: recovery judges it).
fn segment_tail(path: &Path, budget: u64) -> Option<(Vec<Entry>, u64)> {
    use std::io::{Read, Seek};
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| {
            let len = f.metadata()?.len();
            f.seek(io::SeekFrom::Start(
                len.saturating_sub(budget).max(journal::HEADER_LEN as u64),
            ))?;
            f.read_to_end(&mut bytes)
        })
        .ok()?;
    if bytes.is_empty() {
        return Some((Vec::new(), 0));
    }
    for start in 0..bytes.len() {
        let (mut at, mut entries) = (start, Vec::new());
        while let Ok((_, entry, len)) = journal::read_record(&bytes[at..]) {
            entries.push(entry);
            at += len;
        }
        if at == bytes.len() && !entries.is_empty() {
            return Some((entries, bytes.len() as u64));
        }
    }
    None
}

/// Applies and journals the transitions of `day` after the last one its journal holds (see
/// [`close_earlier_day`]); returns how many.
fn end_day(
    config: &Config,
    schedule: &crate::venue::Schedule,
    day: jiff::civil::Date,
) -> io::Result<usize> {
    use crate::book::{CommandBody, VenueCommand};
    let book = config
        .book_config()
        .map_err(|(k, m)| io::Error::other(format!("{k}: {m}")))?;
    // The latest time the journal holds: no record goes before it (the schedule may have
    // been changed since, and a transition never goes back in time).
    let mut latest = crate::types::Timestamp(0);
    let OpenedJournal {
        mut matcher,
        mut writer,
        lock,
        ..
    } = open_journal(config, &book, |e| latest = latest.max(e.ts))?;
    // Commands that made no event (a timer with nothing due, a disconnect with no orders)
    // count too: the last records, read again from the end (recovery repaired the tail).
    for entry in tail_entries(Path::new(&config.journal.dir)).unwrap_or_default() {
        let ts = match entry {
            Entry::Command(c) => c.ts,
            Entry::Event(e) => e.ts,
        };
        latest = latest.max(ts);
    }
    // A day that never opened (only its header: the engine started it and stopped) is
    // left as it is: it had no session to end.
    let Some(last) = matcher.last_day_event() else {
        return Ok(0);
    };
    let plan = gateway::DayPlan::resume(schedule.transitions(day), Some(last));
    let missed = &plan.transitions[plan.next..];
    let mut clock = VenueClock::new(schedule.tz.clone());
    let mut events = Vec::new();
    let mut journal = |matcher: &mut Matcher, body: CommandBody, ts| {
        apply_and_journal(matcher, &mut writer, &mut events, body, ts)
    };
    for &(at, event) in missed {
        let ts = clock.at(at).max(latest);
        // As the live engine does: a timer at each deadline that comes first (a
        // good-till-time order's expiry, a paused instrument's resumption), at its time.
        let mut met = None;
        while let Some(deadline) = matcher.next_deadline().filter(|d| *d <= ts) {
            if met.is_some_and(|m| deadline <= m) {
                break; // a deadline the timer did not move: met by the transition itself
            }
            met = Some(deadline);
            let timer = CommandBody::Venue(VenueCommand::Timer);
            journal(&mut matcher, timer, deadline.max(latest))?;
        }
        let transition = CommandBody::Venue(VenueCommand::SystemEvent(event));
        journal(&mut matcher, transition, ts)?;
    }
    drop(writer);
    drop(lock);
    Ok(missed.len())
}

/// Applies a venue command of time `ts` and journals it with its events, as one batch.
fn apply_and_journal(
    matcher: &mut Matcher,
    writer: &mut JournalWriter,
    events: &mut Vec<Event>,
    body: crate::book::CommandBody,
    ts: crate::types::Timestamp,
) -> io::Result<()> {
    apply_and_stage(matcher, writer, events, body, ts)?;
    writer.commit()
}

/// Applies a venue command of time `ts` and stages it with its events in the writer's
/// batch, to be committed with others.
fn apply_and_stage(
    matcher: &mut Matcher,
    writer: &mut JournalWriter,
    events: &mut Vec<Event>,
    body: crate::book::CommandBody,
    ts: crate::types::Timestamp,
) -> io::Result<()> {
    let command = crate::book::Command {
        ts,
        owner: crate::types::OwnerId(0),
        body,
    };
    events.clear();
    matcher.apply(&command, events);
    writer.stage_bounded(&Entry::Command(command))?;
    for event in events.iter() {
        writer.stage_bounded(&Entry::Event(*event))?;
    }
    Ok(())
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
    /// The journal directory's lock ([`journal::lock_dir`]): hold it until every thread
    /// that writes or follows the journal has ended.
    pub lock: std::fs::File,
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
    // One engine per journal: a second one's recovery would take the live writer's
    // half-written batch for a torn tail and cut it, then append beside it.
    let lock = journal::lock_dir(dir)?;
    // A sync that failed in this boot: what reads back may not be on disk.
    journal::check_sync_failed(dir)?;
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
        writer.stage_bounded(&Entry::Event(*event))?;
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
        lock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::{Command, CommandBody, DayEvent, EventBody, VenueCommand};
    use crate::types::{OwnerId, Timestamp};

    /// The shipped configuration (its trading day in New York) with its journals in a
    /// temporary directory of their own (`tag` in its name) and its ports the system's
    /// choice; returns the directory and the configuration.
    fn shipped_in(tag: &str) -> (std::path::PathBuf, Config) {
        let (root, text) = shipped_text_in(tag);
        (root, Config::parse(&text, "shipped").unwrap())
    }

    /// [`shipped_in`]'s configuration as text, to change further.
    fn shipped_text_in(tag: &str) -> (std::path::PathBuf, String) {
        let root = std::env::temp_dir().join(format!(
            "ironmatch-{tag}-{}-{}",
            std::process::id(),
            crate::venue::epoch_ns()
        ));
        let text = include_str!("../config/ironmatch.toml")
            .replace("dir = \"./data\"", &format!("dir = \"{}\"", root.display()))
            .replace("127.0.0.1:15000", "127.0.0.1:0")
            .replace("127.0.0.1:15002", "127.0.0.1:0")
            .replace("127.0.0.1:15080", "127.0.0.1:0");
        (root, text)
    }

    /// A start some of whose stage threads cannot start (the system out of threads or
    /// memory) stops the ones that did and releases the journal: the same journal starts
    /// right after, each time. Until 2026-12-07 the gateway started first and, a later
    /// stage refused, waited for its shutdown marker to come back through stages that
    /// never ran: the dropped server gave up after `DROP_PATIENCE` and left it running,
    /// the journal locked for the process's life (the next start was refused as locked).
    #[test]
    fn a_stage_that_cannot_start_leaves_nothing_running_and_the_journal_free() {
        let (root, shipped) = shipped_text_in("refused-spawn");
        // No trading day (orders at any hour), a thread per stage.
        let venue = shipped.find("[venue]").unwrap();
        let marketdata = shipped.find("[marketdata]").unwrap();
        let text = format!("{}{}", &shipped[..venue], &shipped[marketdata..])
            .replace("threading = \"auto\"", "threading = \"dedicated\"")
            // Small books (each start allocates and touches its pools); the feed's stop
            // does not repeat End of Session for a second.
            .replace("orders_max = 1000000", "orders_max = 10000")
            .replace("end_of_session_ms = 1000", "end_of_session_ms = 0");
        let config = Config::parse(&text, "test").unwrap();
        assert_eq!(config.threading().choose().0, Threading::Dedicated);
        assert_eq!(
            (config.book.orders_max, config.marketdata.end_of_session_ms),
            (10_000, 0),
            "the shipped file's values changed: the test's replacements no longer apply"
        );
        let refuse = |role| crate::pipeline::agent::REFUSED_SPAWN.with(|r| r.set(role));
        for role in ["matcher", "journal", "gateway"] {
            refuse(Some(role));
            let e = Server::start(&config).err().expect("refused");
            assert!(
                e.to_string().contains(&format!("im-{role} refused")),
                "{role}: {e}"
            );
        }
        refuse(None);
        Server::start(&config).unwrap().stop().unwrap();
        // A cluster node (its peers absent: it starts alone, as a follower) whose raft
        // thread cannot start, in each threading mode: the raft thread feeds the matcher's
        // ring, and the gateway's marker goes to it.
        for threading in ["dedicated", "shared"] {
            let peers: Vec<_> = (0..3)
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
                .collect();
            let mut node = text
                .replace(
                    "threading = \"dedicated\"",
                    &format!("threading = \"{threading}\""),
                )
                .replace(
                    &root.display().to_string(),
                    &root.join(threading).display().to_string(),
                );
            node.push_str(&format!(
                "\n[cluster]\ndir = \"{}\"\nnode_id = 1\n",
                root.join(threading).join("raft").display()
            ));
            for (i, peer) in peers.iter().enumerate() {
                node.push_str(&format!(
                    "\n[[cluster.peers]]\nid = {}\nraft = \"{}\"\n",
                    i + 1,
                    peer.local_addr().unwrap()
                ));
            }
            drop(peers);
            let config = Config::parse(&node, "test").unwrap();
            refuse(Some("raft"));
            let e = Server::start(&config).err().expect("refused");
            assert!(
                e.to_string().contains("im-raft refused"),
                "{threading}: {e}"
            );
            refuse(None);
            Server::start(&config).unwrap().stop().unwrap();
        }
        let _ = std::fs::remove_dir_all(root);
    }

    /// The memory a process may use reads from `/proc/meminfo` (memory and swap) and a
    /// cgroup's `memory.max` (`max`: no limit).
    #[test]
    fn the_memory_limit_reads_meminfo_and_a_cgroup() {
        let meminfo = "MemTotal:       24683840 kB\nMemFree:        22111000 kB\nSwapTotal:       1048576 kB\n";
        assert_eq!(
            meminfo_total(meminfo),
            Some((24_683_840 + 1_048_576) * 1024)
        );
        assert_eq!(
            meminfo_total("MemTotal: 1000 kB\n"),
            Some(1_024_000),
            "no swap line"
        );
        assert_eq!(meminfo_total("SwapTotal: 1000 kB\n"), None);
        assert_eq!(cgroup_max("8589934592\n"), Some(8 << 30));
        assert_eq!(cgroup_max("max\n"), None);
    }

    /// Books larger than the machine could hold are refused at start by name, before
    /// anything is allocated (the allocation used to abort the process, naming nothing).
    #[test]
    fn books_larger_than_the_machine_are_refused_by_name() {
        let (root, mut config) = shipped_in("huge-books");
        config.book.orders_max = crate::book::ORDERS_MAX;
        let book = config.book_config().unwrap();
        let Some(limit) = memory_limit() else {
            eprintln!("no memory limit reads here: nothing to check");
            return;
        };
        if Matcher::memory_floor(&book) <= limit {
            // A machine that could hold them would have the test allocate them.
            eprintln!(
                "this machine could hold {} order slots: not tried",
                book.orders_max
            );
            return;
        }
        let e = Server::start(&config).err().expect("refused");
        let text = e.to_string();
        assert!(
            text.contains("book.orders_max = 2147483648") && text.contains("GiB"),
            "{text}"
        );
        assert!(!root.exists(), "nothing was created");
    }

    /// A session store chunk or rings larger than the machine could hold are refused at
    /// start by name, before anything is created (a 64 GiB chunk a user passed the
    /// configuration's bounds and aborted the start with the allocator's message).
    #[test]
    fn session_stores_larger_than_the_machine_are_refused_by_name() {
        let (root, mut config) = shipped_in("huge-stores");
        config.gateway.session_store_bytes = 1 << 36;
        let book = config.book_config().unwrap();
        let Some(limit) = memory_limit() else {
            eprintln!("no memory limit reads here: nothing to check");
            return;
        };
        let need = Matcher::memory_floor(&book) + pipeline_reserve(&config);
        assert!(pipeline_reserve(&config) >= config.users.len() as u64 * (1 << 36));
        if need <= limit {
            eprintln!("this machine could hold {need} bytes: not tried");
            return;
        }
        let e = Server::start(&config).err().expect("refused");
        let text = e.to_string();
        assert!(
            text.contains("gateway.session_store_bytes = 68719476736") && text.contains("GiB"),
            "{text}"
        );
        assert!(!root.exists(), "nothing was created");
    }

    /// Of two earlier days, the older stopped in its market hours and the newer never
    /// opened (a header only: the engine started it before its midnight and was stopped).
    /// The newer is left as it is, the older ended with the transitions it missed at their
    /// scheduled times, and a second start changes nothing.
    #[test]
    fn earlier_days_are_ended_and_a_day_never_opened_is_left() {
        let (root, config) = shipped_in("earlier-days");
        let schedule = config.schedule().unwrap();
        let book = config.book_config().unwrap();
        let date = |d| jiff::civil::date(2026, 12, d);
        let (stopped, never, today) = (date(1), date(2), date(3));
        let hour = 3_600_000_000_000;
        let late =
            VenueClock::new(schedule.tz.clone()).at(schedule.transitions(stopped)[3].0 + hour);
        {
            let opened = open_journal(&config.for_day(stopped), &book, |_| {}).unwrap();
            let (mut matcher, mut writer) = (opened.matcher, opened.writer);
            let mut clock = VenueClock::new(schedule.tz.clone());
            let mut events = Vec::new();
            for (at, event) in &schedule.transitions(stopped)[..3] {
                let body = CommandBody::Venue(VenueCommand::SystemEvent(*event));
                apply_and_journal(&mut matcher, &mut writer, &mut events, body, clock.at(*at))
                    .unwrap();
            }
            // The last record: a timer with nothing due (no event), an hour after the
            // close's time (the schedule has changed since, say).
            let timer = CommandBody::Venue(VenueCommand::Timer);
            apply_and_journal(&mut matcher, &mut writer, &mut events, timer, late).unwrap();
            assert!(events.is_empty(), "{events:?}");
        }
        drop(open_journal(&config.for_day(never), &book, |_| {}).unwrap());
        let day_dir = |day| root.join(crate::venue::day_dir_name(day));
        let system_events = |day| {
            let mut seen = Vec::new();
            journal::scan_journal(&day_dir(day), None, false, None, |_, entry| {
                if let Entry::Event(Event {
                    ts,
                    body: EventBody::SystemEvent { event },
                }) = entry
                {
                    seen.push((*event, *ts));
                }
                Ok(())
            })
            .unwrap();
            seen
        };
        close_earlier_day(&config, &schedule, today);
        assert_eq!(
            system_events(never),
            [],
            "a day never opened is left as it is"
        );
        let mut clock = VenueClock::new(schedule.tz.clone());
        let expected: Vec<(DayEvent, Timestamp)> = schedule
            .transitions(stopped)
            .iter()
            .enumerate()
            .map(|(i, (at, event))| {
                let ts = clock.at(*at);
                // The transitions it missed: none before the journal's last record.
                (*event, if i < 3 { ts } else { ts.max(late) })
            })
            .collect();
        assert_eq!(expected[3], (DayEvent::EndOfMarketHours, late));
        assert_eq!(
            system_events(stopped),
            expected,
            "the day ended at its times, none before the journal's last record"
        );
        assert_eq!(ends_the_day(&day_dir(stopped)), Some(true));
        let segment = journal::segment_paths(&day_dir(stopped))
            .unwrap()
            .pop()
            .unwrap();
        let len = std::fs::metadata(&segment).unwrap().len();
        close_earlier_day(&config, &schedule, today);
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), len, "once");
        // A day before one that ended, left unended (a start that could not end it: another
        // book configuration then, say): the next start ends it, though a later day ended.
        let older = jiff::civil::date(2026, 11, 30);
        {
            let opened = open_journal(&config.for_day(older), &book, |_| {}).unwrap();
            let (mut matcher, mut writer) = (opened.matcher, opened.writer);
            let mut clock = VenueClock::new(schedule.tz.clone());
            let mut events = Vec::new();
            let (at, event) = schedule.transitions(older)[0];
            let body = CommandBody::Venue(VenueCommand::SystemEvent(event));
            apply_and_journal(&mut matcher, &mut writer, &mut events, body, clock.at(at)).unwrap();
        }
        assert_eq!(ends_the_day(&day_dir(older)), Some(false));
        close_earlier_day(&config, &schedule, today);
        assert_eq!(ends_the_day(&day_dir(older)), Some(true), "ended at last");
        assert_eq!(
            std::fs::metadata(&segment).unwrap().len(),
            len,
            "the ended day as it was"
        );
        std::fs::remove_dir_all(&root).ok();
    }

    /// Today's trading day (by `config`'s schedule) journaled whole, every transition through
    /// its end of messages, then `after` at the end's time if given; returns the day and
    /// its journal's directory.
    fn ended_today(
        config: &Config,
        after: Option<CommandBody>,
    ) -> (jiff::civil::Date, std::path::PathBuf) {
        let schedule = config.schedule().unwrap();
        let book = config.book_config().unwrap();
        let today = schedule.trading_day(jiff::Timestamp::now());
        let day_config = config.for_day(today);
        let opened = open_journal(&day_config, &book, |_| {}).unwrap();
        let (mut matcher, mut writer) = (opened.matcher, opened.writer);
        let mut clock = VenueClock::new(schedule.tz.clone());
        let mut events = Vec::new();
        let mut last = Timestamp(0);
        for (at, event) in schedule.transitions(today) {
            let body = CommandBody::Venue(VenueCommand::SystemEvent(event));
            last = clock.at(at);
            apply_and_journal(&mut matcher, &mut writer, &mut events, body, last).unwrap();
        }
        if let Some(body) = after {
            apply_and_journal(&mut matcher, &mut writer, &mut events, body, last).unwrap();
        }
        (today, day_config.journal.dir.into())
    }

    /// A day whose journal ended, then took a timer a crash tore, is over: its tail does not
    /// read cleanly, so recovery judges (it cuts the torn record and finds the end), and the
    /// start takes the next day.
    #[test]
    fn an_ended_day_with_a_torn_tail_starts_the_next() {
        let (root, config) = shipped_in("ended-torn");
        let (today, dir) = ended_today(&config, Some(CommandBody::Venue(VenueCommand::Timer)));
        let dir = dir.as_path();
        let segment = journal::segment_paths(dir).unwrap().pop().unwrap();
        let len = std::fs::metadata(&segment).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        assert_eq!(ends_the_day(dir), None);
        assert!(day_ended(&config, today).unwrap());
        let server = Server::start(&config).unwrap();
        assert_eq!(server.day(), Some(today.tomorrow().unwrap()));
        server.stop().unwrap();
        std::fs::remove_dir_all(&root).ok();
    }

    /// A day whose journal ended but whose sync failed in this boot of the machine is not
    /// judged by what reads back: the start is refused, not moved on to the next day.
    #[test]
    fn an_ended_day_whose_sync_failed_in_this_boot_refuses_the_start() {
        let (root, config) = shipped_in("ended-marked");
        let (_, dir) = ended_today(&config, None);
        let dir = dir.as_path();
        assert_eq!(ends_the_day(dir), Some(true));
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        std::fs::write(
            dir.join(journal::SYNC_FAILED_NAME),
            format!("{}\nInput/output error\n", boot.trim()),
        )
        .unwrap();
        let e = Server::start(&config).err().expect("refused");
        assert!(e.to_string().contains("failed in this boot"), "{e}");
        std::fs::remove_dir_all(&root).ok();
    }

    /// A journal's last records say whether its day ended, read from its tail alone (across
    /// segments after a rotation), records after the end included; a tail that does not
    /// read as whole records (torn, zeros) says nothing: recovery judges it
    /// ([`day_ended`]).
    #[test]
    fn a_day_ends_with_its_end_of_messages_record() {
        let dir = std::env::temp_dir().join(format!(
            "ironmatch-ends-the-day-{}-{}",
            std::process::id(),
            crate::venue::epoch_ns()
        ));
        let header = Header {
            instance: 1,
            first_seq: 1,
            fingerprint: 2,
            created_ns: 3,
        };
        let mut writer =
            JournalWriter::open(&dir, header, None, 1, journal::FsyncMode::Never, 1 << 20).unwrap();
        let day = |event| {
            let command = Command {
                ts: Timestamp(5),
                owner: OwnerId(0),
                body: CommandBody::Venue(VenueCommand::SystemEvent(event)),
            };
            let event = Event {
                ts: Timestamp(5),
                body: EventBody::SystemEvent { event },
            };
            [Entry::Command(command), Entry::Event(event)]
        };
        // Many records before, so the tail read starts inside one.
        for _ in 0..2_000 {
            for entry in day(DayEvent::StartOfSystemHours) {
                writer.stage(&entry);
            }
        }
        writer.commit().unwrap();
        assert_eq!(ends_the_day(&dir), Some(false), "not ended yet");
        for entry in day(DayEvent::EndOfMessages) {
            writer.stage(&entry);
        }
        writer.commit().unwrap();
        assert_eq!(ends_the_day(&dir), Some(true), "ended");
        let segment = journal::segment_paths(&dir).unwrap().pop().unwrap();
        let ended_at = std::fs::metadata(&segment).unwrap().len();
        // A timer taken in the same round as the end follows it: still ended.
        writer.stage(&Entry::Command(Command {
            ts: Timestamp(6),
            owner: OwnerId(0),
            body: CommandBody::Venue(VenueCommand::Timer),
        }));
        writer.commit().unwrap();
        assert_eq!(ends_the_day(&dir), Some(true), "ended, a record after");
        // A rotation right after the end: a last segment with its header only, or one a
        // crash left as zeros within a page (recovery removes it).
        let header_only = dir.join(format!("{:020}.imj", 1_000_000));
        std::fs::write(
            &header_only,
            &std::fs::read(&segment).unwrap()[..journal::HEADER_LEN],
        )
        .unwrap();
        assert_eq!(
            journal::segment_paths(&dir).unwrap().pop().unwrap(),
            header_only
        );
        assert_eq!(
            ends_the_day(&dir),
            Some(true),
            "ended, in the segment before the last"
        );
        std::fs::write(&header_only, [0u8; 1000]).unwrap();
        assert_eq!(
            ends_the_day(&dir),
            None,
            "a segment of zeros: recovery judges"
        );
        std::fs::remove_file(&header_only).unwrap();
        let len = std::fs::metadata(&segment).unwrap().len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        // The record after the end torn by a crash (recovery cuts it): still ended.
        file.set_len(len - 3).unwrap();
        assert_eq!(
            ends_the_day(&dir),
            None,
            "a torn record after: recovery judges"
        );
        // The end's own record torn: not an end.
        file.set_len(ended_at - 3).unwrap();
        assert_eq!(ends_the_day(&dir), None, "a torn end: recovery judges");
        drop(writer);
        std::fs::remove_dir_all(&dir).ok();
    }
}
