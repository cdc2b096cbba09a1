//! `ironmatch admin`: a small HTTP/1.1 client for the endpoint, and the tables it prints.
//!
//! Plain HTTP over `std::net::TcpStream`: the endpoint speaks plain HTTP (on loopback, or
//! behind the operator's own TLS proxy or SSH tunnel), answers with `Content-Length`, and
//! the client sends `Connection: close`, so a response is read to its length or to the end.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

/// How long connecting, and then each read or write, may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response read (a `/status` of thousands of instruments fits).
const RESPONSE_BYTES_MAX: u64 = 64 << 20;

/// A response: status code, headers (names as sent), body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// Body, as text.
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `method path` to the endpoint at `url` (`http://host:port`, an optional path
/// prefix allowed) with `token` as a bearer token, and reads the whole response.
pub fn request(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> io::Result<HttpResponse> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        bad(format!(
            "{url}: only http:// URLs (put the endpoint behind a TLS proxy or an SSH tunnel)"
        ))
    })?;
    let (host, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let addrs = host
        .to_socket_addrs()
        .map_err(|e| bad(format!("{url}: {e}")))?;
    let mut stream =
        connect_any(addrs).map_err(|e| io::Error::new(e.kind(), format!("{url}: {e}")))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut head = format!(
        "{method} {prefix}{path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ironmatch-admin\r\nAccept: */*\r\nConnection: close\r\n"
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    stream.take(RESPONSE_BYTES_MAX).read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// A connection to the first of `addrs` that takes one, in the resolver's order: a name
/// such as `localhost` may resolve to `::1` first while the endpoint listens on
/// `127.0.0.1`. The error is the last address's.
fn connect_any(addrs: impl Iterator<Item = SocketAddr>) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = io::Error::new(e.kind(), format!("{addr}: {e}")),
        }
    }
    Err(last)
}

/// Parses an HTTP/1.x response (with `Content-Length`, chunked, or read to the end).
fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no complete HTTP header"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("header is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next(), parts.next());
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(bad("not an HTTP/1.x response"));
    }
    let status = code
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut response = HttpResponse {
        status,
        headers,
        body: String::new(),
    };
    let body = &raw[end + 4..];
    let body = if response
        .header("Transfer-Encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        dechunk(body).ok_or_else(|| bad("bad chunked body"))?
    } else if let Some(len) = response.header("Content-Length") {
        let len: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
        body.get(..len)
            .ok_or_else(|| bad("body shorter than Content-Length"))?
            .to_vec()
    } else {
        body.to_vec()
    };
    response.body = String::from_utf8(body).map_err(|_| bad("body is not UTF-8"))?;
    Ok(response)
}

/// The body of a chunked transfer.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// `ironmatch admin status`: fetches `/status`; with `json` returns it as it came, else as
/// tables. `Err` says what went wrong (unreachable, refused token, bad answer).
pub fn status(url: &str, token: Option<&str>, json: bool) -> Result<String, String> {
    let response = request(url, "GET", "/status", token).map_err(|e| format!("{url}: {e}"))?;
    match response.status {
        200 => {}
        401 => {
            return Err(format!(
                "{url}: 401 unauthorized: give the endpoint's token with --token or {}",
                crate::config::ADMIN_TOKEN_ENV
            ));
        }
        code => return Err(format!("{url}: HTTP {code}: {}", response.body.trim())),
    }
    if json {
        return Ok(response.body);
    }
    let value: Value = serde_json::from_str(&response.body)
        .map_err(|e| format!("{url}: /status is not JSON: {e}"))?;
    Ok(tables(&value))
}

