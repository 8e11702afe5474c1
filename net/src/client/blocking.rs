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
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on this thread, parking it between wakes.
pub(crate) fn wait<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        // A wake before this park leaves the token set: park returns at
        // once. Spurious returns only poll again.
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::wait;
    use futures::channel::oneshot;

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
