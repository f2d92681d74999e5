//! One node of the ownership group: its Raft, its listener, its links, and
//! the operations the broker calls.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, ServerState, SnapshotPolicy};
use redb::Database;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::batcher::{self, Queued};
use crate::network::peer::{PeerFilter, Peers};
use crate::network::{server, NetworkFactory};
use crate::store::{self, LogStore, StateMachine};
use crate::submit::Shared;
use crate::types::{Epoch, NodeId, Op, OpOutcome, Owner, OwnershipEvent};
use crate::OwnershipError;

/// The longest client id MQTT allows (a UTF-8 string with a 16-bit length).
const MAX_CLIENT_ID: usize = 65_535;

/// How a node of the ownership group runs.
#[derive(Clone, Debug)]
pub struct OwnershipConfig {
    /// This node's id (`[cluster] node_id`).
    pub node_id: NodeId,
    /// The address the Raft listener binds (used by [`Ownership::start`]).
    pub bind: SocketAddr,
    /// The address the other nodes reach this one at; the bind address when `None`.
    pub advertise: Option<String>,
    /// The redb file for the log and the state machine, beside the broker's store.
    pub path: PathBuf,
    /// How long a claim or release may take before it fails with
    /// [`OwnershipError::NoQuorum`].
    pub claim_timeout: Duration,
    /// The leader's heartbeat to the followers.
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in this range starts an election.
    pub election_timeout: (Duration, Duration),
    /// A snapshot is taken after this many entries since the last one (and
    /// the log before it is dropped, keeping `keep_after_snapshot` entries).
    pub snapshot_after: u64,
    /// Entries kept behind a snapshot, so a follower a little behind catches up from the log.
    pub keep_after_snapshot: u64,
    /// How many changes the change stream holds for a slow reader.
    pub change_buffer: usize,
    /// How many claims and releases may wait for their batch.
    pub queue: usize,
    /// Tells, before each call to a peer, whether its address is cut off
    /// (a test's simulated partition); None, the default: never.
    pub peer_filter: Option<PeerFilter>,
}

impl OwnershipConfig {
    /// Defaults for a node on a LAN: 100 ms heartbeats, an election after
    /// 0.5–1 s of silence, claims refused after 2 s without a majority.
    pub fn new(node_id: NodeId, bind: SocketAddr, path: impl Into<PathBuf>) -> OwnershipConfig {
        OwnershipConfig {
            node_id,
            bind,
            advertise: None,
            path: path.into(),
            claim_timeout: Duration::from_secs(2),
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(500), Duration::from_millis(1000)),
            snapshot_after: 10_000,
            keep_after_snapshot: 1_000,
            change_buffer: 4_096,
            queue: 16_384,
            peer_filter: None,
        }
    }

    fn raft_config(&self) -> Result<openraft::Config, OwnershipError> {
        let ms = |d: Duration| d.as_millis() as u64;
        let config = openraft::Config {
            cluster_name: "vigil-ownership".into(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_timeout.0),
            election_timeout_max: ms(self.election_timeout.1),
            // Each entry is at most `batcher::MAX_ID_BYTES` of ids: 32 of
            // them stay under half the frame limit.
            max_payload_entries: 32,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_after),
            max_in_snapshot_log_to_keep: self.keep_after_snapshot,
            snapshot_max_chunk_size: 1 << 20,
            install_snapshot_timeout: ms(self.claim_timeout).max(1000),
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| OwnershipError::Config(e.to_string()))
    }
}

/// What a claim committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The new owner's epoch.
    pub epoch: Epoch,
    /// Who held the id before, to be asked to hand over (if another node).
    pub previous: Option<Owner>,
}

/// The state of a node's Raft, for the admin API and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub node_id: NodeId,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Leader, follower, candidate or learner.
    pub role: &'static str,
    /// The current Raft term.
    pub term: u64,
    /// The last log index applied to the ownership map here.
    pub last_applied: Option<u64>,
    /// The voting members.
    pub voters: BTreeSet<NodeId>,
    /// Every member, voters and learners, with its address.
    pub nodes: BTreeMap<NodeId, String>,
}

