//! The operator's control plane: an HTTP endpoint on its own thread (`im-admin`), beside
//! the pipeline, and the `ironmatch admin` client.
//!
//! ```text
//! gateway, matcher, journal writer ──relaxed stores──► EngineMetrics ◄──loads── im-admin
//!                                                                     GET /metrics, /status
//! ```
//! What the endpoint reads, the stages publish ([`metrics`]): each counter has one writer,
//! the stage that owns it; the books' tops are published by the matcher at most every
//! 100 ms; ring depths are the rings' own lengths. The endpoint never takes a lock a stage
//! could wait on, and a stage never waits for the endpoint.
//!
//! Routes (see [`route`]): `GET /metrics` (Prometheus text format 0.0.4, encoded by
//! `prometheus-client`), `GET /status` (JSON). Unknown path: 404; another method: 405 with
//! `Allow`. When a token is configured, every request needs `Authorization: Bearer TOKEN`
//! (401 with `WWW-Authenticate: Bearer` otherwise); off loopback the endpoint does not
//! start without one (see [`AdminSection::resolve`](crate::config::AdminSection::resolve)).
//!
//! `hyper` (HTTP/1.1) serves the connections on thread `im-admin`, on a current-thread
//! `tokio` runtime of its own; an action's wait for the journal runs on one of the runtime's
//! blocking threads, so other requests are answered meanwhile. A request's body is
//! never read (no route takes one), at most [`CONNECTIONS_MAX`] connections are open at
//! once (at the cap, one with no request being answered is closed to make room for the new
//! one: the oldest of the address holding the most, so a flood from one address closes its
//! own), a request's head must arrive within
//! [`HEADER_WAIT_MAX`] and a connection lives at most [`CONNECTION_TIME_MAX`] (and a
//! request being answered then: up to [`actions::REPLY_WAIT_MAX`] and a second more), so
//! no client can hold the endpoint, and no header can make it allocate more than its
//! buffer.

pub mod actions;
pub mod client;
pub mod expose;
pub mod metrics;

use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, HOST, HeaderName, HeaderValue, ORIGIN};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::config::AdminSettings;
use crate::gateway::AdmissionCounters;
use crate::pipeline::{Record, Ring};
use metrics::EngineMetrics;

/// HTTP methods, as [`route`] takes them.
pub use hyper::Method;

/// What the endpoint reads: the stages' metrics and the names that label them.
#[derive(Debug)]
pub struct EngineView {
    /// Published by the stages.
    pub metrics: Arc<EngineMetrics>,
    /// The rings between stages, by name, for their depths.
    pub rings: Vec<(&'static str, Arc<Ring<Record>>)>,
    /// The gateway's admission counters.
    pub admission: Arc<AdmissionCounters>,
    /// Instrument symbols, in configuration order.
    pub symbols: Vec<String>,
    /// Usernames, in configuration order.
    pub users: Vec<String>,
    /// The threading mode in use.
    pub threading: &'static str,
    /// Where the operator's actions go (the gateway).
    pub actions: Option<actions::ActionSender>,
    /// The trading day served and its session name (with a `[venue]`).
    pub day: Option<(String, String)>,
}

/// The running endpoint.
pub struct AdminServer {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// Connections open at once; at the cap, a new connection closes the oldest with no
/// request being answered (or, if every one is being answered, is closed itself).
pub const CONNECTIONS_MAX: usize = 32;
/// How long a connection may take to send a request's head.
pub const HEADER_WAIT_MAX: Duration = Duration::from_secs(5);
/// How long a connection may stay open, requests or not (a request being answered then
/// is answered before it closes).
pub const CONNECTION_TIME_MAX: Duration = Duration::from_secs(60);

/// How long binding waits for an address still in use.
pub const BIND_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// The endpoint's socket, bound early so that a busy or forbidden address stops the engine
/// before any stage starts.
pub struct AdminListener {
    listener: TcpListener,
    token: Option<String>,
    /// How long a connection may stay open ([`CONNECTION_TIME_MAX`]; shorter in tests).
    connection_time: Duration,
}

impl AdminListener {
    /// Binds `settings.listen`. An address in use is tried again for up to
    /// [`BIND_WAIT_MAX`]: when `serve` starts the next trading day, the previous day's
    /// endpoint may still be closing its socket.
    pub fn bind(settings: &AdminSettings) -> io::Result<AdminListener> {
        let deadline = std::time::Instant::now() + BIND_WAIT_MAX;
        let listener = loop {
            match TcpListener::bind(settings.listen) {
                Ok(listener) => break listener,
                Err(e)
                    if e.kind() == io::ErrorKind::AddrInUse
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("admin.listen {}: {e}", settings.listen),
                    ));
                }
            }
        };
        Ok(AdminListener {
            listener,
            token: settings.token.clone(),
            connection_time: CONNECTION_TIME_MAX,
        })
    }

    /// Starts answering on thread `im-admin`, reading `view`.
    pub fn serve(self, view: EngineView) -> io::Result<AdminServer> {
        AdminServer::start(self, view)
    }
}

