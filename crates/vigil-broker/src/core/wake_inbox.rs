//! Wakes that cross threads, in batches. With one single-threaded runtime per
//! core, waking a task that lives on another worker costs that worker's
//! runtime an eventfd write, per task: a fan-out burst to 100 subscribers cost
//! ~50 of them. Each worker instead runs one `WakeInbox`; other threads hand
//! it the sessions to wake, and only the first of a batch wakes the worker.

use std::cell::RefCell;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::SessionRef;

thread_local! {
    /// The inbox of the worker this thread runs, if it runs one.
    static HERE: RefCell<Option<Arc<WakeInbox>>> = const { RefCell::new(None) };
}

/// Where other threads leave wakes for the connections of one worker.
#[derive(Debug, Default)]
pub struct WakeInbox {
    sessions: Mutex<Vec<SessionRef>>,
    notify: Notify,
}

impl WakeInbox {
    /// Runs on the worker, for as long as the worker does: makes this thread's
    /// inbox known to the connections that attach here, and wakes locally
    /// what other threads hand in.
    pub async fn serve(self: Arc<Self>) {
        HERE.with(|here| *here.borrow_mut() = Some(self.clone()));
        let mut batch = Vec::new();
        loop {
            self.notify.notified().await;
            std::mem::swap(&mut *self.sessions.lock(), &mut batch);
            for session in batch.drain(..) {
                session.mailbox.wake();
            }
        }
    }

    /// The inbox of the worker running on this thread.
    pub fn here() -> Option<Arc<WakeInbox>> {
        HERE.with(|here| here.borrow().clone())
    }

    /// True if this is the inbox of the worker running on this thread.
    pub(crate) fn is_here(self: &Arc<Self>) -> bool {
        HERE.with(|here| here.borrow().as_ref().is_some_and(|h| Arc::ptr_eq(h, self)))
    }

    /// Hands `session` to the worker; the first of a batch wakes it.
    pub(crate) fn hand_in(&self, session: SessionRef) {
        let first = {
            let mut sessions = self.sessions.lock();
            sessions.push(session);
            sessions.len() == 1
        };
        if first {
            // A permit is stored if the worker is busy: it takes the batch next.
            self.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Session;
    use std::time::Duration;

    /// Sessions handed in from another thread, before and while the worker
    /// is busy, are all woken by the worker's inbox.
    #[tokio::test]
    async fn every_session_handed_in_is_woken_on_its_worker() {
        let inbox = Arc::new(WakeInbox::default());
        tokio::spawn(inbox.clone().serve());
        tokio::task::yield_now().await;
        assert!(inbox.is_here(), "serve makes the inbox this thread's");
        let sessions: Vec<SessionRef> = (0..50)
            .map(|i| Arc::new(Session::new(i, format!("s{i}").into())))
            .collect();
        let handed = sessions.clone();
        let other = inbox.clone();
        std::thread::spawn(move || {
            assert!(!other.is_here());
            for s in handed {
                other.hand_in(s);
            }
        })
        .join()
        .expect("thread");
        for s in &sessions {
            tokio::time::timeout(Duration::from_secs(1), s.mailbox.notified())
                .await
                .expect("woken through the inbox");
        }
    }
}
