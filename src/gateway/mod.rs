//! Stages 1 and 4, the gateway: one `mio` poll loop owns every socket.
//!
//! The [`Gateway`] is an [`Agent`]: each `do_work` is one round of the loop (egress,
//! ingress, one poll without waiting, timers); when idle it sleeps in `poll` itself, woken
//! by sockets, by the egress ring's waker or by the shutdown waker. It runs on its own
//! thread (`dedicated`) or first in turn with the matcher and the journal writer on one
//! thread (`shared`); it never decides which.
//!
//! Ingress: accept, frame SoupBinTCP, log in, decode OUCH, and push commands into the
//! matcher's ring. It reads only while that ring has room, so a full pipeline leaves bytes
//! in the kernel (backpressure) and nothing is dropped or queued without bound.
//! Egress: take events that the journal writer released, encode them as OUCH, append them
//! to their user's sequenced store, and write from that store to the user's connection.
//! A reader that falls `session_queue_bytes_max` behind is disconnected; it can log in
//! again with a sequence number and resume. The gateway never blocks: commands it cannot
//! push yet (disconnects, the shutdown marker) wait in a bounded queue.
//!
//! Admission (see [`admission`]): connections that have not logged in ("pending") have a
//! budget of their own, `pending_max`, apart from the `connections_max` logged-in ones, and
//! at most `pending_per_address_max` per IP address. A new connection beyond a budget
//! evicts the oldest pending connection in that budget (its own address's when that address
//! is at its limit, else the heaviest address's), after serving a Login Request already
//! waiting in that connection's socket. So however many connections a flood opens, it
//! evicts its own first, and a member's newest connection lives long enough to log in.
//! Pending connections are logged at a bounded rate and counted.
//!
//! With [metrics](crate::admin::metrics) set, the gateway counts OUCH messages in and out
//! by type, keeps each session's state and message count, and finishes the journal
//! writer's [`Mark`](crate::admin::metrics::Mark)s after each egress round (journaled to
//! written latency): relaxed stores of its own counters, nothing more.

pub mod admission;
mod egress;
pub mod exercise;
mod ingress;
mod kept;
mod session;
mod store;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use admission::address_group;
pub use admission::{AdmissionCounters, AdmissionStats};
pub use egress::{cancel_code, encode_event, liquidity_code, reject_code};
pub use ingress::{reject_target, to_command, validate};
pub use kept::{SESSION_SETTINGS_NAME, SessionSettings, USERS_SETTINGS_NAME, UserNames};
use session::UserSession;
pub(crate) use store::STORE_CHUNK_MIN;
pub use store::{SessionStore, SpillFile, Spiller};

use crate::admin::actions::{ActionReply, ActionRequest, AdminAction};
use crate::admin::metrics::{EngineMetrics, MarkReader};
use crate::book::{Command, CommandBody, DayEvent, OperatorAction, VenueCommand};
use crate::config::Config;
use crate::pipeline::{Agent, Record, Ring};
use crate::types::{OwnerId, Symbol};
use crate::venue::VenueClock;
use crate::wire::DecodeError;
use crate::wire::ouch::decode_inbound;
use crate::wire::soupbin::{self, ClientPacket, kind};

/// Token of the listening socket.
const LISTENER: Token = Token(usize::MAX - 1);
/// Token of the waker that egress producers use.
pub const WAKER: Token = Token(usize::MAX - 2);
/// How often timers are checked: the longest poll timeout too, so that timers (an expiry,
/// a pause's end, a day's transition, sequenced when their time comes) and the shutdown
/// flag are seen within it (the poll's bound was 20 ms, twice the period).
const TIMER_PERIOD: Duration = Duration::from_millis(10);
/// Commands one connection pushes in a turn before the others get theirs (see
/// [`Gateway::serve_waiting`]).
const TURN_COMMANDS_MAX: usize = 64;
/// Readiness events taken per poll.
const EVENTS_MAX: usize = 256;
/// Control bytes (login replies, heartbeats, debug text) queued per connection at most.
const CONTROL_BYTES_MAX: usize = 4096;
/// Operator requests sequenced and not yet answered by the matcher, at most.
const PENDING_ACTIONS_MAX: usize = 64;

/// How long a shutdown waits for clients to take their last messages.
const FINISH_MAX: Duration = Duration::from_secs(2);

/// Gateway settings taken from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    session: [u8; 10],
    login_timeout: Duration,
    heartbeat_interval: Duration,
    client_timeout: Duration,
    connections_max: usize,
    pending_max: usize,
    pending_per_address_max: usize,
    packet_len_max: usize,
    session_queue_bytes_max: usize,
}

/// What [`Gateway::evict_oldest_pending`] did.
enum Made {
    /// A pending connection was closed.
    Evicted,
    /// The one it would have closed had sent its login and is logged in: room made.
    LoggedIn,
    /// No candidate.
    NoCandidate,
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes read and not yet framed.
    buf: Box<[u8]>,
    len: usize,
    /// Control packets not yet written; written before any sequenced data.
    control: Vec<u8>,
    user: Option<usize>,
    opened: Instant,
    last_rx: Instant,
    last_tx: Instant,
    /// Close once `control` is written (after a login reject or a protocol error).
    closing: bool,
    /// End of Session queued (shutdown).
    ended: bool,
    /// The peer's end of the stream was seen in a readiness event: the socket is read
    /// until it says so (its last bytes and the close may come in one event, after which
    /// no other comes).
    read_closed: bool,
    /// Bytes still to discard of a Debug packet longer than `packet_len_max`: SoupBinTCP
    /// receivers ignore Debug packets, whatever their length, so one that would not fit
    /// the buffer is read through rather than refused.
    skip: usize,
}

/// The gateway: ingress and egress on one thread.
pub struct Gateway {
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Vec<Option<Conn>>,
    users: Vec<UserSession>,
    symbols: Vec<Symbol>,
    inbound: Arc<Ring<Record>>,
    outbound: Arc<Ring<Record>>,
    settings: Settings,
    shutdown: Arc<AtomicBool>,
    /// Commands waiting for room in the matcher's ring, in order.
    deferred: VecDeque<Record>,
    /// When the packet being handled was taken (ns since the epoch): its command's time,
    /// read once for the day's transitions and the stamp.
    arrival_ns: i64,
    /// Connections with bytes left to frame once the matcher's ring has room, or at the
    /// end of their turn's budget ([`TURN_COMMANDS_MAX`]).
    waiting: Vec<usize>,
    /// Users whose store grew in this egress round.
    dirty: Vec<bool>,
    started: Instant,
    /// Read buffers and control buffers of closed connections, reused by new ones so a
    /// flood of connections does not churn the allocator.
    spare_bufs: Vec<Box<[u8]>>,
    spare_controls: Vec<Vec<u8>>,
    /// Admission counters, shared with the server.
    counters: Arc<AdmissionCounters>,
    /// Pending connections by address group, rebuilt for each eviction (kept for its
    /// memory).
    pending_groups: rustc_hash::FxHashMap<IpAddr, (usize, Instant)>,
    /// Rate limit and summary of the pre-login log lines.
    log: admission::LogLimiter,
    /// What the last poll returned.
    events: Events,
    /// `events` came from a blocking poll and are still to be handled.
    polled: bool,
    last_timers: Instant,
    /// Shutdown started: no more accepting or reading; the marker is on its way.
    draining: bool,
    /// Set when a poll failed: the gateway drains and stops, and the server's stop reports
    /// it (only this thread writes it).
    failure: Arc<AtomicBool>,
    /// The shutdown marker came back out of egress and clients got End of Session.
    done: bool,
    metrics: Option<Arc<EngineMetrics>>,
    /// Events taken from the egress ring so far, for the journal writer's marks.
    egress_taken: u64,
    /// Egress took the shutdown marker (it says so on every call after).
    egress_done: bool,
    marks: MarkReader,
    /// Stamps commands: nanoseconds since midnight in the venue's time zone.
    clock: VenueClock,
    /// The trading day's transitions still to send, if the venue has a day.
    day: Option<DayPlan>,
    /// The matcher's next deadline (ns since midnight, `u64::MAX`: none).
    deadline: Arc<AtomicU64>,
    /// The deadline a timer command was last sent for.
    timer_sent_for: u64,
    /// Set once the day's End of Messages is sequenced: the engine then drains and stops.
    day_over: Arc<AtomicBool>,
    /// The operator's actions from the admin endpoint.
    actions: Option<crossbeam::channel::Receiver<ActionRequest>>,
    /// Actions sequenced and waiting for their result: (request number, action, reply).
    pending_actions: Vec<(u64, AdminAction, crossbeam::channel::Sender<ActionReply>)>,
    /// The state of the last Trading Action seen, for an operator's result.
    last_trading_state: Option<crate::book::TradingState>,
    /// The next operator request number: starts from the clock in microseconds, so numbers
    /// are unique across restarts too (an engine makes far fewer requests than microseconds
    /// pass) and stay below 2^53 (until the year 2255), which a JSON reader with doubles
    /// (JavaScript, jq 1.6) keeps exact; the clock in nanoseconds did not.
    next_request: u64,
    /// Set by the session stores' thread when a read of a store file is done.
    store_read_done: Arc<AtomicBool>,
    /// With `[cluster]`: whether this node may take logins (the raft thread's verdict).
    cluster: Option<Arc<crate::cluster::ClusterRole>>,
    /// The verdict last seen: sessions are dropped when it turns false.
    leading: bool,
}

