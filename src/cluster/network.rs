//! Raft's network: a small request/reply protocol over TCP between nodes, on the raft
//! thread. Each frame is `length u32 LE | postcard of a [`Request`] or [`Reply`]`; a
//! connection carries one request at a time. A node opens each connection with
//! [`Request::Hello`], carrying the fingerprint of its book configuration (instruments,
//! users, rules: what the matcher needs to apply commands as every other node does) and of
//! its feed's shape (MoldUDP64 session, attribution: every node stores the same feed); a
//! node with another fingerprint refuses every Raft request on that connection, so nodes
//! that would apply the same commands differently never form a cluster. The same listener
//! answers `ironmatch cluster status` ([`Request::Status`]): without a hello when the
//! cluster has no secret, and only after the handshake below when it has one
//! ([`sealed_status`]: a handshake from the node to itself, answered the status only).
//!
//! With a cluster secret (`[cluster] secret`), a connection is authenticated both ways
//! before any Raft request: the caller's [`Request::SealedHello`] carries a fresh nonce, the
//! node answers [`Reply::Challenge`] with its own nonce and a proof that it knows the secret
//! (HMAC-SHA256 over both nonces and the fingerprint), and the caller answers
//! [`Request::Proof`] with its own. From there every frame, both ways, is encrypted and
//! authenticated with ChaCha20-Poly1305 (RFC 8439, `ring`'s) under a key of this connection (derived
//! from the secret and both nonces), its nonce the frame's direction and its number on the
//! connection: the order flow is not readable on the wire, and a frame altered, replayed,
//! reordered or injected ends the connection. The secret itself never crosses the wire.
//!
//! Before any frame, each end of a connection sends its [`Preamble`]: a magic and this
//! protocol's version ([`PROTOCOL_VERSION`]). A node reads the caller's first, then sends
//! its own whatever it read, and goes on only with the same version; the caller goes on
//! only if the node's is the same. So nodes of releases that frame or encode requests, or
//! the commands in Raft's entries, differently refuse each other with a message naming
//! both versions instead of misreading each other's bytes (a node of a release before the
//! preamble reads it as a frame's length, too long, and closes the connection).

use std::io;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Node, NodeId, NodeStatus, TypeConfig};

/// This cluster protocol's version, in every connection's [`Preamble`]. Raise it with
/// any change to what crosses a connection: the frames, [`Request`] and [`Reply`], the
/// handshake, or the encoding of Raft's entries (the commands they carry). The tests
/// `the_message_format_is_its_versions_file` (the serde format of every type that crosses,
/// against `src/cluster/protocol-v<N>.json`) and `the_wire_bytes_are_the_versions` (the
/// bytes of the preamble, frames, proofs and sample messages) hold this version.
/// Version 4 (from 2026-12-07, with journal format 5): a mass cancel command carries the
/// side its request named (`Option<Side>` where `Option<BookSide>` was), which a Raft
/// entry's commands carry. Version 3 (from 2026-12-07, with journal format 4): five reject
/// reasons at the end of
/// `RejectReason`'s variants, which a gateway's refusal carries in a Raft entry's
/// commands. Version 2 (from `ironmatch` after `15a1e25`): a node's challenge carries a
/// proof per secret (a secret's rotation). Version 1 (`07c49d7` to `15a1e25`): one proof.
pub const PROTOCOL_VERSION: u16 = 4;

/// What every cluster connection opens with, each way: `IMCL`, the protocol version (u16
/// LE) and two zero bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preamble([u8; PREAMBLE_LEN]);

/// Bytes of a [`Preamble`].
pub const PREAMBLE_LEN: usize = 8;
const MAGIC: &[u8; 4] = b"IMCL";

impl Preamble {
    /// This node's.
    pub fn ours() -> Preamble {
        let mut bytes = [0u8; PREAMBLE_LEN];
        bytes[..4].copy_from_slice(MAGIC);
        bytes[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        Preamble(bytes)
    }

    /// The bytes on the wire.
    pub fn bytes(&self) -> [u8; PREAMBLE_LEN] {
        self.0
    }

    /// Why the other end's preamble, `theirs`, does not allow a conversation, if it does
    /// not ("it": the other end).
    pub fn refusal(theirs: [u8; PREAMBLE_LEN]) -> Option<String> {
        if &theirs[..4] != MAGIC {
            return Some(format!(
                "it sent no ironmatch cluster preamble (its first bytes: {theirs:02x?}): a \
                 node of an ironmatch release before cluster protocol versions, or not a \
                 node; this release speaks cluster protocol version {PROTOCOL_VERSION}"
            ));
        }
        let version = u16::from_le_bytes([theirs[4], theirs[5]]);
        if version != PROTOCOL_VERSION {
            return Some(format!(
                "it speaks cluster protocol version {version} and this release version \
                 {PROTOCOL_VERSION}: every node of a cluster, and `ironmatch cluster status`, \
                 needs a release of the same cluster protocol"
            ));
        }
        (theirs[6..] != [0, 0]).then(|| {
            format!(
                "its cluster preamble (version {version}) sets the bytes this release \
                 reserves ({:02x?}): a later release's?",
                &theirs[6..]
            )
        })
    }
}

/// The caller's side of the preamble on a fresh connection: sends this node's, then reads
/// the node's; an error of kind `Other` says why the node's does not do, or that the node
/// closed the connection without one.
pub async fn exchange_preamble(stream: &mut TcpStream) -> io::Result<()> {
    stream.write_all(&Preamble::ours().bytes()).await?;
    let mut theirs = [0u8; PREAMBLE_LEN];
    let read = stream.read_exact(&mut theirs).await.map(|_| ());
    judge_preamble(read, theirs)
}

/// The caller's verdict on the node's preamble, `theirs`, as `read` read it: an error of
/// kind `Other` says why the conversation cannot go on.
pub fn judge_preamble(read: io::Result<()>, theirs: [u8; PREAMBLE_LEN]) -> io::Result<()> {
    match read {
        Ok(()) => Preamble::refusal(theirs).map_or(Ok(()), |why| Err(io::Error::other(why))),
        Err(e) => Err(before_preamble(e)),
    }
}

/// An error reading the node's preamble: a close or a reset is a node that does not send
/// one (a release before it reads this node's preamble as a frame's length, too long,
/// and closes the connection with bytes unread: a reset).
fn before_preamble(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted => io::Error::other(
            "it closed the connection before sending its cluster preamble: a node of an \
             ironmatch release before cluster protocol versions, a node that stopped, or \
             not a node",
        ),
        _ => e,
    }
}

/// Bytes of a refusal's line kept and logged.
const REFUSAL_TEXT_MAX: usize = 1024;

/// This node's refusals of its peers' preambles and its peers' refusals of its hello, as
/// the caller: each logged when it starts or its reason changes, and again at most once
/// every 10 s while it lasts. Shared by every client of a node (openraft makes a new client
/// for each round of votes, so a client's own memory would log every round).
#[derive(Debug, Default)]
pub struct CallerLog(std::sync::Mutex<std::collections::BTreeMap<NodeId, (String, Instant)>>);

