//! A blocking OUCH 5.0 / SoupBinTCP 3.0 client, using the same codecs as the server.
//!
//! For tests, tools and the load generator's control path; it allocates per message and
//! is not meant for the latency-critical path of a trading client.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use zerocopy::big_endian::{U16, U32, U64};

use crate::wire::ouch::{self, Inbound, Options, inbound};
use crate::wire::soupbin::{self, ServerPacket, kind};

/// Something the server sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// Login accepted: the session and the sequence number of the next message.
    LoginAccepted {
        /// Session name, trimmed.
        session: String,
        /// Sequence number of the next Sequenced Data message.
        next_seq: u64,
    },
    /// Login rejected with its code (`A` or `S`).
    LoginRejected(u8),
    /// One sequenced OUCH message and its sequence number.
    Sequenced {
        /// Its number in the session.
        seq: u64,
        /// The OUCH message bytes.
        msg: Vec<u8>,
    },
    /// Server Heartbeat.
    Heartbeat,
    /// End of Session.
    EndOfSession,
    /// Debug text (the server's reason before it closes a connection).
    Debug(String),
}

/// How long [`Client::connect_any`] waits for an answer to a login.
pub const LOGIN_ANSWER_MAX: Duration = Duration::from_secs(1);

/// A connection to the engine.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    next_seq: u64,
}

