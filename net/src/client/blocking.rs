//! Waiting for a client future on the calling thread.
//!
//! Every future the client hands out is completed by the client's own
//! threads (a connection's reader, the timer thread of `futures-timer`),
//! never by the executor that polls it, so blocking a thread on one needs
//! no executor. Unlike `futures::executor::block_on` this wait may run
//! inside another executor's task: a rebalance listener called from
//! `Consumer::poll_async` may commit synchronously (it blocks that thread
//! for the commit's round trip, as any synchronous call there would).

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

/// Wakes the waiting thread. The flag is this wait's own: a nested wait
/// on the same thread may take the thread's park token, but never this
/// flag, so a wake meant for the outer wait is not lost.
struct Unpark {
    thread: Thread,
    woken: AtomicBool,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Runs `future` to completion on this thread, parking it between wakes.
pub(crate) fn wait<F: Future>(future: F) -> F::Output {
    let unpark = Arc::new(Unpark { thread: std::thread::current(), woken: AtomicBool::new(false) });
    let waker = Waker::from(unpark.clone());
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        // Park returns spuriously too: only the flag says a wake came.
        while !unpark.woken.swap(false, Ordering::Acquire) {
            std::thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wait;
    use futures::channel::oneshot;

    #[test]
    fn a_wait_nested_in_another_loses_none_of_its_wakes() {
        let (outer_tx, outer_rx) = oneshot::channel();
        let (inner_tx, inner_rx) = oneshot::channel();
        let sender = std::thread::spawn(move || {
            // The outer wait's wake comes while the inner one parks, and
            // may take the thread's park token.
            let outer = outer_tx.send(1);
            let inner = inner_tx.send(2);
            (outer.is_ok(), inner.is_ok())
        });
        // `join` polls `outer_rx` first (pending, its waker the outer
        // wait's), then blocks in the inner wait.
        let got = wait(futures::future::join(outer_rx, async { wait(inner_rx) }));
        assert_eq!(sender.join().ok(), Some((true, true)), "both values went out");
        assert_eq!(got, (Ok(1), Ok(2)));
    }

    #[test]
    fn waits_for_a_value_sent_from_another_thread_even_inside_an_executor() {
        let outer = futures::executor::block_on(async {
            let (tx, rx) = oneshot::channel();
            let sender = std::thread::spawn(move || tx.send(7));
            // Nested in block_on's task, where block_on itself would panic.
            let got = wait(rx);
            assert!(sender.join().is_ok_and(|sent| sent.is_ok()), "the value went out");
            got
        });
        assert_eq!(outer, Ok(7));
    }
}
