//! The operator's actions: `POST` routes of the endpoint, carried to the gateway, which
//! turns each into a sequenced, journaled command; the result comes back once journaled.
//!
//! ```text
//! im-admin ──ActionRequest (queue + wake)──► gateway ──Venue(Operator{request})──► matcher
//!    ▲                                                                                │
//!    └──────── ActionReply ◄── gateway egress ◄── OperatorDone{request} (journaled) ◄─┘
//! ```
//! Disconnecting a session is the gateway's own: the session is closed (its `Disconnect`
//! command is journaled, with cancel-on-disconnect as configured) and the reply says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender};
use serde_json::{Value, json};

use crate::book::{OperatorOutcome, TradingState};

/// How long the endpoint waits for an action's result before answering 504.
pub const REPLY_WAIT_MAX: Duration = Duration::from_secs(5);

/// After the wait, how long more a request the gateway has taken is given to be answered
/// or numbered (it is, within the gateway's same turn).
const TAKEN_WAIT_MAX: Duration = Duration::from_millis(100);

/// Actions waiting for the gateway, at most.
pub const QUEUE_MAX: usize = 64;

/// What an operator asks for, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminAction {
    /// Set one instrument's trading state, optionally canceling its resting orders.
    SetState {
        /// Symbol as given.
        symbol: String,
        /// New state.
        state: TradingState,
        /// ITCH reason, up to 4 characters.
        reason: String,
        /// Cancel the instrument's resting orders (reason halted).
        cancel: bool,
    },
    /// The venue-wide halt on or off.
    VenueHalt(bool),
    /// Cancel every resting order of a user.
    CancelUser(String),
    /// Cancel every resting order of an instrument.
    CancelInstrument(String),
    /// Disconnect a user's session.
    Kick(String),
}

/// The result of an action: an HTTP status and a JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionReply {
    /// 200 done, 404 unknown symbol or user, 400 a bad argument.
    pub status: u16,
    /// What happened.
    pub body: Value,
}

impl ActionReply {
    /// A refusal before anything was sequenced.
    pub fn refused(status: u16, why: impl Into<String>) -> ActionReply {
        ActionReply {
            status,
            body: json!({ "ok": false, "error": why.into() }),
        }
    }

    /// The reply for the matcher's outcome of `action`, with the `request` number the
    /// journal holds and, for a state change, the state it left `in_force` (its Trading
    /// Action's): where that is not the state asked for (a resume under the venue halt),
    /// the reply says so.
    pub fn from_outcome(
        action: &AdminAction,
        request: u64,
        outcome: OperatorOutcome,
        in_force: Option<TradingState>,
    ) -> ActionReply {
        match outcome {
            OperatorOutcome::Done { canceled } => {
                let mut said = describe(action);
                if let (AdminAction::SetState { state, .. }, Some(now)) = (action, in_force)
                    && now != *state
                {
                    said.push_str(&format!(
                        "; in force: {} (the venue halt holds every instrument until resume-all)",
                        state_name(now)
                    ));
                }
                ActionReply {
                    status: 200,
                    body: json!({
                        "ok": true,
                        "request": request,
                        "action": said,
                        "canceled": canceled,
                    }),
                }
            }
            OperatorOutcome::UnknownSymbol => ActionReply::refused(404, "no such instrument"),
            OperatorOutcome::UnknownUser => ActionReply::refused(404, "no such user"),
        }
    }
}

/// A trading state as the replies say it.
fn state_name(state: TradingState) -> &'static str {
    match state {
        TradingState::Trading => "trading",
        TradingState::Halted => "halted",
        TradingState::Paused => "paused",
        TradingState::QuotationOnly => "quotation only",
    }
}

