//! Replication: a cluster of ironmatch nodes on Raft (`openraft`), with `[cluster]`.
//!
//! ```text
//! 1 gateway ─ring─► R raft thread: propose ─► Raft log (majority) ─► apply ─ring─► 2 matcher ─► 3 journal ─► 4 egress
//! ```
//! What is replicated is the input: the leader's gateway pushes its commands (stamped with
//! their time, the timer commands, the operator's) into a ring that the raft thread drains;
//! each drained batch becomes one Raft entry ([`Batch`]). Every node, leader and followers,
//! applies committed entries in log order by pushing their commands into its matcher's
//! ring, so every node's matcher sees the same commands and every journal holds the same
//! records. The matcher only ever sees committed commands, and a reply leaves only after
//! its command's events are journaled: no reply before commit on a majority plus the
//! local journal.
//!
//! The raft thread (`im-raft`) runs a current-thread tokio runtime with the Raft core,
//! the RPC listener ([`network`]), the proposer and the role watcher. The matcher stays
//! synchronous. The role watcher publishes whether this node may take logins
//! ([`ClusterRole::accepting`]): it is the leader, it has applied an entry of its own term
//! and its journal writer has released the events of every command applied so far (so
//! its sessions' streams hold everything committed before; the gateway takes them from
//! egress's ring before answering a login), and a majority answered it within the
//! election timeout. When that stops being true, the gateway drops every
//! session and refuses logins with `S`; followers refuse them from the start.

pub mod network;
pub mod store;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use openraft::{BasicNode, Raft, ServerState, SnapshotPolicy};

use crate::book::Command;
use crate::journal::FsyncMode;
use crate::journal::Released;
use crate::pipeline::{Record, Ring};
pub use network::Secrets;
use network::{End, Preamble, Reply, Request, Seal, read_frame, write_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a connection may take to agree its hello.
const HANDSHAKE_MAX: Duration = Duration::from_secs(5);
/// Connections to the Raft port still in their handshake, at most; more are closed at once.
/// Each may stay [`HANDSHAKE_MAX`]: without a bound, anyone reaching the port could hold
/// the process's file descriptors, and the node's own votes, segments and peer
/// connections would fail for want of one.
const HANDSHAKES_MAX: usize = 64;
/// Of those, from one address (a node's peers and tools are a handful).
const HANDSHAKES_PER_ADDRESS_MAX: usize = 8;

/// A connection's place among those in their handshake, from one address: given back
/// when dropped.
struct Handshaking {
    from: std::net::IpAddr,
    counts: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Handshaking {
    /// A place for a connection from `from`, if both the total and the address have room.
    fn take(
        from: std::net::IpAddr,
        counts: &Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        places: &Arc<tokio::sync::Semaphore>,
    ) -> Option<Handshaking> {
        let from = crate::gateway::admission::address_group(from);
        let permit = Arc::clone(places).try_acquire_owned().ok()?;
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(from).or_insert(0);
        if *n >= HANDSHAKES_PER_ADDRESS_MAX {
            return None;
        }
        *n += 1;
        Some(Handshaking {
            from,
            counts: Arc::clone(counts),
            _permit: permit,
        })
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.from) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.from);
            }
        }
    }
}
use store::RaftStore;

/// A node's id in the cluster.
pub type NodeId = u64;
/// What Raft knows of a node: its Raft address.
pub type Node = BasicNode;

/// One Raft entry: the commands of one gateway batch, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Batch {
    /// The commands, stamped by the leader's gateway.
    pub commands: Vec<Command>,
}

impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "batch of {} commands", self.commands.len())
    }
}

