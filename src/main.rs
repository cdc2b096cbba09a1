//! The `ironmatch` command: wiring only (load config, build, run).
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ironmatch::book::{Command, CommandBody, Echo, Matcher, NewOrder, TimeInForce};
use ironmatch::config::Config;
use ironmatch::replay::{self, ReplayOptions};
use ironmatch::server::Server;
use ironmatch::types::{OwnerId, Price, Qty, Side, Symbol, Timestamp, UserRef};

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
        /// Price levels per side.
        #[arg(long, default_value_t = 5)]
        depth: usize,
        /// Stop after this sequence number.
        #[arg(long)]
        until: Option<u64>,
        /// Audit trail of one order: USER:REF (username and UserRefNum).
        #[arg(long)]
        order: Option<String>,
        /// Machine-readable output (JSON).
        #[arg(long)]
        json: bool,
    },
    /// Validate a configuration file and print what it defines.
    CheckConfig {
        /// Configuration file.
        #[arg(long, default_value = "config/ironmatch.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = match &cli.command {
        Cmd::Serve { config }
        | Cmd::Demo { config }
        | Cmd::CheckConfig { config }
        | Cmd::Replay { config, .. } => config,
    };
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ironmatch: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Cmd::Serve { .. } => return serve(&config, path),
        Cmd::Demo { .. } => demo(&config),
        Cmd::Replay {
            journal,
            verify_determinism,
            book,
            depth,
            until,
            order,
            json,
            ..
        } => {
            let usernames: Vec<String> = config.users.iter().map(|u| u.username.clone()).collect();
            let options = ReplayOptions {
                verify_determinism,
                until,
                book: match book.as_deref().map(Symbol::from_str_padded) {
                    Some(None) => {
                        eprintln!("ironmatch: --book: not a symbol");
                        return ExitCode::from(2);
                    }
                    other => other.flatten(),
                },
                depth,
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
            if let Err(e) = replay::replay(&journal, &book, &options, &mut out) {
                eprintln!("ironmatch replay: {e}");
                return ExitCode::from(1);
            }
        }
        Cmd::CheckConfig { .. } => {
            for i in &config.instruments {
                println!(
                    "instrument {:8} tick {} lot {} band {} bps",
                    i.symbol, i.tick_size, i.lot_size, i.band_bps
                );
            }
            for u in &config.users {
                println!(
                    "user {:6} firm {:4} cancel_on_disconnect {}",
                    u.username, u.firm, u.cancel_on_disconnect
                );
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
        }
    }
    ExitCode::SUCCESS
}

/// Runs the engine until SIGINT or SIGTERM, then drains it and exits 0.
fn serve(config: &Config, path: &std::path::Path) -> ExitCode {
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("ironmatch: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, server.shutdown_flag()) {
            eprintln!("ironmatch: cannot handle signal {signal}: {e}");
        }
    }
    let p = &config.pipeline;
    // Status lines ignore write errors: a closed stdout must not stop the engine.
    let _ = writeln!(
        std::io::stdout(),
        "ironmatch serving OUCH 5.0 / SoupBinTCP 3.0 on {} (config {}): {} instruments, {} users, wait {}, rings {}, cores gateway {:?} matcher {:?} journal {:?}",
        server.local_addr(),
        path.display(),
        config.instruments.len(),
        config.users.len(),
        p.wait,
        p.ring_capacity,
        p.gateway_core,
        p.matcher_core,
        p.journal_core,
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

/// A few market makers quote the first instrument, a taker sweeps it.
fn demo(config: &Config) {
    let book = config.book_config().expect("validated at load");
    let mut matcher = Matcher::new(&book);
    let spec = book.instruments[0];
    let users = book.owners.len().min(3) as u16;
    let mut refs = vec![0u32; book.owners.len()];
    let mut ts = 34_200_000_000_000u64;
    let mut events = Vec::new();
    let mut send =
        |owner: u16, side: Side, ticks: i64, lots: u32, tif: TimeInForce, max_floor: u32| {
            refs[usize::from(owner)] += 1;
            ts += 1_000;
            let price = Price((spec.ref_price.0 as i64 + ticks * spec.tick.0 as i64) as u64);
            let cmd = Command {
                ts: Timestamp(ts),
                owner: OwnerId(owner),
                body: CommandBody::New(NewOrder {
                    user_ref: UserRef(refs[usize::from(owner)]),
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