impl Client {
    /// Connects.
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::with_capacity(1 << 16),
            next_seq: 1,
        })
    }

    /// Logs in to whichever of `addrs` accepts (in a cluster, the leader: followers
    /// refuse with `S`), trying each in turn until `within` has passed. `sequence` is the
    /// next message the client wants (its SoupBinTCP recovery after a failover). Returns
    /// the client, the address that took it and the first sequence number it will get.
    ///
    /// Each address gets 200 ms to connect and [`LOGIN_ANSWER_MAX`] to answer the login: a
    /// frozen node still completes the TCP handshake (the kernel does), a live one answers
    /// in milliseconds.
    pub fn connect_any(
        addrs: &[SocketAddr],
        username: &str,
        password: &str,
        sequence: u64,
        within: Duration,
    ) -> io::Result<(Client, SocketAddr, u64)> {
        let deadline = Instant::now() + within;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address given");
        loop {
            for &addr in addrs {
                let attempt =
                    Client::connect_timeout(addr, Duration::from_millis(200)).and_then(|mut c| {
                        c.login_within(username, password, sequence, LOGIN_ANSWER_MAX)
                            .map(|r| (c, r))
                    });
                match attempt {
                    Ok((c, Received::LoginAccepted { next_seq, .. })) => {
                        return Ok((c, addr, next_seq));
                    }
                    Ok((_, other)) => {
                        last = io::Error::other(format!("{addr}: login answered {other:?}"));
                    }
                    Err(e) => last = io::Error::new(e.kind(), format!("{addr}: {e}")),
                }
            }
            if Instant::now() >= deadline {
                return Err(last);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Connects, waiting at most `timeout`.
    pub fn connect_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::with_capacity(1 << 16),
            next_seq: 1,
        })
    }

    /// The connection (blocking, no read timeout) and the bytes read past the last packet
    /// taken (e.g. the first replayed messages after a Login Accepted), for a caller that
    /// goes on with its own I/O (the load generator).
    pub fn into_parts(self) -> io::Result<(TcpStream, Vec<u8>)> {
        self.stream.set_read_timeout(None)?;
        Ok((self.stream, self.buf))
    }

    /// Sends raw bytes (for tests of malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a packet of `kind` with `payload`.
    pub fn send_packet(&mut self, packet_kind: u8, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 3);
        soupbin::write_packet(&mut out, packet_kind, payload);
        self.stream.write_all(&out)
    }

    /// Sends a Login Request and returns the server's answer (waiting up to 5 s).
    pub fn login(&mut self, username: &str, password: &str, sequence: u64) -> io::Result<Received> {
        self.login_within(username, password, sequence, Duration::from_secs(5))
    }

    /// Sends a Login Request and returns the server's answer, waiting at most `timeout`.
    pub fn login_within(
        &mut self,
        username: &str,
        password: &str,
        sequence: u64,
        timeout: Duration,
    ) -> io::Result<Received> {
        let mut out = Vec::new();
        soupbin::write_login_request(&mut out, username, password, "", sequence);
        self.stream.write_all(&out)?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv(deadline.saturating_duration_since(Instant::now()))? {
                Some(Received::Heartbeat) => {}
                Some(r) => return Ok(r),
                None => return Err(io::Error::new(io::ErrorKind::TimedOut, "no login answer")),
            }
        }
    }

    /// Sends one OUCH message as Unsequenced Data.
    pub fn send(&mut self, msg: &Inbound<'_>) -> io::Result<()> {
        let mut payload = Vec::with_capacity(64);
        msg.write(&mut payload);
        self.send_packet(kind::UNSEQUENCED, &payload)
    }

    /// Sends an Enter Order.
    #[allow(clippy::too_many_arguments)]
    pub fn enter(
        &mut self,
        user_ref: u32,
        side: u8,
        qty: u32,
        symbol: &str,
        price: u64,
        tif: u8,
        display: u8,
        options: Options,
    ) -> io::Result<()> {
        let mut m = ouch::EnterOrder::new(
            user_ref,
            side,
            qty,
            soupbin::left_justified(symbol),
            price,
            tif,
            display,
        );
        m.clordid = soupbin::left_justified(&format!("C{user_ref}"));
        self.send(&Inbound::Enter(&m, options))
    }

    /// Sends a Day limit order, displayed, no options.
    pub fn limit(
        &mut self,
        user_ref: u32,
        side: u8,
        qty: u32,
        symbol: &str,
        price: u64,
    ) -> io::Result<()> {
        self.enter(
            user_ref,
            side,
            qty,
            symbol,
            price,
            b'0',
            b'Y',
            Options::default(),
        )
    }

    /// Sends a Cancel Order down to `qty` shares.
    pub fn cancel(&mut self, user_ref: u32, qty: u32) -> io::Result<()> {
        let m = ouch::CancelOrder {
            msg_type: inbound::CANCEL,
            user_ref: U32::new(user_ref),
            qty: U32::new(qty),
        };
        self.send(&Inbound::Cancel(&m, Options::default()))
    }

    /// Sends a Replace Order.
    pub fn replace(
        &mut self,
        orig_user_ref: u32,
        user_ref: u32,
        qty: u32,
        price: u64,
    ) -> io::Result<()> {
        let m = ouch::ReplaceOrder {
            msg_type: inbound::REPLACE,
            orig_user_ref: U32::new(orig_user_ref),
            user_ref: U32::new(user_ref),
            qty: U32::new(qty),
            price: U64::new(price),
            tif: b'0',
            display: b'Y',
            iso: b'N',
            clordid: soupbin::left_justified(&format!("C{user_ref}")),
            appendage_len: U16::ZERO,
        };
        self.send(&Inbound::Replace(&m, Options::default()))
    }

    /// Sends a Mass Cancel Request for `firm`, all symbols.
    pub fn mass_cancel(&mut self, user_ref: u32, firm: &str) -> io::Result<()> {
        self.send_mass_cancel(user_ref, firm, None)
    }

    /// Sends a Mass Cancel Request for every symbol, limited to one side (`B`, `S`, `T` or
    /// `E`, OUCH's Side option: the three sells all name the ask side).
    pub fn mass_cancel_side(&mut self, user_ref: u32, firm: &str, side: u8) -> io::Result<()> {
        self.send_mass_cancel(user_ref, firm, Some(side))
    }

    fn send_mass_cancel(&mut self, user_ref: u32, firm: &str, side: Option<u8>) -> io::Result<()> {
        let m = ouch::MassCancelRequest {
            msg_type: inbound::MASS_CANCEL,
            user_ref: U32::new(user_ref),
            firm: soupbin::left_justified(firm),
            symbol: [b' '; 8],
            appendage_len: U16::ZERO,
        };
        let options = Options {
            side,
            ..Options::default()
        };
        self.send(&Inbound::MassCancel(&m, options))
    }

    /// Sends a Logout Request.
    pub fn logout(&mut self) -> io::Result<()> {
        self.send_packet(kind::LOGOUT_REQUEST, &[])
    }

    /// The next packet, or `None` if nothing arrives within `timeout`. A closed connection
    /// is an `UnexpectedEof` error.
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Option<Received>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(received) = self.take_packet()? {
                return Ok(Some(received));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    ));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                // A signal (a read with a timeout is never restarted): read on until the
                // deadline.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next sequenced message, skipping heartbeats; `None` on timeout.
    pub fn recv_message(&mut self, timeout: Duration) -> io::Result<Option<(u64, Vec<u8>)>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left)? {
                Some(Received::Sequenced { seq, msg }) => return Ok(Some((seq, msg))),
                Some(Received::Heartbeat) => {}
                Some(other) => {
                    return Err(io::Error::other(format!(
                        "expected a sequenced message, got {other:?}"
                    )));
                }
                None => return Ok(None),
            }
        }
    }

    fn take_packet(&mut self) -> io::Result<Option<Received>> {
        let frame = match soupbin::next_frame(&self.buf, 65_535) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        };
        let len = frame.len;
        let received = match soupbin::decode_server(&frame)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            ServerPacket::LoginAccepted(a) => {
                let next_seq = soupbin::parse_number(&a.sequence)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                self.next_seq = next_seq;
                Received::LoginAccepted {
                    session: String::from_utf8_lossy(soupbin::trimmed(&a.session)).into_owned(),
                    next_seq,
                }
            }
            ServerPacket::LoginRejected(code) => Received::LoginRejected(code),
            ServerPacket::Sequenced(msg) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                Received::Sequenced {
                    seq,
                    msg: msg.to_vec(),
                }
            }
            ServerPacket::Heartbeat => Received::Heartbeat,
            ServerPacket::EndOfSession => Received::EndOfSession,
            ServerPacket::Debug(text) => {
                Received::Debug(String::from_utf8_lossy(text).into_owned())
            }
        };
        self.buf.drain(..len);
        Ok(Some(received))
    }
}

