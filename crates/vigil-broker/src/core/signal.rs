//! A wake for the one task that waits on it, polled in place.
//!
//! `tokio::sync::Notify` does the same job, but waiting on it takes a
//! `Notified` future of 64 bytes, and the connection task waits on two of them
//! (its mailbox and the broker's control word) in the select where every idle
//! connection sits: those futures were ~150 bytes of every idle connection.
//! Here the waiter's slot is one registered waker inside the signal.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

/// A stored permit and the waker of the task waiting for it. Meant for one
/// waiter at a time: a second task that waits takes the wake-ups from the
/// first (the last to register is woken).
#[derive(Debug, Default)]
pub(crate) struct WakeSignal {
    set: AtomicBool,
    waker: AtomicWaker,
}

impl WakeSignal {
    /// Wakes the waiter, or stores a permit for its next wait (like
    /// `Notify::notify_one`: several wakes before a wait make one permit).
    pub(crate) fn notify(&self) {
        self.set.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once a permit is stored, which it takes; otherwise registers
    /// `cx` to be woken by the next `notify`.
    pub(crate) fn poll_wait(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.set.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A notify between the check and the registration woke no one.
        if self.set.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Makes `waker` the one the next `notify` wakes; true if a permit is
    /// already stored (it is left for the next `poll_wait`).
    pub(crate) fn register(&self, waker: &std::task::Waker) -> bool {
        self.waker.register(waker);
        self.set.load(Ordering::Acquire)
    }

    /// Waits for a permit.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| self.poll_wait(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// A notify before the wait is kept as one permit, and only one.
    #[test]
    fn a_notify_before_the_wait_is_one_permit() {
        let s = WakeSignal::default();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(
            s.poll_wait(&mut cx).is_pending(),
            "no permit before a notify"
        );
        s.notify();
        s.notify();
        assert!(
            s.poll_wait(&mut cx).is_ready(),
            "the stored permit ends the wait"
        );
        assert!(
            s.poll_wait(&mut cx).is_pending(),
            "two notifies made two permits"
        );
    }

    /// A waker that passes each wake-up on to the test thread.
    struct Woken(std::sync::mpsc::Sender<()>);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            let _ = self.0.send(());
        }
    }

    /// A registered waiter is woken by a notify from another thread, and its
    /// next poll takes the permit. The wait is registered (the poll returned
    /// `Pending`) before the other thread starts: no sleep decides the order.
    #[test]
    fn a_waiter_is_woken_from_another_thread() {
        let s = Arc::new(WakeSignal::default());
        let (tx, woken) = std::sync::mpsc::channel();
        let waker = std::task::Waker::from(Arc::new(Woken(tx)));
        let mut cx = Context::from_waker(&waker);
        assert!(s.poll_wait(&mut cx).is_pending(), "registered, no permit");
        assert!(woken.try_recv().is_err(), "nothing woke it yet");
        let other = s.clone();
        std::thread::spawn(move || other.notify())
            .join()
            .expect("thread");
        woken
            .recv_timeout(Duration::from_secs(5))
            .expect("the notify from the other thread woke the waiter");
        assert!(
            s.poll_wait(&mut cx).is_ready(),
            "the woken poll takes the permit"
        );
    }
}
