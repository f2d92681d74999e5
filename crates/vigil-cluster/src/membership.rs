//! Membership on chitchat: starting the gossip, what each node announces
//! (its MQTT address, readiness and routes; its id, cluster address and
//! generation are chitchat's node id), and reading back who is alive and
//! what routes they changed.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

#[cfg(not(feature = "fault-injection"))]
use chitchat::transport::UdpTransport;
use chitchat::{
    spawn_chitchat, Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    ProtocolVersion,
};
use tracing::warn;

use crate::routes::Route;
use crate::ClusterError;

/// How often a node gossips.
pub(crate) const GOSSIP_INTERVAL: Duration = Duration::from_millis(200);
/// Chitchat's phi is the silence over the mean interval between heartbeats
/// seen: a node silent for this many mean intervals is declared dead
/// (about 1.5-3 s here; see docs/cluster.md for the measured figure). Lower
/// detects sooner, but a node declared dead while alive loses what was
/// queued for it, so this leaves room for a loaded machine's hiccups.
const PHI_THRESHOLD: f64 = 12.0;

/// Key of the node's MQTT address.
const MQTT_KEY: &str = "mqtt";
/// Key of the node's readiness ("1" once it serves).
const READY_KEY: &str = "ready";
/// Key of the node's Raft address (client-id ownership).
const RAFT_KEY: &str = "raft";
/// Key saying the node is in the ownership group ("1"), so a node that is
/// not yet does not form a second group.
const RAFT_FORMED_KEY: &str = "raft_formed";

/// Starts gossiping on `bind` as node `node_id`, generation `generation`.
pub(crate) async fn start(
    node_id: u64,
    generation: u64,
    bind: SocketAddr,
    seeds: &[SocketAddr],
    mqtt: &str,
    raft: &str,
) -> Result<ChitchatHandle, ClusterError> {
    let config = ChitchatConfig {
        chitchat_id: ChitchatId::new(node_id.to_string(), generation, bind),
        cluster_id: "vigil".into(),
        gossip_interval: GOSSIP_INTERVAL,
        listen_addr: bind,
        seed_nodes: seeds.iter().map(|s| s.to_string()).collect(),
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: PHI_THRESHOLD,
            sampling_window_size: 1000,
            max_interval: Duration::from_secs(10),
            initial_interval: GOSSIP_INTERVAL,
            dead_node_grace_period: Duration::from_secs(3600),
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: ProtocolVersion::V1,
    };
    let initial = vec![
        (MQTT_KEY.to_string(), mqtt.to_string()),
        (READY_KEY.to_string(), "0".to_string()),
        (RAFT_KEY.to_string(), raft.to_string()),
        (RAFT_FORMED_KEY.to_string(), "0".to_string()),
    ];
    #[cfg(not(feature = "fault-injection"))]
    let transport = UdpTransport;
    #[cfg(feature = "fault-injection")]
    let transport = crate::fault::FaultyTransport;
    spawn_chitchat(config, initial, &transport)
        .await
        .map_err(|e| ClusterError::Gossip {
            addr: bind,
            cause: format!("{e:#}"),
        })
}

/// Announces whether this node serves.
pub(crate) fn set_ready(chitchat: &mut Chitchat, ready: bool) {
    chitchat
        .self_node_state()
        .set(READY_KEY, if ready { "1" } else { "0" });
}

/// Announces whether this node is in the ownership group.
pub(crate) fn set_raft_formed(chitchat: &mut Chitchat, formed: bool) {
    chitchat
        .self_node_state()
        .set(RAFT_FORMED_KEY, if formed { "1" } else { "0" });
}

/// Gossips route changes: present routes get a key, vanished ones lose it.
pub(crate) fn publish_routes(chitchat: &mut Chitchat, changes: &[(Route, bool)]) {
    let state = chitchat.self_node_state();
    for (route, present) in changes {
        let key = route.key();
        if *present {
            state.set(key, "");
        } else {
            state.delete(&key);
        }
    }
}

/// A live node as gossip shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// Its node id.
    pub(crate) node_id: u64,
    /// Its generation (start time, unix ms).
    pub(crate) generation: u64,
    /// Its cluster address (gossip and links).
    pub(crate) cluster_addr: SocketAddr,
    /// Its MQTT address, as it announced it.
    pub(crate) mqtt: String,
    /// Whether it serves.
    pub(crate) ready: bool,
    /// Its Raft address (client-id ownership), as it announced it.
    pub(crate) raft: String,
    /// Whether it is in the ownership group.
    pub(crate) raft_formed: bool,
}

/// What changed in one live node's routes since the last look.
#[derive(Debug)]
pub(crate) enum RouteDelta {
    /// Every route it has (its state was reset, or this is the first look).
    Full(HashSet<Route>),
    /// Routes added (true) or removed (false).
    Changes(Vec<(Route, bool)>),
}

/// Reads membership and route changes out of chitchat, remembering how far
/// it has read each node's state.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    /// Chitchat version of each node's state read so far.
    read_up_to: HashMap<ChitchatId, u64>,
}

impl Reader {
    /// The live members other than this node (one per node id: its newest
    /// generation), each with what changed in its routes, if anything.
    pub(crate) fn look(&mut self, chitchat: &Chitchat) -> Vec<(Member, Option<RouteDelta>)> {
        let me = chitchat.self_chitchat_id().clone();
        let mut newest: HashMap<u64, &ChitchatId> = HashMap::new();
        for id in chitchat.live_nodes() {
            if id.node_id == me.node_id {
                if id != &me {
                    warn!(node = %id.node_id, addr = %id.gossip_advertise_addr, "another node gossips with this node's id: node ids must be unique");
                }
                continue;
            }
            let Ok(node_id) = id.node_id.parse::<u64>() else {
                continue;
            };
            match newest.get(&node_id) {
                Some(seen) if seen.generation_id >= id.generation_id => {}
                _ => {
                    newest.insert(node_id, id);
                }
            }
        }
        let mut out = Vec::with_capacity(newest.len());
        for (node_id, id) in newest {
            let Some(state) = chitchat.node_state(id) else {
                continue;
            };
            let member = Member {
                node_id,
                generation: id.generation_id,
                cluster_addr: id.gossip_advertise_addr,
                mqtt: state.get(MQTT_KEY).unwrap_or_default().to_string(),
                ready: state.get(READY_KEY) == Some("1"),
                raft: state.get(RAFT_KEY).unwrap_or_default().to_string(),
                raft_formed: state.get(RAFT_FORMED_KEY) == Some("1"),
            };
            let read = self.read_up_to.get(id).copied();
            let delta = match read {
                _ if read == Some(state.max_version()) => None,
                Some(v) if state.last_gc_version() <= v => {
                    let changes = state
                        .key_values_including_deleted()
                        .filter(|(k, vv)| vv.version > v && Route::is_key(k))
                        .filter_map(|(k, vv)| Some((Route::from_key(k)?, !vv.is_deleted())))
                        .collect();
                    Some(RouteDelta::Changes(changes))
                }
                _ => Some(RouteDelta::Full(
                    state
                        .key_values()
                        .filter_map(|(k, _)| Route::from_key(k))
                        .collect(),
                )),
            };
            self.read_up_to.insert(id.clone(), state.max_version());
            out.push((member, delta));
        }
        let live: HashSet<ChitchatId> = chitchat.live_nodes().cloned().collect();
        self.read_up_to.retain(|id, _| live.contains(id));
        out
    }
}