/// A running node of the ownership group.
pub struct Ownership {
    shared: Arc<Shared>,
    db: Arc<Database>,
    queue: mpsc::Sender<Queued>,
    changes: broadcast::Sender<OwnershipEvent>,
    address: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Ownership {
    /// Binds `config.bind` and starts the node (see [`Ownership::start_with_listener`]).
    pub async fn start(config: OwnershipConfig) -> Result<Ownership, OwnershipError> {
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|e| OwnershipError::Bind {
                addr: config.bind,
                source: Arc::new(e),
            })?;
        Ownership::start_with_listener(config, listener).await
    }

    /// Starts the node on a listener already bound (the caller binds early,
    /// as `vigil serve` does, to fail before touching any file). The node
    /// recovers its log and state from `config.path`; a new one waits to be
    /// [bootstrapped](Ownership::bootstrap) or [added](Ownership::add_learner).
    pub async fn start_with_listener(
        config: OwnershipConfig,
        listener: TcpListener,
    ) -> Result<Ownership, OwnershipError> {
        let raft_config = Arc::new(config.raft_config()?);
        let bound = listener.local_addr().map_err(|e| OwnershipError::Bind {
            addr: config.bind,
            source: Arc::new(e),
        })?;
        let address = config
            .advertise
            .clone()
            .unwrap_or_else(|| bound.to_string());
        let path = config.path.clone();
        let db = tokio::task::spawn_blocking(move || store::open(&path).map_err(Box::new))
            .await
            .map_err(|_| OwnershipError::Stopped)?
            .map_err(|e| OwnershipError::Open {
                path: config.path.clone(),
                source: Arc::from(e),
            })?;
        let (changes, _) = broadcast::channel(config.change_buffer.max(1));
        let peers = Arc::new(Peers::new(
            config.heartbeat.max(Duration::from_millis(200)),
            config.peer_filter.clone(),
        ));
        let network = NetworkFactory {
            local: config.node_id,
            peers: peers.clone(),
        };
        let raft = Raft::new(
            config.node_id,
            raft_config,
            network,
            LogStore::new(db.clone()),
            StateMachine::new(db.clone(), changes.clone()),
        )
        .await
        .map_err(|e| OwnershipError::Raft(e.to_string()))?;
        let shared = Arc::new(Shared {
            id: config.node_id,
            raft,
            peers,
            claim_timeout: config.claim_timeout,
            quorum_lost_after: config.election_timeout.1,
        });
        let (queue, queued) = mpsc::channel(config.queue.max(1));
        let tasks = vec![
            tokio::spawn(server::serve(listener, shared.clone())),
            tokio::spawn(batcher::run(shared.clone(), queued)),
        ];
        tracing::info!(node_id = config.node_id, %address, path = %config.path.display(), "ownership node started");
        Ok(Ownership {
            shared,
            db,
            queue,
            changes,
            address,
            tasks,
        })
    }