openraft::declare_raft_types!(
    /// The cluster's Raft types.
    pub TypeConfig:
        D = Batch,
        R = (),
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Commands proposed as one entry at most (the journal writer's batch).
pub const PROPOSAL_LEN_MAX: usize = crate::journal::BATCH_LEN_MAX;
/// How often the role watcher looks at Raft's metrics.
const ROLE_PERIOD: Duration = Duration::from_millis(10);
/// Longest wait of an idle proposer (a lost wake-up costs at most this).
const PROPOSER_SLEEP_MAX: Duration = Duration::from_millis(5);

/// A node's view of itself, for `ironmatch cluster status`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub id: NodeId,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    /// The current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Index of the last entry in its log.
    pub last_log: Option<u64>,
    /// Index of the last entry applied (pushed to its matcher).
    pub applied: Option<u64>,
    /// On the leader: each node's last replicated index.
    pub matched: BTreeMap<NodeId, Option<u64>>,
    /// Whether it takes logins.
    pub accepting: bool,
}

/// What the raft thread publishes for the gateway.
#[derive(Debug, Default)]
pub struct ClusterRole {
    accepting: AtomicBool,
    /// Until when ([`role_clock`] ns) `accepting` holds for a new login without a newer
    /// word from the role watcher: its last look plus what was left of the election
    /// timeout since the majority's last answer. A leader frozen (SIGSTOP) or starved with
    /// `accepting` set thus takes no login when it runs again, before the watcher has
    /// looked (it once did, right after SIGCONT, while already deposed).
    fresh_until: AtomicU64,
    /// Events the journal writer had released to egress when this node caught up as the
    /// leader; written before `accepting` turns true.
    egress_target: AtomicU64,
}

impl ClusterRole {
    /// Whether this node may take logins and acknowledge: the leader, caught up with its
    /// term, heard from a majority within the election timeout.
    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    /// [`ClusterRole::accepting`], and the watcher's word on it still fresh: for taking a
    /// login or an operator's action.
    pub fn may_take_logins(&self) -> bool {
        self.accepting() && role_clock() < self.fresh_until.load(Ordering::Acquire)
    }

    /// How many events (counted since start) egress must have taken before a login is
    /// answered: then every session's stream holds everything committed before this
    /// node's term, which the journal writer has already put in egress's ring.
    pub fn egress_target(&self) -> u64 {
        self.egress_target.load(Ordering::Acquire)
    }
}

/// Nanoseconds on a monotonic clock common to the process's threads (it runs on while the
/// process is stopped).
fn role_clock() -> u64 {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

/// Settings of the raft thread, from `[cluster]`.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// This node.
    pub node_id: NodeId,
    /// Every node (this one included) and the Raft address this node reaches it at.
    pub peers: Vec<(NodeId, String)>,
    /// Where this node listens for Raft; empty: its own entry in `peers`.
    pub listen: String,
    /// Where the Raft log and vote live.
    pub dir: PathBuf,
    /// As the journal's.
    pub fsync: FsyncMode,
    /// Election timeout range, ms.
    pub election_timeout_min_ms: u64,
    /// Upper end of the election timeout range, ms.
    pub election_timeout_max_ms: u64,
    /// Leader heartbeat period, ms.
    pub heartbeat_interval_ms: u64,
    /// Fingerprint of this node's book configuration and feed shape: every node's must be
    /// the same (see [`network`]).
    pub config_fingerprint: u64,
    /// The cluster's secrets, if set: every node's must be the same (or, during a rotation,
    /// share one with every other), and every connection between nodes is authenticated
    /// and sealed with one (see [`network`]).
    pub secret: Option<Secrets>,
}

/// The raft thread, running.
pub struct ClusterNode {
    /// The thread; it ends after the gateway's shutdown marker went through.
    pub thread: JoinHandle<()>,
    /// Where the Raft RPCs are served.
    pub raft_addr: std::net::SocketAddr,
}

/// A wake-up for the proposer from the gateway's ring.
pub fn proposer_wake() -> (Arc<tokio::sync::Notify>, crate::pipeline::Wake) {
    let notify = Arc::new(tokio::sync::Notify::new());
    let n = Arc::clone(&notify);
    let wake = crate::pipeline::Wake::Callback(crate::pipeline::Callback(Arc::new(move || {
        n.notify_one()
    })));
    (notify, wake)
}

/// Binds this node's Raft port (its peer address, or `cluster.listen`): done before the
/// engine starts any thread, so that a port in use refuses the start with nothing running.
pub fn bind(settings: &ClusterSettings) -> io::Result<std::net::TcpListener> {
    let own = settings
        .peers
        .iter()
        .find(|(id, _)| *id == settings.node_id)
        .map(|(_, a)| a.clone())
        .ok_or_else(|| io::Error::other("cluster.node_id is not among cluster.peers"))?;
    let own = if settings.listen.is_empty() {
        own
    } else {
        settings.listen.clone()
    };
    let listener = std::net::TcpListener::bind(&own).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cluster: this node's raft address {own}: {e}"),
        )
    })?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Starts the raft thread on `listener` (from [`bind`]). `proposals` is the gateway's
/// output ring (woken through `notify`), `store` the opened log whose applies feed the
/// matcher's ring `apply`, `released` what this node's journal writer has released to
/// egress.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    settings: ClusterSettings,
    listener: std::net::TcpListener,
    store: RaftStore,
    proposals: Arc<Ring<Record>>,
    notify: Arc<tokio::sync::Notify>,
    apply: Arc<Ring<Record>>,
    role: Arc<ClusterRole>,
    released: Arc<Released>,
) -> io::Result<ClusterNode> {
    let raft_addr = listener.local_addr()?;
    #[cfg(test)]
    if crate::pipeline::agent::REFUSED_SPAWN.with(|r| r.get()) == Some("raft") {
        return Err(io::Error::other("thread im-raft refused (test)"));
    }
    let thread = std::thread::Builder::new()
        .name("im-raft".into())
        .spawn(move || {
            // A panic here ends the process as a stage's does (exit 70): a leader whose
            // Raft thread died would keep its sessions and answer none of their orders.
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                runtime.block_on(run(
                    settings,
                    store,
                    listener,
                    Links {
                        proposals,
                        notify,
                        apply,
                        role,
                        released,
                    },
                ));
            }));
            if run.is_err() {
                eprintln!("ironmatch: the raft stage failed; stopping the engine");
                std::process::exit(70);
            }
        })?;
    Ok(ClusterNode { thread, raft_addr })
}

/// What the raft thread shares with the pipeline (see [`spawn`]).
struct Links {
    proposals: Arc<Ring<Record>>,
    notify: Arc<tokio::sync::Notify>,
    apply: Arc<Ring<Record>>,
    role: Arc<ClusterRole>,
    released: Arc<Released>,
}