impl AdminServer {
    fn start(bound: AdminListener, view: EngineView) -> io::Result<AdminServer> {
        let addr = bound.listener.local_addr()?;
        bound.listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| io::Error::other(format!("admin endpoint on {addr}: {e}")))?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(bound.listener)
                .map_err(|e| io::Error::new(e.kind(), format!("admin endpoint on {addr}: {e}")))?
        };
        let handler = Arc::new(Handler::new(view, bound.token));
        let connection_time = bound.connection_time;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("im-admin".to_string())
            .spawn(move || {
                runtime.block_on(serve_connections(
                    listener,
                    handler,
                    stopped,
                    connection_time,
                ));
                // Closes the connections still open; an action still waiting for its
                // result (at most REPLY_WAIT_MAX) is left to end on its own thread.
                runtime.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(AdminServer { addr, stop, thread })
    }

    /// Where the endpoint listens (the port is known here when `listen` asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering and closes the listener and every connection.
    pub fn stop(self) {
        // The thread may have ended already (a failed runtime); then there is nothing to stop.
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            eprintln!("ironmatch admin: the endpoint's thread panicked");
        }
    }
}

/// Accepts until `stopped`, each connection served by a task of its own within the limits
/// of the module's documentation.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    handler: Arc<Handler>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
    connection_time: Duration,
) {
    let mut open: std::collections::VecDeque<Open> = std::collections::VecDeque::new();
    let mut evicted = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok((stream, peer)) => (stream, crate::gateway::admission::address_group(peer.ip())),
            Err(e) => {
                // Out of file descriptors, for example: wait rather than spin.
                eprintln!("ironmatch admin: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        open.retain(|c| !c.task.is_finished());
        if open.len() >= CONNECTIONS_MAX {
            // Full: a connection with no request being answered makes room (an idle or
            // half-sent one, or one between requests), so that connections held open by
            // anyone cannot keep an operator out; if every one is being answered, the new
            // one waits for none and is closed.
            let Some(oldest) = evictable(&open) else {
                continue;
            };
            if let Some(c) = open.remove(oldest) {
                c.task.abort();
            }
            evicted += 1;
            if evicted.is_power_of_two() {
                eprintln!(
                    "ironmatch admin: {evicted} idle connections closed to make room: {CONNECTIONS_MAX} open"
                );
            }
        }
        let handler = Arc::clone(&handler);
        let busy = Arc::new(AtomicBool::new(false));
        let in_service = Arc::clone(&busy);
        let task = tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let handler = Arc::clone(&handler);
                let busy = Busy::mark(Arc::clone(&in_service));
                async move {
                    let response = handler.answer(&request).await;
                    drop(busy);
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_WAIT_MAX)
                .serve_connection(TokioIo::new(stream), service);
            // A client that went away, or took too long, is its own loss; but a request
            // being answered when the connection's time is up is answered first (an
            // action applied must not lose its answer): the connection then closes,
            // dropped at the latest once an action's wait could have ended.
            let mut connection = std::pin::pin!(connection);
            if tokio::time::timeout(connection_time, connection.as_mut())
                .await
                .is_err()
            {
                connection.as_mut().graceful_shutdown();
                let last = actions::REPLY_WAIT_MAX + Duration::from_secs(1);
                let _ = tokio::time::timeout(last, connection).await;
            }
        });
        open.push_back(Open {
            task: task.abort_handle(),
            busy,
            peer,
        });
    }
}