impl CallerLog {
    /// Logs `line` about `target`, unless it is the line last logged about it, within
    /// the period; returns whether it did.
    fn refused(&self, target: NodeId, mut line: String) -> bool {
        // A peer's reason is its text, up to a frame's size: kept and logged in part.
        if line.len() > REFUSAL_TEXT_MAX {
            let mut end = REFUSAL_TEXT_MAX;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
            line.push_str(" [...]");
        }
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((said, at)) = last.get(&target)
            && *said == line
            && at.elapsed() < super::REFUSAL_LOG_PERIOD
        {
            return false;
        }
        eprintln!("{line}");
        last.insert(target, (line, Instant::now()));
        true
    }

    /// `target` agreed to a connection: its next refusal is logged at once.
    fn agreed(&self, target: NodeId) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&target);
    }
}

/// Largest frame accepted: a batch of entries with room.
pub const FRAME_BYTES_MAX: usize = 64 << 20;
/// Largest frame accepted before a connection's hello is agreed (a hello, a proof or a
/// status request: a few dozen bytes).
pub const HELLO_BYTES_MAX: usize = 256;
/// How long a connection attempt to a peer may take.
const CONNECT_MAX: Duration = Duration::from_millis(200);

/// What a node asks another.
#[derive(serde::Serialize, serde::Deserialize)]
pub enum Request {
    /// Raft: append entries (and heartbeats).
    Append(AppendEntriesRequest<TypeConfig>),
    /// Raft: request a vote.
    Vote(VoteRequest<NodeId>),
    /// Raft: a snapshot chunk.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// The node's role and indexes, for `ironmatch cluster status`.
    Status,
    /// The first request on a connection from a node: its configuration's fingerprint.
    Hello {
        /// [`crate::journal::fingerprint`] of the sender's book configuration.
        config: u64,
    },
    /// The first request on a connection from a node that has a cluster secret.
    SealedHello {
        /// As [`Request::Hello`]'s.
        config: u64,
        /// The calling node.
        caller: NodeId,
        /// The node it means to reach.
        node: NodeId,
        /// The caller's fresh nonce.
        nonce: [u8; NONCE_LEN],
    },
    /// The caller's proof that it knows the secret, after [`Reply::Challenge`].
    Proof {
        /// [`Transcript::proof`] of the caller.
        proof: [u8; TAG_LEN],
    },
}

/// The answer to a [`Request`].
#[derive(serde::Serialize, serde::Deserialize)]
pub enum Reply {
    /// To [`Request::Append`].
    Append(AppendEntriesResponse<NodeId>),
    /// To [`Request::Vote`].
    Vote(VoteResponse<NodeId>),
    /// To [`Request::Snapshot`].
    Snapshot(InstallSnapshotResponse<NodeId>),
    /// To [`Request::Status`].
    Status(NodeStatus),
    /// The receiving node's Raft failed the request.
    Failed(String),
    /// To [`Request::Hello`] with the same fingerprint, or to a valid [`Request::Proof`]
    /// (then sealed: the connection's first authenticated frame).
    Hello,
    /// To [`Request::SealedHello`] with the same fingerprint, to this node from another.
    Challenge {
        /// The node's fresh nonce.
        nonce: [u8; NONCE_LEN],
        /// [`Transcript::proof`] of the node under each of its [`Secrets`], the one in force
        /// first.
        proofs: Vec<[u8; TAG_LEN]>,
    },
}

/// Bytes of a handshake nonce.
pub const NONCE_LEN: usize = 16;
/// Bytes of an HMAC-SHA256 output: a handshake proof, and a connection's key.
pub const TAG_LEN: usize = 32;
/// Bytes of a sealed frame's Poly1305 tag.
pub const FRAME_TAG_LEN: usize = 16;

/// The cluster's secrets: the one in force and, while a cluster rotates its secret, the
/// one before it (`[cluster] previous_secret`), still taken. A node proves itself with
/// each in its challenge; a caller proves itself with the first of its own that one of
/// the node's proofs holds for, and the connection is sealed under that one. So nodes
/// that share either secret agree, and a cluster moves to a new secret one node at a time.
#[derive(Clone)]
pub struct Secrets {
    /// The secret in force.
    pub current: std::sync::Arc<[u8]>,
    /// The secret before it, during a rotation.
    pub previous: Option<std::sync::Arc<[u8]>>,
}

/// Never the secrets themselves: whether there is a previous one.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("current", &"<set>")
            .field("previous", &self.previous.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Most proofs a challenge may carry: one per secret, the one in force and the previous.
pub const CHALLENGE_PROOFS_MAX: usize = 2;

impl Secrets {
    /// One secret, no rotation.
    pub fn one(secret: &[u8]) -> Secrets {
        Secrets {
            current: secret.into(),
            previous: None,
        }
    }

    /// Every secret taken, the one in force first.
    pub fn all(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(&*self.current).chain(self.previous.as_deref())
    }

    /// The node's challenge proofs, one per secret, under `transcript`.
    pub fn proofs(&self, transcript: &Transcript, end: End) -> Vec<[u8; TAG_LEN]> {
        self.all().map(|s| transcript.proof(s, end)).collect()
    }

    /// The first secret of these that one of `proofs` holds for (made by `end`).
    pub fn holding<'a>(
        &'a self,
        transcript: &Transcript,
        end: End,
        proofs: &[[u8; TAG_LEN]],
    ) -> Option<&'a [u8]> {
        self.all()
            .find(|s| proofs.iter().any(|p| transcript.proof_holds(s, end, p)))
    }
}

/// HMAC-SHA256 under `key`, fed `parts` laid end to end.
fn mac(key: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
    for part in parts {
        mac.update(part);
    }
    mac
}

/// A fresh nonce from the operating system.
pub fn nonce() -> io::Result<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(nonce)
}

/// Which end of a connection: the caller (client) or the node it called (server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Opened the connection, sends requests.
    Caller,
    /// Accepted it, sends replies.
    Node,
}

impl End {
    fn label(self) -> &'static [u8] {
        match self {
            End::Caller => b"ironmatch raft caller",
            End::Node => b"ironmatch raft node",
        }
    }
}

/// What a handshake's proofs and its connection's key cover: the configuration, which
/// node called which (so a handshake relayed to another node does not hold, and one back to
/// the caller's own listener is taken as a status tool's: answered the status only), and
/// both fresh nonces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transcript {
    /// The configuration fingerprint both ends have.
    pub config: u64,
    /// The calling node.
    pub caller: NodeId,
    /// The node called.
    pub node: NodeId,
    /// The caller's nonce.
    pub caller_nonce: [u8; NONCE_LEN],
    /// The called node's nonce.
    pub node_nonce: [u8; NONCE_LEN],
}

