//! Raft's network: a small request/reply protocol over TCP between nodes, on the raft
//! thread. Each frame is `length u32 LE | postcard of a [`Request`] or [`Reply`]`; a
//! connection carries one request at a time. A node opens each connection with
//! [`Request::Hello`], carrying the fingerprint of its book configuration (instruments,
//! users, rules: what the matcher needs to apply commands as every other node does) and of
//! its feed's shape (MoldUDP64 session, attribution: every node stores the same feed); a
//! node with another fingerprint refuses every Raft request on that connection, so nodes
//! that would apply the same commands differently never form a cluster. The same listener
//! answers `ironmatch cluster status` ([`Request::Status`]) without a hello.

use std::io;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Node, NodeId, NodeStatus, TypeConfig};

/// Largest frame accepted: a batch of entries with room.
pub const FRAME_BYTES_MAX: usize = 64 << 20;
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
    /// To [`Request::Hello`] with the same fingerprint.
    Hello,
}

/// Writes one frame.
pub async fn write_frame<T: serde::Serialize>(stream: &mut TcpStream, value: &T) -> io::Result<()> {
    let body = postcard::to_allocvec(value).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await
}

/// Reads one frame.
pub async fn read_frame<T: serde::de::DeserializeOwned>(stream: &mut TcpStream) -> io::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > FRAME_BYTES_MAX {
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
            refused: false,
        }
    }
}

/// One peer's connection, opened on first use and again after a failure.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    stream: Option<TcpStream>,
    config: u64,
    /// The peer refused this node's hello (logged once).
    refused: bool,
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
            let stream = tokio::time::timeout(CONNECT_MAX, TcpStream::connect(&self.addr))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            stream.set_nodelay(true)?;
            let mut stream = stream;
            write_frame(
                &mut stream,
                &Request::Hello {
                    config: self.config,
                },
            )
            .await?;
            match read_frame::<Reply>(&mut stream).await? {
                Reply::Hello => self.refused = false,
                reply => {
                    let why = match reply {
                        Reply::Failed(why) => why,
                        _ => "an unexpected reply to hello".to_string(),
                    };
                    if !self.refused {
                        eprintln!(
                            "ironmatch cluster: node {} at {} refused this node: {why}",
                            self.target, self.addr
                        );
                        self.refused = true;
                    }
                    return Err(io::Error::other(why));
                }
            }
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        write_frame(stream, request).await?;
        read_frame(stream).await
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