/// The connection to close to make room: among those with no request being answered, the
/// oldest of the address group holding the most open connections (addresses grouped as
/// the gateway groups them, an IPv6 address by its /64:
/// [`address_group`](crate::gateway::admission::address_group)). A flood from one address
/// closes its own connections, never the operator's on another address, even one just
/// accepted whose request has not arrived (whose token is not yet checked); behind a proxy
/// every connection has its address, and the oldest idle one goes.
fn evictable(open: &std::collections::VecDeque<Open>) -> Option<usize> {
    let held = |ip: std::net::IpAddr| open.iter().filter(|c| c.peer == ip).count();
    let mut best: Option<(usize, usize)> = None;
    for (i, c) in open.iter().enumerate() {
        if c.busy.load(Ordering::Relaxed) {
            continue;
        }
        let count = held(c.peer);
        if best.is_none_or(|(_, most)| count > most) {
            best = Some((i, count));
        }
    }
    best.map(|(i, _)| i)
}

/// An open connection, oldest first in the accept loop's list.
struct Open {
    task: tokio::task::AbortHandle,
    /// Set while one of its requests is being answered.
    busy: Arc<AtomicBool>,
    /// Where it comes from (its address group).
    peer: std::net::IpAddr,
}

/// Marks a connection busy while it lives (a request being answered).
struct Busy(Arc<AtomicBool>);

impl Busy {
    fn mark(flag: Arc<AtomicBool>) -> Busy {
        flag.store(true, Ordering::Relaxed);
        Busy(flag)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// A response before it is written: status, content type, body, extra headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
    /// Other headers.
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            headers: Vec::new(),
        }
    }

    fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// What a request asks for, once its method and path are known to be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics`.
    Metrics,
    /// `GET /status`.
    Status,
    /// `POST /halt/SYMBOL` and the other actions of [`actions::parse`].
    Action(actions::AdminAction),
}

/// Methods the read routes take (HEAD: the same headers, no body).
const READ: &[Method] = &[Method::GET, Method::HEAD];
/// Methods the action routes take.
const WRITE: &[Method] = &[Method::POST];

/// The route for `method` on `path` with `query`, or the reply that refuses it: 404 for an
/// unknown path, 405 (with `Allow`) for a method the path does not take, 400 for an action
/// with a bad argument.
pub fn route(method: &Method, path: &str, query: &str) -> Result<Route, Reply> {
    let (route, methods) = match path {
        "/metrics" => (Route::Metrics, READ),
        "/status" => (Route::Status, READ),
        _ => match actions::parse(path, query) {
            Some(Ok(action)) => (Route::Action(action), WRITE),
            Some(Err(why)) if *method == Method::POST => {
                return Err(Reply::text(400, format!("{why}\n")));
            }
            Some(Err(_)) => (Route::Status, WRITE),
            None => return Err(Reply::text(404, format!("no such path: {path}\n"))),
        },
    };
    if methods.contains(method) {
        return Ok(route);
    }
    let allow: Vec<&str> = methods.iter().map(Method::as_str).collect();
    Err(
        Reply::text(405, format!("{method} is not allowed on {path}\n"))
            .with_header("Allow", allow.join(", ")),
    )
}

/// Checks `Authorization` against the configured token; `Err` is the 401 to send.
pub fn authorize(token: Option<&str>, authorization: Option<&str>) -> Result<(), Reply> {
    let Some(token) = token else {
        return Ok(());
    };
    let given = authorization.and_then(|value| {
        let (scheme, credentials) = value.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| credentials.trim())
    });
    match given {
        Some(given) if same_bytes(given.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(Reply::text(401, "invalid token\n").with_header(
            "WWW-Authenticate",
            "Bearer realm=\"ironmatch\", error=\"invalid_token\"",
        )),
        None => Err(Reply::text(401, "a bearer token is required\n")
            .with_header("WWW-Authenticate", "Bearer realm=\"ironmatch\"")),
    }
}