async fn run(
    settings: ClusterSettings,
    store: RaftStore,
    listener: std::net::TcpListener,
    links: Links,
) {
    let Links {
        proposals,
        notify,
        apply,
        role,
        released,
    } = links;
    let config = openraft::Config {
        cluster_name: "ironmatch".into(),
        heartbeat_interval: settings.heartbeat_interval_ms,
        election_timeout_min: settings.election_timeout_min_ms,
        election_timeout_max: settings.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::Never,
        max_payload_entries: 64,
        ..Default::default()
    };
    let config = Arc::new(config.validate().expect("validated with [cluster]"));
    let applied = store.clone();
    let (log_store, state_machine) = openraft::storage::Adaptor::new(store);
    let raft: Raft<TypeConfig> = Raft::new(
        settings.node_id,
        config,
        network::Network {
            peers: settings.peers.iter().cloned().collect(),
            config: settings.config_fingerprint,
            secret: settings.secret.clone(),
            id: settings.node_id,
            log: Default::default(),
        },
        log_store,
        state_machine,
    )
    .await
    .expect("the raft core starts");
    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
    let contact = Arc::new(Contact::new(&settings));
    let server = tokio::spawn(serve(
        listener,
        raft.clone(),
        Arc::clone(&role),
        Arc::clone(&contact),
        Peering {
            config: settings.config_fingerprint,
            secret: settings.secret.clone(),
            me: settings.node_id,
            members: settings.peers.iter().map(|(id, _)| *id).collect(),
        },
    ));
    let watcher = tokio::spawn(watch_role(
        raft.clone(),
        settings.node_id,
        settings.election_timeout_min_ms,
        settings.election_timeout_max_ms,
        Arc::clone(&role),
        Catchup {
            applied,
            released,
            term: None,
        },
    ));
    // Every node proposes the same initial membership; a node that has a log already
    // (or that joined) is told it is initialized, which is fine. They do so in turn, the
    // lowest id first, each an election timeout after the one before: nodes started
    // together would otherwise all stand at once in the first term, and split its votes.
    // In a task of its own: the proposer runs meanwhile (this node may lead before its turn).
    let rank = settings
        .peers
        .iter()
        .filter(|(id, _)| *id < settings.node_id)
        .count() as u64;
    let turn = Duration::from_millis(rank * settings.election_timeout_max_ms);
    let members: BTreeMap<NodeId, Node> = settings
        .peers
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect();
    let init = tokio::spawn({
        let raft = raft.clone();
        async move {
            if !raft.is_initialized().await.unwrap_or(true) {
                tokio::time::sleep(turn).await;
            }
            if let Err(e) = raft.initialize(members).await {
                eprintln!("ironmatch cluster: initialize: {e} (already initialized)");
            }
        }
    });
    propose(&raft, &proposals, &notify).await;
    // The gateway's shutdown marker came: no more proposals, nothing more applied.
    role.accepting.store(false, Ordering::Release);
    init.abort();
    watcher.abort();
    server.abort();
    eprintln!("ironmatch cluster: proposals done; stopping raft");
    match tokio::time::timeout(RAFT_STOP_MAX, raft.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("ironmatch cluster: raft shutdown: {e}"),
        Err(_) => eprintln!("ironmatch cluster: raft did not stop within {RAFT_STOP_MAX:?}"),
    }
    eprintln!("ironmatch cluster: raft stopped; the pipeline drains");
    apply.push(Record::Shutdown);
    apply.notify();
}

/// Proposals whose outcome is not known yet beyond which the proposer waits (at most
/// [`IN_FLIGHT_WAIT`]) for the oldest before proposing more: pacing, not a hard bound. A
/// leader whose commits stall is bounded by fencing instead: it drops its sessions and takes
/// no login once it has not heard from a majority for the election timeout.
const IN_FLIGHT_MAX: usize = 1024;
/// How long a stopping node waits for its last proposals to apply.
const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(2);
/// How long a stopping node waits for the Raft core to stop.
const RAFT_STOP_MAX: Duration = Duration::from_secs(2);
/// How long the proposer waits for the oldest proposal when [`IN_FLIGHT_MAX`] are open.
const IN_FLIGHT_WAIT: Duration = Duration::from_millis(50);

/// A proposal's outcome, with its command count.
type InFlight = (
    u64,
    tokio::sync::oneshot::Receiver<openraft::raft::ClientWriteResult<TypeConfig>>,
);

/// Counts and reports proposals Raft refused (this node is no longer the leader: their
/// commands were never sequenced, and no reply to them was or will be sent).
fn refused(lost: &mut u64, n: u64, why: &dyn std::fmt::Display) {
    *lost += n;
    eprintln!("ironmatch cluster: {n} commands not sequenced ({why}); {lost} in all since start");
}

