//! Client-id ownership on a cluster node: the claim each CONNECT commits
//! (through `vigil-ownership`'s Raft group), the old owner's side of a
//! takeover, and forming and growing the Raft group from gossip.
//!
//! Forming the group (`docs/cluster-ownership.md`): a node not yet in a
//! group starts one, alone, only when it has the lowest node id among the
//! live members, no live member announces a group, and at least one of its
//! seeds other than itself is a live member (or it has no other seed). The
//! leader adds each live member not yet in the group (learner, then voter)
//! and updates the address of a member that came back on another port.
//! Members are never removed: a dead node keeps its vote, so a minority
//! cannot claim.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info, warn};
use vigil_broker::Broker;
use vigil_ownership::{Claimed, Epoch, Owner, Ownership, OwnershipChange, OwnershipEvent};
use vigil_proto::time::Clock;

use crate::membership::Member;

/// How long a learner may take to catch up before the leader tries again.
const ADD_LEARNER_WAIT: Duration = Duration::from_secs(10);
/// How long a hand-over request waits for this node to apply the claim it
/// names.
const VERIFY_WAIT: Duration = Duration::from_secs(2);
/// How long a session whose client id another node claimed is kept here
/// for that node's hand-over request before it is ended anyway (the new
/// owner crashed, or its request was lost).
const HAND_OVER_GRACE: Duration = Duration::from_secs(5);

/// This node's part in client-id ownership.
pub(crate) struct ClientOwnership {
    node_id: u64,
    ownership: Ownership,
    /// The epoch of this node's newest claim of each client id it holds.
    /// Written under this lock only after reading the applied owner, and
    /// read by the change watcher under it, so that a claim that lost a race
    /// is closed by one side or the other, never by neither.
    held: Mutex<HashMap<String, Epoch>>,
    /// Seeds other than this node's own cluster address.
    other_seeds: Vec<SocketAddr>,
    /// A membership step (bootstrap, add, address update) is running.
    steering: AtomicBool,
    /// Whether this node is in the group, as last seen.
    formed: AtomicBool,
}

impl std::fmt::Debug for ClientOwnership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOwnership")
            .field("node_id", &self.node_id)
            .field("address", &self.ownership.address())
            .finish_non_exhaustive()
    }
}

impl ClientOwnership {
    /// Wraps a started ownership node.
    pub(crate) fn new(
        node_id: u64,
        ownership: Ownership,
        other_seeds: Vec<SocketAddr>,
    ) -> ClientOwnership {
        ClientOwnership {
            node_id,
            ownership,
            held: Mutex::default(),
            other_seeds,
            steering: AtomicBool::new(false),
            formed: AtomicBool::new(false),
        }
    }

    /// The Raft address other nodes reach this one at.
    pub(crate) fn address(&self) -> &str {
        self.ownership.address()
    }

    /// Whether this node is in the group, as last seen.
    pub(crate) fn formed(&self) -> bool {
        self.formed.load(Relaxed)
    }

    /// Commits this node's claim of `client_id` for a CONNECT: the claim's
    /// epoch and the owner before it, or why it failed (no majority within
    /// the claim timeout, or a newer claim from another node already
    /// applied).
    pub(crate) async fn claim(&self, client_id: &str) -> Result<Claimed, String> {
        let claimed = self
            .ownership
            .claim(client_id, self.node_id)
            .await
            .map_err(|e| e.to_string())?;
        let mut held = self.held.lock();
        if let Some(newer) = self.newer_elsewhere(client_id, claimed.epoch) {
            return Err(format!(
                "a newer claim ({newer}) won the race for this client id"
            ));
        }
        let epoch = held.entry(client_id.to_owned()).or_insert(claimed.epoch);
        *epoch = (*epoch).max(claimed.epoch);
        Ok(claimed)
    }

    /// Whether `owner` is the current owner of `client_id`, once this node
    /// has applied its claim: how a hand-over request with a stale epoch
    /// is refused. A claim this node made that is older than `owner` is
    /// forgotten, as its change would have it.
    pub(crate) async fn verify(&self, client_id: &str, owner: Owner) -> Result<(), String> {
        self.ownership
            .verify_current(client_id, owner, VERIFY_WAIT)
            .await
            .map_err(|e| e.to_string())?;
        let mut held = self.held.lock();
        if held.get(client_id).is_some_and(|e| *e < owner.epoch) {
            held.remove(client_id);
        }
        Ok(())
    }