/// Refuses what a web page could send through the operator's browser: a request with an
/// `Origin` header (browsers add it to every cross-site `POST`, which a form can send
/// without asking: a page could otherwise halt the venue through a browser on the engine's
/// host or at the end of an SSH tunnel), and, with no token configured, a `Host` that is a
/// name other than `localhost` (a page whose name was made to resolve to 127.0.0.1, DNS
/// rebinding, could otherwise read `/status`). `ironmatch admin`, `curl` and Prometheus
/// send no `Origin`; without a token the endpoint is on loopback, reached by address or as
/// `localhost`; a `Host` that is not text is refused. `Err` is the 403 to send.
pub fn from_a_tool(origin: bool, host: Option<&[u8]>, token: bool) -> Result<(), Reply> {
    if origin {
        return Err(Reply::text(
            403,
            "requests from web pages are refused (the request has an Origin header)\n",
        ));
    }
    if token {
        return Ok(());
    }
    let Some(host) = host else {
        return Ok(());
    };
    let host = String::from_utf8_lossy(host);
    let host = host.as_ref();
    // `name:port`, `1.2.3.4:port`, `[::1]:port`, or any of them without the port; a name
    // may end in a dot; `localhost` and its subdomains resolve to loopback (RFC 6761).
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok()
    {
        Ok(())
    } else {
        Err(Reply::text(
            403,
            format!(
                "Host {host:?} refused: without a token the endpoint answers to its address or localhost\n"
            ),
        ))
    }
}

/// Compares in time that does not depend on where the bytes differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Answers requests on the admin thread.
struct Handler {
    view: Arc<EngineView>,
    token: Option<String>,
    registry: prometheus_client::registry::Registry,
}

impl Handler {
    fn new(view: EngineView, token: Option<String>) -> Handler {
        let view = Arc::new(view);
        Handler {
            registry: expose::registry(Arc::clone(&view)),
            view,
            token,
        }
    }

    /// The reply to `method` on `url` with the given `Authorization` header.
    fn reply(&self, method: &Method, url: &str, authorization: Option<&str>) -> Reply {
        if let Err(refused) = authorize(self.token.as_deref(), authorization) {
            return refused;
        }
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        match route(method, path, query) {
            Ok(Route::Metrics) => {
                let mut body = String::new();
                match prometheus_client::encoding::prometheus_text::encode(
                    &mut body,
                    &self.registry,
                ) {
                    Ok(()) => Reply {
                        status: 200,
                        content_type: prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                        body,
                        headers: Vec::new(),
                    },
                    Err(_) => Reply::text(500, "metrics could not be encoded\n"),
                }
            }
            Ok(Route::Status) => Reply {
                status: 200,
                content_type: "application/json",
                body: format!("{:#}\n", expose::status_json(&self.view)),
                headers: Vec::new(),
            },
            Ok(Route::Action(action)) => {
                let reply = match &self.view.actions {
                    Some(sender) => sender.run(action),
                    None => actions::ActionReply::refused(503, "this engine takes no actions"),
                };
                Reply {
                    status: reply.status,
                    content_type: "application/json",
                    body: format!("{:#}\n", reply.body),
                    headers: Vec::new(),
                }
            }
            Err(refused) => refused,
        }
    }