/// Drains the gateway's ring into proposals until its shutdown marker.
async fn propose(raft: &Raft<TypeConfig>, proposals: &Ring<Record>, notify: &tokio::sync::Notify) {
    let mut dropped = 0u64;
    let mut in_flight: std::collections::VecDeque<InFlight> = std::collections::VecDeque::new();
    // Kept across rounds: the marker often comes in the same pop as the last commands, which
    // are proposed first; forgetting it then left the proposer waiting for a marker already
    // taken, and the node never stopped (a leader thawed with a backlog, on SIGTERM).
    let mut shutdown = false;
    loop {
        // Outcomes that arrived, oldest first; wait for the oldest when too many are open.
        loop {
            let full = in_flight.len() >= IN_FLIGHT_MAX;
            let Some((n, rx)) = in_flight.front_mut() else {
                break;
            };
            let n = *n;
            let outcome = if full {
                // Bounded, so a proposal Raft never answers cannot stop the proposer.
                match tokio::time::timeout(IN_FLIGHT_WAIT, rx).await {
                    Ok(result) => Some(result.map_err(|_| ())),
                    Err(_) => None,
                }
            } else {
                match rx.try_recv() {
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => None,
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => Some(Err(())),
                    Ok(result) => Some(Ok(result)),
                }
            };
            match outcome {
                None => break,
                Some(Ok(Ok(_))) => {}
                Some(Ok(Err(e))) => refused(&mut dropped, n, &e),
                Some(Err(_)) => refused(&mut dropped, n, &"raft dropped the proposal"),
            }
            in_flight.pop_front();
        }
        let commands = take_commands(proposals, &mut shutdown);
        if !commands.is_empty() {
            let n = commands.len() as u64;
            // Fire and forget: the reply to each command comes from applying it, on the
            // leader as on every node; awaiting only the hand-over keeps entries in order.
            match raft.client_write_ff(Batch { commands }).await {
                Ok(rx) => in_flight.push_back((n, rx)),
                Err(e) => refused(&mut dropped, n, &e),
            }
            continue;
        }
        if shutdown {
            // Drain: the last proposals apply (and so are journaled and answered) before
            // the shutdown marker follows them, unless Raft cannot commit them in time.
            let deadline = tokio::time::Instant::now() + SHUTDOWN_DRAIN_MAX;
            while let Some((n, rx)) = in_flight.pop_front() {
                match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(Ok(_))) => {}
                    Ok(Ok(Err(e))) => refused(&mut dropped, n, &e),
                    Ok(Err(_)) => refused(&mut dropped, n, &"raft dropped the proposal"),
                    Err(_) => {
                        eprintln!(
                            "ironmatch cluster: stopping with {} proposals not applied after {SHUTDOWN_DRAIN_MAX:?}",
                            in_flight.len() + 1
                        );
                        break;
                    }
                }
            }
            return;
        }
        if proposals.prepare_sleep() {
            let _ = tokio::time::timeout(PROPOSER_SLEEP_MAX, notify.notified()).await;
        }
        proposals.woke();
    }
}

/// The next proposal's commands from the gateway's ring (at most [`PROPOSAL_LEN_MAX`]);
/// sets `shutdown` when the marker comes, after which nothing more is taken.
fn take_commands(proposals: &Ring<Record>, shutdown: &mut bool) -> Vec<Command> {
    let mut commands = Vec::new();
    while !*shutdown && commands.len() < PROPOSAL_LEN_MAX {
        match proposals.try_pop() {
            Some(Record::Command(c)) => commands.push(c),
            Some(Record::Shutdown) => *shutdown = true,
            Some(
                r @ (Record::Event(_) | Record::Fill(_) | Record::Rested(_) | Record::Removed(_)),
            ) => {
                panic!("the gateway proposes commands only, got {r:?}")
            }
            None => break,
        }
    }
    commands
}

/// Whether a leader's journal and egress have caught up with what it applied.
struct Catchup {
    applied: RaftStore,
    released: Arc<Released>,
    /// The term in which this node, leading, last caught up.
    term: Option<u64>,
}

impl Catchup {
    /// Whether this node has caught up in `term`: once every command applied so far has
    /// its events in egress's ring (checked until true, then kept for the term, so a
    /// pipeline busy with new commands does not drop the sessions). Sets the role's egress
    /// target when it becomes true.
    fn caught_up(&mut self, term: u64, role: &ClusterRole) -> bool {
        if self.term == Some(term) {
            return true;
        }
        let applied = self.applied.commands_applied();
        if self.released.commands.load(Ordering::Acquire) < applied {
            return false;
        }
        let events = self.released.events.load(Ordering::Acquire);
        role.egress_target.store(events, Ordering::Release);
        self.term = Some(term);
        true
    }
}

