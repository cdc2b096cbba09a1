//! The operator's endpoint over loopback: each test starts its own engine with `[admin]` on
//! an ephemeral port, sends known traffic, and reads `/metrics` (checked with
//! `prometheus-parse`, an independent parser of the Prometheus text format) and `/status`.
//! Counts only: no timing decides a result (a deadline only stops a wait that went wrong).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use ironmatch::admin::client::{HttpResponse, request};
use ironmatch::client::Client;
use ironmatch::config::Config;
use ironmatch::server::Server;
use ironmatch::wire::ouch::outbound;
use prometheus_parse::{LineInfo, Scrape, Value};

const PX: u64 = 1_500_000; // $150.00
const TICK: u64 = 100; // $0.01
const TOKEN: &str = "t0ken-for-tests";
/// How long a wait for the engine's published state may take before the test gives up.
const PATIENCE: Duration = Duration::from_secs(20);

/// The test configuration with `[admin]` on an ephemeral loopback port (and `token`).
fn admin_config(token: Option<&str>) -> Config {
    let mut text = test_config_text(&temp_dir("admin").hold(), "");
    text.push_str("\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    if let Some(t) = token {
        text.push_str(&format!("token = \"{t}\"\n"));
    }
    Config::parse(&text, "admin test config").expect("valid")
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> HttpResponse {
    request(&url(addr), "GET", path, token).expect("the endpoint answers")
}

/// Every sample of a scrape by name and labels (sorted `k=v` pairs joined by commas).
struct Metrics {
    values: HashMap<(String, String), f64>,
    histograms: HashMap<(String, String), Vec<(f64, f64)>>,
}

impl Metrics {
    /// Parses `/metrics`, requiring every line to be understood by the parser and every
    /// sample to belong to a declared family.
    fn parse(text: &str) -> Metrics {
        for line in text.lines() {
            assert!(
                !matches!(LineInfo::parse(line), LineInfo::Ignored),
                "a line the parser does not understand: {line:?}"
            );
        }
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = Scrape::parse(lines).expect("Prometheus text format");
        assert!(!scrape.samples.is_empty());
        let mut values = HashMap::new();
        let mut histograms = HashMap::new();
        for s in scrape.samples {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let key = (s.metric.clone(), labels.join(","));
            match s.value {
                Value::Counter(v) | Value::Gauge(v) => {
                    values.insert(key, v);
                }
                Value::Histogram(buckets) => {
                    let b = buckets.iter().map(|b| (b.less_than, b.count)).collect();
                    histograms.insert(key, b);
                }
                Value::Untyped(v) => {
                    // Only a histogram's sum and count come without a type of their own.
                    assert!(
                        s.metric.ends_with("_sum") || s.metric.ends_with("_count"),
                        "{} has no TYPE",
                        s.metric
                    );
                    values.insert(key, v);
                }
                Value::Summary(_) => panic!("no summaries are exported"),
            }
        }
        Metrics { values, histograms }
    }

    fn get(&self, name: &str, labels: &str) -> f64 {
        *self
            .values
            .get(&(name.to_string(), labels.to_string()))
            .unwrap_or_else(|| panic!("no sample {name}{{{labels}}}"))
    }

    fn histogram_count(&self, name: &str, labels: &str) -> f64 {
        let count = self.get(&format!("{name}_count"), labels);
        let buckets = &self.histograms[&(name.to_string(), labels.to_string())];
        let inf = buckets.iter().find(|(le, _)| le.is_infinite()).unwrap().1;
        assert_eq!(inf, count, "{name}: +Inf bucket equals the count");
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative");
        count
    }
}

/// Scrapes until `ready` holds (the engine publishes some values after its replies).
fn scrape_until(
    addr: SocketAddr,
    token: Option<&str>,
    ready: impl Fn(&Metrics) -> bool,
) -> Metrics {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let response = get(addr, "/metrics", token);
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("Content-Type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let metrics = Metrics::parse(&response.body);
        if ready(&metrics) || Instant::now() > deadline {
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// MM1 rests five bids (one a tick apart each) and sends one off-tick order (rejected);
/// MM2 sells 40 into the best bid: one trade. Returns when every reply has arrived.
fn trade(addr: SocketAddr) -> (Client, Client) {
    let mut mm1 = login(addr, "MM1", "pw1", 1);
    let mut mm2 = login(addr, "MM2", "pw2", 1);
    for i in 0..5u32 {
        mm1.limit(i + 1, b'B', 100, "AAPL", PX - u64::from(i) * TICK)
            .unwrap();
        assert_eq!(next_type(&mut mm1).0, outbound::ACCEPTED);
    }
    mm1.limit(6, b'B', 100, "AAPL", PX + 1).unwrap();
    assert_eq!(next_type(&mut mm1).0, outbound::REJECTED);
    mm2.limit(1, b'S', 40, "AAPL", PX).unwrap();
    assert_eq!(next_type(&mut mm2).0, outbound::ACCEPTED);
    assert_eq!(next_type(&mut mm2).0, outbound::EXECUTED);
    assert_eq!(next_type(&mut mm1).0, outbound::EXECUTED);
    (mm1, mm2)
}

#[test]
fn metrics_parse_and_count_the_traffic_sent() {
    let server = Server::start(&admin_config(None)).unwrap();
    let admin = server.admin_addr().expect("admin endpoint configured");
    let (_mm1, _mm2) = trade(server.local_addr());
    // Commands: 7 new orders. Events: 5 x (Accepted, MdAdd), 1 Rejected, and for the sell
    // Accepted, 2 x Executed, MdExecute.
    let (commands, events) = (7.0, 15.0);
    // The book's top is published every 100 ms at most, and each stage records a batch's
    // latency once it is done with it, which may be just after the replies went out.
    let m = scrape_until(admin, None, |m| {
        let latency = |stage: &str| {
            m.histogram_count("ironmatch_stage_latency_seconds", &format!("stage={stage}"))
        };
        m.get("ironmatch_resting_orders", "symbol=AAPL") == 5.0
            && latency("match_to_journaled") == commands
            && latency("journaled_to_written") == events
    });
    assert_eq!(m.get("ironmatch_resting_orders", "symbol=AAPL"), 5.0);
    let ouch_in = |t: &str, name: &str| {
        m.get(
            "ironmatch_ouch_messages_in_total",
            &format!("message={name},type={t}"),
        )
    };
    let ouch_out = |t: &str, name: &str| {
        m.get(
            "ironmatch_ouch_messages_out_total",
            &format!("message={name},type={t}"),
        )
    };
    assert_eq!(ouch_in("O", "enter_order"), commands);
    assert_eq!(ouch_in("X", "cancel_order"), 0.0);
    assert_eq!(ouch_out("A", "order_accepted"), 6.0);
    assert_eq!(ouch_out("E", "order_executed"), 2.0);
    assert_eq!(ouch_out("J", "rejected"), 1.0);
    assert_eq!(ouch_out("C", "order_canceled"), 0.0);
    assert_eq!(
        m.get("ironmatch_commands_total", "kind=new_order"),
        commands
    );
    assert_eq!(
        m.get("ironmatch_rejects_total", "reason=price_off_tick"),
        1.0
    );
    assert_eq!(m.get("ironmatch_rejects_total", "reason=throttled"), 0.0);
    assert_eq!(m.get("ironmatch_trades_total", "symbol=AAPL"), 1.0);
    assert_eq!(m.get("ironmatch_shares_traded_total", "symbol=AAPL"), 40.0);
    assert_eq!(m.get("ironmatch_sessions_connected", ""), 2.0);
    assert_eq!(m.get("ironmatch_session_logged_in", "user=MM1"), 1.0);
    assert_eq!(m.get("ironmatch_session_logged_in", "user=MM3"), 0.0);
    assert_eq!(m.get("ironmatch_session_messages", "user=MM1"), 7.0);
    assert_eq!(m.get("ironmatch_logins_total", ""), 2.0);
    assert_eq!(m.get("ironmatch_best_price", "side=bid,symbol=AAPL"), 150.0);
    assert_eq!(
        m.get("ironmatch_best_open_shares", "side=bid,symbol=AAPL"),
        60.0
    );
    assert_eq!(
        m.get("ironmatch_best_open_shares", "side=ask,symbol=AAPL"),
        0.0
    );
    assert_eq!(
        m.get("ironmatch_journal_records_total", ""),
        commands + events
    );
    assert!(m.get("ironmatch_journal_written_bytes_total", "") > 0.0);
    assert!(m.histogram_count("ironmatch_journal_batch_records", "") >= 1.0);
    assert!(m.histogram_count("ironmatch_journal_write_duration_seconds", "") >= 1.0);
    // fsync = "never" in the test configuration, and no segment was rotated.
    assert_eq!(
        m.histogram_count("ironmatch_journal_fsync_duration_seconds", ""),
        0.0
    );
    for (stage, count) in [
        ("receipt_to_match", commands),
        ("match_to_journaled", commands),
        ("journaled_to_written", events),
    ] {
        let labels = format!("stage={stage}");
        assert_eq!(
            m.histogram_count("ironmatch_stage_latency_seconds", &labels),
            count,
            "{stage}"
        );
    }
    for stage in ["match_to_journaled", "journaled_to_written"] {
        let labels = format!("stage={stage}");
        assert_eq!(m.get("ironmatch_latency_marks_dropped_total", &labels), 0.0);
    }
    for ring in ["to_matcher", "to_journal", "to_egress"] {
        let labels = format!("ring={ring}");
        assert_eq!(m.get("ironmatch_ring_capacity", &labels), 1024.0);
        assert!(m.get("ironmatch_ring_depth", &labels) <= 1024.0);
    }
    server.stop().unwrap();
}

#[test]
fn the_grafana_dashboard_uses_only_exported_metrics() {
    let server = Server::start(&admin_config(None)).unwrap();
    let text = get(server.admin_addr().unwrap(), "/metrics", None).body;
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/grafana-dashboard.json"
    ))
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut used = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices("ironmatch_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|base| families.contains(base))
                    .unwrap_or(&name);
                assert!(
                    families.contains(&family),
                    "{name} in {expr:?} is not exported"
                );
                used += 1;
            }
        }
    }
    assert!(used > 20, "the dashboard queries the metrics");
    server.stop().unwrap();
}