    /// The response to `request`; its body is not read. An action waits for the journal
    /// (up to [`actions::REPLY_WAIT_MAX`]) on a blocking thread of the runtime, so that the
    /// endpoint goes on serving other connections meanwhile.
    async fn answer(
        self: Arc<Self>,
        request: &hyper::Request<Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let headers = request.headers();
        let authorization = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let url = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let method = request.method().clone();
        let host = headers.get(HOST).map(HeaderValue::as_bytes);
        let reply = if let Err(refused) =
            from_a_tool(headers.contains_key(ORIGIN), host, self.token.is_some())
        {
            refused
        } else if method == Method::POST {
            tokio::task::spawn_blocking(move || self.reply(&method, &url, authorization.as_deref()))
                .await
                .unwrap_or_else(|_| Reply::text(500, "the action's thread failed\n"))
        } else {
            self.reply(&method, &url, authorization.as_deref())
        };
        let mut response = hyper::Response::new(Full::new(Bytes::from(reply.body)));
        *response.status_mut() =
            hyper::StatusCode::from_u16(reply.status).unwrap_or(hyper::StatusCode::OK);
        let headers = std::iter::once(("Content-Type", reply.content_type.to_string()))
            .chain(reply.headers)
            .chain(std::iter::once(("Cache-Control", "no-store".to_string())));
        for (name, value) in headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_answer_404_and_405() {
        assert_eq!(route(&Method::GET, "/metrics", ""), Ok(Route::Metrics));
        assert_eq!(route(&Method::HEAD, "/status", ""), Ok(Route::Status));
        assert_eq!(route(&Method::GET, "/nope", "").unwrap_err().status, 404);
        // An unknown path is unknown whatever its query.
        for method in [Method::GET, Method::POST] {
            assert_eq!(route(&method, "/nope", "x=1").unwrap_err().status, 404);
            assert_eq!(
                route(&method, "/halt-all/AAPL", "").unwrap_err().status,
                404
            );
        }
        assert_eq!(
            route(&Method::POST, "/halt/AAPL", "x=1")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            route(&Method::GET, "/halt/AAPL", "").unwrap_err().status,
            405
        );
        assert_eq!(route(&Method::POST, "/halt", "").unwrap_err().status, 400);
        assert!(matches!(
            route(&Method::POST, "/halt-all", ""),
            Ok(Route::Action(actions::AdminAction::VenueHalt(true)))
        ));
        let refused = route(&Method::POST, "/status", "").unwrap_err();
        assert_eq!(refused.status, 405);
        assert_eq!(refused.headers, vec![("Allow", "GET, HEAD".to_string())]);
    }

    #[test]
    fn the_token_is_checked_when_configured() {
        assert!(authorize(None, None).is_ok());
        let t = Some("s3cret-token");
        assert!(authorize(t, Some("Bearer s3cret-token")).is_ok());
        assert!(authorize(t, Some("bearer  s3cret-token ")).is_ok());
        for bad in [
            None,
            Some("Bearer nope"),
            Some("Basic s3cret-token"),
            Some(""),
        ] {
            let refused = authorize(t, bad).unwrap_err();
            assert_eq!(refused.status, 401, "{bad:?}");
            assert!(
                refused
                    .headers
                    .iter()
                    .any(|(n, v)| *n == "WWW-Authenticate" && v.starts_with("Bearer")),
                "{bad:?}"
            );
        }
    }

    /// An endpoint with no engine behind it: its actions go to the returned queue, which
    /// the test answers (or not) in place of the gateway.
    fn endpoint() -> (
        AdminServer,
        crossbeam::channel::Receiver<actions::ActionRequest>,
    ) {
        endpoint_with(CONNECTION_TIME_MAX)
    }

    /// [`endpoint`] whose connections may stay open `connection_time`.
    fn endpoint_with(
        connection_time: Duration,
    ) -> (
        AdminServer,
        crossbeam::channel::Receiver<actions::ActionRequest>,
    ) {
        let (sender, requests) = actions::queue(Arc::new(|| {}));
        let view = EngineView {
            metrics: Arc::new(EngineMetrics::new(
                1,
                1,
                64,
                crate::venue::VenueClock::utc(),
            )),
            rings: Vec::new(),
            admission: Arc::default(),
            symbols: vec!["AAPL".to_string()],
            users: vec!["MM1".to_string()],
            threading: "shared",
            actions: Some(sender),
            day: None,
        };
        let settings = AdminSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: None,
        };
        let mut listener = AdminListener::bind(&settings).unwrap();
        listener.connection_time = connection_time;
        let server = listener.serve(view).unwrap();
        (server, requests)
    }

