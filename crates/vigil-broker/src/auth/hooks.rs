//! What the connection layer asks the gate, kept here so the connection code
//! carries one call per question.

use vigil_proto::server::{CloseReason, ServerConnection};
use vigil_proto::topic::SharedFilter;
use vigil_proto::{ReasonCode, Subscribe};

use crate::core::{Broker, Session};

/// `matched` of an ack whose PUBLISH the ACL refused (held acks keep their
/// place in the PUBACK order; this tells the refusal apart when it is sent).
pub(crate) const DENIED: usize = usize::MAX;

/// Sends the ack of a routed (or refused) PUBLISH.
pub(crate) fn send_ack(
    conn: &mut ServerConnection,
    packet_id: u16,
    qos: vigil_proto::QoS,
    matched: usize,
) {
    if matched == DENIED {
        conn.publish_denied(packet_id, qos);
    } else {
        conn.publish_routed(packet_id, qos, matched);
    }
}

/// Whether `session`'s client may publish to `topic` (true without an ACL).
pub(crate) fn may_publish(broker: &Broker, session: &Session, topic: &str) -> bool {
    match broker.auth().filter(|a| a.has_authorizer()) {
        Some(auth) => auth.check_publish(session, topic),
        None => true,
    }
}

/// Takes the filters the ACL refuses out of `sub`; returns their places, for
/// [`merge_suback`].
pub(crate) fn screen_subscribe(
    broker: &Broker,
    session: &Session,
    sub: &mut Subscribe,
) -> Vec<usize> {
    let Some(auth) = broker.auth().filter(|a| a.has_authorizer()) else {
        return Vec::new();
    };
    let mut denied = Vec::new();
    let mut index = 0;
    sub.filters.retain(|s| {
        // A shared subscription reads what its filter matches.
        let filter = match SharedFilter::parse(&s.filter) {
            Ok(Some(shared)) => shared.filter,
            _ => s.filter.as_str(),
        };
        // Invalid filters are left to the broker, which answers 0x8F.
        let allowed = vigil_proto::topic::validate_topic_filter(filter).is_err()
            || auth.check_subscribe(session, filter);
        if !allowed {
            denied.push(index);
        }
        index += 1;
        allowed
    });
    denied
}

/// The SUBACK codes of the whole SUBSCRIBE: the broker's for the filters it
/// saw, 0x87 (0x80 on the wire before MQTT 5) where the ACL refused.
pub(crate) fn merge_suback(granted: Vec<ReasonCode>, denied: &[usize]) -> Vec<ReasonCode> {
    if denied.is_empty() {
        return granted;
    }
    let mut granted = granted.into_iter();
    (0..granted.len() + denied.len())
        .map(|i| {
            if denied.contains(&i) {
                ReasonCode::NOT_AUTHORIZED
            } else {
                granted.next().unwrap_or(ReasonCode::UNSPECIFIED_ERROR)
            }
        })
        .collect()
}

/// Closes a connection whose credentials a reload revoked: MQTT 5 gets
/// DISCONNECT 0x87 first.
pub(crate) fn close_revoked(conn: &mut ServerConnection) {
    conn.close(ReasonCode::NOT_AUTHORIZED, CloseReason::Revoked);
}

/// Closes a connection whose login (a JWT) expired: MQTT 5 gets DISCONNECT
/// 0xA0 "Maximum connect time" first.
pub(crate) fn close_expired(conn: &mut ServerConnection) {
    conn.close(ReasonCode::MAXIMUM_CONNECT_TIME, CloseReason::LoginExpired);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suback_codes_keep_the_filters_order() {
        let g = |n| ReasonCode(n);
        assert_eq!(merge_suback(vec![g(1), g(0)], &[]), vec![g(1), g(0)]);
        assert_eq!(
            merge_suback(vec![g(1), g(2)], &[0, 2, 4]),
            vec![
                ReasonCode::NOT_AUTHORIZED,
                g(1),
                ReasonCode::NOT_AUTHORIZED,
                g(2),
                ReasonCode::NOT_AUTHORIZED
            ]
        );
        assert_eq!(merge_suback(vec![], &[0]), vec![ReasonCode::NOT_AUTHORIZED]);
    }
}