/// The day's schedule as the gateway sends it: each transition is pushed as a command when
/// its time comes (at once if it passed while the engine was down).
#[derive(Clone, Debug)]
pub struct DayPlan {
    /// When each transition happens (ns since the Unix epoch), in the order of the day.
    pub transitions: [(i64, DayEvent); 6],
    /// The next one to send.
    pub next: usize,
}

impl DayPlan {
    /// The plan for a day whose journal's last transition was `last` (`None`: a new day).
    pub fn resume(transitions: [(i64, DayEvent); 6], last: Option<DayEvent>) -> DayPlan {
        let next = last.map_or(0, |e| {
            transitions
                .iter()
                .position(|(_, t)| *t == e)
                .map_or(0, |i| i + 1)
        });
        DayPlan { transitions, next }
    }

    /// Logins are taken from the start of messages to the end of messages.
    fn open(&self) -> bool {
        self.next > 0 && self.next < self.transitions.len()
    }
}

impl Gateway {
    /// Builds the gateway around a bound listener. `poll` must be the one the egress
    /// ring's waker, `waker`, is registered with ([`WAKER`]); the session stores' thread
    /// wakes the gateway with it too, when a replay's read is done.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &Config,
        poll: Poll,
        waker: Arc<mio::Waker>,
        mut listener: TcpListener,
        inbound: Arc<Ring<Record>>,
        outbound: Arc<Ring<Record>>,
        shutdown: Arc<AtomicBool>,
    ) -> io::Result<Gateway> {
        let g = &config.gateway;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let book = config.book_config().expect("validated at load");
        // Full chunks of the sessions' stores go to files beside the journal.
        let spiller = Spiller::start(Some(waker))?;
        let store_dir = std::path::Path::new(&config.journal.dir);
        let users = config
            .users
            .iter()
            .zip(&book.owners)
            .enumerate()
            .map(|(i, (u, o))| {
                let store =
                    SessionStore::new(g.session_store_bytes, Some(spiller.file_in(store_dir)?));
                Ok(UserSession::new(u, OwnerId(i as u16), o.firm, store))
            })
            .collect::<io::Result<_>>()?;
        // Both budgets have slots from the start; `pending_max` bounds the pending ones and
        // `connections_max` the logged-in ones, so a free slot exists whenever a budget has room.
        let slots = g.connections_max + g.pending_max;
        let buf_len = g.packet_len_max + 2;
        Ok(Gateway {
            poll,
            listener: Some(listener),
            conns: (0..slots).map(|_| None).collect(),
            users,
            symbols: book.instruments.iter().map(|i| i.symbol).collect(),
            inbound,
            outbound,
            settings: Settings {
                session: soupbin::right_justified(&g.session),
                login_timeout: Duration::from_millis(g.login_timeout_ms),
                heartbeat_interval: Duration::from_millis(g.heartbeat_interval_ms),
                client_timeout: Duration::from_millis(g.client_timeout_ms),
                connections_max: g.connections_max,
                pending_max: g.pending_max,
                pending_per_address_max: g.pending_per_address_max,
                packet_len_max: g.packet_len_max,
                session_queue_bytes_max: g.session_queue_bytes_max,
            },
            shutdown,
            deferred: VecDeque::with_capacity(slots + 1),
            arrival_ns: 0,
            waiting: Vec::with_capacity(slots),
            dirty: vec![false; config.users.len()],
            started: Instant::now(),
            spare_bufs: (0..slots)
                .map(|_| vec![0; buf_len].into_boxed_slice())
                .collect(),
            spare_controls: (0..slots)
                .map(|_| Vec::with_capacity(CONTROL_BYTES_MAX))
                .collect(),
            counters: Arc::new(AdmissionCounters::default()),
            pending_groups: rustc_hash::FxHashMap::default(),
            log: admission::LogLimiter::new(Instant::now()),
            events: Events::with_capacity(EVENTS_MAX),
            polled: false,
            last_timers: Instant::now(),
            draining: false,
            failure: Arc::new(AtomicBool::new(false)),
            done: false,
            metrics: None,
            egress_taken: 0,
            egress_done: false,
            marks: MarkReader::default(),
            clock: config
                .schedule()
                .map_or_else(VenueClock::utc, |s| VenueClock::new(s.tz)),
            day: None,
            deadline: Arc::new(AtomicU64::new(u64::MAX)),
            timer_sent_for: u64::MAX,
            day_over: Arc::new(AtomicBool::new(false)),
            actions: None,
            pending_actions: Vec::with_capacity(PENDING_ACTIONS_MAX),
            last_trading_state: None,
            next_request: (crate::venue::epoch_ns() / 1_000).max(1) as u64,
            store_read_done: spiller.read_done(),
            cluster: None,
            leading: true,
        })
    }

    /// Publishes message counts, sessions and egress latency into `metrics`. Call after
    /// [`restore`](Self::restore), so sessions start with their recovered message counts.
    pub fn set_metrics(&mut self, metrics: Arc<EngineMetrics>) {
        for (user, m) in self.users.iter().zip(metrics.gateway.sessions.iter()) {
            m.messages.set(user.store.next_seq() - 1);
            m.logged_in.set(u64::from(user.conn.is_some()));
        }
        self.metrics = Some(metrics);
        self.count_sessions();
    }

    /// Publishes how many sessions are logged in.
    fn count_sessions(&self) {
        if let Some(m) = &self.metrics {
            let n = self.users.iter().filter(|u| u.conn.is_some()).count();
            m.gateway.sessions_connected.set(n as u64);
        }
    }

    /// Publishes whether user `u` is logged in.
    fn publish_session(&self, u: usize) {
        if let Some(m) = &self.metrics {
            m.gateway.sessions[u]
                .logged_in
                .set(u64::from(self.users[u].conn.is_some()));
            self.count_sessions();
        }
    }

    /// Set if the gateway stopped the engine because its poll failed (the stop is then
    /// a failure, not an operator's).
    pub fn failure_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.failure)
    }

    /// Whether a poll failed.
    fn failed(&self) -> bool {
        self.failure.load(Ordering::Relaxed)
    }

    /// Announces `session` in Login Accepted (and takes logins naming it) instead of the
    /// configured name: the journal's ([`SessionSettings`]).
    pub fn set_session(&mut self, session: &str) {
        self.settings.session = soupbin::right_justified(session);
    }

    /// Runs the trading day `plan` (with a `[venue]`): transitions are sequenced at their
    /// times, logins are taken only between the day's start and end of messages, and after
    /// the end of messages the engine drains and stops (`day_over` is set).
    pub fn set_day(&mut self, plan: DayPlan, day_over: Arc<AtomicBool>) {
        self.day = Some(plan);
        self.day_over = day_over;
        // Transitions already due (the day's start of messages at least) go first, before
        // any login is taken.
        self.check_clock();
    }

    /// Whether this stop ends the session: with a trading day, only once its end of
    /// messages has passed (a stop in the middle of the day is a restart's first half:
    /// the next start resumes the same session, so clients are not told it ended and
    /// reconnect); without one, every stop of a node on its own, and never a cluster
    /// node's: the session goes on at the next leader, where clients fail over (End of
    /// Session would tell them not to reconnect).
    fn session_over(&self) -> bool {
        self.day_over.load(Ordering::SeqCst) || self.stop_ends_session()
    }

    /// Whether any stop ends the session by itself: one node without a trading day.
    fn stop_ends_session(&self) -> bool {
        self.day.is_none() && self.cluster.is_none()
    }

    /// Makes this gateway a cluster node's: it takes logins only while `role` says so, and
    /// drops every session when that stops (see [`crate::cluster`]).
    pub fn set_cluster(&mut self, role: Arc<crate::cluster::ClusterRole>) {
        self.leading = role.accepting();
        self.cluster = Some(role);
    }

    /// Whether this node takes logins and sends commands: alone, always; in a cluster,
    /// while it leads with a majority.
    fn leads(&self) -> bool {
        self.cluster.as_ref().is_none_or(|r| r.accepting())
    }

    /// Whether a login or an operator's action may be taken: alone always; in a cluster
    /// while this node leads, by a fresh word of the role watcher (see
    /// [`crate::cluster::ClusterRole::may_take_logins`]).
    fn takes_logins(&self) -> bool {
        self.cluster.as_ref().is_none_or(|r| r.may_take_logins())
    }

    /// In a cluster: takes from egress's ring every event released before this node
    /// began to lead (they are there already: see [`crate::cluster::ClusterRole::egress_target`]),
    /// so a session logging in finds its whole stream. False if they are not (never
    /// expected: the login is then refused and the client tries again).
    fn streams_complete(&mut self) -> bool {
        let Some(target) = self.cluster.as_ref().map(|r| r.egress_target()) else {
            return true;
        };
        while self.egress_taken < target {
            match self.egress() {
                Egress::Moved => {}
                Egress::Idle | Egress::Done => break,
            }
        }
        self.egress_taken >= target
    }

    /// In a cluster: drops every connection when this node stops leading.
    fn check_leadership(&mut self) {
        let leads = self.leads();
        if self.leading && !leads {
            eprintln!("ironmatch gateway: no longer the cluster's leader: dropping every session");
            for i in 0..self.conns.len() {
                if self.conns[i].is_some() {
                    self.close(i, "this node no longer leads the cluster");
                }
            }
            // Actions proposed while leading may or may not be committed by the next
            // leader: their outcome is not this node's to tell. Answered now, they do not
            // stay in the list for ever (64 of them refused every later action).
            for (request, _, reply) in self.pending_actions.drain(..) {
                let _ = reply.try_send(ActionReply::refused(
                    503,
                    format!(
                        "this node lost the lead before operator request {request} was applied; the cluster may still apply it: see the new leader's /status"
                    ),
                ));
            }
        }
        if !self.leading && leads {
            // A timer sent for the deadline before the lead was lost may have been refused:
            // the new term sends it again if it is still due.
            self.timer_sent_for = u64::MAX;
        }
        self.leading = leads;
    }

    /// Takes the operator's actions from `actions` (the admin endpoint's queue).
    pub fn set_actions(&mut self, actions: crossbeam::channel::Receiver<ActionRequest>) {
        self.actions = Some(actions);
    }

    /// Turns waiting operator actions into commands (or, for a disconnect, does it);
    /// returns how many were taken.
    fn take_actions(&mut self) -> usize {
        // Taken out while the loop below closes sessions; put back after.
        let Some(queue) = self.actions.take() else {
            return 0;
        };
        let taken = self.run_actions(&queue);
        self.actions = Some(queue);
        taken
    }

    fn run_actions(&mut self, queue: &crossbeam::channel::Receiver<ActionRequest>) -> usize {
        let mut taken = 0;
        while let Ok(request) = queue.try_recv() {
            // One the endpoint gave up on was answered "not applied": dropped.
            if !request.take() {
                continue;
            }
            taken += 1;
            let (action, reply) = (request.action.clone(), request.reply.clone());
            if !self.takes_logins() {
                let _ = reply.try_send(ActionReply::refused(
                    503,
                    "this node does not lead the cluster",
                ));
                continue;
            }
            // Like logins: nothing is sequenced before the day's start or after its end
            // (a transition whose time has come counts first).
            self.transitions_first();
            if !self.day.as_ref().is_none_or(DayPlan::open) {
                let _ = reply.try_send(ActionReply::refused(
                    503,
                    "the trading day has not started or has ended",
                ));
                continue;
            }
            let user = |name: &str| {
                self.users
                    .iter()
                    .position(|u| u.username.eq_ignore_ascii_case(name))
            };
            let symbol = |name: &str| Symbol::from_str_padded(name);
            let operator = match &action {
                AdminAction::SetState {
                    symbol: name,
                    state,
                    reason,
                    cancel,
                } => symbol(name).map(|symbol| {
                    let mut code = [b' '; 4];
                    for (c, b) in code.iter_mut().zip(reason.bytes()) {
                        *c = b;
                    }
                    OperatorAction::SetState {
                        symbol,
                        state: *state,
                        reason: code,
                        cancel_resting: *cancel,
                    }
                }),
                AdminAction::VenueHalt(on) => Some(OperatorAction::VenueHalt(*on)),
                AdminAction::CancelUser(name) => {
                    user(name).map(|u| OperatorAction::CancelUser(OwnerId(u as u16)))
                }
                AdminAction::CancelInstrument(name) => {
                    symbol(name).map(OperatorAction::CancelInstrument)
                }
                AdminAction::Kick(name) => {
                    let result = match user(name) {
                        None => ActionReply::refused(404, "no such user"),
                        Some(u) => {
                            let connected = self.users[u].conn;
                            if let Some(i) = connected {
                                self.close(i, "disconnected by the operator");
                            }
                            ActionReply {
                                status: 200,
                                body: serde_json::json!({
                                    "ok": true,
                                    "action": crate::admin::actions::describe(&action),
                                    "was_connected": connected.is_some(),
                                }),
                            }
                        }
                    };
                    let _ = reply.try_send(result);
                    continue;
                }
            };
            let Some(operator) = operator else {
                let what = match action {
                    AdminAction::CancelUser(_) => "no such user",
                    _ => "no such instrument",
                };
                let _ = reply.try_send(ActionReply::refused(404, what));
                continue;
            };
            // While the pipeline is stalled, requests would pile up here (each waits for
            // its command to come back through the matcher): refused beyond a bound, as
            // the endpoint's own queue refuses them.
            if self.pending_actions.len() >= PENDING_ACTIONS_MAX {
                let _ = reply.try_send(ActionReply::refused(
                    503,
                    "the engine is backed up: earlier operator requests are still waiting",
                ));
                continue;
            }
            let number = self.next_request;
            self.next_request += 1;
            request.sequenced_as(number);
            let request = number;
            self.deferred.push_back(Record::Command(Command {
                ts: self.clock.now(),
                owner: OwnerId(0),
                body: CommandBody::Venue(VenueCommand::Operator {
                    request,
                    action: operator,
                }),
            }));
            eprintln!(
                "ironmatch gateway: operator request {request}: {}",
                crate::admin::actions::describe(&action)
            );
            self.pending_actions.push((request, action, reply));
        }
        taken
    }

    /// Where the matcher publishes its next deadline: a timer command goes in when it passes.
    pub fn set_deadline(&mut self, deadline: Arc<AtomicU64>) {
        self.deadline = deadline;
    }

    /// Sequences the day's transitions whose time has come now, ahead of what the gateway
    /// is about to take (an order, a login, an operator's action); returns the clock read
    /// (ns since the epoch), the time of what is taken.
    fn transitions_first(&mut self) -> i64 {
        let now = crate::venue::epoch_ns();
        if self.transition_due(now) {
            self.check_clock();
        }
        now
    }

    /// Whether the day's next transition is due at `now` (ns since the epoch).
    fn transition_due(&self, now: i64) -> bool {
        !self.draining
            && self
                .day
                .as_ref()
                .is_some_and(|p| p.transitions.get(p.next).is_some_and(|(at, _)| now >= *at))
    }

    /// Sends the day's transitions whose time has come, and a timer command when the
    /// matcher's deadline has passed.
    fn check_clock(&mut self) {
        let now = crate::venue::epoch_ns();
        let ts = self.clock.at(now);
        if let Some(plan) = self.day.as_mut() {
            while plan.next < plan.transitions.len() && now >= plan.transitions[plan.next].0 {
                let event = plan.transitions[plan.next].1;
                plan.next += 1;
                eprintln!("ironmatch gateway: trading day: {event:?}");
                self.deferred.push_back(Record::Command(Command {
                    ts,
                    owner: OwnerId(0),
                    body: CommandBody::Venue(VenueCommand::SystemEvent(event)),
                }));
                if event == DayEvent::EndOfMessages {
                    self.day_over.store(true, Ordering::SeqCst);
                    self.shutdown.store(true, Ordering::SeqCst);
                }
            }
        }
        let deadline = self.deadline.load(Ordering::Relaxed);
        // In a cluster only the leader sends timers (every node applies them).
        if deadline != u64::MAX
            && ts.0 >= deadline
            && self.timer_sent_for != deadline
            && self.leading
        {
            self.timer_sent_for = deadline;
            self.deferred.push_back(Record::Command(Command {
                ts,
                owner: OwnerId(0),
                body: CommandBody::Venue(VenueCommand::Timer),
            }));
        }
    }

    /// The admission counters, readable from any thread while the gateway runs.
    pub fn admission_counters(&self) -> Arc<AdmissionCounters> {
        Arc::clone(&self.counters)
    }

    /// Appends an event's OUCH message to its user's stream; returns the user and the
    /// message's OUCH type, or `None` for market data.
    fn store_event(&mut self, event: &crate::book::Event) -> Option<(usize, u8)> {
        if let crate::book::EventBody::SystemEvent { event: day } = event.body
            && let Some(code) = egress::ouch_system_event(day)
        {
            for (u, (user, dirty)) in self.users.iter_mut().zip(self.dirty.iter_mut()).enumerate() {
                user.store
                    .append(|out| egress::encode_system_event(event.ts.0, code, out));
                *dirty = true;
                if let Some(m) = &self.metrics {
                    m.gateway
                        .count_out(crate::wire::ouch::outbound::SYSTEM_EVENT);
                    m.gateway.sessions[u]
                        .messages
                        .set(user.store.next_seq() - 1);
                }
            }
            return None;
        }
        // The state in force an operator's state change left (its Trading Action comes just
        // before its result): under a venue halt a resume leaves the instrument halted.
        if let crate::book::EventBody::TradingAction { state, .. } = event.body {
            self.last_trading_state = Some(state);
            return None;
        }
        if let crate::book::EventBody::OperatorDone { request, outcome } = event.body {
            let in_force = self.last_trading_state.take();
            if let Some(at) = self.pending_actions.iter().position(|p| p.0 == request) {
                let (_, action, reply) = self.pending_actions.swap_remove(at);
                let _ = reply.try_send(ActionReply::from_outcome(
                    &action, request, outcome, in_force,
                ));
            }
            return None;
        }
        let u = usize::from(event.body.owner()?.0);
        let symbols = &self.symbols;
        let mut msg_type = 0;
        // An owner the configuration does not have (the matcher's reject of a command
        // that named one) has no session to store it in.
        self.users.get_mut(u)?.store.append(|out| {
            let start = out.len();
            encode_event(event, symbols, out);
            msg_type = out.get(start).copied().unwrap_or(0);
        });
        Some((u, msg_type))
    }

    /// Rebuilds the sessions' streams from recovered events, before serving.
    pub fn restore(&mut self, event: &crate::book::Event) {
        self.store_event(event);
    }

    /// Handles what the last poll returned; returns how many readiness events there were.
    fn handle_events(&mut self) -> usize {
        // Taken out so handlers can borrow `self`; an empty `Events` does not allocate.
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let mut n = 0;
        for event in events.iter() {
            n += 1;
            match event.token() {
                LISTENER => self.accept(),
                WAKER => {}
                Token(i) => {
                    if event.is_read_closed()
                        && let Some(Some(conn)) = self.conns.get_mut(i)
                    {
                        conn.read_closed = true;
                    }
                    if event.is_readable() && !self.draining {
                        self.serve(i);
                    }
                    if event.is_writable() {
                        self.flush(i);
                    }
                }
            }
        }
        self.events = events;
        n
    }

    /// Polls the sockets, waiting at most `timeout`; a poll error starts a shutdown.
    fn poll_sockets(&mut self, timeout: Duration) {
        if self.failed() {
            return;
        }
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                return;
            }
            eprintln!("ironmatch gateway: poll failed: {e}; shutting down");
            self.failure.store(true, Ordering::SeqCst);
            self.events.clear();
            if !self.draining {
                self.draining = true;
                self.begin_drain();
            }
        }
    }

    /// Queues a Disconnect of `owner` for the matcher (which cancels its orders if it
    /// has cancel-on-disconnect). One per user waits at most: while any command waits,
    /// none of the user's orders gets in, so a second one (a client reconnecting in a loop
    /// through a stall) would find nothing more to cancel, and the queue stays bounded.
    fn queue_disconnect(&mut self, owner: OwnerId) {
        let queued = self.deferred.iter().any(|r| {
            matches!(r, Record::Command(Command { owner: o, body: CommandBody::Disconnect, .. }) if *o == owner)
        });
        if !queued {
            self.deferred.push_back(Record::Command(Command {
                ts: self.clock.now(),
                owner,
                body: CommandBody::Disconnect,
            }));
        }
    }

    /// Stop accepting and reading; send the shutdown marker after the last command. When
    /// the stop itself ends the session (one node without a trading day: its clients get
    /// End of Session and do not reconnect), each logged-in session's Disconnect goes
    /// ahead of the marker: cancel-on-disconnect applies as to any other drop (a member's
    /// orders outlived the stop and traded after the restart while its connector, told
    /// the session had ended, stayed away), and the cancels reach the member's stream
    /// before End of Session. A stop in the middle of a trading day is a restart's first
    /// half, and a cluster node's stop a failover: the session goes on, clients reconnect,
    /// and their orders are kept, as after a crash.
    fn begin_drain(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.waiting.clear();
        if self.stop_ends_session() {
            for u in 0..self.users.len() {
                if self.users[u].conn.is_some() {
                    self.queue_disconnect(self.users[u].owner);
                }
            }
        }
        self.deferred.push_back(Record::Shutdown);
        let pending = self.pending_count();
        self.log
            .final_summary(Instant::now(), &self.counters, pending);
        eprintln!("ironmatch gateway: shutting down: draining the pipeline");
    }

    fn push_deferred(&mut self) -> bool {
        let mut pushed = false;
        while let Some(record) = self.deferred.front() {
            if self.inbound.try_push(*record).is_err() {
                break;
            }
            self.deferred.pop_front();
            pushed = true;
        }
        if pushed {
            self.inbound.notify();
        }
        pushed
    }

    /// Accepts until the kernel has no more, so its backlog never fills.
    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, for instance: the pre-login timeout frees them.
                    self.log
                        .line(Instant::now(), format_args!("accept failed: {e}"));
                    return;
                }
            }
        }
    }

    /// Admits a new connection as pending. When its address is at `pending_per_address_max`,
    /// the address's oldest pending connection is evicted; when all pending slots are taken,
    /// the oldest pending connection of the address holding the most is.
    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        AdmissionCounters::add(&self.counters.accepted);
        let ip = address_group(peer.ip());
        let (mut pending, mut same_address) = (0, 0);
        for conn in self.conns.iter().flatten().filter(|c| c.user.is_none()) {
            pending += 1;
            same_address += usize::from(address_group(conn.peer.ip()) == ip);
        }
        let room = if same_address >= self.settings.pending_per_address_max {
            self.make_room(Some(ip), true)
        } else if pending >= self.settings.pending_max {
            let heaviest = self.heaviest_pending_address();
            heaviest.is_some_and(|ip| self.make_room(Some(ip), false))
        } else {
            true
        };
        let slot = self.conns.iter().position(Option::is_none);
        let (true, Some(slot)) = (room, slot) else {
            AdmissionCounters::add(&self.counters.refused);
            self.log.line(
                Instant::now(),
                format_args!("{peer}: refused, no pending slot"),
            );
            return;
        };
        let _ = stream.set_nodelay(true);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.log
                .line(Instant::now(), format_args!("{peer}: register failed: {e}"));
            return;
        }
        let now = Instant::now();
        let buf_len = self.settings.packet_len_max + 2;
        let buf = self
            .spare_bufs
            .pop()
            .unwrap_or_else(|| vec![0; buf_len].into_boxed_slice());
        let control = self
            .spare_controls
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(CONTROL_BYTES_MAX));
        self.conns[slot] = Some(Conn {
            stream,
            peer,
            buf,
            len: 0,
            control,
            user: None,
            opened: now,
            last_rx: now,
            last_tx: now,
            closing: false,
            ended: false,
            read_closed: false,
            skip: 0,
        });
    }

    /// The address group ([`address_group`]) with the most pending connections (the one
    /// whose oldest opened earliest among equals): a flood spread over many addresses then
    /// evicts its own connections before a member's. One pass over the connections, the
    /// counts in a map kept for it (a count per candidate was quadratic in `pending_max`,
    /// on the gateway's one thread, exactly while a flood fills the pending slots).
    fn heaviest_pending_address(&mut self) -> Option<IpAddr> {
        let mut groups = std::mem::take(&mut self.pending_groups);
        groups.clear();
        for c in self.conns.iter().flatten().filter(|c| c.user.is_none()) {
            let group = groups
                .entry(address_group(c.peer.ip()))
                .or_insert((0, c.opened));
            group.0 += 1;
            group.1 = group.1.min(c.opened);
        }
        let heaviest = groups
            .iter()
            .map(|(ip, (count, oldest))| (*count, std::cmp::Reverse(*oldest), *ip))
            .max()
            .map(|(_, _, ip)| ip);
        self.pending_groups = groups;
        heaviest
    }

    /// Makes room for a new pending connection by [`Self::evict_oldest_pending`] of
    /// `group`, counting an eviction (of the new connection's own group when
    /// `same_address`); whether there is room.
    fn make_room(&mut self, group: Option<IpAddr>, same_address: bool) -> bool {
        match self.evict_oldest_pending(group) {
            Made::Evicted => {
                AdmissionCounters::add(if same_address {
                    &self.counters.evicted_same_address
                } else {
                    &self.counters.evicted
                });
                true
            }
            Made::LoggedIn => true,
            Made::NoCandidate => false,
        }
    }

    /// Closes the oldest pending connection (of address group `group` only, if given) to
    /// make room. A Login Request already in a candidate's socket is served first: a member
    /// who sent its login is never evicted unread, and its login makes the room (it is no
    /// longer pending; another connection used to be evicted as well).
    fn evict_oldest_pending(&mut self, group: Option<IpAddr>) -> Made {
        let oldest = (0..self.conns.len())
            .filter_map(|i| self.conns[i].as_ref().map(|c| (i, c)))
            .filter(|(_, c)| {
                c.user.is_none() && group.is_none_or(|g| address_group(c.peer.ip()) == g)
            })
            .min_by_key(|(_, c)| c.opened)
            .map(|(i, _)| i);
        let Some(i) = oldest else {
            return Made::NoCandidate;
        };
        self.serve(i);
        match &self.conns[i] {
            // Closed while served (a bad login, or gone): its slot is free.
            None => Made::Evicted,
            Some(c) if c.user.is_none() => {
                self.close(i, "evicted by a newer connection");
                Made::Evicted
            }
            Some(_) => Made::LoggedIn,
        }
    }

    /// Reads and frames a connection's input while the matcher's ring has room, up to
    /// [`TURN_COMMANDS_MAX`] commands; a connection with more waits its next turn.
    fn serve(&mut self, i: usize) {
        let mut drained = false;
        let mut budget = TURN_COMMANDS_MAX;
        loop {
            match self.frame_input(i, &mut budget) {
                Framed::Blocked => {
                    if !self.waiting.contains(&i) {
                        self.waiting.push(i);
                    }
                    return;
                }
                Framed::Closed => return,
                Framed::NeedBytes if drained => return,
                Framed::NeedBytes => {}
            }
            let Some(conn) = self.conns[i].as_mut() else {
                return;
            };
            let len = conn.len;
            match conn.stream.read(&mut conn.buf[len..]) {
                Ok(0) => return self.close(i, "peer closed the connection"),
                Ok(n) => {
                    conn.len += n;
                    conn.last_rx = Instant::now();
                    // A short read drained the socket (epoll(7)): frame what came and skip
                    // the read that would say WouldBlock; new bytes bring a new event. Not
                    // once the peer closed: that read says so, and no event would follow.
                    if conn.len < conn.buf.len() && !conn.read_closed {
                        drained = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.close(i, &format!("read failed: {e}")),
            }
        }
    }

    /// Connections that stopped for lack of room, or at their turn's budget, served again
    /// once there is room, each in turn, the first of the last round last: a member that
    /// keeps its socket full takes its share, not the whole ring (it once took all of it,
    /// every time room came, and the members behind it waited for it to stop).
    fn serve_waiting(&mut self) -> bool {
        if self.waiting.is_empty() || self.inbound.room() == 0 || !self.deferred.is_empty() {
            return false;
        }
        let mut waiting = std::mem::take(&mut self.waiting);
        waiting.rotate_left(1);
        for &i in &waiting {
            self.serve(i);
        }
        let mut back = waiting;
        back.clear();
        back.append(&mut self.waiting);
        self.waiting = back;
        true
    }

    /// Handles every complete packet in the connection's buffer, up to `budget` commands.
    fn frame_input(&mut self, i: usize, budget: &mut usize) -> Framed {
        let Some(conn) = self.conns[i].as_mut() else {
            return Framed::Closed;
        };
        // Take the buffer out so packets can be handled with `&mut self`; an empty boxed
        // slice does not allocate.
        let buf = std::mem::take(&mut conn.buf);
        let len = conn.len;
        let mut used = 0;
        let mut pushed = false;
        let outcome = loop {
            let Some(conn) = self.conns[i].as_mut().filter(|c| !c.closing) else {
                break Framed::Closed;
            };
            if conn.skip > 0 {
                let skipped = conn.skip.min(len - used);
                conn.skip -= skipped;
                used += skipped;
                if conn.skip > 0 {
                    break Framed::NeedBytes;
                }
            }
            let frame = match soupbin::next_frame(&buf[used..len], self.settings.packet_len_max) {
                Ok(Some(frame)) => frame,
                Ok(None) => break Framed::NeedBytes,
                // A Debug packet too long for the buffer is discarded as it comes; any
                // other is a protocol error. (Its type is the byte after the length.)
                Err(DecodeError::PacketTooLong {
                    len: packet_len, ..
                }) if used + 2 >= len || buf[used + 2] == kind::DEBUG => {
                    if used + 2 >= len {
                        break Framed::NeedBytes;
                    }
                    conn.skip = 2 + packet_len;
                    continue;
                }
                Err(e) => {
                    self.protocol_error(i, &format!("bad frame: {e}"));
                    break Framed::Closed;
                }
            };
            // A packet yields at most one command, and only Unsequenced Data does: take it
            // only if it can be pushed. A Login Request, a heartbeat or a logout goes
            // through: a member's login is never held behind other members' orders (and
            // then evicted or timed out unread).
            if frame.kind == kind::UNSEQUENCED {
                // A transition of the day whose time has come is sequenced before the
                // packet's command (deferred, so the packet waits for it): an order that
                // arrives after the close's time is never matched as if the market were
                // still open, for up to the timer's period.
                let now = self.transitions_first();
                if self.inbound.room() == 0 || !self.deferred.is_empty() || *budget == 0 {
                    break Framed::Blocked;
                }
                *budget -= 1;
                self.arrival_ns = now;
            }
            pushed |= self.on_packet(i, &frame);
            used += frame.len;
        };
        match self.conns[i].as_mut() {
            Some(conn) => {
                conn.buf = buf;
                conn.buf.copy_within(used..len, 0);
                conn.len = len - used;
            }
            None => self.recycle(buf, Vec::new()),
        }
        if pushed {
            self.inbound.notify();
        }
        outcome
    }

    /// Handles one packet; returns whether a command was pushed.
    fn on_packet(&mut self, i: usize, frame: &soupbin::Frame<'_>) -> bool {
        let packet = match soupbin::decode_client(frame) {
            Ok(p) => p,
            Err(e) => {
                self.protocol_error(i, &format!("bad packet: {e}"));
                return false;
            }
        };
        let user = self.conns[i].as_ref().and_then(|c| c.user);
        match (user, packet) {
            (None, ClientPacket::Login(req)) => {
                self.login(i, req);
                false
            }
            // SoupBinTCP: receivers accept and ignore Debug packets, before login too.
            (None, ClientPacket::Debug(_)) => false,
            (None, _) => {
                self.protocol_error(i, "nothing but a Login Request is accepted before login");
                false
            }
            (Some(_), ClientPacket::Login(_)) => {
                self.protocol_error(i, "already logged in");
                false
            }
            (Some(u), ClientPacket::Unsequenced(msg)) => self.on_message(i, u, msg),
            (Some(_), ClientPacket::Heartbeat | ClientPacket::Debug(_)) => false,
            (Some(_), ClientPacket::Logout) => {
                self.close(i, "logout");
                false
            }
        }
    }

    fn login(&mut self, i: usize, req: &soupbin::LoginRequest) {
        let name = soupbin::trimmed(&req.username);
        let found = self
            .users
            .iter()
            .position(|u| u.username.as_bytes().eq_ignore_ascii_case(name));
        let session = soupbin::trimmed(&req.requested_session);
        let requested = soupbin::parse_number(&req.requested_sequence);
        // As for orders: a transition whose time has come counts before the login.
        self.transitions_first();
        let day_open = self.day.as_ref().is_none_or(DayPlan::open);
        let verdict = match found {
            Some(u) if self.users[u].password_matches(&req.password) => {
                if !self.takes_logins() {
                    Err((
                        soupbin::REJECT_SESSION_UNAVAILABLE,
                        "this node does not lead the cluster",
                    ))
                } else if !self.streams_complete() {
                    Err((
                        soupbin::REJECT_SESSION_UNAVAILABLE,
                        "this node's session streams are not complete yet",
                    ))
                } else if !day_open {
                    Err((
                        soupbin::REJECT_SESSION_UNAVAILABLE,
                        "the trading day has not started or has ended",
                    ))
                } else if !session.is_empty() && session != soupbin::trimmed(&self.settings.session)
                {
                    Err((soupbin::REJECT_SESSION_UNAVAILABLE, "unknown session"))
                } else if self.users[u].conn.is_some() {
                    Err((
                        soupbin::REJECT_SESSION_UNAVAILABLE,
                        "user already logged in",
                    ))
                } else if self.users.iter().filter(|u| u.conn.is_some()).count()
                    >= self.settings.connections_max
                {
                    Err((
                        soupbin::REJECT_SESSION_UNAVAILABLE,
                        "gateway.connections_max sessions logged in",
                    ))
                } else {
                    requested
                        .map(|seq| (u, seq))
                        .map_err(|_| (soupbin::REJECT_SESSION_UNAVAILABLE, "bad sequence number"))
                }
            }
            _ => Err((soupbin::REJECT_NOT_AUTHORIZED, "bad username or password")),
        };
        let Some(conn) = self.conns[i].as_mut() else {
            return;
        };
        // Positioning the stream reads nothing here: a replay of written-out messages
        // starts once the store's thread has read them ([`Self::poll_store_reads`]).
        let verdict = verdict.map(|(u, seq)| (u, self.users[u].store.start_at(seq)));
        match verdict {
            Ok((u, first)) => {
                let user = &mut self.users[u];
                user.conn = Some(i);
                conn.user = Some(u);
                AdmissionCounters::add(&self.counters.logins);
                soupbin::write_login_accepted(&mut conn.control, &self.settings.session, first);
                user.log.member_line(
                    Instant::now(),
                    format_args!(
                        "{}: {} logged in, sending from {first}",
                        conn.peer, user.username
                    ),
                );
                self.publish_session(u);
            }
            Err((code, why)) => {
                soupbin::write_login_rejected(&mut conn.control, code);
                conn.closing = true;
                AdmissionCounters::add(&self.counters.logins_rejected);
                self.log.line(
                    Instant::now(),
                    format_args!("{}: login rejected: {why}", conn.peer),
                );
            }
        }
        self.flush(i);
    }

    /// Decodes an OUCH message and pushes its command; returns whether one was pushed.
    fn on_message(&mut self, i: usize, u: usize, msg: &[u8]) -> bool {
        let decoded = match decode_inbound(msg) {
            Ok(m) => m,
            Err(e) => {
                self.protocol_error(i, &format!("bad OUCH message: {e}"));
                return false;
            }
        };
        if let Some(m) = &self.metrics {
            m.gateway.count_in(msg[0]);
        }
        let user = &mut self.users[u];
        let now_ns = self.started.elapsed().as_nanos() as u64;
        let body = if ingress::is_throttled(&decoded) && !user.bucket.try_take(now_ns) {
            let (user_ref, clordid) = ingress::reject_target(&decoded);
            CommandBody::GatewayReject {
                user_ref,
                reason: crate::book::RejectReason::Throttled,
                clordid,
            }
        } else {
            if let (Err((_, field)), Some(conn)) = (ingress::validate(&decoded), &self.conns[i]) {
                self.log.line(
                    Instant::now(),
                    format_args!("{}: {}: rejected: bad {field}", conn.peer, user.username),
                );
            }
            to_command(&decoded, user.firm)
        };
        let cmd = Command {
            ts: self.clock.at(self.arrival_ns),
            owner: user.owner,
            body,
        };
        let pushed = self.inbound.try_push(Record::Command(cmd));
        debug_assert!(
            pushed.is_ok(),
            "room was checked before the packet was taken"
        );
        pushed.is_ok()
    }

    /// Tells the peer why in a Debug packet, then closes after writing it.
    fn protocol_error(&mut self, i: usize, why: &str) {
        let Some(conn) = self.conns[i].as_mut() else {
            return;
        };
        if let Some(u) = conn.user {
            self.users[u].log.member_line(
                Instant::now(),
                format_args!("{}: {why}; closing", conn.peer),
            );
        } else {
            self.log.line(
                Instant::now(),
                format_args!("{}: {why}; closing", conn.peer),
            );
        }
        if conn.control.len() + why.len() < CONTROL_BYTES_MAX {
            soupbin::write_packet(&mut conn.control, kind::DEBUG, why.as_bytes());
        }
        conn.closing = true;
        self.flush(i);
    }

    /// Closes a connection now. A logged-in user's session lives on; its orders are
    /// canceled if the user has cancel-on-disconnect (the matcher decides).
    fn close(&mut self, i: usize, why: &str) {
        let Some(mut conn) = self.conns[i].take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.waiting.retain(|w| *w != i);
        match conn.user {
            Some(u) => {
                let user = &mut self.users[u];
                user.conn = None;
                user.log.member_line(
                    Instant::now(),
                    format_args!("{}: {} disconnected: {why}", conn.peer, user.username),
                );
                let owner = user.owner;
                self.queue_disconnect(owner);
                self.publish_session(u);
            }
            None => self.log.line(
                Instant::now(),
                format_args!("{}: closed before login: {why}", conn.peer),
            ),
        }
        self.recycle(conn.buf, conn.control);
    }

    /// Keeps a closed connection's buffers for the next one.
    fn recycle(&mut self, buf: Box<[u8]>, mut control: Vec<u8>) {
        if buf.len() == self.settings.packet_len_max + 2
            && self.spare_bufs.len() < self.spare_bufs.capacity()
        {
            self.spare_bufs.push(buf);
        }
        control.clear();
        if control.capacity() >= CONTROL_BYTES_MAX
            && self.spare_controls.len() < self.spare_controls.capacity()
        {
            self.spare_controls.push(control);
        }
    }

    /// Writes what a connection has pending: control packets first, then sequenced data.
    fn flush(&mut self, i: usize) {
        let Some(conn) = self.conns[i].as_mut() else {
            return;
        };
        let store = conn.user.map(|u| &mut self.users[u].store);
        let result = write_pending(&mut conn.stream, &mut conn.control, store);
        if let Some(u) = conn.user
            && let Some(e) = self.users[u].store.take_failed()
        {
            eprintln!(
                "ironmatch gateway: session store of {} unreadable: {e}",
                self.users[u].username
            );
            return self.close(i, "session store unreadable");
        }
        match result {
            Ok(n) => {
                if n > 0 {
                    conn.last_tx = Instant::now();
                }
                if conn.closing && conn.control.is_empty() {
                    self.close(i, "closed by the server");
                }
            }
            Err(e) => self.close(i, &format!("write failed: {e}")),
        }
    }

    /// Whether the session stores' thread has read a window since the last look (and
    /// forgets it). A plain load first: on the loop's every round nothing is usually
    /// done, and a swap would take the flag's cache line exclusive each time.
    #[inline]
    fn store_read_is_done(&self) -> bool {
        self.store_read_done.load(Ordering::Relaxed)
            && self.store_read_done.swap(false, Ordering::Acquire)
    }

    /// Takes the windows the session stores' thread has read for replays, writing them
    /// out; a failed read closes its connection. Returns the connections written to.
    fn poll_store_reads(&mut self) -> usize {
        let mut written = 0;
        for u in 0..self.users.len() {
            let Some(i) = self.users[u].conn else {
                continue;
            };
            if !self.users[u].store.waiting() {
                continue;
            }
            match self.users[u].store.poll_read() {
                Ok(true) => {
                    self.flush(i);
                    written += 1;
                }
                Ok(false) => {}
                Err(e) => {
                    eprintln!(
                        "ironmatch gateway: session store of {} unreadable: {e}",
                        self.users[u].username
                    );
                    self.close(i, "session store unreadable");
                }
            }
        }
        written
    }

    /// Moves released events into their users' stores and writes them out.
    fn egress(&mut self) -> Egress {
        if self.egress_done {
            return Egress::Done;
        }
        let mut moved = false;
        for _ in 0..crate::journal::BATCH_LEN_MAX {
            match self.outbound.try_pop() {
                Some(Record::Event(event)) => {
                    moved = true;
                    self.egress_taken += 1;
                    if let Some((u, msg_type)) = self.store_event(&event) {
                        self.dirty[u] = true;
                        if let Some(m) = &self.metrics {
                            m.gateway.count_out(msg_type);
                            m.gateway.sessions[u]
                                .messages
                                .set(self.users[u].store.next_seq() - 1);
                        }
                    }
                }
                Some(Record::Shutdown) => {
                    self.egress_done = true;
                    return Egress::Done;
                }
                Some(Record::Command(_)) => {}
                Some(r @ (Record::Fill(_) | Record::Rested(_) | Record::Removed(_))) => {
                    panic!("matcher records reach egress expanded, got {r:?}")
                }
                None => break,
            }
        }
        if !moved {
            return Egress::Idle;
        }
        for u in 0..self.users.len() {
            if !std::mem::take(&mut self.dirty[u]) {
                continue;
            }
            let Some(i) = self.users[u].conn else {
                continue;
            };
            self.flush(i);
            // The replay a login asked for does not count: only live messages behind it,
            // and not while the stream waits for the store file (the server's disk).
            if self.users[u].conn.is_some()
                && self.users[u].store.live_unsent_len()
                    > self.settings.session_queue_bytes_max as u64
                && !self.users[u].store.waiting_for_read()
            {
                self.close(
                    i,
                    "slow reader: session queue limit reached (log in again to resume)",
                );
            }
        }
        if let Some(m) = &self.metrics {
            self.marks.finish(
                &m.to_egress_marks,
                self.egress_taken,
                self.clock.now().0,
                &m.gateway.journaled_to_written,
            );
        }
        Egress::Moved
    }

    /// Connections not logged in yet.
    fn pending_count(&self) -> usize {
        self.conns
            .iter()
            .flatten()
            .filter(|c| c.user.is_none())
            .count()
    }

    fn check_timers(&mut self, now: Instant) {
        if self.cluster.is_some() {
            self.check_leadership();
        }
        if !self.draining {
            self.check_clock();
        }
        let pending = self.pending_count();
        self.log.summary(now, &self.counters, pending);
        for i in 0..self.conns.len() {
            let Some(conn) = self.conns[i].as_mut() else {
                continue;
            };
            if conn.user.is_none() {
                if now.duration_since(conn.opened) >= self.settings.login_timeout {
                    AdmissionCounters::add(&self.counters.login_timeouts);
                    self.close(i, "no login in time");
                }
                continue;
            }
            // A connection held for lack of room in the matcher's ring is not read, so
            // its silence is the engine's, not the client's; so is every connection's
            // while the pipeline drains (nothing is read, and each gets its last messages).
            if now.duration_since(conn.last_rx) >= self.settings.client_timeout
                && !self.waiting.contains(&i)
                && !self.draining
            {
                self.close(i, "client silent too long");
                continue;
            }
            if now.duration_since(conn.last_tx) >= self.settings.heartbeat_interval
                && conn.control.is_empty()
            {
                soupbin::write_empty(&mut conn.control, kind::SERVER_HEARTBEAT);
                self.flush(i);
            }
        }
    }

    /// After the pipeline drained: every client gets its last messages, then End of
    /// Session if the session is over (see [`Self::session_over`]); its connection closes.
    /// Blocks up to [`FINISH_MAX`]: every other stage has ended by now.
    fn finish(&mut self) {
        let session_over = self.session_over();
        let deadline = Instant::now() + FINISH_MAX;
        let mut events = Events::with_capacity(64);
        while Instant::now() < deadline {
            let mut open = 0;
            if self.store_read_is_done() {
                self.poll_store_reads();
            }
            for i in 0..self.conns.len() {
                self.flush(i);
                let Some(conn) = self.conns[i].as_mut() else {
                    continue;
                };
                let caught_up = conn
                    .user
                    .is_none_or(|u| self.users[u].store.unsent_len() == 0);
                if caught_up && !conn.ended {
                    // End of Session ends a logged-in session; a connection still logging
                    // in (or refused) is just closed.
                    if session_over && conn.user.is_some() {
                        soupbin::write_empty(&mut conn.control, kind::END_OF_SESSION);
                    }
                    conn.ended = true;
                    conn.closing = true;
                    self.flush(i);
                }
                open += usize::from(self.conns[i].is_some());
            }
            if open == 0 || self.failed() {
                break;
            }
            // Readiness is not needed here: every connection is flushed each round.
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(10)));
        }
        for i in 0..self.conns.len() {
            self.close(i, "shutdown");
        }
        eprintln!("ironmatch gateway: stopped");
    }
}