/// Publishes whether this node may take logins, from Raft's metrics and its own pipeline.
async fn watch_role(
    raft: Raft<TypeConfig>,
    me: NodeId,
    election_timeout_ms: u64,
    election_timeout_max_ms: u64,
    role: Arc<ClusterRole>,
    mut catchup: Catchup,
) {
    let mut was = None;
    let mut metrics = raft.metrics();
    let mut last_look = role_clock();
    // Set when this watcher did not run for an election timeout (the process was stopped
    // or starved): Raft's metrics are then as old as the gap (`millis_since_quorum_ack`
    // is computed when they are reported), so nothing is accepted until Raft reports anew.
    let mut stale = false;
    // The look before the one that saw Raft's last report: the report came after it, so
    // the metrics read are at most as old as that look (whatever held this watcher between
    // looks). The lease a report gives (`millis_since_quorum_ack`, computed when reported)
    // is aged by that before a login may use it. The core reports at each turn
    // of its loop, so a held core reports nothing: openraft 0.9 holds the storage's lock
    // through an apply, so a full matcher ring, a stalled journal behind it, holds appends,
    // votes and heartbeats while this watcher runs on, and it once read the held core's
    // last lease as fresh and took logins after the others had elected a new leader. A core
    // busy with a long backlog reports late too: its lease ages and logins wait, while its
    // sessions stay, until no report came for as long as the others take to elect a new
    // leader (both election timeouts): then they go, and their clients fail over.
    let mut last_report = role_clock();
    loop {
        let now = role_clock();
        let reported = metrics.has_changed().unwrap_or(false);
        if reported {
            metrics.borrow_and_update();
            last_report = last_look;
        }
        if now.saturating_sub(last_look) > election_timeout_ms * 1_000_000 {
            stale = true;
        } else if stale && reported {
            stale = false;
        }
        last_look = now;
        // Rounded up.
        let report_age_ms = now.saturating_sub(last_report).div_ceil(1_000_000) + 1;
        // No report for longer than the others take to elect a leader: whatever the last
        // one said, this node is not to be taken for the leader any more (its sessions
        // go, its clients fail over).
        let held = report_age_ms > election_timeout_ms + election_timeout_max_ms;
        if let Err(fatal) = &raft.metrics().borrow().running_state {
            // Raft stopped (a storage error, most likely): this node can neither lead nor
            // follow, and nothing may be acknowledged; stop as the journal writer does.
            eprintln!("ironmatch cluster: node {me}: raft stopped: {fatal}; stopping");
            std::process::exit(74);
        }
        let (accepting, left_ms) = {
            let m = raft.metrics().borrow().clone();
            let reported_ms = m
                .millis_since_quorum_ack
                .map_or(0, |ms| election_timeout_ms.saturating_sub(ms));
            let accepting = !stale
                && !held
                && m.state == ServerState::Leader
                && m.current_leader == Some(me)
                && m.last_applied.map(|l| l.leader_id.term) == Some(m.current_term)
                && reported_ms > 0
                && catchup.caught_up(m.current_term, &role);
            // What is left of the lease now, for a login (0: none is taken).
            (accepting, reported_ms.saturating_sub(report_age_ms))
        };
        if accepting {
            role.fresh_until
                .store(now + left_ms * 1_000_000, Ordering::Release);
        }
        role.accepting.store(accepting, Ordering::Release);
        if was != Some(accepting) {
            let m = raft.metrics().borrow().clone();
            eprintln!(
                "ironmatch cluster: node {me}: {:?}, term {}, leader {:?}: {}",
                m.state,
                m.current_term,
                m.current_leader,
                if accepting {
                    "taking logins"
                } else {
                    "refusing logins"
                }
            );
            was = Some(accepting);
        }
        tokio::time::sleep(ROLE_PERIOD).await;
    }
}

/// When this node last heard a leader, and whether it is standing for election out of turn.
///
/// openraft 0.9 lets a follower stand only after the leader's lease (its
/// `election_timeout_max`) plus its own randomized election timeout, and a node that
/// refuses a candidate for its shorter log keeps its own term. When the leader dies with an
/// entry replicated to one follower only, the follower with the shorter log often stands
/// first: refused (the other holds more), it waits twice `election_timeout_max` more before
/// standing again, while the other's own try collides with that candidate's term. Such
/// failovers took 3.2 to 4.6 s instead of 1.2 to 1.6 s (4 to 9 of 20 kills in
/// tests/cluster.rs). So a node that refuses a candidate for its shorter log, having itself
/// heard no leader for the lease, stands at once (see [`stand`]): afterwards 20 of 20
/// kills took 1.0 to 1.64 s. Raft's safety does not depend on when a node stands; this
/// only shortens the wait when the leader is gone for both.
struct Contact {
    start: tokio::time::Instant,
    /// Milliseconds after `start` of the last append this node accepted.
    leader_heard_ms: std::sync::atomic::AtomicU64,
    standing: AtomicBool,
    lease: Duration,
    /// How long a round of votes may take before standing again.
    round: Duration,
}

impl Contact {
    fn new(settings: &ClusterSettings) -> Self {
        Contact {
            start: tokio::time::Instant::now(),
            leader_heard_ms: std::sync::atomic::AtomicU64::new(0),
            standing: AtomicBool::new(false),
            lease: Duration::from_millis(settings.election_timeout_max_ms),
            round: Duration::from_millis(settings.heartbeat_interval_ms * 2),
        }
    }

    fn heard_leader(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.leader_heard_ms.store(ms, Ordering::Relaxed);
    }

    fn leader_silent_for(&self) -> Duration {
        let heard = Duration::from_millis(self.leader_heard_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(heard)
    }
}

/// Stands for election at once (see [`Contact`]), again each round that ends with no
/// leader: each try takes the next term, so within a few rounds this node's term passes
/// that of the candidate it refused (which stands again only after its own timeout).
async fn stand(raft: Raft<TypeConfig>, contact: Arc<Contact>) {
    if contact.standing.swap(true, Ordering::AcqRel) {
        return;
    }
    for _ in 0..STAND_TRIES {
        // The leader this node still believes in (the dead one) is not an outcome.
        let term = raft.metrics().borrow().current_term;
        if contact.leader_silent_for() <= contact.lease || raft.trigger().elect().await.is_err() {
            break;
        }
        let mut metrics = raft.metrics();
        let decided = tokio::time::timeout(
            contact.round,
            metrics.wait_for(|m| {
                m.state == ServerState::Leader
                    || (m.current_term > term && m.current_leader.is_some())
            }),
        )
        .await;
        if matches!(decided, Ok(Ok(_))) {
            break;
        }
    }
    contact.standing.store(false, Ordering::Release);
}

/// Logs refused hellos, at most one line per [`REFUSAL_LOG_PERIOD`] (a refused node
/// reconnects at every heartbeat).
#[derive(Default)]
struct Refusals {
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

/// See [`Refusals`].
const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);

impl Refusals {
    fn log(&self, from: std::net::SocketAddr, why: &str) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_PERIOD) {
            eprintln!("ironmatch cluster: refused a connection from {from}: {why}");
            *last = Some(std::time::Instant::now());
        }
    }
}