impl Transcript {
    /// The MAC under `key` of `label` and the whole transcript.
    fn mac(&self, key: &[u8], label: &[u8]) -> Hmac<Sha256> {
        mac(
            key,
            &[
                label,
                &self.config.to_le_bytes(),
                &self.caller.to_le_bytes(),
                &self.node.to_le_bytes(),
                &self.caller_nonce,
                &self.node_nonce,
            ],
        )
    }

    /// The proof `end` gives of knowing `secret`.
    pub fn proof(&self, secret: &[u8], end: End) -> [u8; TAG_LEN] {
        self.mac(secret, end.label()).finalize().into_bytes().into()
    }

    /// Whether `given` is `end`'s proof, compared in constant time.
    pub fn proof_holds(&self, secret: &[u8], end: End, given: &[u8; TAG_LEN]) -> bool {
        self.mac(secret, end.label()).verify_slice(given).is_ok()
    }

    /// The seal of `end` of this connection.
    pub fn seal(&self, secret: &[u8], end: End) -> Seal {
        let key: [u8; TAG_LEN] = self
            .mac(secret, b"ironmatch raft connection")
            .finalize()
            .into_bytes()
            .into();
        Seal {
            cipher: LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, &key).expect("a 32-byte key"),
            ),
            end,
            sent: 0,
            received: 0,
        }
    }
}

/// One authenticated connection's frames: its cipher (keyed from the secret and both
/// nonces, so each connection has its own key) and how many frames each way it has sealed
/// and opened (each frame's nonce: its direction and number, never used twice under a key).
pub struct Seal {
    cipher: LessSafeKey,
    end: End,
    sent: u64,
    received: u64,
}

/// The nonce of frame `n` sent by `from`: 4 bytes of direction, 8 of number.
fn frame_nonce(from: End, n: u64) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[0] = match from {
        End::Caller => 1,
        End::Node => 2,
    };
    nonce[4..].copy_from_slice(&n.to_le_bytes());
    // Unique under the connection's key: each direction numbers its own frames.
    Nonce::assume_unique_for_key(nonce)
}

impl Seal {
    /// Encrypts the next frame this end sends, `body`, in place; its tag.
    fn seal(&mut self, body: &mut [u8]) -> [u8; FRAME_TAG_LEN] {
        let nonce = frame_nonce(self.end, self.sent);
        self.sent += 1;
        let tag = self
            .cipher
            .seal_in_place_separate_tag(nonce, Aad::empty(), body)
            .expect("a frame is far below ChaCha20's limit");
        tag.as_ref()
            .try_into()
            .expect("a ChaCha20-Poly1305 tag is 16 bytes")
    }

    /// Decrypts the next frame from the other end, `frame` (its ciphertext, then its tag),
    /// in place: its plaintext, if the tag holds (otherwise the connection must end).
    fn open<'f>(&mut self, frame: &'f mut [u8]) -> Option<&'f [u8]> {
        let from = match self.end {
            End::Caller => End::Node,
            End::Node => End::Caller,
        };
        let nonce = frame_nonce(from, self.received);
        self.received += 1;
        self.cipher
            .open_in_place(nonce, Aad::empty(), frame)
            .ok()
            .map(|plain| &*plain)
    }
}

/// Writes one frame; on a sealed connection encrypted, its tag at the end (the length
/// counts the tag).
pub async fn write_frame<T: serde::Serialize>(
    stream: &mut TcpStream,
    value: &T,
    seal: Option<&mut Seal>,
) -> io::Result<()> {
    let mut body = postcard::to_allocvec(value).map_err(io::Error::other)?;
    let tag = seal.map(|s| s.seal(&mut body));
    let len = body.len() + tag.map_or(0, |t| t.len());
    let mut frame = Vec::with_capacity(len + 4);
    frame.extend_from_slice(&(len as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    if let Some(tag) = tag {
        frame.extend_from_slice(&tag);
    }
    stream.write_all(&frame).await
}

/// Reads one frame; on a sealed connection, one whose tag holds, decrypted.
pub async fn read_frame<T: serde::de::DeserializeOwned>(
    stream: &mut TcpStream,
    seal: Option<&mut Seal>,
) -> io::Result<T> {
    read_frame_within(stream, seal, FRAME_BYTES_MAX).await
}

/// Reads one frame of at most `limit` bytes (see [`read_frame`]).
pub async fn read_frame_within<T: serde::de::DeserializeOwned>(
    stream: &mut TcpStream,
    seal: Option<&mut Seal>,
    limit: usize,
) -> io::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > limit {
        return Err(io::Error::other(format!("frame of {len} bytes")));
    }
    // Grown as bytes arrive, so a length alone reserves nothing.
    let mut body = Vec::new();
    (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut body)
        .await?;
    if body.len() != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if let Some(seal) = seal {
        if len < FRAME_TAG_LEN {
            return Err(io::Error::other("a sealed frame shorter than its tag"));
        }
        let Some(body) = seal.open(&mut body) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a frame's tag does not hold (altered, replayed, or not from the cluster)",
            ));
        };
        return decode(body);
    }
    decode(&body)
}

/// Decodes a frame's body (bytes from the network: anything may arrive).
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> io::Result<T> {
    postcard::from_bytes(body).map_err(io::Error::other)
}

/// Makes a [`PeerClient`] per peer.
pub struct Network {
    /// Where this node reaches each peer: its own configuration's `peers`, which win over
    /// the addresses in the Raft membership (the same for every node).
    pub peers: std::collections::BTreeMap<NodeId, String>,
    /// This node's configuration fingerprint, said in each connection's hello.
    pub config: u64,
    /// The cluster's secrets, if set: every connection is authenticated and sealed.
    pub secret: Option<Secrets>,
    /// This node.
    pub id: NodeId,
    /// Refusals met as the caller, logged without repeating.
    pub log: std::sync::Arc<CallerLog>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        PeerClient {
            target,
            addr: self
                .peers
                .get(&target)
                .cloned()
                .unwrap_or_else(|| node.addr.clone()),
            stream: None,
            config: self.config,
            secret: self.secret.clone(),
            id: self.id,
            log: Some(std::sync::Arc::clone(&self.log)),
            connect_max: CONNECT_MAX,
        }
    }
}

/// One peer's connection, opened on first use and again after a failure.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    stream: Option<(TcpStream, Option<Seal>)>,
    config: u64,
    secret: Option<Secrets>,
    /// This node.
    id: NodeId,
    /// Where refusals are logged (`None`: returned only, for `ironmatch cluster status`).
    log: Option<std::sync::Arc<CallerLog>>,
    /// How long opening the connection may take.
    connect_max: Duration,
}