/// One line saying what an action does.
pub fn describe(action: &AdminAction) -> String {
    match action {
        AdminAction::SetState {
            symbol,
            state,
            reason,
            cancel,
        } => format!(
            "{symbol}: {}{}{}",
            state_name(*state),
            if reason.trim().is_empty() {
                String::new()
            } else {
                format!(" (reason {})", reason.trim())
            },
            if *cancel {
                ", resting orders canceled"
            } else {
                ""
            }
        ),
        AdminAction::VenueHalt(true) => "venue halted: every instrument".to_string(),
        AdminAction::VenueHalt(false) => "venue halt lifted".to_string(),
        AdminAction::CancelUser(user) => format!("{user}: resting orders canceled"),
        AdminAction::CancelInstrument(symbol) => format!("{symbol}: resting orders canceled"),
        AdminAction::Kick(user) => format!("{user}: session disconnected"),
    }
}

/// An action on its way to the gateway, with where its reply goes.
#[derive(Debug)]
pub struct ActionRequest {
    /// What to do.
    pub action: AdminAction,
    /// Where the result goes (the endpoint waits on it).
    pub reply: Sender<ActionReply>,
    /// Who has the request: the gateway takes it ([`Self::take`]) or the endpoint, having
    /// waited in vain, abandons it, whichever comes first; an abandoned request is never
    /// applied, so its 504 can say so.
    claim: Arc<Claim>,
}

/// A request's claim: [`QUEUED`], then [`TAKEN`] or [`ABANDONED`]; and the operator
/// request number it was sequenced as (0: none yet).
#[derive(Debug, Default)]
struct Claim {
    state: AtomicU8,
    request: AtomicU64,
}

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

impl ActionRequest {
    /// A request for `action`, its result going to `reply`.
    pub fn new(action: AdminAction, reply: Sender<ActionReply>) -> ActionRequest {
        ActionRequest {
            action,
            reply,
            claim: Arc::default(),
        }
    }

    /// Takes the request for the gateway: `false` if the endpoint gave up on it first (it
    /// answered 504 saying nothing was done: the request must be dropped unapplied).
    pub fn take(&self) -> bool {
        self.claim
            .state
            .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Records the operator request number the action was sequenced as, for a 504.
    pub fn sequenced_as(&self, request: u64) {
        self.claim.request.store(request, Ordering::Release);
    }
}

/// The endpoint's side: sends actions to the gateway and wakes it.
#[derive(Clone)]
pub struct ActionSender {
    queue: Sender<ActionRequest>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for ActionSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionSender").finish_non_exhaustive()
    }
}

/// A queue of actions: the endpoint's sender (waking the gateway with `wake`) and the
/// gateway's receiver.
pub fn queue(wake: Arc<dyn Fn() + Send + Sync>) -> (ActionSender, Receiver<ActionRequest>) {
    let (queue, receiver) = crossbeam::channel::bounded(QUEUE_MAX);
    (ActionSender { queue, wake }, receiver)
}

impl ActionSender {
    /// Hands `action` to the gateway and waits for its result (at most
    /// [`REPLY_WAIT_MAX`]).
    pub fn run(&self, action: AdminAction) -> ActionReply {
        self.run_within(action, REPLY_WAIT_MAX)
    }