    /// The address other nodes reach this node at.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Forms a new group of `members` (node id → Raft address), this node
    /// among them. Every node of the initial static list calls this with
    /// the same list (that is safe: the vote decides); a node that already
    /// has a log (a restart) ignores it. A node joining a running group
    /// must not call it: see [`Ownership::add_learner`].
    pub async fn bootstrap(
        &self,
        members: &BTreeMap<NodeId, String>,
    ) -> Result<(), OwnershipError> {
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect();
        match self.shared.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                tracing::debug!("ownership group already formed; bootstrap skipped");
                Ok(())
            }
            Err(e) => Err(OwnershipError::Membership(e.to_string())),
        }
    }

    /// Commits a claim of `client_id` by `node` (this node, for a CONNECT
    /// here) with a new epoch, larger than every epoch before it. Claims
    /// arriving together share one Raft entry. Fails with
    /// [`OwnershipError::NoQuorum`] when no majority commits it within the
    /// claim timeout.
    pub async fn claim(&self, client_id: &str, node: NodeId) -> Result<Claimed, OwnershipError> {
        match self
            .submit(Op::Claim {
                client_id: checked(client_id)?.to_owned(),
                node,
            })
            .await?
        {
            OpOutcome::Claimed { epoch, previous } => Ok(Claimed { epoch, previous }),
            other => Err(OwnershipError::Raft(format!(
                "a claim was answered with {other:?}"
            ))),
        }
    }

    /// Gives `client_id` up, only if `node` at `epoch` still holds it; a
    /// newer claim makes this [`OwnershipError::StaleEpoch`] and changes
    /// nothing.
    pub async fn release(
        &self,
        client_id: &str,
        node: NodeId,
        epoch: Epoch,
    ) -> Result<(), OwnershipError> {
        let owner = Owner { node, epoch };
        match self
            .submit(Op::Release {
                client_id: checked(client_id)?.to_owned(),
                owner,
            })
            .await?
        {
            OpOutcome::Released => Ok(()),
            OpOutcome::Stale { current } => Err(OwnershipError::StaleEpoch { current }),
            other => Err(OwnershipError::Raft(format!(
                "a release was answered with {other:?}"
            ))),
        }
    }

    async fn submit(&self, op: Op) -> Result<OpOutcome, OwnershipError> {
        let timeout = self.shared.claim_timeout;
        let (reply, answer) = oneshot::channel();
        let queued = async {
            self.queue
                .send(Queued { op, reply })
                .await
                .map_err(|_| OwnershipError::Stopped)?;
            answer.await.map_err(|_| OwnershipError::Stopped)?
        };
        tokio::time::timeout(timeout, queued)
            .await
            .unwrap_or(Err(OwnershipError::NoQuorum(timeout)))
    }

    /// The owner of `client_id` in this node's applied state (a local read:
    /// a follower may be a heartbeat behind the leader).
    pub fn owner(&self, client_id: &str) -> Result<Option<Owner>, OwnershipError> {
        store::read_owner(&self.db, client_id).map_err(|e| OwnershipError::Read(Arc::new(e)))
    }

    /// How many client ids are owned, in this node's applied state.
    pub fn owned_count(&self) -> Result<u64, OwnershipError> {
        store::owner_count(&self.db).map_err(|e| OwnershipError::Read(Arc::new(e)))
    }

    /// Checks that `owner` is the current owner of `client_id`, after this
    /// node has applied the entry that committed `owner.epoch` (waiting up
    /// to `within` for it): how a node asked to hand a session over refuses
    /// a stale request. `NoQuorum` if it has not applied that entry in time.
    pub async fn verify_current(
        &self,
        client_id: &str,
        owner: Owner,
        within: Duration,
    ) -> Result<(), OwnershipError> {
        let index = owner.epoch.log_index();
        let mut metrics = self.shared.raft.metrics();
        let applied = tokio::time::timeout(
            within,
            metrics.wait_for(|m| m.last_applied.is_some_and(|l| l.index >= index)),
        )
        .await;
        match applied {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err(OwnershipError::Stopped),
            Err(_) => return Err(OwnershipError::NoQuorum(within)),
        }
        match self.owner(client_id)? {
            Some(current) if current == owner => Ok(()),
            current => Err(OwnershipError::StaleEpoch { current }),
        }
    }

    /// Every change this node applies from now on, in log order. A node
    /// watches it for [`OwnershipChange::taken_from`](crate::OwnershipChange::taken_from)
    /// itself, to send the old connection DISCONNECT 0x8E. A receiver that
    /// falls more than `change_buffer` behind gets `Lagged` and, like
    /// [`OwnershipEvent::Reset`], must check its clients with [`Ownership::owner`].
    pub fn changes(&self) -> broadcast::Receiver<OwnershipEvent> {
        self.changes.subscribe()
    }

    /// This node's view of the group.
    pub fn status(&self) -> Status {
        let metrics = self.shared.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        Status {
            node_id: self.shared.id,
            leader: m.current_leader,
            role: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            },
            term: m.current_term,
            last_applied: m.last_applied.map(|l| l.index),
            voters: membership.voter_ids().collect(),
            nodes: membership
                .nodes()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect(),
        }
    }

    /// Adds `id` at `addr` as a learner and waits until it has caught up
    /// with the log; the first step of a join, called on the leader. The
    /// new node was started with [`Ownership::start`] and not bootstrapped.
    pub async fn add_learner(&self, id: NodeId, addr: &str) -> Result<(), OwnershipError> {
        let node = BasicNode {
            addr: addr.to_owned(),
        };
        self.shared
            .raft
            .add_learner(id, node, true)
            .await
            .map(drop)
            .map_err(membership_error)
    }

    /// Makes `voters` the voting members (a joint-consensus change; learners
    /// not named stay learners); the second step of a join, or how a node
    /// is retired. Called on the leader.
    pub async fn change_membership(&self, voters: BTreeSet<NodeId>) -> Result<(), OwnershipError> {
        self.shared
            .raft
            .change_membership(voters, true)
            .await
            .map(drop)
            .map_err(membership_error)
    }

    /// Takes node `id` out of the group for good (a node that died and
    /// will not come back): no longer a voter, nor a learner. Called on the
    /// leader. The last voter cannot be retired.
    pub async fn retire(&self, id: NodeId) -> Result<(), OwnershipError> {
        let status = self.status();
        if !status.nodes.contains_key(&id) {
            return Err(OwnershipError::Membership(format!(
                "node {id} is not a member of the group"
            )));
        }
        let change = if status.voters.contains(&id) {
            let mut voters = status.voters.clone();
            voters.remove(&id);
            if voters.is_empty() {
                return Err(OwnershipError::Membership(
                    "the last voter cannot be retired".into(),
                ));
            }
            ChangeMembers::ReplaceAllVoters(voters)
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.shared
            .raft
            .change_membership(change, false)
            .await
            .map(drop)
            .map_err(membership_error)
    }

    /// Records that member `id` is now reached at `addr` (it restarted on
    /// another port): the same node, its log kept, so its vote and place in
    /// the group stay. Called on the leader.
    pub async fn set_address(&self, id: NodeId, addr: &str) -> Result<(), OwnershipError> {
        let node = BasicNode {
            addr: addr.to_owned(),
        };
        let change = ChangeMembers::SetNodes(BTreeMap::from([(id, node)]));
        self.shared
            .raft
            .change_membership(change, true)
            .await
            .map(drop)
            .map_err(membership_error)
    }

    /// Stops the node: Raft, the listener and every link. The redb file is
    /// closed once this returns.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.shared.raft.shutdown().await {
            tracing::warn!(error = %e, "ownership Raft did not stop cleanly");
        }
        let tasks = std::mem::take(&mut self.tasks);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        self.shared.peers.close_all();
        tracing::info!(node_id = self.shared.id, "ownership node stopped");
    }
}

impl Drop for Ownership {
    /// A node dropped without [`Ownership::shutdown`] still closes its
    /// listener and links (its Raft task ends with the runtime).
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.shared.peers.close_all();
    }
}

fn checked(client_id: &str) -> Result<&str, OwnershipError> {
    if client_id.len() > MAX_CLIENT_ID {
        return Err(OwnershipError::ClientIdTooLong(client_id.len()));
    }
    Ok(client_id)
}

fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> OwnershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => OwnershipError::NotLeader {
            leader: to.leader_id,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            OwnershipError::Membership(e.to_string())
        }
        RaftError::Fatal(e) => OwnershipError::Raft(e.to_string()),
    }
}