/// Tries of [`stand`] at most.
const STAND_TRIES: usize = 4;

/// Who may connect to this node's Raft port: nodes of the same configuration, and with a
/// secret, nodes that prove it (see [`network`]).
struct Peering {
    /// This node's configuration fingerprint.
    config: u64,
    /// The cluster's secrets, if set.
    secret: Option<Secrets>,
    /// This node.
    me: NodeId,
    /// Every node of the cluster.
    members: Vec<NodeId>,
}

/// Serves the Raft RPCs and status requests of other nodes and tools.
async fn serve(
    listener: tokio::net::TcpListener,
    raft: Raft<TypeConfig>,
    role: Arc<ClusterRole>,
    contact: Arc<Contact>,
    peering: Peering,
) {
    let Peering {
        config,
        secret,
        me,
        members,
    } = peering;
    let refusals = Arc::new(Refusals::default());
    let members: Arc<[NodeId]> = members.into_iter().filter(|&id| id != me).collect();
    let places = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
    let counts = Arc::default();
    loop {
        let (mut stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of file descriptors, for example: wait rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(handshaking) = Handshaking::take(from.ip(), &counts, &places) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let raft = raft.clone();
        let role = Arc::clone(&role);
        let contact = Arc::clone(&contact);
        let refusals = Arc::clone(&refusals);
        let secret = secret.clone();
        let members = Arc::clone(&members);
        tokio::spawn(async move {
            // Raft requests only after a hello with this node's fingerprint (and, with a
            // secret, a proof of it: then every frame is sealed).
            let mut agreed = false;
            let mut seal: Option<Seal> = None;
            // The handshake of a sealed hello answered, until the caller's proof.
            let mut challenged: Option<network::Transcript> = None;
            // A tool's connection (its sealed hello from this node to this node): it may
            // ask for the status only.
            let mut status_only = false;
            let opened = tokio::time::Instant::now();
            // The caller's preamble first; this node's goes back whatever it was, so that
            // the caller can say which version this node speaks.
            let mut theirs = [0u8; network::PREAMBLE_LEN];
            let read =
                tokio::time::timeout_at(opened + HANDSHAKE_MAX, stream.read_exact(&mut theirs));
            if !matches!(read.await, Ok(Ok(_))) {
                return;
            }
            if stream.write_all(&Preamble::ours().bytes()).await.is_err() {
                return;
            }
            if let Some(why) = Preamble::refusal(theirs) {
                refusals.log(from, &why);
                return;
            }
            let differs = |theirs: u64| {
                format!(
                    "its configuration differs (book and feed fingerprint \
                     {config:016x}, the caller's {theirs:016x}): every node needs the \
                     same instruments, users, rules and [marketdata] session and \
                     attribution"
                )
            };
            let mut handshaking = Some(handshaking);
            loop {
                // Agreed: no longer in its handshake.
                if agreed {
                    drop(handshaking.take());
                }
                // Before its hello is agreed a connection sends a few small frames, within
                // a few seconds: nothing unauthenticated holds memory or a socket for long.
                let request = if agreed {
                    read_frame::<Request>(&mut stream, seal.as_mut()).await
                } else {
                    let read = network::read_frame_within::<Request>(
                        &mut stream,
                        None,
                        network::HELLO_BYTES_MAX,
                    );
                    tokio::time::timeout_at(opened + HANDSHAKE_MAX, read)
                        .await
                        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
                };
                let Ok(request) = request else {
                    break;
                };
                let reply = match (request, &secret) {
                    (Request::Hello { .. }, Some(_)) => {
                        let why = "it has no cluster secret and this node requires one \
                                   ([cluster] secret or IRONMATCH_CLUSTER_SECRET)";
                        refusals.log(from, why);
                        Reply::Failed(why.into())
                    }
                    (Request::SealedHello { .. }, None) => {
                        let why = "it has a cluster secret and this node has none";
                        refusals.log(from, why);
                        Reply::Failed(why.into())
                    }
                    // `ironmatch cluster status` proves the secret as this node itself
                    // ([`network::sealed_status`]), with its own configuration's
                    // fingerprint (the transcript covers it): answered with the status
                    // only, whatever its configuration, so that a node configured apart
                    // still shows. A handshake of this node's relayed back to it is no
                    // more than that.
                    (
                        Request::SealedHello {
                            config: theirs,
                            caller,
                            node,
                            nonce,
                        },
                        Some(key),
                    ) if caller == me && node == me && !agreed && challenged.is_none() => {
                        match network::nonce() {
                            Ok(ours) => {
                                let transcript = network::Transcript {
                                    config: theirs,
                                    caller,
                                    node: me,
                                    caller_nonce: nonce,
                                    node_nonce: ours,
                                };
                                challenged = Some(transcript);
                                status_only = true;
                                Reply::Challenge {
                                    nonce: ours,
                                    proofs: key.proofs(&transcript, End::Node),
                                }
                            }
                            Err(e) => Reply::Failed(format!("no nonce: {e}")),
                        }
                    }
                    (
                        Request::Hello { config: theirs }
                        | Request::SealedHello { config: theirs, .. },
                        _,
                    ) if theirs != config => {
                        let why = differs(theirs);
                        refusals.log(from, &why);
                        Reply::Failed(why)
                    }
                    (Request::Hello { .. }, None) => {
                        agreed = true;
                        Reply::Hello
                    }
                    (Request::SealedHello { caller, node, .. }, Some(_))
                        if node != me || !members.contains(&caller) =>
                    {
                        // A handshake relayed to another node, or back to its caller.
                        let why = format!(
                            "its hello is from node {caller} to node {node}; this is node {me} \
                             and the others are {members:?}"
                        );
                        refusals.log(from, &why);
                        Reply::Failed(why)
                    }
                    (Request::SealedHello { caller, nonce, .. }, Some(key)) if !agreed => {
                        match network::nonce() {
                            Ok(ours) => {
                                let transcript = network::Transcript {
                                    config,
                                    caller,
                                    node: me,
                                    caller_nonce: nonce,
                                    node_nonce: ours,
                                };
                                challenged = Some(transcript);
                                Reply::Challenge {
                                    nonce: ours,
                                    proofs: key.proofs(&transcript, End::Node),
                                }
                            }
                            Err(e) => Reply::Failed(format!("no nonce: {e}")),
                        }
                    }
                    (Request::Proof { proof }, Some(key)) => {
                        match challenged.take().and_then(|transcript| {
                            key.holding(&transcript, End::Caller, &[proof])
                                .map(|secret| transcript.seal(secret, End::Node))
                        }) {
                            Some(sealed) => {
                                agreed = true;
                                // This answer is the connection's first sealed frame.
                                seal = Some(sealed);
                                Reply::Hello
                            }
                            _ => {
                                let why = "its proof of the cluster secret does not hold (another secret)";
                                refusals.log(from, why);
                                Reply::Failed(why.into())
                            }
                        }
                    }
                    // With a secret, nothing is answered before the handshake: the tool
                    // asks as a member ([`network::sealed_status`]).
                    (Request::Status, Some(_)) if !agreed => {
                        let why = "a status request without the cluster's handshake: this \
                                   node has a cluster secret ([cluster] secret or \
                                   IRONMATCH_CLUSTER_SECRET for `ironmatch cluster status`)";
                        refusals.log(from, why);
                        Reply::Failed(why.into())
                    }
                    (Request::Status, _) => answer(&raft, &role, &contact, Request::Status).await,
                    _ if !agreed => Reply::Failed("no hello on this connection".into()),
                    _ if status_only => {
                        Reply::Failed("a status connection asks for the status only".into())
                    }
                    (request, _) => answer(&raft, &role, &contact, request).await,
                };
                let refused = matches!(reply, Reply::Failed(_)) && !agreed;
                if write_frame(&mut stream, &reply, seal.as_mut())
                    .await
                    .is_err()
                    || refused && secret.is_some()
                {
                    break;
                }
            }
            // A caller refuses a node whose proof does not hold without proving itself:
            // this side's only sign of a secret that differs. A handshake from this node
            // to itself is the status tool's, not another node's.
            if challenged.is_some() {
                refusals.log(
                    from,
                    if status_only {
                        "`ironmatch cluster status` left after this node's proof of the cluster secret without giving its own (the tool's secret differs)"
                    } else {
                        "it left after this node's proof of the cluster secret without giving its own (its secret differs)"
                    },
                );
            }
        });
    }
}

async fn answer(
    raft: &Raft<TypeConfig>,
    role: &ClusterRole,
    contact: &Arc<Contact>,
    request: Request,
) -> Reply {
    match request {
        Request::Append(rpc) => match raft.append_entries(rpc).await {
            Ok(r) => {
                if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
                    contact.heard_leader();
                }
                Reply::Append(r)
            }
            Err(e) => Reply::Failed(e.to_string()),
        },
        Request::Vote(rpc) => {
            let candidate_log = rpc.last_log_id;
            // A candidate's request; an elected leader's (committed) is no reason to stand.
            let candidate = !rpc.vote.is_committed();
            match raft.vote(rpc).await {
                Ok(r) => {
                    let shorter = r.last_log_id > candidate_log;
                    let state = raft.metrics().borrow().state;
                    if candidate
                        && !r.vote_granted
                        && shorter
                        && contact.leader_silent_for() > contact.lease
                        && matches!(state, ServerState::Follower | ServerState::Candidate)
                    {
                        tokio::spawn(stand(raft.clone(), Arc::clone(contact)));
                    }
                    Reply::Vote(r)
                }
                Err(e) => Reply::Failed(e.to_string()),
            }
        }
        Request::Snapshot(rpc) => match raft.install_snapshot(rpc).await {
            Ok(r) => Reply::Snapshot(r),
            Err(e) => Reply::Failed(e.to_string()),
        },
        // Answered in `serve`, never passed here.
        Request::Hello { .. } | Request::SealedHello { .. } | Request::Proof { .. } => {
            Reply::Failed("a second hello".into())
        }
        Request::Status => {
            let m = raft.metrics().borrow().clone();
            Reply::Status(NodeStatus {
                id: m.id,
                role: match m.state {
                    ServerState::Leader => "leader",
                    ServerState::Follower => "follower",
                    ServerState::Candidate => "candidate",
                    ServerState::Learner => "learner",
                    ServerState::Shutdown => "shutdown",
                }
                .to_string(),
                term: m.current_term,
                leader: m.current_leader,
                last_log: m.last_log_index,
                applied: m.last_applied.map(|l| l.index),
                matched: m
                    .replication
                    .as_ref()
                    .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
                    .unwrap_or_default(),
                accepting: role.may_take_logins(),
            })
        }
    }
}