/// A session that fails over by itself, for a cluster (`[cluster]`): it keeps the
/// addresses, the credentials and the next sequence number it is owed, and when its
/// connection fails (end of file, a reset, the server's Debug text before it closes, End of
/// Session, or `silence` without any packet, as from a frozen node) it logs in again at
/// whichever address takes it, asking for that number: SoupBinTCP's own recovery, so the
/// caller sees every sequenced message once and in order across failovers.
///
/// A message written to a connection that then failed may or may not have been sequenced;
/// the stream from the new leader says which. [`FailoverClient::send_with`] sends again on
/// the new connection only when the write itself failed; resending an order is safe under
/// OUCH (a UserRefNum already taken is rejected, never a second order).
#[derive(Debug)]
pub struct FailoverClient {
    addrs: Vec<SocketAddr>,
    username: String,
    password: String,
    /// How long a new login may take before the session gives up.
    within: Duration,
    /// Nothing received for this long: the node is presumed gone.
    silence: Duration,
    client: Client,
    address: SocketAddr,
    last_rx: Instant,
    /// When the session last wrote: a Client Heartbeat goes out after
    /// [`CLIENT_HEARTBEAT_PERIOD`] without (a silent client is logged out by the server).
    last_tx: Instant,
    failovers: u64,
}

/// How often a waiting [`FailoverClient`] sends a Client Heartbeat (SoupBinTCP: every second
/// without other traffic).
const CLIENT_HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);

impl FailoverClient {
    /// Logs in at whichever of `addrs` accepts (see [`Client::connect_any`]), asking for
    /// message `sequence` on; later logins take at most `within` each, and `silence` without
    /// a packet (the server's heartbeats included) counts as a failed connection.
    pub fn connect(
        addrs: &[SocketAddr],
        username: &str,
        password: &str,
        sequence: u64,
        within: Duration,
        silence: Duration,
    ) -> io::Result<FailoverClient> {
        let (client, address, _) =
            Client::connect_any(addrs, username, password, sequence, within)?;
        Ok(FailoverClient {
            addrs: addrs.to_vec(),
            username: username.to_string(),
            password: password.to_string(),
            within,
            silence,
            client,
            address,
            last_rx: Instant::now(),
            last_tx: Instant::now(),
            failovers: 0,
        })
    }

    /// The address of the node this session is logged in at.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// How many times the session logged in again.
    pub fn failovers(&self) -> u64 {
        self.failovers
    }

    /// The sequence number of the next message the session is owed.
    pub fn next_seq(&self) -> u64 {
        self.client.next_seq
    }

    /// Logs in again at whichever address takes the session, from the next message owed.
    fn fail_over(&mut self) -> io::Result<()> {
        let next = self.client.next_seq;
        // The node that just failed last.
        let order: Vec<SocketAddr> = (self.addrs.iter().copied())
            .filter(|a| *a != self.address)
            .chain([self.address])
            .collect();
        let (client, address, _) =
            Client::connect_any(&order, &self.username, &self.password, next, self.within)?;
        self.client = client;
        self.address = address;
        self.last_rx = Instant::now();
        self.last_tx = Instant::now();
        self.failovers += 1;
        Ok(())
    }

    /// Sends through `send` (any of [`Client`]'s senders); when the write fails, fails over
    /// and sends once more on the new connection.
    pub fn send_with(&mut self, send: impl Fn(&mut Client) -> io::Result<()>) -> io::Result<()> {
        self.last_tx = Instant::now();
        match send(&mut self.client) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.fail_over()?;
                send(&mut self.client)
            }
        }
    }

    /// The next sequenced message, skipping heartbeats and failing over as needed; `None`
    /// when nothing arrives within `timeout`. An error only when no node takes the session
    /// back within the login time.
    pub fn recv_message(&mut self, timeout: Duration) -> io::Result<Option<(u64, Vec<u8>)>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Wake in time to notice the silence and to send heartbeats.
            let wait = left.min(self.silence / 4).min(CLIENT_HEARTBEAT_PERIOD / 4);
            if self.last_tx.elapsed() >= CLIENT_HEARTBEAT_PERIOD {
                self.last_tx = Instant::now();
                // A failed write shows as a failed read below.
                let _ = self.client.send_packet(kind::CLIENT_HEARTBEAT, &[]);
            }
            let failed = match self.client.recv(wait) {
                Ok(Some(Received::Sequenced { seq, msg })) => {
                    self.last_rx = Instant::now();
                    return Ok(Some((seq, msg)));
                }
                Ok(Some(Received::Heartbeat)) => {
                    self.last_rx = Instant::now();
                    false
                }
                // The server's reason before it closes, or its end of the session.
                Ok(Some(Received::Debug(_) | Received::EndOfSession)) => true,
                Ok(Some(Received::LoginAccepted { .. } | Received::LoginRejected(_))) => false,
                Ok(None) => self.last_rx.elapsed() >= self.silence,
                Err(_) => true,
            };
            if failed {
                self.fail_over()?;
                continue;
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }
}