#[test]
fn status_shows_books_sessions_and_counters() {
    let server = Server::start(&admin_config(None)).unwrap();
    let admin = server.admin_addr().unwrap();
    let (_mm1, _mm2) = trade(server.local_addr());
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        let response = get(admin, "/status", None);
        assert_eq!(response.status, 200);
        assert_eq!(response.header("Content-Type"), Some("application/json"));
        let status: serde_json::Value = serde_json::from_str(&response.body).unwrap();
        if status["instruments"][0]["resting_orders"] == 5 || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let aapl = &status["instruments"][0];
    assert_eq!(aapl["symbol"], "AAPL");
    assert_eq!(aapl["state"], "trading");
    assert_eq!(aapl["resting_orders"], 5);
    assert_eq!(aapl["bid"]["price"], "150.0000");
    assert_eq!(aapl["bid"]["shown_shares"], 60);
    assert_eq!(aapl["bid"]["open_shares"], 60);
    assert!(aapl["ask"].is_null());
    assert_eq!(
        (aapl["trades"].as_u64(), aapl["shares_traded"].as_u64()),
        (Some(1), Some(40))
    );
    let sessions = status["sessions"].as_array().unwrap();
    let session = |user: &str| sessions.iter().find(|s| s["user"] == user).unwrap();
    // MM1: five Accepted, a Rejected, an Executed; MM2: an Accepted, an Executed.
    assert_eq!(session("MM1")["logged_in"], true);
    assert_eq!(session("MM1")["next_outbound_seq"], 8);
    assert_eq!(session("MM1")["messages_stored"], 7);
    assert_eq!(session("MM2")["next_outbound_seq"], 3);
    assert_eq!(session("MM3")["logged_in"], false);
    assert_eq!(session("MM3")["next_outbound_seq"], 1);
    let counters = &status["counters"];
    assert_eq!(counters["ouch_messages_in"]["O"]["count"], 7);
    assert_eq!(counters["ouch_messages_out"]["A"]["count"], 6);
    assert_eq!(counters["rejects"]["price_off_tick"], 1);
    assert_eq!(counters["trades"], 1);
    assert_eq!(counters["sessions_connected"], 2);
    assert_eq!(counters["latency_marks_dropped"]["match_to_journaled"], 0);
    assert_eq!(counters["connections"]["logins"], 2);
    assert_eq!(status["venue"]["phase"], "no schedule");
    // Every bucket bound is a number but the last, which has none (null): a typed reader
    // takes them as optional numbers (the last was the string "+Inf").
    for stage in [
        "receipt_to_match",
        "match_to_journaled",
        "journaled_to_written",
    ] {
        let h = &status["latency_seconds"][stage];
        let buckets = h["buckets"].as_array().unwrap();
        let (last, bounded) = buckets.split_last().unwrap();
        assert!(last["le"].is_null(), "{stage}: {last}");
        assert!(bounded.iter().all(|b| b["le"].is_f64()), "{stage}: {h}");
        let total: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
        assert_eq!(h["count"].as_u64(), Some(total), "{stage}");
    }

    // The command line client prints the same as tables, or the JSON for scripts.
    let bin = env!("CARGO_BIN_EXE_ironmatch");
    let out = std::process::Command::new(bin)
        .args(["admin", "status", "--url", &url(admin)])
        .env_remove("IRONMATCH_ADMIN_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("AAPL    trading  150.0000 60/60"), "{text}");
    assert!(text.contains("MM1   logged in  8"), "{text}");
    assert!(text.contains("trades"), "{text}");
    let out = std::process::Command::new(bin)
        .args(["admin", "status", "--json", "--url", &url(admin)])
        .env_remove("IRONMATCH_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["instruments"][0]["symbol"], "AAPL");
    server.stop().unwrap();
}

#[test]
fn unknown_paths_and_methods_are_refused() {
    let server = Server::start(&admin_config(None)).unwrap();
    let admin = server.admin_addr().unwrap();
    assert_eq!(get(admin, "/nothing-here", None).status, 404);
    let r = request(&url(admin), "POST", "/metrics", None).unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    assert_eq!(get(admin, "/status?verbose=1", None).status, 200);
    // HEAD: the headers of GET, no body.
    {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(admin).unwrap();
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            c,
            "HEAD /status HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        c.read_to_string(&mut raw).unwrap();
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        assert!(
            raw.ends_with("\r\n\r\n"),
            "no body after the headers: {raw}"
        );
    }
    server.stop().unwrap();
}

/// Hostile HTTP clients cannot take the endpoint (or the engine) down: a request declaring
/// a body of a petabyte, with or without the token, is answered and nothing reads or
/// allocates that body (the endpoint used to allocate it when dropping the request, which
/// aborted the process); clients that open connections and send nothing, or half a request,
/// neither stop others from being answered nor keep the engine from stopping.
#[test]
fn hostile_http_clients_cannot_take_the_endpoint_down() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let server = Server::start(&admin_config(Some(TOKEN))).unwrap();
    let admin = server.admin_addr().unwrap();
    // Silent and half-sent connections, more than the endpoint keeps open at once (the
    // oldest idle ones are closed to make room for the requests below).
    let mut idle: Vec<TcpStream> = (0..ironmatch::admin::CONNECTIONS_MAX + 8)
        .map(|_| TcpStream::connect(admin).unwrap())
        .collect();
    // Half-sent on the newest, which the endpoint keeps longest.
    for c in idle.iter_mut().rev().take(4) {
        c.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nAuthoriz")
            .unwrap();
    }
    for (auth, status) in [
        ("", "401"),
        ("Authorization: Bearer t0ken-for-tests\r\n", "404"),
    ] {
        let mut c = TcpStream::connect(admin).unwrap();
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            c,
            "POST /x HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1000000000000000\r\n\r\nsome"
        )
        .unwrap();
        let mut head = [0u8; 12];
        c.read_exact(&mut head).unwrap();
        assert_eq!(
            &head[9..12],
            status.as_bytes(),
            "{}",
            String::from_utf8_lossy(&head)
        );
    }
    // Everyone else is still answered, the engine still trades.
    assert_eq!(get(admin, "/status", Some(TOKEN)).status, 200);
    let (_maker, _taker) = trade(server.local_addr());
    assert_eq!(get(admin, "/metrics", Some(TOKEN)).status, 200);
    server.stop().unwrap();
    drop(idle);
}