impl Agent for Gateway {
    fn role(&self) -> &'static str {
        "gateway"
    }

    /// One round: released events out, deferred commands and waiting connections in, the
    /// shutdown flag, one poll of the sockets (without waiting, unless [`Agent::block`]
    /// already polled), the timers. Returns a measure of what it did (0 = nothing).
    fn do_work(&mut self) -> usize {
        let mut work = 0;
        match self.egress() {
            Egress::Done => {
                self.finish();
                self.done = true;
                return 1;
            }
            Egress::Moved => work += 1,
            Egress::Idle => {}
        }
        work += usize::from(self.push_deferred());
        if self.store_read_is_done() {
            work += self.poll_store_reads();
        }
        if !self.draining {
            work += self.take_actions();
            // Once the day's End of Messages is queued nothing more is framed: connections
            // left waiting (a packet that met the day's end, a turn's budget used up) had
            // up to a turn of commands sequenced after the day's last record.
            if !self.day_over.load(Ordering::Relaxed) {
                work += usize::from(self.serve_waiting());
            }
            if self.shutdown.load(Ordering::Relaxed) {
                self.draining = true;
                self.begin_drain();
                work += 1;
            }
        }
        if !std::mem::take(&mut self.polled) {
            self.poll_sockets(Duration::ZERO);
        }
        work += self.handle_events();
        let now = Instant::now();
        if now.duration_since(self.last_timers) >= TIMER_PERIOD {
            self.last_timers = now;
            self.check_timers(now);
        }
        work
    }

    fn is_done(&self) -> bool {
        self.done
    }

    /// Announces the sleep to egress producers, then re-checks their ring. Commands
    /// waiting to be pushed keep the gateway awake: nobody would wake it for room.
    fn prepare_sleep(&mut self) -> bool {
        // A connection stopped at its turn's budget has bytes no readiness event will
        // announce again: served on the next round, not after a sleep.
        self.deferred.is_empty()
            && (self.waiting.is_empty() || self.inbound.room() == 0)
            && self.outbound.prepare_sleep()
    }

    fn can_block(&self) -> bool {
        true
    }

    /// Sleeps in `poll` (woken by sockets, the egress waker, the shutdown waker); the next
    /// `do_work` handles what it returned. Bounded by the timer period, so timers run.
    fn block(&mut self, timeout: Duration) {
        self.poll_sockets(timeout.min(TIMER_PERIOD));
        self.polled = true;
    }

    fn woke(&mut self) {
        self.outbound.woke();
    }
}