/// Sends an operator action (`POST path`) and returns what was done, as a line (or the
/// endpoint's JSON with `json`). `Err` says why it was refused.
pub fn action(url: &str, token: Option<&str>, path: &str, json: bool) -> Result<String, String> {
    let response = request(url, "POST", path, token).map_err(|e| format!("{url}: {e}"))?;
    let value: Option<Value> = serde_json::from_str(&response.body).ok();
    match (response.status, value) {
        (200, Some(v)) if !json => {
            let mut line = v["action"].as_str().unwrap_or("done").to_string();
            // The count where canceling was asked for (or happened): a halt of the whole
            // venue read "0 resting orders canceled", as if it had tried.
            let asked = path.starts_with("/cancel-") || path.contains("cancel=true");
            if let Some(n) = v["canceled"].as_u64().filter(|&n| asked || n > 0) {
                line.push_str(&format!("; {n} resting orders canceled"));
            }
            if v["was_connected"] == Value::Bool(false) {
                line.push_str(" (it was not connected)");
            }
            if let Some(r) = v["request"].as_u64() {
                line.push_str(&format!(" [journaled as operator request {r}]"));
            }
            Ok(format!("{line}\n"))
        }
        (200, _) => Ok(response.body),
        (401, _) => Err(format!(
            "{url}: 401 unauthorized: give the endpoint's token with --token or {}",
            crate::config::ADMIN_TOKEN_ENV
        )),
        (code, Some(v)) if v["error"].is_string() => Err(format!(
            "{url}{path}: HTTP {code}: {}",
            v["error"].as_str().unwrap_or_default()
        )),
        (code, _) => Err(format!(
            "{url}{path}: HTTP {code}: {}",
            response.body.trim()
        )),
    }
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", text.join("  ").trim_end())
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// A value as table text (`-` for null).
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A book side as `price shown/open`.
fn side_cell(level: &Value) -> String {
    if level.is_null() {
        return "-".to_string();
    }
    format!(
        "{} {}/{}",
        cell(&level["price"]),
        cell(&level["shown_shares"]),
        cell(&level["open_shares"])
    )
}

/// The `/status` JSON as tables: instruments, sessions, counters.
pub fn tables(status: &Value) -> String {
    let empty = Vec::new();
    let list = |key: &str| status[key].as_array().unwrap_or(&empty).clone();
    let engine = &status["engine"];
    let mut out = format!(
        "ironmatch {} ({} threading), up {:.0} s\n\n",
        cell(&engine["version"]),
        cell(&engine["threading"]),
        engine["uptime_seconds"].as_f64().unwrap_or(0.0)
    );
    let venue = &status["venue"];
    if venue["trading_day"].is_string() {
        out.truncate(out.len() - 1);
        out.push_str(&format!(
            "trading day {}, session {}, {}{}\n\n",
            cell(&venue["trading_day"]),
            cell(&venue["session"]),
            cell(&venue["phase"]),
            if venue["venue_halted"] == Value::Bool(true) {
                ", VENUE HALTED"
            } else {
                ""
            }
        ));
    } else if venue["venue_halted"] == Value::Bool(true) {
        out.truncate(out.len() - 1);
        out.push_str("VENUE HALTED\n\n");
    }
    let rows: Vec<Vec<String>> = list("instruments")
        .iter()
        .map(|i| {
            vec![
                cell(&i["symbol"]),
                cell(&i["state"]),
                side_cell(&i["bid"]),
                side_cell(&i["ask"]),
                cell(&i["resting_orders"]),
                cell(&i["trades"]),
                cell(&i["shares_traded"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "SYMBOL",
            "STATE",
            "BID (shown/open)",
            "ASK (shown/open)",
            "RESTING",
            "TRADES",
            "SHARES",
        ],
        &rows,
    ));
    out.push('\n');
    let rows: Vec<Vec<String>> = list("sessions")
        .iter()
        .map(|s| {
            vec![
                cell(&s["user"]),
                if s["logged_in"].as_bool() == Some(true) {
                    "logged in".to_string()
                } else {
                    "-".to_string()
                },
                cell(&s["next_outbound_seq"]),
                cell(&s["messages_stored"]),
            ]
        })
        .collect();
    out.push_str(&table(&["USER", "SESSION", "NEXT SEQ", "MESSAGES"], &rows));
    out.push('\n');
    out.push_str(&counter_table(status));
    out
}

/// Non-zero counters, one per line.
fn counter_table(status: &Value) -> String {
    let c = &status["counters"];
    let mut rows = Vec::new();
    for (key, label) in [
        ("ouch_messages_in", "ouch in"),
        ("ouch_messages_out", "ouch out"),
    ] {
        if let Some(map) = c[key].as_object() {
            for (letter, v) in map {
                if v["count"].as_u64().unwrap_or(0) > 0 {
                    rows.push(vec![
                        format!("{label} {letter} {}", cell(&v["message"])),
                        cell(&v["count"]),
                    ]);
                }
            }
        }
    }
    for key in ["commands", "rejects", "cancels"] {
        if let Some(map) = c[key].as_object() {
            for (name, v) in map {
                if v.as_u64().unwrap_or(0) > 0 {
                    rows.push(vec![format!("{key} {name}"), cell(v)]);
                }
            }
        }
    }
    for key in [
        "trades",
        "shares_traded",
        "sessions_connected",
        "journal_records",
        "journal_written_bytes",
    ] {
        rows.push(vec![key.replace('_', " "), cell(&c[key])]);
    }
    if let Some(rings) = status["rings"].as_array() {
        for r in rings {
            rows.push(vec![
                format!("ring {} depth", cell(&r["ring"])),
                format!("{} of {}", cell(&r["depth"]), cell(&r["capacity"])),
            ]);
        }
    }
    table(&["COUNTER", "VALUE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name resolving to an address nothing listens on before the endpoint's (`localhost`
    /// as `::1` first, the endpoint on `127.0.0.1`) still connects.
    #[test]
    fn a_request_tries_every_address_of_the_name() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let refused = closed.local_addr().unwrap();
        drop(closed);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let live = listener.local_addr().unwrap();
        let stream = connect_any([refused, live].into_iter()).unwrap();
        assert_eq!(stream.peer_addr().unwrap(), live);
        let e = connect_any([refused].into_iter()).unwrap_err();
        assert!(e.to_string().contains(&refused.to_string()), "{e}");
        assert!(connect_any(std::iter::empty()).is_err());
    }

    #[test]
    fn responses_parse_with_length_chunks_or_to_the_end() {
        let r = parse_response(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 2\r\n\r\nnoEXTRA").unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert_eq!(r.body, "no");
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, "abcde");
        let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\nall of it").unwrap();
        assert_eq!(r.body, "all of it");
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn tables_show_books_and_sessions() {
        let status = serde_json::json!({
            "engine": {"version": "0.1.0", "threading": "shared", "uptime_seconds": 3.0},
            "instruments": [{"symbol": "AAPL", "state": "trading",
                "bid": {"price": "150.0000", "shown_shares": 100, "open_shares": 300},
                "ask": null, "resting_orders": 2, "trades": 1, "shares_traded": 40}],
            "sessions": [{"user": "MM1", "logged_in": true, "next_outbound_seq": 5,
                "messages_stored": 4}],
            "counters": {"trades": 1},
        });
        let text = tables(&status);
        assert!(text.contains("AAPL    trading  150.0000 100/300"), "{text}");
        assert!(text.contains("MM1   logged in  5"), "{text}");
    }
}