    /// The connection whose claim got `ticket` is attached: if a newer claim
    /// from another node was applied while it attached, it goes at once.
    pub(crate) fn attached(&self, broker: &Broker, client_id: &str, ticket: u64) {
        let mut held = self.held.lock();
        if let Some(newer) = self.newer_elsewhere(client_id, Epoch(ticket)) {
            if held.get(client_id).is_some_and(|e| *e <= newer.epoch) {
                held.remove(client_id);
            }
            drop(held);
            info!(client = client_id, owner = %newer, "client id claimed by another node while connecting here: connection closed (0x8E)");
            broker.end_taken_elsewhere(Clock::now(), client_id, true);
        }
    }

    /// The owner of `client_id` in this node's applied state, when another
    /// node holds it with an epoch newer than `epoch`.
    fn newer_elsewhere(&self, client_id: &str, epoch: Epoch) -> Option<Owner> {
        match self.ownership.owner(client_id) {
            Ok(Some(o)) if o.node != self.node_id && o.epoch > epoch => Some(o),
            Ok(_) => None,
            Err(e) => {
                warn!(client = client_id, error = %e, "cannot read the ownership state");
                None
            }
        }
    }

    /// Follows the applied changes: a client id this node holds that another
    /// node claimed with a newer epoch loses its connection (0x8E) and its
    /// session here. Runs until the ownership node stops.
    pub(crate) async fn watch_changes(self: Arc<Self>, broker: Weak<Broker>) {
        let mut changes = self.ownership.changes();
        loop {
            match changes.recv().await {
                Ok(OwnershipEvent::Changed(change)) => self.on_change(&broker, change),
                Ok(OwnershipEvent::Reset) | Err(RecvError::Lagged(_)) => self.recheck(&broker),
                Err(RecvError::Closed) => return,
            }
        }
    }

    fn on_change(self: &Arc<Self>, broker: &Weak<Broker>, change: OwnershipChange) {
        let Some(current) = change.current else {
            return;
        };
        if current.node == self.node_id {
            return;
        }
        let mut held = self.held.lock();
        // A claim of ours newer than this change (its entry not read yet
        // here) is not the connection this change takes away.
        if held
            .get(&change.client_id)
            .is_some_and(|e| *e > current.epoch)
        {
            return;
        }
        held.remove(&change.client_id);
        drop(held);
        self.end_here(broker, &change.client_id, current);
    }

    /// After a snapshot or a lagged change stream: every id held is checked
    /// against the applied state.
    fn recheck(self: &Arc<Self>, broker: &Weak<Broker>) {
        let mut lost = Vec::new();
        self.held
            .lock()
            .retain(|id, epoch| match self.newer_elsewhere(id, *epoch) {
                Some(newer) => {
                    lost.push((id.clone(), newer));
                    false
                }
                None => true,
            });
        for (id, newer) in lost {
            self.end_here(broker, &id, newer);
        }
    }