/// A flood of connections from other addresses closes its own connections to make room,
/// never the operator's, even one accepted before the flood whose request (and token) has
/// not arrived yet: the oldest idle connection used to go, whoever held it.
#[test]
fn a_flood_from_other_addresses_never_closes_the_operators_connection() {
    use std::io::{Read, Write};
    let server = Server::start(&admin_config(Some(TOKEN))).unwrap();
    let admin = server.admin_addr().unwrap();
    let mut operator = connect_from([127, 0, 0, 1], admin);
    let flood: Vec<std::net::TcpStream> = (0..200u8)
        .map(|i| connect_from([127, 0, 0, 2 + i % 4], admin))
        .collect();
    // The endpoint accepts the flood (and closes most of it) before the operator speaks.
    std::thread::sleep(Duration::from_millis(500));
    write!(
        operator,
        "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    operator.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = Vec::new();
    let _ = operator.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    drop(flood);
    server.stop().unwrap();
}

#[test]
fn a_configured_token_is_required() {
    let server = Server::start(&admin_config(Some(TOKEN))).unwrap();
    let admin = server.admin_addr().unwrap();
    for path in ["/metrics", "/status", "/nothing-here"] {
        let r = get(admin, path, None);
        assert_eq!(r.status, 401, "{path}");
        assert!(
            r.header("WWW-Authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{path}: {r:?}"
        );
        let r = get(admin, path, Some("not-the-token"));
        assert_eq!(r.status, 401, "{path}");
        assert!(
            r.header("WWW-Authenticate")
                .is_some_and(|v| v.starts_with("Bearer"))
        );
    }
    assert_eq!(get(admin, "/metrics", Some(TOKEN)).status, 200);
    assert_eq!(get(admin, "/status", Some(TOKEN)).status, 200);
    assert_eq!(get(admin, "/nothing-here", Some(TOKEN)).status, 404);

    let bin = env!("CARGO_BIN_EXE_ironmatch");
    let status = |args: &[&str]| {
        std::process::Command::new(bin)
            .args(["admin", "status", "--url", &url(admin)])
            .args(args)
            .env_remove("IRONMATCH_ADMIN_TOKEN")
            .output()
            .unwrap()
    };
    let refused = status(&[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    assert!(status(&["--token", TOKEN]).status.success());
    server.stop().unwrap();
}

#[test]
fn no_endpoint_off_loopback_without_a_token() {
    let mut config = admin_config(None);
    config.admin.listen = "0.0.0.0:0".to_string();
    let Err(e) = Server::start(&config) else {
        panic!("an endpoint on 0.0.0.0 without a token must not start");
    };
    let e = e.to_string();
    assert!(
        e.contains("not a loopback address") && e.contains("token"),
        "{e}"
    );

    // `serve` says so and exits 1 before it binds anything.
    let dir = temp_dir("admin-open");
    let text = test_config_text(&dir, "") + "\n[admin]\nlisten = \"0.0.0.0:0\"\n";
    let file = dir.join("open.toml");
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironmatch"))
        .args(["serve", "--config"])
        .arg(&file)
        .env_remove("IRONMATCH_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}

#[test]
fn no_admin_section_means_no_endpoint() {
    let server = start();
    assert_eq!(server.admin_addr(), None);
    server.stop().unwrap();
}

#[test]
fn serve_takes_the_token_from_the_environment() {
    use std::io::{BufRead, BufReader};
    let dir = temp_dir("admin-env");
    let path = dir.join("ironmatch.toml");
    let shipped = shipped_config_for_tests().replace(
        "dir = \"./data\"",
        &format!("dir = {:?}", dir.join("data").display().to_string()),
    );
    std::fs::write(&path, shipped).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ironmatch"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("IRONMATCH_ADMIN_TOKEN", "from-the-env")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let admin: SocketAddr = line
        .split("admin http://")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("the start line names the admin endpoint: {line}"));
    assert_eq!(get(admin, "/status", None).status, 401);
    assert_eq!(get(admin, "/status", Some("from-the-env")).status, 200);
    let m = Metrics::parse(&get(admin, "/metrics", Some("from-the-env")).body);
    // The shipped configuration: four instruments.
    assert_eq!(m.get("ironmatch_resting_orders", "symbol=PENNY"), 0.0);
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success(), "serve exits 0 on SIGTERM");
}
