//! How a send's end reaches its caller: a future, a callback per record, or
//! a tag in a per-batch delivery report.

use super::super::ClientError;
use futures::channel::oneshot;
use std::sync::Arc;

/// How one batch of tagged sends ended, given to the [`DeliveryHandler`].
#[derive(Debug)]
pub struct Delivery<'a> {
    pub topic: &'a str,
    pub partition: u32,
    /// The offset of the batch's first record (`None` with `Acks::None`),
    /// or why the batch failed.
    pub outcome: Result<Option<u64>, &'a ClientError>,
    /// `(offset delta in the batch, tag)` of each tagged record in it.
    pub tagged: &'a [(u32, u64)],
}

/// Runs on a client thread once per batch with tagged records: keep it
/// short, it delays other answers.
pub type DeliveryHandler = Arc<dyn Fn(&Delivery<'_>) + Send + Sync>;

/// Where a record landed. `offset` is `None` with `Acks::None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: u32,
    pub offset: Option<u64>,
}

/// Who learns how a record's send ended.
pub(super) enum Completion {
    Future(oneshot::Sender<Result<RecordMetadata, ClientError>>),
    /// Runs on the client's reader (or sender) thread: keep it short.
    Callback(Box<dyn FnOnce(Result<RecordMetadata, ClientError>) + Send>),
    /// For the delivery handler.
    Tag(u64),
}

/// Tells each record's sender how its batch ended, in offset order.
pub(super) fn deliver(
    handler: Option<&DeliveryHandler>,
    (topic, partition): (&str, u32),
    completions: Vec<Completion>,
    outcome: Result<Option<u64>, ClientError>,
) {
    let mut tagged = Vec::new();
    for (i, done) in completions.into_iter().enumerate() {
        let result = || match &outcome {
            Ok(base) => Ok(RecordMetadata { partition, offset: base.map(|b| b + i as u64) }),
            Err(e) => Err(e.clone()),
        };
        match done {
            Completion::Future(tx) => {
                if tx.send(result()).is_err() {
                    tracing::trace!("a send's caller stopped waiting");
                }
            }
            Completion::Callback(f) => f(result()),
            Completion::Tag(tag) => tagged.push((i as u32, tag)),
        }
    }
    if let (Some(handler), false) = (handler, tagged.is_empty()) {
        handler(&Delivery {
            topic,
            partition,
            outcome: outcome.as_ref().map(|o| *o),
            tagged: &tagged,
        });
    }
}