    /// Closes the local connection of `client_id` (0x8E); the session stays
    /// for the new owner's hand-over request, and ends here after
    /// `HAND_OVER_GRACE` if none came and this node has not claimed the id
    /// again meanwhile.
    fn end_here(self: &Arc<Self>, broker: &Weak<Broker>, client_id: &str, owner: Owner) {
        let Some(b) = broker.upgrade() else {
            return;
        };
        if let Some(what) = b.end_taken_elsewhere(Clock::now(), client_id, false) {
            info!(client = client_id, %owner, ?what, "client id taken over by another node: its connection here closed (0x8E)");
        } else {
            return;
        }
        let (this, broker, client_id) = (self.clone(), broker.clone(), client_id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(HAND_OVER_GRACE).await;
            if this.held.lock().contains_key(&client_id) {
                return;
            }
            if let Some(b) = broker.upgrade() {
                if b.end_taken_elsewhere(Clock::now(), &client_id, true)
                    .is_some()
                {
                    info!(client = %client_id, "no hand-over request came for a session taken over by another node: ended here");
                }
            }
        });
    }

    /// One step towards a group of every live member, if none is running:
    /// see the module's doc for the rule.
    pub(crate) fn steer(self: &Arc<Self>, members: &[Member]) {
        let status = self.ownership.status();
        self.formed
            .store(status.nodes.contains_key(&self.node_id), Relaxed);
        if self.steering.swap(true, Relaxed) {
            return;
        }
        let this = self.clone();
        let members = members.to_vec();
        tokio::spawn(async move {
            this.step(status, &members).await;
            this.steering.store(false, Relaxed);
        });
    }

    async fn step(&self, status: vigil_ownership::Status, members: &[Member]) {
        let me = self.node_id;
        if !status.nodes.contains_key(&me) {
            if should_form(me, &self.other_seeds, members) && status.last_applied.is_none() {
                info!(
                    node = me,
                    "forming the ownership group (lowest node id among the live members)"
                );
                let alone = [(me, self.address().to_owned())].into_iter().collect();
                if let Err(e) = self.ownership.bootstrap(&alone).await {
                    warn!(error = %e, "cannot form the ownership group");
                }
            }
            return;
        }
        if status.leader != Some(me) {
            return;
        }
        for m in members.iter().filter(|m| !m.raft.is_empty()) {
            let result = match status.nodes.get(&m.node_id) {
                None => {
                    info!(node = m.node_id, raft = %m.raft, "adding a node to the ownership group");
                    let added = tokio::time::timeout(
                        ADD_LEARNER_WAIT,
                        self.ownership.add_learner(m.node_id, &m.raft),
                    )
                    .await;
                    match added {
                        Ok(Ok(())) => self.make_voter(&status, m.node_id).await,
                        Ok(Err(e)) => Err(e),
                        Err(_) => {
                            debug!(node = m.node_id, "learner not caught up yet; trying again");
                            Ok(())
                        }
                    }
                }
                Some(addr) if *addr != m.raft => {
                    info!(node = m.node_id, raft = %m.raft, "a member of the ownership group moved");
                    self.ownership.set_address(m.node_id, &m.raft).await
                }
                Some(_) if !status.voters.contains(&m.node_id) => {
                    self.make_voter(&status, m.node_id).await
                }
                Some(_) => continue,
            };
            if let Err(e) = result {
                warn!(node = m.node_id, error = %e, "ownership membership change failed; trying again");
            }
            // One change per step: the next step sees its result.
            return;
        }
    }

    async fn make_voter(
        &self,
        status: &vigil_ownership::Status,
        id: u64,
    ) -> Result<(), vigil_ownership::OwnershipError> {
        let mut voters = status.voters.clone();
        voters.insert(id);
        self.ownership.change_membership(voters).await?;
        info!(node = id, "node is a voter of the ownership group");
        Ok(())
    }

    /// Retires node `id` from the group (see `Ownership::retire`).
    pub(crate) async fn retire(&self, id: u64) -> Result<(), vigil_ownership::OwnershipError> {
        self.ownership.retire(id).await
    }

    /// Leader and voters, as last seen.
    pub(crate) fn leader_and_voters(&self) -> (Option<u64>, std::collections::BTreeSet<u64>) {
        let s = self.ownership.status();
        (s.leader, s.voters)
    }

    /// Whether node `id` is in the group (voter or learner).
    pub(crate) fn has_member(&self, id: u64) -> bool {
        self.ownership.status().nodes.contains_key(&id)
    }

    /// Leader, role, term and members, for the admin API.
    pub(crate) fn status_json(&self) -> serde_json::Value {
        let s = self.ownership.status();
        serde_json::json!({
            "raft_addr": self.address(),
            "leader": s.leader,
            "role": s.role,
            "term": s.term,
            "last_applied": s.last_applied,
            "voters": s.voters,
            "nodes": s.nodes,
            "held": self.held.lock().len(),
        })
    }
}

/// Whether node `me`, in no group yet, forms one: it has the lowest id among
/// the live `members` (others than itself), none of them is in a group,
/// and one of its `other_seeds` is live (or it has none).
fn should_form(me: u64, other_seeds: &[SocketAddr], members: &[Member]) -> bool {
    let seed_live = other_seeds.is_empty()
        || members
            .iter()
            .any(|m| other_seeds.contains(&m.cluster_addr));
    let lowest = members.iter().all(|m| m.node_id > me);
    let group_seen = members.iter().any(|m| m.raft_formed);
    seed_live && lowest && !group_seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node_id: u64, formed: bool) -> Member {
        Member {
            node_id,
            generation: 1,
            cluster_addr: SocketAddr::from(([127, 0, 0, node_id as u8], 7946)),
            mqtt: String::new(),
            ready: true,
            raft: format!("127.0.0.{node_id}:7947"),
            raft_formed: formed,
        }
    }

    fn seed(node: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, node], 7946))
    }

    #[test]
    fn only_the_lowest_live_node_with_a_live_seed_and_no_group_around_forms_one() {
        // Node 1 with no seed but itself: forms at once, alone.
        assert!(should_form(1, &[], &[]));
        // Node 2 seeding node 1 that is not up yet: waits.
        assert!(!should_form(2, &[seed(1)], &[]));
        // Node 2 sees node 1: not the lowest.
        assert!(!should_form(2, &[seed(1)], &[member(1, false)]));
        // Node 1 sees node 3 (its seed): the lowest, forms.
        assert!(should_form(1, &[seed(3)], &[member(3, false)]));
        // A group exists already: node 1 (restarted fresh) waits to be added.
        assert!(!should_form(1, &[seed(2)], &[member(2, true)]));
    }
}