/// Writes as much of `buf` as the socket takes and removes it from `buf`.
fn write_all_nonblocking(stream: &mut impl Write, buf: &mut Vec<u8>) -> io::Result<usize> {
    let n = write_some(stream, buf)?;
    buf.drain(..n);
    Ok(n)
}

/// Writes what a connection has pending, as much as the socket takes now: control packets
/// (Login Accepted, heartbeats, Debug) first, then the user's sequenced stream. A packet of
/// the stream the socket took part of is finished first, so that no control packet lands
/// inside it. Returns the bytes written.
fn write_pending(
    out: &mut impl Write,
    control: &mut Vec<u8>,
    mut store: Option<&mut SessionStore>,
) -> io::Result<usize> {
    let mut total = 0;
    if !control.is_empty()
        && let Some(stream) = store.as_deref_mut()
    {
        let rest = stream.packet_rest();
        if rest > 0 {
            let n = write_some(out, &stream.unsent()[..rest])?;
            stream.mark_sent(n);
            total += n;
            if n < rest {
                return Ok(total);
            }
        }
    }
    total += write_all_nonblocking(out, control)?;
    if control.is_empty()
        && let Some(store) = store
    {
        // The store hands out one chunk at a time: go on while the socket takes whole
        // chunks.
        loop {
            let pending = store.unsent();
            if pending.is_empty() {
                break;
            }
            let n = write_some(out, pending)?;
            let whole = n == pending.len();
            store.mark_sent(n);
            total += n;
            if !whole {
                break;
            }
        }
    }
    Ok(total)
}

