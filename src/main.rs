//! The `ironmatch` command: wiring only (load config, build, run).
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use ironmatch::book::{
    Command, CommandBody, DayEvent, Echo, Matcher, NewOrder, TimeInForce, VenueCommand,
};
use ironmatch::config::Config;
use ironmatch::feed::{ListenerOptions, run_listener};
use ironmatch::replay::{self, ReplayOptions};
use ironmatch::server::Server;
use ironmatch::types::{OwnerId, Price, Qty, Side, Symbol, Timestamp, UserRef};
use ironmatch::wire::moldudp64::Session;

/// ironmatch: a low-latency order matching engine.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the engine: OUCH 5.0 over SoupBinTCP 3.0 on the configured address.
    Serve {
        /// Configuration file.
        #[arg(long, default_value = "config/ironmatch.toml")]
        config: PathBuf,
    },
    /// Run a scripted market-maker flow through the matching core and print every event.
    Demo {
        /// Configuration file.
        #[arg(long, default_value = "config/ironmatch.toml")]
        config: PathBuf,
    },
    /// Verify a journal, rebuild the books, audit an order, or export.
    Replay {
        /// Journal directory.
        #[arg(long)]
        journal: PathBuf,
        /// Configuration the journal was written with (its fingerprint is checked).
        #[arg(long, default_value = "config/ironmatch.toml")]
        config: PathBuf,
        /// Require the re-run's events to equal the journaled events, byte for byte.
        #[arg(long)]
        verify_determinism: bool,
        /// Print only this instrument's book.
        #[arg(long)]
        book: Option<String>,
        /// Price levels per side (default 5).
        #[arg(long)]
        depth: Option<usize>,
        /// Stop after this sequence number.
        #[arg(long)]
        until: Option<u64>,
        /// Audit trail of one order: USER:REF (username and UserRefNum).
        #[arg(long)]
        order: Option<String>,
        /// Machine-readable output (JSON).
        #[arg(long)]
        json: bool,
        /// Write the day's ITCH 5.0 feed to FILE (plain ITCH file: 2-byte length, message),
        /// the bytes the live feed carried, instead of the report.
        #[arg(long, value_name = "FILE")]
        itch: Option<PathBuf>,
    },
    /// Listen to the ITCH 5.0 / MoldUDP64 feed, fill gaps by retransmission, build every
    /// book order by order, print top levels (every --interval seconds, on SIGUSR1, and at
    /// End of Session).
    Feed {
        /// Configuration file (default addresses and session from `[marketdata]`).
        #[arg(long, default_value = "config/ironmatch.toml")]
        config: PathBuf,
        /// Address to receive on (default: `marketdata.destination`); a multicast group is
        /// joined.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Retransmission server (default: `marketdata.retransmission`).
        #[arg(long)]
        request: Option<std::net::SocketAddr>,
        /// IPv4 address of the local interface to join an IPv4 multicast group on (default:
        /// the kernel's choice; `marketdata.multicast_interface` is the publisher's).
        #[arg(long)]
        interface: Option<std::net::Ipv4Addr>,
        /// Follow only this MoldUDP64 session (default: the first seen).
        #[arg(long)]
        session: Option<String>,
        /// Print the books every this many seconds.
        #[arg(long)]
        interval: Option<f64>,
        /// Price levels per side.
        #[arg(long, default_value_t = 5)]
        depth: usize,
        /// Print every displayed order, in priority order.
        #[arg(long)]
        orders: bool,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
        /// Stop after this many seconds even if the session has not ended.
        #[arg(long)]
        duration: Option<f64>,
        /// Test aid: ignore every N-th live data packet, as if the network had lost it.
        #[arg(long, value_name = "N")]
        drop_every: Option<u64>,
    },
    /// Drive the engine with market-maker sessions at a fixed rate and measure round trips.
    Load {
        /// Configuration file (users, instruments and the default address).
        #[arg(long, default_value = "config/ironmatch.toml")]
        config: PathBuf,
        /// Engine address, or a cluster's gateways separated by commas (the leader takes
        /// the logins); default: the `[cluster]` peers' `gateway` addresses if set, else
        /// `gateway.listen`.
        #[arg(long, value_delimiter = ',')]
        connect: Vec<std::net::SocketAddr>,
        /// Sessions, one per configured user, in configuration order (default: all users).
        #[arg(long)]
        sessions: Option<usize>,
        /// Messages per second, all sessions together (open loop).
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Stop after this many messages (if before --duration).
        #[arg(long)]
        messages: Option<u64>,
        /// Seed of the order flow.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Percent of messages that are marketable IOC orders.
        #[arg(long, default_value_t = 3)]
        ioc_percent: u64,
        /// Milliseconds to wait for the last replies.
        #[arg(long, default_value_t = 2000)]
        drain_ms: u64,
        /// First measure a TCP echo on loopback with the same schedule and bytes.
        #[arg(long)]
        baseline: bool,
        /// Write the results as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the engine's latency distribution (HdrHistogram percentile format, us);
        /// the baseline's goes to the same name with `.baseline` before the extension.
        #[arg(long)]
        hgrm: Option<PathBuf>,
        /// No progress lines.
        #[arg(long)]
        quiet: bool,
    },
    /// Validate a configuration file and print what it defines.
    CheckConfig {
        /// Configuration file.
        #[arg(long, default_value = "config/ironmatch.toml")]
        config: PathBuf,
    },
    /// Talk to a running engine's operator endpoint (`[admin] listen`).
    Admin {
        #[command(subcommand)]
        action: AdminCmd,
    },
    /// A Raft cluster of engines (`[cluster]`).
    Cluster {
        #[command(subcommand)]
        action: ClusterCmd,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Every node's role, term, last log index, applied index and lag behind the leader.
    Status {
        /// Configuration file with a `[cluster]` (any node's).
        #[arg(long, default_value = "config/ironmatch.toml")]
        config: PathBuf,
    },
}