/// Asks node `node` of the cluster `settings` describe for its status (blocking; for
/// `ironmatch cluster status`), at the address `settings.peers` gives it, within
/// `timeout`. Without a cluster secret the request goes alone; with one, over a handshake
/// proving the secret ([`network::sealed_status`]), since a node with a secret answers
/// nothing unauthenticated. A node's refusal is an error of kind `Other` (its reason);
/// not reaching it, of another kind.
pub fn status_of(
    settings: &ClusterSettings,
    node: NodeId,
    timeout: Duration,
) -> io::Result<NodeStatus> {
    let addr = settings
        .peers
        .iter()
        .find(|(id, _)| *id == node)
        .map(|(_, addr)| addr.as_str())
        .ok_or_else(|| io::Error::other(format!("node {node} is not a peer of the cluster")))?;
    let Some(secret) = &settings.secret else {
        return plain_status_of(addr, timeout);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let secret = secret.clone();
    runtime.block_on(async {
        tokio::time::timeout(
            timeout,
            network::sealed_status(addr, node, settings.config_fingerprint, secret, timeout),
        )
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    })
}

/// Asks the node at `addr`, which has no cluster secret, for its status: the request
/// alone, without a hello.
fn plain_status_of(addr: &str, timeout: Duration) -> io::Result<NodeStatus> {
    use std::io::{Read, Write};
    let addr = std::net::ToSocketAddrs::to_socket_addrs(addr)?
        .next()
        .ok_or_else(|| io::Error::other("no address"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(&Preamble::ours().bytes())?;
    let mut theirs = [0u8; network::PREAMBLE_LEN];
    network::judge_preamble(stream.read_exact(&mut theirs), theirs)?;
    let body = postcard::to_allocvec(&Request::Status).map_err(io::Error::other)?;
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    stream.write_all(&frame)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > network::FRAME_BYTES_MAX {
        return Err(io::Error::other("reply too long"));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    match postcard::from_bytes(&body).map_err(io::Error::other)? {
        Reply::Status(s) => Ok(s),
        Reply::Failed(why) => Err(io::Error::other(why)),
        _ => Err(io::Error::other("unexpected reply")),
    }
}

#[cfg(test)]
mod tests {
    /// Connections in their handshake are bounded in all and by address, and a place is
    /// given back when its connection agrees or ends.
    #[test]
    fn handshakes_are_bounded_in_all_and_by_address() {
        let counts = Arc::default();
        let places = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
        let ip = |i: u8| std::net::IpAddr::from([127, 0, 0, i]);
        let mut held: Vec<Handshaking> = (0..HANDSHAKES_PER_ADDRESS_MAX)
            .map(|_| Handshaking::take(ip(2), &counts, &places).unwrap())
            .collect();
        assert!(
            Handshaking::take(ip(2), &counts, &places).is_none(),
            "the address is full"
        );
        assert!(
            Handshaking::take(ip(3), &counts, &places).is_some(),
            "another is not"
        );
        held.pop();
        held.push(Handshaking::take(ip(2), &counts, &places).unwrap());
        for i in 3..=u8::MAX {
            while held.len() < HANDSHAKES_MAX {
                let Some(h) = Handshaking::take(ip(i), &counts, &places) else {
                    break;
                };
                held.push(h);
            }
        }
        assert_eq!(held.len(), HANDSHAKES_MAX);
        assert!(
            Handshaking::take(ip(1), &counts, &places).is_none(),
            "all places taken"
        );
        drop(held);
        assert!(counts.lock().unwrap().is_empty());
        assert_eq!(places.available_permits(), HANDSHAKES_MAX);
    }

    use super::*;
    use crate::book::CommandBody;
    use crate::pipeline::Wake;
    use crate::types::{OwnerId, Timestamp};

    fn command(ts: u64) -> Command {
        Command {
            ts: Timestamp(ts),
            owner: OwnerId(0),
            body: CommandBody::AccountQuery,
        }
    }

    /// The marker popped with the last commands is remembered: those commands are proposed
    /// and the proposer then stops, whatever came after the marker in the ring.
    #[test]
    fn the_shutdown_marker_taken_with_commands_is_not_lost() {
        let ring = Ring::new(16, Wake::None);
        for ts in 1..=3 {
            ring.try_push(Record::Command(command(ts))).unwrap();
        }
        ring.try_push(Record::Shutdown).unwrap();
        ring.try_push(Record::Command(command(4))).unwrap();
        let mut shutdown = false;
        let first = take_commands(&ring, &mut shutdown);
        assert_eq!(first.iter().map(|c| c.ts.0).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(shutdown, "the marker was seen");
        assert!(take_commands(&ring, &mut shutdown).is_empty());
        assert!(shutdown, "and is still known in the next round");
    }

    /// A full proposal leaves the rest, marker included, for the next round.
    #[test]
    fn a_proposal_takes_at_most_its_length() {
        let ring = Ring::new(2 * PROPOSAL_LEN_MAX, Wake::None);
        for ts in 0..PROPOSAL_LEN_MAX as u64 + 1 {
            ring.try_push(Record::Command(command(ts))).unwrap();
        }
        ring.try_push(Record::Shutdown).unwrap();
        let mut shutdown = false;
        assert_eq!(take_commands(&ring, &mut shutdown).len(), PROPOSAL_LEN_MAX);
        assert!(!shutdown);
        assert_eq!(take_commands(&ring, &mut shutdown).len(), 1);
        assert!(shutdown);
    }
}