/// Writes as much of `bytes` as the socket takes now.
fn write_some(stream: &mut impl Write, bytes: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < bytes.len() {
        match stream.write(&bytes[done..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "socket took nothing",
                ));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// What framing a connection's buffer came to.
enum Framed {
    /// Every complete packet handled; more bytes are needed.
    NeedBytes,
    /// Stopped: the matcher's ring is full.
    Blocked,
    /// The connection was closed.
    Closed,
}

/// What one egress round did.
enum Egress {
    Idle,
    Moved,
    Done,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes `budget` more bytes, then would block.
    struct Throttled {
        taken: Vec<u8>,
        budget: usize,
    }

    impl Write for Throttled {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = bytes.len().min(self.budget);
            self.budget -= n;
            self.taken.extend_from_slice(&bytes[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The packet types of a SoupBinTCP byte stream, in order; panics if it does not frame.
    fn packet_types(mut bytes: &[u8]) -> Vec<u8> {
        let mut types = Vec::new();
        while !bytes.is_empty() {
            let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
            assert!(len >= 1 && bytes.len() >= 2 + len, "torn packet: {bytes:?}");
            types.push(bytes[2]);
            bytes = &bytes[2 + len..];
        }
        types
    }

    /// A gateway on its own (no matcher behind its rings), and a listener of the test's
    /// whose accepted connections the test admits itself, so it decides what is unread
    /// in each socket when a new connection is admitted.
    fn gateway_alone(extra: &str) -> (Gateway, std::net::TcpListener, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "ironmatch-admit-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let text = exercise::config_text(&dir).replace(
            "session_store_bytes = 65536",
            &format!("session_store_bytes = 65536\n{extra}"),
        );
        let config = Config::parse(&text, "test").unwrap();
        let poll = Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let ring = || Arc::new(Ring::new(64, crate::pipeline::Wake::None));
        let gateway = Gateway::new(
            &config,
            poll,
            waker,
            listener,
            ring(),
            ring(),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
        let test_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (gateway, test_listener, dir)
    }

    /// A connection from `source` to `listener`, admitted by `gateway`.
    fn admit_from(
        gateway: &mut Gateway,
        listener: &std::net::TcpListener,
        source: [u8; 4],
        first_bytes: &[u8],
    ) -> std::net::TcpStream {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
        socket
            .connect(&listener.local_addr().unwrap().into())
            .unwrap();
        let mut client: std::net::TcpStream = socket.into();
        client.write_all(first_bytes).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        // What the client wrote is in the accepted socket before it is admitted.
        std::thread::sleep(Duration::from_millis(50));
        accepted.set_nonblocking(true).unwrap();
        gateway.admit(TcpStream::from_std(accepted), peer);
        client
    }

    /// With the pending slots full, a new connection is admitted by serving the oldest
    /// pending one; when that one's Login Request was waiting in its socket, its login
    /// makes the room, and no other pending connection is closed (one more used to be).
    #[test]
    fn a_login_found_waiting_makes_room_and_evicts_no_one() {
        let (mut gateway, listener, dir) =
            gateway_alone("pending_max = 2\npending_per_address_max = 2");
        let mut login = Vec::new();
        soupbin::write_login_request(&mut login, "FZ1", "pw1", "", 1);
        let _member = admit_from(&mut gateway, &listener, [127, 0, 0, 2], &login);
        let _quiet = admit_from(&mut gateway, &listener, [127, 0, 0, 3], b"");
        let _new = admit_from(&mut gateway, &listener, [127, 0, 0, 4], b"");
        let open: Vec<_> = gateway.conns.iter().flatten().collect();
        assert_eq!(open.len(), 3, "the quiet connection is still open");
        assert_eq!(open.iter().filter(|c| c.user.is_some()).count(), 1);
        let stats = gateway.counters.stats();
        assert_eq!(
            (stats.evicted, stats.refused, stats.logins),
            (0, 0, 1),
            "{stats:?}"
        );
        drop(gateway);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn address_groups_are_an_ipv4_address_or_an_ipv6_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(address_group(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(address_group(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            address_group(ip("2001:db8:1:2:3:4:5:6")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(
            address_group(ip("2001:db8:1:2::1")),
            address_group(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn a_heartbeat_never_lands_inside_a_half_written_packet() {
        // Every cut of the stream: the socket takes `cut` bytes, then a heartbeat is
        // queued, then the socket drains.
        for cut in 0..=3 * 23 {
            let mut user = SessionStore::new(0, None);
            for m in [b'A', b'B', b'C'] {
                user.append(|out| out.extend_from_slice(&[m; 20]));
            }
            user.start_at(1);
            let mut socket = Throttled {
                taken: Vec::new(),
                budget: cut,
            };
            let mut control = Vec::new();
            write_pending(&mut socket, &mut control, Some(&mut user)).unwrap();
            soupbin::write_empty(&mut control, kind::SERVER_HEARTBEAT);
            write_pending(&mut socket, &mut control, Some(&mut user)).unwrap();
            socket.budget = usize::MAX;
            write_pending(&mut socket, &mut control, Some(&mut user)).unwrap();
            let types = packet_types(&socket.taken);
            let mut sequenced = types.clone();
            sequenced.retain(|&t| t == kind::SEQUENCED);
            assert_eq!(sequenced.len(), 3, "cut at {cut}: {types:?}");
            assert_eq!(types.len(), 4, "cut at {cut}: one heartbeat");
            assert!(control.is_empty() && user.unsent().is_empty());
        }
    }
}