    /// [`Self::run`], waiting at most `wait`.
    pub fn run_within(&self, action: AdminAction, wait: Duration) -> ActionReply {
        let (reply, result) = crossbeam::channel::bounded(1);
        let request = ActionRequest::new(action, reply);
        let claim = Arc::clone(&request.claim);
        if self.queue.try_send(request).is_err() {
            return ActionReply::refused(
                503,
                "the engine is not taking actions (stopping, or too many waiting)",
            );
        }
        (self.wake)();
        match result.recv_timeout(wait) {
            Ok(reply) => reply,
            Err(crossbeam::channel::RecvTimeoutError::Timeout) => {
                let abandoned = claim
                    .state
                    .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                // The gateway may have answered between the wait's end and the claim; and
                // one it has taken is, within its same turn, answered (a refusal, a kick)
                // or numbered: a moment more tells which.
                if let Ok(reply) = result.try_recv() {
                    return reply;
                }
                if !abandoned {
                    let until = std::time::Instant::now() + TAKEN_WAIT_MAX;
                    while claim.request.load(Ordering::Acquire) == 0
                        && std::time::Instant::now() < until
                    {
                        if let Ok(reply) = result.recv_timeout(Duration::from_millis(5)) {
                            return reply;
                        }
                    }
                }
                if abandoned {
                    ActionReply::refused(
                        504,
                        "no result in time; not applied (the engine had not taken it, and will not): safe to retry",
                    )
                } else {
                    match claim.request.load(Ordering::Acquire) {
                        0 => ActionReply::refused(
                            504,
                            "no result in time; taken by the engine, outcome not known: see the journal before retrying",
                        ),
                        request => ActionReply::refused(
                            504,
                            format!(
                                "no result in time; sequenced as operator request {request}, outcome pending: see the journal (replay --json) before retrying"
                            ),
                        ),
                    }
                }
            }
            // The engine stopped with the action unanswered. One it never took (posted while
            // it drained: the queue went with the gateway) was not applied, and the claim
            // makes sure it never is; one it took may have been (in a cluster the next
            // leader may apply an entry the stopped one proposed), so the answer says what
            // is known, not that it was not done.
            Err(crossbeam::channel::RecvTimeoutError::Disconnected) => {
                let never_taken = claim
                    .state
                    .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if never_taken {
                    ActionReply::refused(
                        503,
                        "the engine stopped before taking the action: not applied; safe to retry once it is back",
                    )
                } else {
                    ActionReply::refused(
                        503,
                        "the engine stopped before answering: the action may have been applied (in a cluster, by the next leader): see the journal before retrying",
                    )
                }
            }
        }
    }
}