    /// Answers `held` as the gateway would a done action (request 1, nothing canceled).
    fn answer_done(held: &actions::ActionRequest) {
        held.reply
            .send(actions::ActionReply::from_outcome(
                &held.action,
                1,
                crate::book::OperatorOutcome::Done { canceled: 0 },
                None,
            ))
            .unwrap();
    }

    /// A request being answered when its connection's time is up is answered before the
    /// connection closes (an action applied used to lose its answer with the connection).
    #[test]
    fn a_connection_out_of_time_still_answers_its_request() {
        let (server, requests) = endpoint_with(Duration::from_millis(300));
        let url = format!("http://{}", server.local_addr());
        let post = std::thread::spawn(move || client::request(&url, "POST", "/halt-all", None));
        let held = requests.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(held.take());
        // Past the connection's time, well within the action's wait.
        std::thread::sleep(Duration::from_millis(900));
        answer_done(&held);
        let post = post.join().unwrap().expect("answered");
        assert_eq!(post.status, 200, "{}", post.body);
        server.stop();
    }

    #[test]
    fn the_endpoint_serves_others_while_an_action_waits_for_the_journal() {
        let (server, requests) = endpoint();
        let url = format!("http://{}", server.local_addr());
        let post = {
            let url = url.clone();
            std::thread::spawn(move || client::request(&url, "POST", "/halt-all", None))
        };
        // The "gateway" holds the action until a read was served beside it: were the
        // endpoint's one thread waiting for the action, the read would never come and the
        // action would end in 504 after REPLY_WAIT_MAX.
        let held = requests.recv_timeout(Duration::from_secs(30)).unwrap();
        let status = client::request(&url, "GET", "/status", None).unwrap();
        assert_eq!(status.status, 200);
        // Connections held open past the cap, silent or half-sent, make room for others by
        // the oldest idle one closing; the waiting action's connection is not closed.
        let idle: Vec<std::net::TcpStream> = (0..CONNECTIONS_MAX + 4)
            .map(|i| {
                let mut c = std::net::TcpStream::connect(server.local_addr()).unwrap();
                if i % 2 == 0 {
                    std::io::Write::write_all(&mut c, b"GET /status HTTP/1.1\r\nHo").unwrap();
                }
                c
            })
            .collect();
        let status = client::request(&url, "GET", "/status", None).unwrap();
        assert_eq!(status.status, 200);
        answer_done(&held);
        let post = post.join().unwrap().unwrap();
        assert_eq!(post.status, 200, "{}", post.body);
        drop(idle);
        server.stop();
    }

    #[test]
    fn what_a_web_page_could_send_is_refused() {
        assert_eq!(
            from_a_tool(true, Some(b"127.0.0.1:8080"), true)
                .unwrap_err()
                .status,
            403
        );
        for host in [
            "127.0.0.1:15080",
            "localhost:15080",
            "[::1]:15080",
            "LOCALHOST",
            "10.0.0.1",
            "localhost.:15080",
            "engine.localhost:15080",
        ] {
            assert_eq!(
                from_a_tool(false, Some(host.as_bytes()), false),
                Ok(()),
                "{host}"
            );
        }
        assert_eq!(from_a_tool(false, None, false), Ok(()));
        for host in [
            "evil.example:15080",
            "evil.example",
            "[evil]:1",
            "(not text)",
            "localhost.evil",
        ] {
            assert_eq!(
                from_a_tool(false, Some(host.as_bytes()), false)
                    .unwrap_err()
                    .status,
                403,
                "{host}"
            );
        }
        // A Host that is not text.
        assert_eq!(
            from_a_tool(false, Some(b"local\xffhost"), false)
                .unwrap_err()
                .status,
            403
        );
        // With a token, a browser cannot authenticate: names are fine (a scrape by host name).
        assert_eq!(
            from_a_tool(false, Some(b"engine1.example:15080"), true),
            Ok(())
        );
        // Through the server: a form's POST carries an Origin and halts nothing.
        let (server, requests) = endpoint();
        let addr = server.local_addr();
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        use std::io::{Read, Write};
        write!(
            stream,
            "POST /halt-all HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 403"), "{response}");
        assert!(
            requests.try_recv().is_err(),
            "no action reached the gateway"
        );
        server.stop();
    }
}