/// Asks node `target` at `addr` for its status over an authenticated, sealed connection:
/// what `ironmatch cluster status` does when the cluster has a secret, since a node with
/// a secret answers nothing unauthenticated. The handshake is a node's, from `target` to
/// itself: the node takes such a connection as a tool's and answers it the status only,
/// whatever the `config` fingerprint the tool has (the transcript covers it), so that a
/// node configured apart still shows. `connect_max` bounds the connection's opening. A
/// refusal is returned as an error of kind `Other`, not logged.
pub async fn sealed_status(
    addr: &str,
    target: NodeId,
    config: u64,
    secret: Secrets,
    connect_max: Duration,
) -> io::Result<NodeStatus> {
    let mut client = PeerClient {
        target,
        addr: addr.to_string(),
        stream: None,
        config,
        secret: Some(secret),
        id: target,
        // A refusal is the tool's answer to print, not a line of a node's log.
        log: None,
        connect_max,
    };
    match client.call_inner(&Request::Status).await? {
        Reply::Status(status) => Ok(status),
        Reply::Failed(why) => Err(io::Error::other(why)),
        _ => Err(io::Error::other("an unexpected reply to a status request")),
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, Node, RaftError<NodeId, E>>;

impl PeerClient {
    /// Sends `request` and waits for its reply, at most `ttl`.
    async fn call(
        &mut self,
        request: &Request,
        ttl: Duration,
    ) -> Result<Reply, RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>> {
        let result = tokio::time::timeout(ttl, self.call_inner(request)).await;
        match result {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                self.stream = None;
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(_) => {
                self.stream = None;
                let e = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("node {} timed out", self.target),
                );
                Err(RPCError::Network(NetworkError::new(&e)))
            }
        }
    }

    async fn call_inner(&mut self, request: &Request) -> io::Result<Reply> {
        if self.stream.is_none() {
            let stream = tokio::time::timeout(self.connect_max, TcpStream::connect(&self.addr))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            stream.set_nodelay(true)?;
            let mut stream = stream;
            if let Err(e) = exchange_preamble(&mut stream).await {
                if let Some(log) = &self.log
                    && e.kind() == io::ErrorKind::Other
                {
                    log.refused(
                        self.target,
                        format!(
                            "ironmatch cluster: this node cannot talk to node {} at {}: {e}",
                            self.target, self.addr
                        ),
                    );
                }
                return Err(e);
            }
            let mut seal = None;
            let answer = match &self.secret {
                None => {
                    let hello = Request::Hello {
                        config: self.config,
                    };
                    write_frame(&mut stream, &hello, None).await?;
                    read_frame::<Reply>(&mut stream, None).await?
                }
                Some(secrets) => {
                    let mut transcript = Transcript {
                        config: self.config,
                        caller: self.id,
                        node: self.target,
                        caller_nonce: nonce()?,
                        node_nonce: [0; NONCE_LEN],
                    };
                    let hello = Request::SealedHello {
                        config: self.config,
                        caller: self.id,
                        node: self.target,
                        nonce: transcript.caller_nonce,
                    };
                    write_frame(&mut stream, &hello, None).await?;
                    // Only a challenge answers a sealed hello: anything else (an unsealed
                    // Hello from something posing as the peer) would leave the connection
                    // unauthenticated.
                    match read_frame_within::<Reply>(&mut stream, None, HELLO_BYTES_MAX).await? {
                        Reply::Challenge { nonce, proofs } => {
                            transcript.node_nonce = nonce;
                            let counted = (1..=CHALLENGE_PROOFS_MAX).contains(&proofs.len());
                            if let Some(secret) = secrets
                                .holding(&transcript, End::Node, &proofs)
                                .filter(|_| counted)
                            {
                                let proof = Request::Proof {
                                    proof: transcript.proof(secret, End::Caller),
                                };
                                write_frame(&mut stream, &proof, None).await?;
                                let mut sealed = transcript.seal(secret, End::Caller);
                                // The acceptance is the node's first sealed frame; a refusal
                                // comes unsealed (the node has no key) and fails here.
                                match read_frame::<Reply>(&mut stream, Some(&mut sealed)).await {
                                    Ok(Reply::Hello) => {
                                        seal = Some(sealed);
                                        Reply::Hello
                                    }
                                    Ok(_) => Reply::Failed(
                                        "an unexpected answer to this node's proof".into(),
                                    ),
                                    Err(e) => Reply::Failed(format!(
                                        "no sealed answer to this node's proof ({e}): another cluster secret"
                                    )),
                                }
                            } else {
                                // Not this cluster's node, or not the node dialled.
                                Reply::Failed(
                                    "its proof of the cluster secret does not hold (another \
                                     secret, or not the node this one dialled)"
                                        .into(),
                                )
                            }
                        }
                        Reply::Failed(why) => Reply::Failed(why),
                        _ => Reply::Failed(
                            "it answered a sealed hello without a challenge (not a node with \
                             the cluster secret)"
                                .into(),
                        ),
                    }
                }
            };
            match answer {
                Reply::Hello if self.secret.is_none() || seal.is_some() => {
                    if let Some(log) = &self.log {
                        log.agreed(self.target);
                    }
                }
                reply => {
                    let why = match reply {
                        Reply::Failed(why) => why,
                        _ => "an unexpected reply to hello".to_string(),
                    };
                    if let Some(log) = &self.log {
                        log.refused(
                            self.target,
                            format!(
                                "ironmatch cluster: node {} at {} refused this node: {why}",
                                self.target, self.addr
                            ),
                        );
                    }
                    return Err(io::Error::other(why));
                }
            }
            self.stream = Some((stream, seal));
        }
        // Out of `self` until its reply is read in full: a call dropped on the way (openraft
        // times its calls out too, and its deadline can pass first) drops the connection
        // with it. Left in place, the unread reply answered the next request, and every
        // reply after it was one request late (a success counted for entries the follower
        // had not written).
        let (mut stream, mut seal) = self.stream.take().expect("connected above");
        write_frame(&mut stream, request, seal.as_mut()).await?;
        let reply = read_frame(&mut stream, seal.as_mut()).await?;
        self.stream = Some((stream, seal));
        Ok(reply)
    }
}

/// Turns an error of the snapshot's kind into that of the other RPCs.
fn plain(e: RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>) -> RpcErr {
    match e {
        RPCError::Unreachable(u) => RPCError::Unreachable(u),
        RPCError::Network(n) => RPCError::Network(n),
        other => {
            let e = io::Error::other(other.to_string());
            RPCError::Network(NetworkError::new(&e))
        }
    }
}

fn unexpected<E: std::error::Error>(reply: &Reply) -> RPCError<NodeId, Node, RaftError<NodeId, E>> {
    let why = match reply {
        Reply::Failed(why) => why.clone(),
        _ => "an unexpected reply".to_string(),
    };
    RPCError::Network(NetworkError::new(&io::Error::other(why)))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        match self
            .call(&Request::Append(rpc), option.hard_ttl())
            .await
            .map_err(plain)?
        {
            Reply::Append(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .call(&Request::Snapshot(rpc), option.hard_ttl())
            .await?
        {
            Reply::Snapshot(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self
            .call(&Request::Vote(rpc), option.hard_ttl())
            .await
            .map_err(plain)?
        {
            Reply::Vote(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a current-thread runtime with two connected loopback sockets.
    fn with_pair<F: std::future::Future<Output = ()>>(f: impl FnOnce(TcpStream, TcpStream) -> F) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let caller = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (node, _) = listener.accept().await.unwrap();
            f(caller, node).await;
        });
    }

    const SECRET: &[u8] = b"a cluster secret for tests";

    /// Node 1's client of node 2 at `addr`, with fingerprint 7 and `secret`; refusals
    /// returned, not logged.
    fn client_of(addr: String, secret: Option<Secrets>) -> PeerClient {
        PeerClient {
            target: 2,
            addr,
            stream: None,
            config: 7,
            secret,
            id: 1,
            log: None,
            connect_max: CONNECT_MAX,
        }
    }

    /// A fake node's side of a fresh connection on `listener`: the caller's preamble read
    /// (this release's), this release's sent back.
    async fn accept_with_preamble(listener: &tokio::net::TcpListener) -> TcpStream {
        let (mut s, _) = listener.accept().await.unwrap();
        answer_preamble(&mut s, Preamble::ours().bytes()).await;
        s
    }

    /// Reads the caller's preamble on `s` (this release's) and answers `ours`.
    async fn answer_preamble(s: &mut TcpStream, ours: [u8; PREAMBLE_LEN]) {
        let mut theirs = [0u8; PREAMBLE_LEN];
        s.read_exact(&mut theirs).await.unwrap();
        assert_eq!(
            Preamble::refusal(theirs),
            None,
            "the caller's is this release's"
        );
        s.write_all(&ours).await.unwrap();
    }

    fn transcript(caller_nonce: [u8; NONCE_LEN], node_nonce: [u8; NONCE_LEN]) -> Transcript {
        Transcript {
            config: 7,
            caller: 1,
            node: 2,
            caller_nonce,
            node_nonce,
        }
    }

    /// A proof holds for its secret, its end, and the transcript it was made for: not for
    /// another secret, the other end (no reflection), another configuration, other nodes
    /// (no relay to a third node or back to the caller) or other nonces.
    #[test]
    fn proofs_hold_only_for_their_secret_end_and_transcript() {
        let t = transcript([1; NONCE_LEN], [2; NONCE_LEN]);
        let p = t.proof(SECRET, End::Node);
        assert!(t.proof_holds(SECRET, End::Node, &p));
        assert!(!t.proof_holds(b"another secret of the same..", End::Node, &p));
        assert!(!t.proof_holds(SECRET, End::Caller, &p));
        for other in [
            Transcript { config: 8, ..t },
            Transcript { node: 3, ..t },
            Transcript { node: 1, ..t },
            Transcript { caller: 3, ..t },
            transcript([2; NONCE_LEN], [1; NONCE_LEN]),
        ] {
            assert!(!other.proof_holds(SECRET, End::Node, &p), "{other:?}");
        }
        assert_ne!(nonce().unwrap(), nonce().unwrap());
    }

    /// Sealed frames pass both ways, encrypted on the wire; one altered, replayed or sealed
    /// under another key does not.
    #[test]
    fn sealed_frames_pass_and_tampered_ones_fail() {
        let t = transcript([3; NONCE_LEN], [4; NONCE_LEN]);
        with_pair(|mut caller, mut node| async move {
            let mut out = t.seal(SECRET, End::Caller);
            let mut inn = t.seal(SECRET, End::Node);
            write_frame(&mut caller, &Request::Status, Some(&mut out))
                .await
                .unwrap();
            assert!(matches!(
                read_frame::<Request>(&mut node, Some(&mut inn)).await,
                Ok(Request::Status)
            ));
            write_frame(&mut node, &Reply::Hello, Some(&mut inn))
                .await
                .unwrap();
            assert!(matches!(
                read_frame::<Reply>(&mut caller, Some(&mut out)).await,
                Ok(Reply::Hello)
            ));
            // The next frame's bytes, as sealed: sent altered, then twice as they are.
            let mut copy = t.seal(SECRET, End::Caller);
            copy.sent = out.sent;
            let plain = postcard::to_allocvec(&Request::Hello {
                config: 0x0123_4567_89ab_cdef,
            })
            .unwrap();
            let mut body = plain.clone();
            let tag = copy.seal(&mut body);
            assert_ne!(body, plain, "encrypted");
            let mut frame = ((body.len() + FRAME_TAG_LEN) as u32).to_le_bytes().to_vec();
            frame.extend_from_slice(&body);
            frame.extend_from_slice(&tag);
            let mut altered = frame.clone();
            altered[5] ^= 1;
            caller.write_all(&altered).await.unwrap();
            let e = read_frame::<Request>(&mut node, Some(&mut inn.clone_for_test()))
                .await
                .err()
                .expect("an altered frame fails");
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            caller.write_all(&frame).await.unwrap();
            caller.write_all(&frame).await.unwrap();
            assert!(matches!(
                read_frame::<Request>(&mut node, Some(&mut inn)).await,
                Ok(Request::Hello {
                    config: 0x0123_4567_89ab_cdef
                })
            ));
            assert!(
                read_frame::<Request>(&mut node, Some(&mut inn))
                    .await
                    .is_err(),
                "a replayed frame fails"
            );
            // Encrypted: a text in a frame is not on the wire.
            let text = "an order's details, readable without encryption";
            let plain = postcard::to_allocvec(&Reply::Failed(text.into())).unwrap();
            let mut body = plain.clone();
            let mut node_side = t.seal(SECRET, End::Node);
            let tag = node_side.seal(&mut body);
            assert!(!body.windows(text.len()).any(|w| w == text.as_bytes()));
            body.extend_from_slice(&tag);
            // A frame is opened only as the other end's: sealed by the node, the node's own
            // seal (expecting the caller's frame of the same number) does not open it.
            let mut own = t.seal(SECRET, End::Node);
            assert!(
                own.open(&mut body.clone()).is_none(),
                "the node's own frame"
            );
            let mut caller_side = t.seal(SECRET, End::Caller);
            assert_eq!(
                caller_side.open(&mut body),
                Some(&plain[..]),
                "the node's frame, at the caller"
            );
            // Under another connection's key.
            let mut other = Transcript { node: 3, ..t }.seal(SECRET, End::Caller);
            let mut inn = t.seal(SECRET, End::Node);
            write_frame(&mut caller, &Request::Status, Some(&mut other))
                .await
                .unwrap();
            assert!(
                read_frame::<Request>(&mut node, Some(&mut inn))
                    .await
                    .is_err()
            );
        });
    }

    /// Something posing as the peer that answers a sealed hello with an unsealed Hello
    /// (or anything but a challenge) does not get an unauthenticated connection.
    #[test]
    fn a_peer_without_a_challenge_is_refused() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for answer in [Reply::Hello, Reply::Failed("no".into())] {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap().to_string();
                let fake = tokio::spawn(async move {
                    let mut s = accept_with_preamble(&listener).await;
                    let hello = read_frame::<Request>(&mut s, None).await.unwrap();
                    assert!(matches!(
                        hello,
                        Request::SealedHello {
                            caller: 1,
                            node: 2,
                            ..
                        }
                    ));
                    write_frame(&mut s, &answer, None).await.unwrap();
                    // Whatever comes next, it must not be a request sent in the clear.
                    read_frame::<Request>(&mut s, None).await.is_ok()
                });
                let mut client = client_of(addr, Some(Secrets::one(SECRET)));
                assert!(client.call_inner(&Request::Status).await.is_err());
                assert!(client.stream.is_none(), "no connection kept");
                drop(client);
                assert!(!fake.await.unwrap(), "no request followed");
            }
        });
    }

    /// A call dropped before its reply came (openraft's own timeout around it) drops its
    /// connection: the next call, on a new one, reads its own reply, not the late one of
    /// the call that was dropped.
    #[test]
    fn a_dropped_call_leaves_no_reply_for_the_next() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let (answer_late, late) = tokio::sync::oneshot::channel::<()>();
            let fake = tokio::spawn(async move {
                let mut connections = Vec::new();
                let mut late = Some(late);
                for n in 0..2 {
                    let mut s = accept_with_preamble(&listener).await;
                    assert!(matches!(
                        read_frame::<Request>(&mut s, None).await.unwrap(),
                        Request::Hello { config: 7 }
                    ));
                    write_frame(&mut s, &Reply::Hello, None).await.unwrap();
                    assert!(matches!(
                        read_frame::<Request>(&mut s, None).await.unwrap(),
                        Request::Status
                    ));
                    if let Some(late) = late.take() {
                        // The first call's reply comes after its caller gave up.
                        late.await.unwrap();
                    }
                    let reply = Reply::Failed(format!("reply on connection {n}"));
                    write_frame(&mut s, &reply, None).await.unwrap();
                    connections.push(s);
                }
                connections
            });
            let mut client = client_of(addr, None);
            let dropped = tokio::time::timeout(
                Duration::from_millis(100),
                client.call_inner(&Request::Status),
            )
            .await;
            assert!(dropped.is_err(), "no reply yet");
            answer_late.send(()).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            match client.call_inner(&Request::Status).await.unwrap() {
                Reply::Failed(why) => assert_eq!(why, "reply on connection 1"),
                _ => panic!("not the reply the fake sent"),
            }
            drop(fake.await.unwrap());
        });
    }

    /// A caller takes a challenge of one or two proofs only: with none, or three (each of
    /// which holds), it sends no proof of its own and the call fails.
    #[test]
    fn a_challenge_of_no_or_too_many_proofs_is_refused() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for count in [0, 3] {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap().to_string();
                let fake = tokio::spawn(async move {
                    let mut s = accept_with_preamble(&listener).await;
                    let Request::SealedHello { nonce, .. } =
                        read_frame::<Request>(&mut s, None).await.unwrap()
                    else {
                        panic!("a sealed hello first");
                    };
                    let t = Transcript {
                        config: 7,
                        caller: 1,
                        node: 2,
                        caller_nonce: nonce,
                        node_nonce: [3; NONCE_LEN],
                    };
                    let proofs = vec![t.proof(SECRET, End::Node); count];
                    let challenge = Reply::Challenge {
                        nonce: t.node_nonce,
                        proofs,
                    };
                    write_frame(&mut s, &challenge, None).await.unwrap();
                    // Whatever comes next, it must not be a proof.
                    read_frame::<Request>(&mut s, None).await.is_ok()
                });
                let mut client = client_of(addr, Some(Secrets::one(SECRET)));
                let call = client.call_inner(&Request::Status);
                let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(10), call).await else {
                    panic!("{count} proofs: refused at once");
                };
                assert!(e.to_string().contains("does not hold"), "{count}: {e}");
                drop(client);
                assert!(!fake.await.unwrap(), "{count} proofs: no proof followed");
            }
        });
    }

    /// This release's preamble passes; another version, or bytes that are not a preamble
    /// (the hello frame of a release before the preamble), are refused, the message naming
    /// what was read.
    #[test]
    fn a_preamble_of_another_version_or_none_is_refused() {
        let ours = Preamble::ours().bytes();
        assert_eq!(&ours, b"IMCL\x04\x00\x00\x00");
        assert_eq!(Preamble::refusal(ours), None);
        for version in [1u16, 2, 3, 5] {
            let mut other = ours;
            other[4..6].copy_from_slice(&version.to_le_bytes());
            let why = Preamble::refusal(other).expect("another version is refused");
            assert!(
                why.contains(&format!("version {version} and this release version 4")),
                "{why}"
            );
        }
        let hello = postcard::to_allocvec(&Request::Hello { config: u64::MAX }).unwrap();
        let mut frame = (hello.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&hello);
        let why = Preamble::refusal(frame[..PREAMBLE_LEN].try_into().unwrap())
            .expect("a bare hello frame is refused");
        assert!(why.contains("sent no ironmatch cluster preamble"), "{why}");
        let mut reserved = ours;
        reserved[7] = 1;
        let why = Preamble::refusal(reserved).expect("reserved bytes set are refused");
        assert!(why.contains("reserves"), "{why}");
    }

    /// A caller meeting a node of another protocol version, or one that closes without a
    /// preamble (a release before it), fails the call saying why and sends nothing more.
    #[test]
    fn a_node_of_another_protocol_version_is_refused_by_the_caller() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut other = Preamble::ours().bytes();
            other[4..6].copy_from_slice(&7u16.to_le_bytes());
            for (answer, expected) in [
                (Some(other), "it speaks cluster protocol version 7"),
                (
                    None,
                    "closed the connection before sending its cluster preamble",
                ),
            ] {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap().to_string();
                let fake = tokio::spawn(async move {
                    let (mut s, _) = listener.accept().await.unwrap();
                    let Some(preamble) = answer else {
                        // A release before the preamble: it reads a frame's length (the
                        // preamble's first half, too long) and closes, the rest unread.
                        let mut len = [0u8; 4];
                        s.read_exact(&mut len).await.unwrap();
                        assert_eq!(&len, MAGIC);
                        return 0;
                    };
                    answer_preamble(&mut s, preamble).await;
                    // Whatever comes next, it must be nothing.
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest).await.unwrap();
                    rest.len()
                });
                let mut client = client_of(addr, None);
                let call = client.call_inner(&Request::Status);
                let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(10), call).await else {
                    panic!("refused at once");
                };
                assert!(e.to_string().contains(expected), "{e}");
                assert!(client.stream.is_none(), "no connection kept");
                drop(client);
                assert_eq!(fake.await.unwrap(), 0, "nothing followed the preamble");
            }
        });
    }

    /// During a rotation a node proves itself under each of its secrets, and a caller and
    /// a node agree on a secret they share (the one in force first) whenever they share
    /// one, both ends on the same one, so that their sealed frames pass; with none in
    /// common they do not agree.
    #[test]
    fn nodes_sharing_either_secret_agree_on_it() {
        let old: &[u8] = b"the cluster's old secret";
        let new: &[u8] = b"the cluster's new secret";
        let other: &[u8] = b"another cluster's secret";
        let set = |current: &[u8], previous: Option<&[u8]>| Secrets {
            current: current.into(),
            previous: previous.map(Into::into),
        };
        let t = transcript([5; NONCE_LEN], [6; NONCE_LEN]);
        // (the node's, the caller's, the secret they agree on)
        let cases = [
            (set(old, None), set(old, None), Some(old)),
            (set(new, Some(old)), set(old, None), Some(old)),
            (set(old, None), set(new, Some(old)), Some(old)),
            (set(new, Some(old)), set(new, Some(old)), Some(new)),
            (set(new, None), set(new, Some(old)), Some(new)),
            (set(new, Some(old)), set(new, None), Some(new)),
            // The caller's order decides: its secret in force first.
            (set(new, Some(old)), set(old, Some(new)), Some(old)),
            (set(new, None), set(old, None), None),
            (set(other, None), set(new, Some(old)), None),
        ];
        for (i, (node, caller, agreed)) in cases.into_iter().enumerate() {
            let proofs = node.proofs(&t, End::Node);
            assert_eq!(proofs.len(), 1 + usize::from(node.previous.is_some()));
            let chosen = caller.holding(&t, End::Node, &proofs);
            assert_eq!(chosen, agreed, "case {i}: the caller's choice");
            let Some(secret) = chosen else {
                continue;
            };
            let proof = t.proof(secret, End::Caller);
            let taken = node.holding(&t, End::Caller, &[proof]);
            assert_eq!(taken, Some(secret), "case {i}: the node takes the caller's");
            let mut out = t.seal(secret, End::Caller);
            let mut inn = t.seal(taken.unwrap(), End::Node);
            let mut frame = b"an order".to_vec();
            let tag = out.seal(&mut frame);
            frame.extend_from_slice(&tag);
            assert_eq!(inn.open(&mut frame), Some(&b"an order"[..]), "case {i}");
        }
    }

    /// A refusal is logged when it starts and when its reason changes, not at every
    /// round of votes while it lasts (each round a new client), and again at once after
    /// the peer agreed.
    #[test]
    fn a_lasting_refusal_is_logged_once_per_reason() {
        let log = CallerLog::default();
        let line = |why: &str| format!("ironmatch cluster: test: {why}");
        assert!(log.refused(2, line("version 7")));
        assert!(!log.refused(2, line("version 7")), "the same reason again");
        assert!(log.refused(3, line("version 7")), "another node");
        assert!(log.refused(2, line("another secret")), "another reason");
        assert!(!log.refused(2, line("another secret")));
        log.agreed(2);
        assert!(log.refused(2, line("another secret")), "after an agreement");
    }

    /// The serde format of everything that crosses a connection: [`Request`] and
    /// [`Reply`] and every type they reach (Raft's messages, the entries' commands with
    /// every variant of every enum), traced by `serde-reflection`, as a registry of named
    /// containers.
    fn traced_format() -> String {
        use crate::book::{
            CommandBody, DayEvent, OperatorAction, RejectReason, TimeInForce, TradingState,
            VenueCommand,
        };
        use crate::types::{BookSide, Side};
        use serde_reflection::{Samples, Tracer, TracerConfig};
        let mut tracer = Tracer::new(TracerConfig::default());
        let mut samples = Samples::new();
        // Serialization traced too, on the samples: a type whose serialized shape is not
        // its deserialized one (a `serialize_with`, a skipped field) fails here.
        let (requests, replies) = sample_messages();
        for request in &requests {
            tracer.trace_value(&mut samples, request).unwrap();
        }
        for reply in &replies {
            tracer.trace_value(&mut samples, reply).unwrap();
        }
        tracer.trace_type::<Request>(&samples).unwrap();
        tracer.trace_type::<Reply>(&samples).unwrap();
        // Enums met inside others are traced to their last variant on their own; a new
        // one fails `registry()` below, naming it, until it is added here.
        tracer
            .trace_simple_type::<AppendEntriesResponse<NodeId>>()
            .unwrap();
        tracer
            .trace_simple_type::<openraft::EntryPayload<TypeConfig>>()
            .unwrap();
        tracer.trace_simple_type::<CommandBody>().unwrap();
        tracer.trace_simple_type::<VenueCommand>().unwrap();
        tracer.trace_simple_type::<OperatorAction>().unwrap();
        tracer.trace_simple_type::<DayEvent>().unwrap();
        tracer.trace_simple_type::<TradingState>().unwrap();
        tracer.trace_simple_type::<RejectReason>().unwrap();
        tracer.trace_simple_type::<TimeInForce>().unwrap();
        tracer.trace_simple_type::<Side>().unwrap();
        tracer.trace_simple_type::<BookSide>().unwrap();
        let registry = tracer
            .registry()
            .unwrap_or_else(|e| panic!("trace every enum to its last variant: {e}"));
        serde_json::to_string_pretty(&registry).unwrap() + "\n"
    }

    /// The format of cluster protocol [`PROTOCOL_VERSION`] is the one its file holds
    /// (`src/cluster/protocol-v<N>.json`): a field added, removed, reordered or retyped,
    /// or a variant added anywhere in what crosses a connection, changes the format, and
    /// this test fails until the version is raised and the new version's file written
    /// (`IRONMATCH_WRITE_PROTOCOL=1 cargo test --lib the_message_format` writes a version's
    /// file that does not exist yet, never over one), so
    /// that nodes of the two releases refuse each other instead of misreading bytes.
    #[test]
    fn the_message_format_is_its_versions_file() {
        let format = traced_format();
        let path = format!(
            "{}/src/cluster/protocol-v{PROTOCOL_VERSION}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        // Writes a new version's file only: never over a version's file already held.
        if std::env::var("IRONMATCH_WRITE_PROTOCOL").as_deref() == Ok("1") {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => std::io::Write::write_all(&mut file, format.as_bytes()).unwrap(),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("{path}: {e}"),
            }
        }
        let held = std::fs::read_to_string(&path).unwrap_or_default();
        if held != format {
            let now = std::env::temp_dir().join("ironmatch-protocol-now.json");
            std::fs::write(&now, &format).unwrap();
            panic!(
                "the cluster protocol's format is not {path}'s (the format now: {}): raise \
                 PROTOCOL_VERSION and write the new version's file",
                now.display()
            );
        }
    }

    /// A sample of the messages that cross a connection: requests and replies of the
    /// handshake, replication and status, a Raft entry with a new order and a cancel.
    fn sample_messages() -> (Vec<Request>, Vec<Reply>) {
        use crate::book::{CommandBody, Echo, NewOrder, TimeInForce};
        use crate::types::{Firm, OwnerId, Price, Qty, Side, Symbol, Timestamp, UserRef};
        use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
        let order = crate::book::Command {
            ts: Timestamp(34_200_000_000_001),
            owner: OwnerId(3),
            body: CommandBody::New(NewOrder {
                user_ref: UserRef(17),
                side: Side::Sell,
                qty: Qty(300),
                symbol: Symbol::from_str_padded("AAPL").unwrap(),
                price: Some(Price(1_500_000)),
                tif: TimeInForce::Gtt { expire_secs: 60 },
                hidden: true,
                post_only: false,
                min_qty: Qty(100),
                max_floor: Qty(0),
                firm: Firm::from_str_padded("FRM1").unwrap(),
                echo: Echo {
                    clordid: *b"client-order-1",
                    ..Echo::default()
                },
            }),
        };
        let cancel = crate::book::Command {
            ts: Timestamp(34_200_000_000_002),
            owner: OwnerId(3),
            body: CommandBody::Cancel {
                user_ref: UserRef(17),
                qty: Qty(0),
            },
        };
        let append = Request::Append(AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), 9)),
            entries: vec![Entry {
                log_id: LogId::new(CommittedLeaderId::new(2, 1), 10),
                payload: EntryPayload::Normal(super::super::Batch {
                    commands: vec![order, cancel],
                }),
            }],
            leader_commit: Some(LogId::new(CommittedLeaderId::new(2, 1), 9)),
        });
        let requests = vec![
            append,
            Request::Vote(VoteRequest::new(
                Vote::new(3, 2),
                Some(LogId::new(CommittedLeaderId::new(2, 1), 10)),
            )),
            Request::Status,
            Request::Hello {
                config: 0x0123_4567_89ab_cdef,
            },
            Request::SealedHello {
                config: 5,
                caller: 1,
                node: 2,
                nonce: [9; NONCE_LEN],
            },
            Request::Proof {
                proof: [4; TAG_LEN],
            },
        ];
        let replies = vec![
            Reply::Challenge {
                nonce: [6; NONCE_LEN],
                proofs: vec![[7; TAG_LEN], [8; TAG_LEN]],
            },
            Reply::Hello,
            Reply::Failed("no".into()),
            Reply::Status(super::super::NodeStatus {
                id: 2,
                role: "follower".into(),
                term: 3,
                leader: Some(1),
                last_log: Some(10),
                applied: Some(9),
                matched: [(1, Some(10))].into_iter().collect(),
                accepting: false,
            }),
        ];
        (requests, replies)
    }

    /// The bytes of the current cluster protocol version around and beneath the format above: the
    /// preamble, a frame (plain and sealed: length, body, tag), the handshake's proofs,
    /// and postcard's encoding of a sample of requests and replies, a Raft entry's
    /// commands included. A change here changes what crosses the wire: raise
    /// [`PROTOCOL_VERSION`] with it (then update these bytes).
    #[test]
    fn the_wire_bytes_are_the_versions() {
        assert_eq!(
            PROTOCOL_VERSION, 4,
            "update the bytes below with the version"
        );
        let hex = |bytes: Vec<u8>| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
        let (requests, replies) = sample_messages();
        let got: Vec<String> = requests
            .iter()
            .map(|r| hex(postcard::to_allocvec(r).unwrap()))
            .chain(
                replies
                    .iter()
                    .map(|r| hex(postcard::to_allocvec(r).unwrap())),
            )
            .collect();
        let expected: [&str; 10] = [
            // an append of one entry: a new order and a cancel
            concat!(
                "00020101010201090102010a010281e0e7f6ace30703001101ac024141504c202020200",
                "1e0c65b033c0100640046524d31414e4e20636c69656e742d6f726465722d3182e0e7f6a",
                "ce3070301110001020109",
            ),
            // a vote request
            "010302000102010a",
            // a status request
            "03",
            // a hello
            "04ef9bafcdf8acd19101",
            // a sealed hello
            "0505010209090909090909090909090909090909",
            // a proof
            "060404040404040404040404040404040404040404040404040404040404040404",
            // a challenge with two proofs
            concat!(
                "060606060606060606060606060606060602070707070707070707070707070707070707",
                "070707070707070707070707070708080808080808080808080808080808080808080808",
                "08080808080808080808",
            ),
            // the hello reply
            "05",
            // a refusal
            "04026e6f",
            // a status
            "030208666f6c6c6f776572030101010a01090101010a00",
        ];
        for (got, expected) in got.iter().zip(expected) {
            assert_eq!(
                got, expected,
                "the wire format changed: raise PROTOCOL_VERSION"
            );
        }
        // The frames and the handshake's cryptography, under a fixed secret and nonces.
        let t = transcript([1; NONCE_LEN], [2; NONCE_LEN]);
        let proofs = [
            hex(t.proof(SECRET, End::Node).to_vec()),
            hex(t.proof(SECRET, End::Caller).to_vec()),
        ];
        let written = std::cell::RefCell::new(Vec::new());
        let frames = &written;
        with_pair(|mut caller, mut node| async move {
            let mut out = t.seal(SECRET, End::Caller);
            let mut back = t.seal(SECRET, End::Node);
            // Plain, then the caller's frames 0 and 1, then the node's frame 0.
            for (from_caller, sealed) in [(true, false), (true, true), (true, true), (false, true)]
            {
                let (from, to, seal) = if from_caller {
                    (&mut caller, &mut node, sealed.then_some(&mut out))
                } else {
                    (&mut node, &mut caller, sealed.then_some(&mut back))
                };
                let reply = Reply::Failed("frame".into());
                write_frame(from, &reply, seal).await.unwrap();
                let mut len = [0u8; 4];
                to.read_exact(&mut len).await.unwrap();
                let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
                to.read_exact(&mut body).await.unwrap();
                frames.borrow_mut().push(hex([&len[..], &body].concat()));
            }
        });
        let frames = written.into_inner();
        let handshake = [
            hex(Preamble::ours().bytes().to_vec()),
            proofs[0].clone(),
            proofs[1].clone(),
            frames[0].clone(),
            frames[1].clone(),
            frames[2].clone(),
            frames[3].clone(),
        ];
        let expected: [&str; 7] = [
            // the preamble
            "494d434c04000000",
            // the node's proof, then the caller's
            "18e97b598fb185e68106428d6c8e135a8be19db83a753d0a4a2bec92b6e2e4ff",
            "a514779f7579cbc6e51fa3f2b80ce48e20c8304ca198a71e0e8af2270a5af395",
            // a plain frame: length (u32 LE), body
            "0700000004056672616d65",
            // the same sealed by the caller, its frame 0: length, ciphertext, tag
            "17000000dba6bb9b7615b85a375202eb0581dac019a7faffdd766b",
            // the caller's second frame (its number 1), then the node's first
            "17000000ed81ae83565b992dc87e7e308988a3d29226471191fd13",
            "17000000d2faea247564dfc0ade46d318579c6f2adb5d2b19a5313",
        ];
        for (got, expected) in handshake.iter().zip(expected) {
            assert_eq!(
                got, expected,
                "the wire format changed: raise PROTOCOL_VERSION"
            );
        }
    }

    impl Seal {
        fn clone_for_test(&self) -> Seal {
            Seal {
                cipher: self.cipher.clone(),
                end: self.end,
                sent: self.sent,
                received: self.received,
            }
        }
    }
}
