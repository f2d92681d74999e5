//! Where the message being routed on this thread came from, for the hook
//! that passes on deliveries to moved sessions (`moved`): which node sent
//! it here, and where the copies its sender sent other nodes directly are
//! on their links. The broker's routing calls that hook from deep inside
//! delivery, with the delivery alone; this thread-local carries the rest.
//!
//! A local publish sets it in `forward` (which the core calls before the
//! local delivery of the same message, on the same thread), keyed by the
//! message so a delivery of another message never reads it; a batch from
//! a link sets it around each message's delivery.

use std::cell::RefCell;
use std::sync::Arc;

use vigil_proto::message::Message;

use crate::wire::LinkMark;

/// One message's origin.
#[derive(Debug, Default, Clone)]
pub(crate) struct Origin {
    /// The message it is about (its address), for a local publish; None
    /// for a message from a link (set around its delivery only).
    message: Option<usize>,
    /// The node that forwarded it here (None: published here).
    pub(crate) sender: Option<u64>,
    /// The nodes its sender sent it to directly, with its place there.
    pub(crate) also: Vec<(u64, LinkMark)>,
    /// Its place on the link it came here by.
    pub(crate) via: Option<LinkMark>,
}

impl Origin {
    /// Where the copy `node` had directly is, if it had one: for its
    /// sender, the message's place on the link it came here by.
    pub(crate) fn direct(&self, node: u64) -> Option<LinkMark> {
        if self.sender == Some(node) {
            return self.via;
        }
        self.also
            .iter()
            .find(|(to, _)| *to == node)
            .map(|(_, m)| *m)
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Origin>> = const { RefCell::new(None) };
}

/// Forgets the origin of the message routed before on this thread.
pub(crate) fn clear() {
    CURRENT.with(|c| c.borrow_mut().take());
}

/// `message`, published here, went to the nodes in `also` directly.
pub(crate) fn set_local(message: &Arc<Message>, also: Vec<(u64, LinkMark)>) {
    let origin = Origin {
        message: Some(Arc::as_ptr(message) as usize),
        sender: None,
        also,
        via: None,
    };
    CURRENT.with(|c| *c.borrow_mut() = Some(origin));
}

/// Runs `deliver` with the origin of a message that came here at `via`
/// on its sender's link, which it also sent to the nodes in `also`.
pub(crate) fn with_forwarded<T>(
    via: LinkMark,
    also: Vec<(u64, LinkMark)>,
    deliver: impl FnOnce() -> T,
) -> T {
    let origin = Origin {
        message: None,
        sender: Some(via.node),
        also,
        via: Some(via),
    };
    CURRENT.with(|c| *c.borrow_mut() = Some(origin));
    let out = deliver();
    clear();
    out
}

/// The origin of `message`, delivered now on this thread (default: a
/// local publish that went to no other node).
pub(crate) fn of(message: &Arc<Message>) -> Origin {
    let ptr = Arc::as_ptr(message) as usize;
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|o| o.message.is_none_or(|m| m == ptr))
            .cloned()
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use vigil_proto::QoS;

    fn message() -> Arc<Message> {
        Arc::new(Message {
            topic: "t".into(),
            payload: Bytes::new(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            expires_at: None,
        })
    }

    #[test]
    fn a_local_origin_belongs_to_its_message_only() {
        let (a, b) = (message(), message());
        let mark = LinkMark {
            node: 1,
            generation: 2,
            link: 3,
            seq: 4,
        };
        set_local(&a, vec![(5, mark)]);
        assert_eq!(of(&a).direct(5), Some(mark));
        assert_eq!(of(&a).direct(6), None);
        assert_eq!(of(&b).direct(5), None, "another message");
        clear();
        assert_eq!(of(&a).direct(5), None);
    }

    #[test]
    fn a_forwarded_origin_holds_during_its_delivery() {
        let a = message();
        let via = LinkMark {
            node: 7,
            generation: 1,
            link: 2,
            seq: 3,
        };
        let seen = with_forwarded(via, Vec::new(), || {
            let o = of(&a);
            (o.sender, o.direct(7))
        });
        assert_eq!(seen, (Some(7), Some(via)), "its sender had it at `via`");
        assert_eq!(of(&a).sender, None, "cleared after");
    }
}