/// The action a `POST` path asks for: `/halt/SYMBOL`, `/resume/SYMBOL`, `/pause/SYMBOL`,
/// `/quote-only/SYMBOL`, `/halt-all`, `/resume-all`, `/cancel-user/USER`,
/// `/cancel-instrument/SYMBOL`, `/kick/USER`; `query` may hold `cancel=true` (halt, pause,
/// quote-only) and `reason=XXXX` (state changes), each once; a name, a key and a value are
/// percent-decoded (`+` is not a space). `None`: not an action path.
pub fn parse(path: &str, query: &str) -> Option<Result<AdminAction, String>> {
    let path = path.trim_end_matches('/');
    let (verb, name) = match path.strip_prefix('/')?.split_once('/') {
        Some((verb, name)) => (verb, Some(name)),
        None => (path.strip_prefix('/')?, None),
    };
    // A name and the query's keys and values are percent-decoded once split (`ironmatch
    // admin` encodes them), so a symbol with `&`, `?` or `/` can be named, and a reason
    // cannot carry another parameter.
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map(|t| t.into_owned())
            .map_err(|_| format!("{text:?}: not UTF-8 once percent-decoded"))
    };
    // Not an action path whatever its query (an unknown path is a 404, not a bad query).
    match (verb, name) {
        (
            "halt" | "pause" | "quote-only" | "resume" | "cancel-user" | "cancel-instrument"
            | "kick",
            _,
        )
        | ("halt-all" | "resume-all", None) => {}
        _ => return None,
    }
    let name = match name.map(decode).transpose() {
        Ok(name) => name,
        Err(e) => return Some(Err(e)),
    };
    let name = name.as_deref();
    // What each verb takes: anything else is refused, so that a parameter the operator
    // meant (`halt-all?cancel=true`) is never dropped while the rest is done.
    let takes: &[&str] = match verb {
        "halt" | "pause" | "quote-only" => &["cancel", "reason"],
        "resume" => &["reason"],
        _ => &[],
    };
    let mut cancel = false;
    let mut reason = None;
    let mut seen: Vec<String> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        // A bare key: `cancel` alone means cancel; a bare `reason` names none (it became
        // the reason "true").
        let (key, value, bare) = match pair.split_once('=') {
            Some((key, value)) => (key, value, false),
            None => (pair, "true", true),
        };
        let (key, value) = match (decode(key), decode(value)) {
            (Ok(key), Ok(value)) => (key, value),
            (Err(e), _) | (_, Err(e)) => return Some(Err(e)),
        };
        // Twice: which one was meant is not known (the last one used to win).
        if seen.contains(&key) {
            return Some(Err(format!("{key:?} given twice")));
        }
        seen.push(key.clone());
        let (key, value) = (key.as_str(), value.as_str());
        if matches!(key, "cancel" | "reason") && !takes.contains(&key) {
            return Some(Err(format!(
                "{verb} takes no {key:?} parameter{}",
                if takes.is_empty() {
                    String::new()
                } else {
                    format!(" (it takes {})", takes.join(", "))
                }
            )));
        }
        match key {
            "cancel" => {
                cancel = match value {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    // A misspelt value must not halt without the cancel that was meant.
                    _ => {
                        return Some(Err(format!(
                            "cancel={value:?}: true, 1, yes, false, 0 or no"
                        )));
                    }
                }
            }
            "reason" if bare || value.is_empty() => {
                return Some(Err(
                    "reason needs a value: up to 4 printable characters".to_string()
                ));
            }
            "reason" => reason = Some(value.to_string()),
            _ => return Some(Err(format!("unknown parameter {key:?}"))),
        }
    }
    let state_change = |state: TradingState, default_reason: &str| {
        let symbol = name.filter(|n| !n.is_empty());
        let reason = reason.clone().unwrap_or_else(|| default_reason.to_string());
        Some(match symbol {
            None => Err(format!("{verb} needs a symbol: POST /{verb}/SYMBOL")),
            // Not a symbol's shape (an unknown one is 404; this is a bad argument).
            Some(symbol) if crate::types::Symbol::from_str_padded(symbol).is_none() => Err(
                format!("{symbol:?} is not a symbol: 1 to 8 printable characters"),
            ),
            Some(_) if reason.len() > 4 || !reason.bytes().all(|b| b.is_ascii_graphic()) => {
                Err(format!("reason {reason:?}: up to 4 printable characters"))
            }
            Some(symbol) => Ok(AdminAction::SetState {
                symbol: symbol.to_string(),
                state,
                reason,
                cancel: cancel && state != TradingState::Trading,
            }),
        })
    };
    let named = |make: fn(String) -> AdminAction, what: &str| {
        Some(match name.filter(|n| !n.is_empty()) {
            Some(n) => Ok(make(n.to_string())),
            None => Err(format!(
                "{verb} needs a {what}: POST /{verb}/{}",
                what.to_uppercase()
            )),
        })
    };
    match (verb, name) {
        ("halt", _) => state_change(TradingState::Halted, "O1"),
        ("pause", _) => state_change(TradingState::Paused, "O1"),
        ("quote-only", _) => state_change(TradingState::QuotationOnly, "O1"),
        ("resume", _) => state_change(TradingState::Trading, ""),
        ("halt-all", None) => Some(Ok(AdminAction::VenueHalt(true))),
        ("resume-all", None) => Some(Ok(AdminAction::VenueHalt(false))),
        ("cancel-user", _) => named(AdminAction::CancelUser, "user"),
        ("cancel-instrument", Some(n)) if crate::types::Symbol::from_str_padded(n).is_none() => {
            Some(Err(format!(
                "{n:?} is not a symbol: 1 to 8 printable characters"
            )))
        }
        ("cancel-instrument", _) => named(AdminAction::CancelInstrument, "symbol"),
        ("kick", _) => named(AdminAction::Kick, "user"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine that stops with an action unanswered: one it never took (posted while it
    /// drained, dropped with its queue) is answered "not applied" (it was "may have been
    /// applied", and the operator who believed it found the instrument trading); one it
    /// took still says it may have been.
    #[test]
    fn an_action_the_stopped_engine_never_took_is_not_applied() {
        for take_first in [false, true] {
            let (sender, receiver) = queue(Arc::new(|| {}));
            let gateway = std::thread::spawn(move || {
                let request = receiver.recv().unwrap();
                if take_first {
                    assert!(request.take());
                }
                // The gateway ends: the request and its queue are dropped unanswered.
                drop(request);
                drop(receiver);
            });
            let reply = sender.run_within(AdminAction::VenueHalt(false), Duration::from_secs(10));
            gateway.join().unwrap();
            assert_eq!(reply.status, 503);
            let text = reply.body.to_string();
            if take_first {
                assert!(text.contains("may have been applied"), "{text}");
            } else {
                assert!(text.contains("not applied"), "{text}");
            }
        }
    }

    /// A bare or empty `reason` names no reason and is refused (a bare one became the
    /// reason "true", an empty one a blank reason); a bare `cancel` still means cancel. A
    /// symbol of no symbol's shape is a bad argument (400), not an unknown symbol (404).
    #[test]
    fn a_reason_needs_a_value_and_a_symbol_its_shape() {
        for query in ["reason", "reason=", "cancel&reason"] {
            let parsed = parse("/halt/AAPL", query);
            assert!(
                matches!(&parsed, Some(Err(e)) if e.contains("reason needs a value")),
                "{query}: {parsed:?}"
            );
        }
        assert!(matches!(
            parse("/halt/AAPL", "cancel"),
            Some(Ok(AdminAction::SetState { cancel: true, .. }))
        ));
        for path in [
            "/halt/TOOLONGSYM",
            "/resume/TOOLONGSYM",
            "/cancel-instrument/TOOLONGSYM",
        ] {
            let parsed = parse(path, "");
            assert!(
                matches!(&parsed, Some(Err(e)) if e.contains("not a symbol")),
                "{path}: {parsed:?}"
            );
        }
        assert!(matches!(parse("/resume/AAPL", ""), Some(Ok(_))));
    }

    #[test]
    fn paths_name_the_actions() {
        assert_eq!(
            parse("/halt/AAPL", "cancel=true&reason=T1"),
            Some(Ok(AdminAction::SetState {
                symbol: "AAPL".into(),
                state: TradingState::Halted,
                reason: "T1".into(),
                cancel: true
            }))
        );
        assert_eq!(
            parse("/resume/AAPL", ""),
            Some(Ok(AdminAction::SetState {
                symbol: "AAPL".into(),
                state: TradingState::Trading,
                reason: "".into(),
                cancel: false
            }))
        );
        assert_eq!(
            parse("/halt-all", ""),
            Some(Ok(AdminAction::VenueHalt(true)))
        );
        assert_eq!(
            parse("/resume-all/", ""),
            Some(Ok(AdminAction::VenueHalt(false)))
        );
        assert_eq!(
            parse("/cancel-user/MM1", ""),
            Some(Ok(AdminAction::CancelUser("MM1".into())))
        );
        assert_eq!(
            parse("/kick/MM1", ""),
            Some(Ok(AdminAction::Kick("MM1".into())))
        );
        assert!(matches!(parse("/halt", ""), Some(Err(_))));
        assert!(matches!(
            parse("/halt/AAPL", "reason=TOOLONG"),
            Some(Err(_))
        ));
        assert!(matches!(parse("/halt/AAPL", "force=1"), Some(Err(_))));
        for misspelt in ["cancel=TRUE", "cancel=on", "cancel=tru"] {
            assert!(
                matches!(parse("/halt/AAPL", misspelt), Some(Err(_))),
                "{misspelt}"
            );
        }
        assert!(matches!(
            parse("/halt/AAPL", "cancel=no"),
            Some(Ok(AdminAction::SetState { cancel: false, .. }))
        ));
        assert_eq!(parse("/metrics", ""), None);
        assert_eq!(parse("/nope/x", ""), None);
    }

    /// Names and parameters are percent-decoded once split: an encoded `&` is part of the
    /// name or the value, not another parameter; a bad encoding is refused.
    #[test]
    fn names_and_values_are_percent_decoded() {
        assert_eq!(
            parse("/halt/A%26B%2FC", "reason=T%31"),
            Some(Ok(AdminAction::SetState {
                symbol: "A&B/C".into(),
                state: TradingState::Halted,
                reason: "T1".into(),
                cancel: false
            }))
        );
        // A reason smuggling a parameter stays one (too long) reason: refused.
        assert!(matches!(
            parse("/halt/AAPL", "reason=A%26cancel%3Dtrue"),
            Some(Err(e)) if e.contains("reason")
        ));
        assert!(matches!(parse("/kick/%FF", ""), Some(Err(_))));
        // Given twice: refused (the last one used to win).
        assert!(matches!(
            parse("/halt/AAPL", "cancel=true&cancel=no"),
            Some(Err(e)) if e.contains("twice")
        ));
        assert_eq!(
            parse("/kick/MM%31", ""),
            Some(Ok(AdminAction::Kick("MM1".into())))
        );
    }

    /// A state change whose Trading Action left another state in force (a resume under the
    /// venue halt) says so; one that took effect says only what it did.
    #[test]
    fn a_reply_says_the_state_in_force_when_it_is_not_the_one_asked_for() {
        let resume = AdminAction::SetState {
            symbol: "AAPL".into(),
            state: TradingState::Trading,
            reason: String::new(),
            cancel: false,
        };
        let done = OperatorOutcome::Done { canceled: 0 };
        let said = |in_force| {
            ActionReply::from_outcome(&resume, 3, done, in_force).body["action"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(said(Some(TradingState::Trading)), "AAPL: trading");
        let held = said(Some(TradingState::Halted));
        assert!(
            held.starts_with("AAPL: trading; in force: halted"),
            "{held}"
        );
    }

    /// A result that does not come in time: if the engine had not taken the request, the
    /// 504 says it was not applied and the engine drops it when it gets to it (a retry
    /// cannot apply it twice); if it had, the 504 names the request it was sequenced as.
    #[test]
    fn a_request_given_up_on_is_never_applied_and_a_taken_one_is_named() {
        let (sender, queue) = queue(Arc::new(|| {}));
        let halt = AdminAction::VenueHalt(true);
        let wait = Duration::from_millis(50);
        let reply = sender.run_within(halt.clone(), wait);
        let error = reply.body["error"].as_str().unwrap_or_default().to_string();
        assert_eq!(reply.status, 504);
        assert!(error.contains("not applied"), "{error}");
        let late = queue.try_recv().expect("still queued");
        assert!(
            !late.take(),
            "the engine must not take an abandoned request"
        );
        // Taken and sequenced, its result not back in time (the engine takes it well
        // within the wait, and holds it until the endpoint has answered).
        let (answered, done) = crossbeam::channel::bounded::<()>(1);
        let engine = std::thread::spawn(move || {
            let request = queue.recv().unwrap();
            let taken = request.take();
            request.sequenced_as(7);
            let _ = done.recv();
            taken
        });
        let reply = sender.run_within(halt, Duration::from_secs(2));
        answered.send(()).unwrap();
        assert!(engine.join().unwrap(), "taken");
        let error = reply.body["error"].as_str().unwrap_or_default().to_string();
        assert_eq!(reply.status, 504);
        assert!(error.contains("operator request 7"), "{error}");
    }

    /// A parameter the verb does not take is refused, not dropped while the rest is done
    /// (`halt-all?cancel=true` halted without canceling).
    #[test]
    fn a_parameter_the_verb_does_not_take_is_refused() {
        for (path, query) in [
            ("/halt-all", "cancel=true"),
            ("/halt-all", "reason=T1"),
            ("/resume-all", "reason=T1"),
            ("/resume/AAPL", "cancel=true"),
            ("/cancel-user/MM1", "cancel=true"),
            ("/cancel-instrument/AAPL", "reason=T1"),
            ("/kick/MM1", "cancel"),
        ] {
            let refused = parse(path, query);
            assert!(
                matches!(&refused, Some(Err(e)) if e.contains("takes no")),
                "{path}?{query}: {refused:?}"
            );
        }
        assert!(matches!(
            parse("/resume/AAPL", "reason=T1"),
            Some(Ok(AdminAction::SetState { .. }))
        ));
        assert!(matches!(
            parse("/quote-only/AAPL", "cancel=true&reason=T1"),
            Some(Ok(AdminAction::SetState { cancel: true, .. }))
        ));
    }
}