/// Where the operator's endpoint is and how to talk to it.
#[derive(clap::Args)]
struct Endpoint {
    /// The endpoint.
    #[arg(long, default_value = "http://127.0.0.1:15080")]
    url: String,
    /// Bearer token (default: the IRONMATCH_ADMIN_TOKEN environment variable).
    #[arg(long)]
    token: Option<String>,
    /// Print the endpoint's JSON as it came, for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Instruments (state, top of book, resting orders), sessions (state, sequence
    /// numbers) and counters, from GET /status.
    Status {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Halt an instrument: new orders refused, nothing trades (ITCH Trading Action H).
    Halt {
        /// The instrument.
        symbol: String,
        /// Cancel its resting orders too (OUCH reason H).
        #[arg(long)]
        cancel: bool,
        /// ITCH reason code, up to 4 characters (default O1, operations halt).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Pause an instrument (as halted; ITCH Trading Action P).
    Pause {
        /// The instrument.
        symbol: String,
        /// Cancel its resting orders too.
        #[arg(long)]
        cancel: bool,
        /// ITCH reason code, up to 4 characters.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Quotation only: orders that would trade are refused, the rest rest (ITCH Trading
    /// Action Q), e.g. before a resumption.
    QuoteOnly {
        /// The instrument.
        symbol: String,
        /// Also cancel its resting orders.
        #[arg(long)]
        cancel: bool,
        /// ITCH reason code, up to 4 characters.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Resume trading in an instrument.
    Resume {
        /// The instrument.
        symbol: String,
        /// ITCH reason code, up to 4 characters (default: blank).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Halt the whole venue (the kill switch).
    HaltAll {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Lift the venue halt: each instrument returns to its own state.
    ResumeAll {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Cancel every resting order of a user (OUCH reason S, supervisory).
    CancelUser {
        /// The username.
        user: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Cancel every resting order of an instrument (OUCH reason S).
    CancelInstrument {
        /// The instrument.
        symbol: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Disconnect a user's session (its orders are canceled if it has cancel-on-disconnect).
    Kick {
        /// The username.
        user: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

/// `ironmatch admin ...`: exit 0 with the answer printed, 1 if the endpoint refused or
/// could not be reached.
fn admin(action: AdminCmd) -> ExitCode {
    // Names and values percent-encoded: a symbol with `&` or `/`, or a reason with `&`,
    // reaches the endpoint as what it is, not as more of the path or another parameter.
    // Only what the path and query's syntax gives a meaning to is encoded, so an ordinary
    // symbol (`BRK.B`) goes out as it is, to an engine from before the decoding too.
    const SYNTAX: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'%')
        .add(b'/')
        .add(b'?')
        .add(b'#')
        .add(b'&')
        .add(b'=')
        .add(b'+');
    let enc = |text: &str| percent_encoding::utf8_percent_encode(text, SYNTAX).to_string();
    let state_path = |verb: &str, symbol: &str, cancel: bool, reason: &Option<String>| {
        let mut query = Vec::new();
        if cancel {
            query.push("cancel=true".to_string());
        }
        if let Some(reason) = reason {
            query.push(format!("reason={}", enc(reason)));
        }
        format!("/{verb}/{}?{}", enc(symbol), query.join("&"))
    };
    let (endpoint, path) = match action {
        AdminCmd::Status { endpoint } => (endpoint, None),
        AdminCmd::Halt {
            symbol,
            cancel,
            reason,
            endpoint,
        } => (endpoint, Some(state_path("halt", &symbol, cancel, &reason))),
        AdminCmd::Pause {
            symbol,
            cancel,
            reason,
            endpoint,
        } => (
            endpoint,
            Some(state_path("pause", &symbol, cancel, &reason)),
        ),
        AdminCmd::QuoteOnly {
            symbol,
            cancel,
            reason,
            endpoint,
        } => (
            endpoint,
            Some(state_path("quote-only", &symbol, cancel, &reason)),
        ),
        AdminCmd::Resume {
            symbol,
            reason,
            endpoint,
        } => (
            endpoint,
            Some(state_path("resume", &symbol, false, &reason)),
        ),
        AdminCmd::HaltAll { endpoint } => (endpoint, Some("/halt-all".to_string())),
        AdminCmd::ResumeAll { endpoint } => (endpoint, Some("/resume-all".to_string())),
        AdminCmd::CancelUser { user, endpoint } => {
            (endpoint, Some(format!("/cancel-user/{}", enc(&user))))
        }
        AdminCmd::CancelInstrument { symbol, endpoint } => (
            endpoint,
            Some(format!("/cancel-instrument/{}", enc(&symbol))),
        ),
        AdminCmd::Kick { user, endpoint } => (endpoint, Some(format!("/kick/{}", enc(&user)))),
    };
    let Endpoint { url, token, json } = endpoint;
    let token = token.or_else(|| {
        std::env::var(ironmatch::config::ADMIN_TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty())
    });
    let result = match path {
        None => ironmatch::admin::client::status(&url, token.as_deref(), json),
        Some(path) => ironmatch::admin::client::action(&url, token.as_deref(), &path, json),
    };
    match result {
        Ok(text) => {
            let _ = write!(std::io::stdout(), "{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ironmatch admin: {e}");
            ExitCode::from(1)
        }
    }
}

/// `ironmatch load`: runs, prints the summary, writes the files; exit 1 if replies are
/// missing, 2 on errors.
fn load(
    options: &ironmatch::load::LoadOptions,
    baseline: bool,
    json: Option<PathBuf>,
    hgrm: Option<PathBuf>,
) -> ExitCode {
    use ironmatch::load;
    let (engine, base) = match load::run(options, baseline) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ironmatch load: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = load::print_summary(&mut out, options, &engine, base.as_ref());
    let write = |path: &std::path::Path, f: &dyn Fn(&mut std::fs::File) -> std::io::Result<()>| {
        std::fs::File::create(path)
            .and_then(|mut file| f(&mut file))
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut result = Ok(());
    if let Some(path) = &json {
        let value = serde_json::json!({
            "rate": options.rate,
            "sessions": options.users.len(),
            "seed": options.seed,
            "engine": engine.to_json(),
            "baseline": base.as_ref().map(load::LoadReport::to_json),
        });
        result = result.and(write(path, &|f| writeln!(f, "{value:#}")));
    }
    if let Some(path) = &hgrm {
        result = result.and(write(path, &|f| load::write_hgrm(&engine.latency, f)));
        if let Some(b) = &base {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            let ext = path
                .extension()
                .map_or(String::new(), |e| format!(".{}", e.to_string_lossy()));
            let other = path.with_file_name(format!("{stem}.baseline{ext}"));
            result = result.and(write(&other, &|f| load::write_hgrm(&b.latency, f)));
        }
    }
    if let Err(e) = result {
        eprintln!("ironmatch load: {e}");
        return ExitCode::from(2);
    }
    if engine.missing > 0 {
        eprintln!(
            "ironmatch load: {} replies missing{}",
            engine.missing,
            if engine.failovers > 0 {
                " (a failover loses what was in flight to the node that went away)"
            } else {
                ""
            }
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = match &cli.command {
        Cmd::Admin { .. } => {
            let Cmd::Admin { action } = cli.command else {
                unreachable!()
            };
            return admin(action);
        }
        Cmd::Serve { config }
        | Cmd::Demo { config }
        | Cmd::CheckConfig { config }
        | Cmd::Load { config, .. }
        | Cmd::Feed { config, .. }
        | Cmd::Replay { config, .. }
        | Cmd::Cluster {
            action: ClusterCmd::Status { config },
        } => config,
    };
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ironmatch: {e}");
            return ExitCode::from(2);
        }
    };
    // Books the machine could not hold are refused by name before a command builds them
    // (`serve` checks as it starts).
    if matches!(
        cli.command,
        Cmd::CheckConfig { .. } | Cmd::Demo { .. } | Cmd::Replay { .. }
    ) {
        let book = config.book_config().expect("validated at load");
        // `check-config` judges what `serve` would hold; `demo` and `replay` hold one set.
        let follower = matches!(cli.command, Cmd::CheckConfig { .. })
            && ironmatch::server::snapshot_follower_runs(&config);
        let checked = if matches!(cli.command, Cmd::CheckConfig { .. }) {
            ironmatch::server::check_serve_memory(&config, &book, 1 + u64::from(follower))
        } else {
            ironmatch::server::check_book_memory(&book, 1)
        };
        if let Err(e) = checked {
            eprintln!("ironmatch: {e}");
            return ExitCode::from(2);
        }
    }
    match cli.command {
        Cmd::Serve { .. } => return serve(&config, path),
        Cmd::Load {
            connect,
            sessions,
            rate,
            duration,
            messages,
            seed,
            ioc_percent,
            drain_ms,
            baseline,
            json,
            hgrm,
            quiet,
            ..
        } => {
            let peers: Vec<std::net::SocketAddr> = config
                .cluster
                .iter()
                .flat_map(|c| &c.peers)
                .filter_map(|p| p.gateway.parse().ok())
                .collect();
            let mut connect = if !connect.is_empty() {
                connect
            } else if !peers.is_empty() {
                peers
            } else {
                match config.gateway.listen.parse() {
                    Ok(a) => vec![a],
                    Err(e) => {
                        eprintln!("ironmatch load: gateway.listen: {e}");
                        return ExitCode::from(2);
                    }
                }
            };
            let also = connect.split_off(1);
            let connect = connect[0];
            // A count of sessions the configuration cannot give is refused (0 was blamed on
            // the configuration; a count above its users was cut down without a word).
            if let Some(n) = sessions
                && !(1..=config.users.len()).contains(&n)
            {
                eprintln!(
                    "ironmatch load: --sessions {n}: from 1 to the configuration's {} users",
                    config.users.len()
                );
                return ExitCode::from(2);
            }
            let book = config.book_config().expect("validated at load");
            let users: Vec<(String, String)> = config
                .users
                .iter()
                .take(sessions.unwrap_or(usize::MAX))
                .map(|u| (u.username.clone(), u.password.clone()))
                .collect();
            // A day at most each: larger values overflowed the time arithmetic (a panic).
            const DAY_SECS: u64 = 86_400;
            if !(duration > 0.0 && duration <= DAY_SECS as f64)
                || rate == 0
                || ioc_percent > 100
                || drain_ms > DAY_SECS * 1000
            {
                eprintln!(
                    "ironmatch load: --duration must be above 0 and at most 86400 (a day), --rate above 0, --ioc-percent at most 100, --drain-ms at most 86400000"
                );
                return ExitCode::from(2);
            }
            let options = ironmatch::load::LoadOptions {
                connect,
                also,
                users,
                instruments: book
                    .instruments
                    .iter()
                    .map(|i| ironmatch::load::LoadInstrument {
                        symbol: i.symbol.as_str().to_string(),
                        tick: i.tick.0,
                        lot: i.lot,
                        mid: i.ref_price.0,
                    })
                    .collect(),
                rate,
                duration: std::time::Duration::from_secs_f64(duration),
                messages,
                seed,
                ioc_percent,
                drain: std::time::Duration::from_millis(drain_ms),
                progress: !quiet,
            };
            return load(&options, baseline, json, hgrm);
        }
        Cmd::Demo { .. } => demo(&config),
        Cmd::Replay {
            journal,
            verify_determinism,
            book,
            depth,
            until,
            order,
            json,
            itch,
            ..
        } => {
            // With a trading day, `[journal] dir` holds one directory per day: name them
            // rather than replay an empty journal.
            if let Some(days) = trading_days_in(&journal) {
                eprintln!(
                    "ironmatch replay: {} holds the journals of trading days {}: replay one, e.g. --journal {}",
                    journal.display(),
                    days.join(", "),
                    journal.join(days.last().expect("at least one")).display()
                );
                return ExitCode::from(2);
            }
            if let Some(file) = itch {
                // The export is the whole journal's feed, nothing re-run: options of the
                // report would be silently ignored.
                if verify_determinism
                    || until.is_some()
                    || order.is_some()
                    || book.is_some()
                    || depth.is_some()
                    || json
                {
                    eprintln!(
                        "ironmatch replay: --itch exports the whole journal's feed; --verify-determinism, --until, --order, --book, --depth and --json do not apply to it"
                    );
                    return ExitCode::from(2);
                }
                return export_itch(&config, &journal, &file);
            }
            // An audit prints the order's trail, not the report whose books these choose.
            if order.is_some() && (book.is_some() || depth.is_some()) {
                eprintln!(
                    "ironmatch replay: --order prints the order's audit trail; --book and --depth choose the report's books and do not apply to it"
                );
                return ExitCode::from(2);
            }
            // `USER` names the journal's owner: by the names the journal kept (an older
            // build's journal keeps none: the configuration's).
            let usernames: Vec<String> = match ironmatch::gateway::UserNames::read(&journal) {
                Ok(Some(kept)) => kept.users,
                Ok(None) => config.users.iter().map(|u| u.username.clone()).collect(),
                Err(e) => {
                    eprintln!("ironmatch replay: {e}");
                    return ExitCode::from(1);
                }
            };
            let options = ReplayOptions {
                verify_determinism,
                until,
                book: match book.as_deref() {
                    Some(s) if !config.instruments.iter().any(|i| i.symbol == s) => {
                        let known: Vec<&str> = config
                            .instruments
                            .iter()
                            .map(|i| i.symbol.as_str())
                            .collect();
                        eprintln!(
                            "ironmatch: --book {s:?}: not a configured symbol (configured: {})",
                            known.join(", ")
                        );
                        return ExitCode::from(2);
                    }
                    other => other.and_then(Symbol::from_str_padded),
                },
                depth: depth.unwrap_or(5),
                order: match order.as_deref().map(|o| replay::parse_order(o, &usernames)) {
                    Some(Err(e)) => {
                        eprintln!("ironmatch: {e}");
                        return ExitCode::from(2);
                    }
                    other => other.and_then(Result::ok),
                },
                json,
            };
            let book = config.book_config().expect("validated at load");
            let mut out = std::io::stdout().lock();
            match replay::replay(&journal, &book, &options, &mut out) {
                Err(e) => {
                    eprintln!("ironmatch replay: {e}");
                    return ExitCode::from(1);
                }
                // An order the journal never mentions: say so, rather than print nothing.
                Ok(summary) if summary.audited == 0 && options.order.is_some() => {
                    eprintln!(
                        "ironmatch replay: no command or event of order {} in {}",
                        order.as_deref().unwrap_or_default(),
                        journal.display()
                    );
                    return ExitCode::from(1);
                }
                // The report says the check passed; an audit has no report, so it is said
                // beside the trail (on stderr: stdout stays the trail, JSON or text).
                Ok(_) if verify_determinism && options.order.is_some() => {
                    eprintln!("determinism: every journaled event equals the re-run's");
                }
                Ok(_) => {}
            }
        }
        Cmd::Feed {
            listen,
            request,
            interface,
            session,
            interval,
            depth,
            orders,
            json,
            duration,
            drop_every,
            ..
        } => {
            let m = &config.marketdata;
            // Each above 0 and at most a day, or refused (a value like 1e20 overflowed
            // `Duration` and panicked; 0 or a negative one was dropped without a word).
            const DAY_SECS: f64 = 86_400.0;
            let fits = |s: Option<f64>| s.is_none_or(|s| s > 0.0 && s <= DAY_SECS);
            if !fits(interval) || !fits(duration) || drop_every == Some(0) {
                eprintln!(
                    "ironmatch feed: --interval and --duration must be above 0 and at most 86400 (a day), --drop-every above 0"
                );
                return ExitCode::from(2);
            }
            let seconds = |s: Option<f64>| s.map(std::time::Duration::from_secs_f64);
            let session = match session.as_deref().map(Session::from_str_padded) {
                Some(None) => {
                    eprintln!("ironmatch feed: --session: 1 to 10 printable ASCII characters");
                    return ExitCode::from(2);
                }
                other => other.flatten(),
            };
            let options = ListenerOptions {
                listen: listen.unwrap_or_else(|| m.destination.parse().expect("validated")),
                interface,
                request: request.unwrap_or_else(|| m.retransmission.parse().expect("validated")),
                session,
                interval: seconds(interval),
                depth,
                orders,
                json,
                duration: seconds(duration),
                drop_every,
                clock: config
                    .schedule()
                    .map_or_else(ironmatch::venue::VenueClock::utc, |s| {
                        ironmatch::venue::VenueClock::new(s.tz)
                    }),
            };
            return feed(&options);
        }
        Cmd::Admin { .. } => unreachable!("handled before the configuration is read"),
        Cmd::Cluster { .. } => return cluster_status(&config),
        Cmd::CheckConfig { .. } => {
            for i in &config.instruments {
                let off = |bps: u32, text: String| if bps == 0 { "off".into() } else { text };
                println!(
                    "instrument {:8} tick {} lot {}, band {}, fat finger {}, breaker {}",
                    i.symbol,
                    i.tick_size,
                    i.lot_size,
                    off(
                        i.band_bps,
                        format!("{} bps (remainder {})", i.band_bps, i.band_remainder)
                    ),
                    off(i.fat_finger_bps, format!("{} bps", i.fat_finger_bps)),
                    off(
                        i.breaker_bps,
                        format!(
                            "{} bps over {} s, pause {} s",
                            i.breaker_bps, i.breaker_window_secs, i.breaker_pause_secs
                        )
                    ),
                );
            }
            for u in &config.users {
                println!(
                    "user {:6} firm {:4} cancel_on_disconnect {}",
                    u.username, u.firm, u.cancel_on_disconnect
                );
            }
            let env_token = std::env::var(ironmatch::config::ADMIN_TOKEN_ENV).ok();
            match config.admin.resolve(env_token.as_deref()) {
                Ok(Some(a)) => println!(
                    "admin endpoint http://{} ({})",
                    a.listen,
                    if a.token.is_some() {
                        "bearer token required"
                    } else {
                        "no token"
                    }
                ),
                Ok(None) => println!("admin endpoint off"),
                Err(e) => {
                    eprintln!("ironmatch: {e}");
                    return ExitCode::from(2);
                }
            }
            let book = config.book_config().expect("validated at load");
            let (total, per_order) = Matcher::new(&book).footprint_bytes();
            println!(
                "book memory: {:.1} MiB for {} order slots and {} levels ({} bytes per order slot)",
                total as f64 / f64::from(1 << 20),
                book.orders_max,
                book.levels_max,
                per_order / book.orders_max as usize
            );
            // The snapshot follower re-runs the journal through a matcher of its own.
            println!(
                "  and as much again for the snapshot follower, if it runs (snapshot_source \"follower\", or \"auto\" with dedicated threading)"
            );
            println!(
                "reserved besides the books: {:.1} MiB (a session store chunk of gateway.session_store_bytes for each of {} users, and the pipeline's rings of pipeline.ring_capacity records)",
                ironmatch::server::pipeline_reserve(&config) as f64 / f64::from(1 << 20),
                config.users.len()
            );
        }
    }
    ExitCode::SUCCESS
}

/// `ironmatch replay --itch FILE`.
/// `ironmatch cluster status`: asks every node over its Raft address.
fn cluster_status(config: &Config) -> ExitCode {
    let Some(cluster) = &config.cluster else {
        eprintln!("ironmatch: the configuration has no [cluster]");
        return ExitCode::from(2);
    };
    let settings = config
        .cluster_settings()
        .expect("a configuration with [cluster] has its settings");
    let timeout = std::time::Duration::from_millis(500);
    // With a cluster secret, each node is asked over a handshake proving it.
    let statuses: Vec<_> = cluster
        .peers
        .iter()
        .map(|p| (p, ironmatch::cluster::status_of(&settings, p.id, timeout)))
        .collect();
    let newest = statuses
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok()?.last_log)
        .max()
        .unwrap_or(0);
    // The commit index as the leader sees it: the highest index a majority matched.
    let commit = statuses.iter().find_map(|(_, s)| {
        let s = s.as_ref().ok().filter(|s| s.role == "leader")?;
        let mut matched: Vec<u64> = s.matched.values().map(|m| m.unwrap_or(0)).collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        matched.get(cluster.peers.len() / 2).copied()
    });
    println!(
        "{:>4}  {:<21} {:<9} {:>5} {:>6} {:>9} {:>9} {:>6}  logins",
        "node", "raft", "role", "term", "leader", "last log", "applied", "lag"
    );
    let mut reachable = 0;
    for (peer, status) in &statuses {
        match status {
            Ok(s) => {
                reachable += 1;
                let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
                println!(
                    "{:>4}  {:<21} {:<9} {:>5} {:>6} {:>9} {:>9} {:>6}  {}",
                    peer.id,
                    peer.raft,
                    s.role,
                    s.term,
                    opt(s.leader),
                    opt(s.last_log),
                    opt(s.applied),
                    newest.saturating_sub(s.applied.unwrap_or(0)),
                    if s.accepting { "taken" } else { "refused" }
                );
            }
            // A node that answered with a refusal (another secret, say) is not unreachable.
            Err(e) if e.kind() == std::io::ErrorKind::Other => {
                println!("{:>4}  {:<21} refused: {e}", peer.id, peer.raft)
            }
            Err(e) => println!("{:>4}  {:<21} unreachable: {e}", peer.id, peer.raft),
        }
    }
    match commit {
        Some(c) => println!("commit index {c} (the leader's majority match)"),
        None => println!("no leader answered"),
    }
    if reachable * 2 > cluster.peers.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn export_itch(config: &Config, journal: &std::path::Path, file: &std::path::Path) -> ExitCode {
    let book = config.book_config().expect("validated at load");
    // The journal's own feed settings, if its feed kept them: the export is what was sent.
    let clustered = config.cluster.is_some();
    let (attribution, start_at_midnight) = match ironmatch::feed::FeedSettings::read(journal) {
        Ok(kept) => kept.map_or((config.marketdata.attribution, clustered), |k| {
            (k.attribution, k.start_at_midnight(clustered))
        }),
        Err(e) => {
            eprintln!("ironmatch replay: {e}");
            return ExitCode::from(1);
        }
    };
    // A symbolic link is followed (the link stays): what is guarded and replaced is the
    // file it names, one hop if that does not exist yet.
    let target: std::path::PathBuf = match std::fs::symlink_metadata(file) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(file)
            .or_else(|_| {
                std::fs::read_link(file).map(|to| match file.parent() {
                    Some(dir) if to.is_relative() => dir.join(to),
                    _ => to,
                })
            })
            .unwrap_or_else(|_| file.to_path_buf()),
        _ => file.to_path_buf(),
    };
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    // Never over a journal's own file (this journal's or any other's: another day's, a
    // cluster node's Raft log): a slip of the argument, or a link to one, would destroy
    // what an export reads. Segments and snapshots by their names anywhere; the other
    // files in a journal's directory (it holds a `LOCK`) or a `raft` directory.
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let in_journal = parent.join(ironmatch::journal::LOCK_NAME).exists()
        || parent
            .canonicalize()
            .is_ok_and(|a| journal.canonicalize().is_ok_and(|b| a == b));
    // A Raft directory: named `raft` (the default), the configured `cluster.dir`, or one
    // holding a Raft log's `log` and `vote`, reached by any path.
    let canonical_parent = parent
        .canonicalize()
        .unwrap_or_else(|_| parent.to_path_buf());
    let in_raft = canonical_parent.file_name().is_some_and(|n| n == "raft")
        || config.cluster_settings().is_some_and(|c| {
            c.dir
                .canonicalize()
                .is_ok_and(|dir| dir == canonical_parent)
        })
        || (parent.join("log").is_file() && parent.join("vote").is_file());
    let journals = [".imj", ".ims"].iter().any(|end| name.ends_with(end))
        || (in_journal
            && (name.ends_with(".tmp")
                || [
                    ironmatch::feed::STORE_NAME,
                    ironmatch::feed::SETTINGS_NAME,
                    ironmatch::gateway::SESSION_SETTINGS_NAME,
                    ironmatch::gateway::USERS_SETTINGS_NAME,
                    ironmatch::journal::LOCK_NAME,
                    ironmatch::journal::SYNC_FAILED_NAME,
                ]
                .contains(&name)))
        || (in_raft
            && (name.ends_with(".tmp")
                || [
                    "log",
                    "vote",
                    "purged",
                    ironmatch::journal::SYNC_FAILED_NAME,
                ]
                .contains(&name)));
    if journals {
        eprintln!(
            "ironmatch replay: --itch {}: one of the journal's own files; write the export elsewhere",
            file.display()
        );
        return ExitCode::from(2);
    }
    ironmatch::replay::warn_if_sync_failed(journal);
    ironmatch::replay::warn_if_in_use(journal);
    // The export writes in chunks of its own (1 MiB): no buffer in front.
    let export = |mut out: &mut dyn std::io::Write| {
        ironmatch::feed::stream::export_itch(
            journal,
            &book,
            attribution,
            start_at_midnight,
            &mut out,
        )
        .map_err(|e| e.to_string())
    };
    // A file is written beside its name and renamed over it only once whole and synced: a
    // journal the export refuses (another book configuration, damage) leaves an earlier
    // export as it was. What is not a file (a pipe, a terminal), and a link under `/dev` or
    // `/proc` (`/dev/stdout`, `/dev/fd/N`, `/proc/self/fd/N`: a descriptor the shell
    // redirected), is written through, a file behind such a link appended to: the shell's
    // `>` emptied it, its `>>` keeps what it held (opened anew without append, the stream
    // overwrote the file's start and left any longer tail). A plain file under `/dev`
    // (`/dev/shm/day.itch`, on a tmpfs) is a file like any other: replaced whole (it was
    // written through, and an earlier, longer day's tail stayed after the new stream).
    let descriptor = (file.starts_with("/dev") || file.starts_with("/proc"))
        && std::fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_symlink());
    let through = descriptor || std::fs::metadata(&target).is_ok_and(|m| !m.file_type().is_file());
    let written = if file == std::path::Path::new("/dev/stdout") {
        // Through the process's own standard output, as redirected (`>>` appends).
        export(&mut std::io::stdout().lock())
    } else if through {
        std::fs::OpenOptions::new()
            .write(true)
            .append(descriptor)
            .open(if descriptor { file } else { &target })
            .map_err(|e| format!("{}: {e}", file.display()))
            .and_then(|mut f| export(&mut f))
    } else {
        use std::os::unix::fs::PermissionsExt;
        tempfile::Builder::new()
            // As a file created by name would be: the umask decides.
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(parent)
            .map_err(|e| format!("{}: {e}", parent.display()))
            .and_then(|mut tmp| {
                let n = export(tmp.as_file_mut())?;
                tmp.as_file()
                    .sync_all()
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                tmp.persist(&target)
                    .map_err(|e| format!("{}: {}", file.display(), e.error))?;
                Ok(n)
            })
    };
    match written {
        Ok(n) => {
            eprintln!(
                "ironmatch replay: {n} ITCH messages written to {}",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ironmatch replay: {e}");
            ExitCode::from(1)
        }
    }
}

/// `ironmatch feed`: exit 0 once the session ended with nothing missing, 1 if it stopped
/// earlier or saw bad data, 2 on errors.
fn feed(options: &ListenerOptions) -> ExitCode {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let stop = Arc::new(AtomicBool::new(false));
    let show = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }
    let _ = signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&show));
    let mut out = std::io::stdout().lock();
    match run_listener(options, &stop, &show, &mut out) {
        Ok((report, _))
            if report.complete && report.bad_messages == 0 && report.bad_packets == 0 =>
        {
            ExitCode::SUCCESS
        }
        Ok((report, _)) => {
            eprintln!(
                "ironmatch feed: ended {} ({} bad packets, {} bad messages)",
                if report.complete {
                    "complete"
                } else {
                    "before End of Session with nothing missing"
                },
                report.bad_packets,
                report.bad_messages
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("ironmatch feed: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the engine until SIGINT or SIGTERM, then drains it and exits 0. With a trading
/// day, a day that ends (End of Messages) is followed by the next one.
fn serve(config: &Config, path: &std::path::Path) -> ExitCode {
    let signaled = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal, once the first has asked for a stop, ends the process at once
        // (exit code 1): a drain that hangs, or a long recovery, can still be left. The
        // condition is registered first, so that the first signal only sets the flag.
        if let Err(e) =
            signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&signaled))
                .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&signaled)))
        {
            eprintln!("ironmatch: cannot handle signal {signal}: {e}");
        }
    }
    loop {
        let server = match Server::start(config) {
            Ok(server) => server,
            Err(e) => {
                eprintln!("ironmatch: cannot start: {e}");
                return ExitCode::from(1);
            }
        };
        // A signal stops the running day's server (and, through `signaled`, the loop).
        let ids: Vec<signal_hook::SigId> =
            [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]
                .into_iter()
                .filter_map(|signal| {
                    signal_hook::flag::register(signal, server.shutdown_flag()).ok()
                })
                .collect();
        if signaled.load(Ordering::SeqCst) {
            server.shutdown_flag().store(true, Ordering::SeqCst);
        }
        let day_over = server.day_over_flag();
        let code = serve_day(config, path, server);
        for id in ids {
            signal_hook::low_level::unregister(id);
        }
        // Only a day that ended goes on to the next; any other stop ends `serve`.
        if code != ExitCode::SUCCESS
            || signaled.load(Ordering::SeqCst)
            || !day_over.load(Ordering::SeqCst)
        {
            return code;
        }
        let _ = writeln!(
            std::io::stdout(),
            "ironmatch: the trading day ended; starting the next"
        );
    }
}

/// Serves one day (or, without a `[venue]`, until stopped). Returns the exit code.
fn serve_day(config: &Config, path: &std::path::Path, server: Server) -> ExitCode {
    let p = &config.pipeline;
    let (threading, why) = server.threading();
    // Status lines ignore write errors: a closed stdout must not stop the engine.
    let _ = writeln!(
        std::io::stdout(),
        "ironmatch serving OUCH 5.0 / SoupBinTCP 3.0 on {} (config {}): {}{} instruments, {} users, threading {} ({why}), wait {}, rings {}, snapshots {}, cores gateway {:?} matcher {:?} journal {:?} feed {:?}; feed {}; admin {}",
        server.local_addr(),
        path.display(),
        match (server.day(), &config.venue) {
            (Some(day), Some(venue)) => format!(
                "trading day {day} ({}: system {}-{}, market {}-{}), sessions named {}, ",
                venue.timezone,
                venue.system_start,
                venue.system_end,
                venue.market_open,
                venue.market_close,
                server.session(),
            ),
            _ => String::new(),
        },
        config.instruments.len(),
        config.users.len(),
        threading.name(),
        p.wait,
        p.ring_capacity,
        match config.journal.snapshot_interval_records {
            0 => "off".to_string(),
            n => format!(
                "every {n} records from the {}",
                config
                    .snapshot_source()
                    .resolve(threading != ironmatch::pipeline::Threading::Shared)
                    .name()
            ),
        },
        p.gateway_core,
        // One thread under shared threading, on the gateway's core.
        if threading == ironmatch::pipeline::Threading::Shared {
            p.gateway_core
        } else {
            p.matcher_core
        },
        if threading == ironmatch::pipeline::Threading::Shared {
            p.gateway_core
        } else {
            p.journal_core
        },
        p.feed_core,
        if config.marketdata.enabled {
            format!(
                "ITCH 5.0 / MoldUDP64 session {} to {}, retransmission at {}",
                server.feed_session().unwrap_or("?"),
                config.marketdata.destination,
                server
                    .feed_retransmission_addr()
                    .map_or_else(|| "?".to_string(), |a| a.to_string())
            )
        } else {
            "off".to_string()
        },
        server.admin_addr().map_or_else(
            || "off".to_string(),
            |a| format!("http://{a} (/metrics, /status)")
        ),
    );
    match server.wait() {
        Ok(()) => {
            let _ = writeln!(std::io::stdout(), "ironmatch stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ironmatch: {e}");
            ExitCode::from(1)
        }
    }
}

/// The trading days whose journals `dir` holds (subdirectories named `YYYY-MM-DD`), if it
/// holds no journal segment of its own and at least one such day.
fn trading_days_in(dir: &std::path::Path) -> Option<Vec<String>> {
    let entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir).ok()?.flatten().collect();
    let name = |e: &std::fs::DirEntry| e.file_name().to_string_lossy().into_owned();
    if entries.iter().any(|e| name(e).ends_with(".imj")) {
        return None;
    }
    let mut days: Vec<String> = entries
        .iter()
        .filter(|e| e.path().is_dir() && name(e).parse::<jiff::civil::Date>().is_ok())
        .map(name)
        .collect();
    days.sort();
    (!days.is_empty()).then_some(days)
}

/// A few market makers quote the first instrument, a taker sweeps it.
fn demo(config: &Config) {
    let book = config.book_config().expect("validated at load");
    let mut matcher = Matcher::new(&book);
    let spec = book.instruments[0];
    let users = book.owners.len().min(3) as u16;
    let mut refs = vec![0u32; book.owners.len()];
    let mut ts = 34_200_000_000_000u64;
    let mut events = Vec::new();
    // With a `[venue]` (the shipped configuration) the book starts closed: the day opens
    // first, as the gateway's schedule would open it (before, every order of the demo was
    // rejected as the market closed).
    if book.scheduled {
        println!("-- the trading day opens");
        for event in &DayEvent::ALL[..3] {
            events.clear();
            matcher.apply(
                &Command {
                    ts: Timestamp(ts),
                    owner: OwnerId(0),
                    body: CommandBody::Venue(VenueCommand::SystemEvent(*event)),
                },
                &mut events,
            );
            for e in &events {
                println!("{e}");
            }
        }
    }
    let mut send =
        |owner: u16, side: Side, ticks: i64, lots: u32, tif: TimeInForce, max_floor: u32| {
            refs[usize::from(owner)] += 1;
            ts += 1_000;
            let price = Price((spec.ref_price.0 as i64 + ticks * spec.tick.0 as i64) as u64);
            let cmd = Command {
                ts: Timestamp(ts),
                owner: OwnerId(owner),
                body: CommandBody::New(NewOrder {
                    user_ref: UserRef(u64::from(refs[usize::from(owner)])),
                    side,
                    qty: Qty(lots * spec.lot),
                    symbol: spec.symbol,
                    price: Some(price),
                    tif,
                    hidden: false,
                    post_only: false,
                    min_qty: Qty(0),
                    max_floor: Qty(max_floor * spec.lot),
                    firm: book.owners[usize::from(owner)].firm,
                    echo: Echo::default(),
                }),
            };
            events.clear();
            matcher.apply(&cmd, &mut events);
            for e in &events {
                println!("{e}");
            }
        };
    println!(
        "-- market makers quote {} around {}",
        spec.symbol, spec.ref_price
    );
    for mm in 0..users.saturating_sub(1) {
        for level in 1..=3i64 {
            send(
                mm,
                Side::Buy,
                -level - i64::from(mm),
                100,
                TimeInForce::Day,
                0,
            );
            send(
                mm,
                Side::Sell,
                level + i64::from(mm),
                100,
                TimeInForce::Day,
                if level == 1 { 40 } else { 0 },
            );
        }
    }
    let taker = users - 1;
    println!("-- user {taker} sweeps the offer with an IOC buy");
    send(taker, Side::Buy, 3, 350, TimeInForce::Ioc, 0);
    println!(
        "-- {} orders rest; invariants: {:?}",
        matcher.resting_orders(),
        matcher.check_invariants()
    );
}
