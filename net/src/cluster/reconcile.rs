//! Makes the engine hold what the metadata says this broker holds: every
//! partition whose replicas name this broker is open, with the topic's
//! settings; partitions and topics the metadata no longer gives it are
//! removed. Runs on shard 0 after each new view, on the latest one only.
//!
//! A local topic the metadata does not name is removed only once the
//! cluster is bootstrapped (its first leader adopted the topics its data
//! directory held from before the cluster), so upgrading a single-node
//! data directory never loses a topic.
//!
//! The same task keeps a spare block of producer ids in hand once the
//! broker is alive (`ProducerIdSource::prefetch`), makes this broker play
//! the replication role the metadata gives it for each partition
//! (`Replication::apply_roles`), and, every `ISR_CHECK_INTERVAL`, asks the
//! controller for the in-sync set changes of the partitions it leads.

use super::controller::{BOOTSTRAPPED_SETTING, METADATA_TOPIC};
use super::handle::{ClusterHandle, ClusterView};
use super::metadata::BrokerId;
use crate::protocol::{AlterPartitionRequest, AlterPartitionResponse};
use mamba_engine::{Engine, PartitionId};
use std::collections::BTreeSet;
use std::sync::Arc;

pub(crate) async fn run(
    engine: Engine,
    handle: Arc<ClusterHandle>,
    stop: async_channel::Receiver<()>,
) {
    let me = BrokerId(handle.node_id());
    let mut done_for: Option<Arc<ClusterView>> = None;
    let mut isr_checked = std::time::Instant::now();
    loop {
        let listener = handle.view_changed.listen();
        let view = handle.view();
        if isr_checked.elapsed() >= ISR_CHECK_INTERVAL {
            isr_checked = std::time::Instant::now();
            ask_isr_changes(&engine, &handle).await;
        }
        if done_for.as_ref().is_none_or(|d| !Arc::ptr_eq(d, &view)) {
            reconcile(&engine, &view, me).await;
            if view.metadata.broker(me).is_some() {
                handle.replication().apply_roles(&engine, &view.metadata).await;
            }
            if view.metadata.broker(me).is_some_and(|b| !b.fenced) {
                // Producer ids in hand before the first producer asks (and
                // should the quorum be lost later).
                handle.producer_ids().prefetch(&handle);
            }
            done_for = Some(view);
            continue; // a newer view may have come meanwhile
        }
        futures::select! {
            () = futures::FutureExt::fuse(listener) => {}
            () = futures::FutureExt::fuse(crate::runtime::sleep(ISR_CHECK_INTERVAL)) => {}
            _ = futures::FutureExt::fuse(stop.recv()) => return,
        }
    }
}

/// How often a leader looks for followers to drop from or add to its
/// in-sync sets.
const ISR_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Sends the controller each in-sync set change this broker's leaderships
/// need (each on its own task; the answer shows in the next view).
async fn ask_isr_changes(engine: &Engine, handle: &Arc<ClusterHandle>) {
    let changes = handle.replication().isr_changes(engine).await;
    for ((topic, partition), leader_epoch, partition_epoch, isr) in changes {
        let request = AlterPartitionRequest {
            cluster_id: handle.view().metadata.cluster_id().unwrap_or_default().to_string(),
            broker_id: handle.node_id(),
            topic,
            partition,
            leader_epoch,
            partition_epoch,
            isr: isr.iter().map(|id| id.0).collect(),
        };
        let handle = handle.clone();
        crate::runtime::spawn(async move {
            let me = u64::from(handle.node_id());
            let answer = match handle.view().leader_id {
                Some(id) if id == me => Ok(handle.alter_partition_here(request).await),
                Some(id) => match handle.address_of(id) {
                    Some(address) => handle
                        .call_peer::<_, AlterPartitionResponse>(id, &address, request)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err(format!("no address for the controller (node {id})")),
                },
                None => Err("no controller known".to_string()),
            };
            match answer {
                Ok(a) if a.error_code == 0 => {}
                Ok(a) => tracing::debug!(code = a.error_code, message = %a.message, "in-sync set change refused"),
                Err(e) => tracing::debug!(error = %e, "in-sync set change not asked"),
            }
        })
        .detach();
    }
}

async fn reconcile(engine: &Engine, view: &ClusterView, me: BrokerId) {
    let metadata = &view.metadata;
    // Only a broker the metadata knows (registered) acts on it.
    if metadata.cluster_id().is_none() || metadata.broker(me).is_none() {
        return;
    }
    for topic in metadata.topics() {
        let hosted: BTreeSet<PartitionId> = topic
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, p)| p.replicas.contains(&me))
            .map(|(i, _)| PartitionId(i as u32))
            .collect();
        let local = engine.describe_topic(&topic.name).is_ok();
        if hosted.is_empty() && !local {
            continue;
        }
        let Some(config) = view.topic_config(&topic.name) else { continue };
        let topic_id = topic.id.to_string();
        if let Err(e) = engine.sync_topic(&topic.name, config, &hosted, Some(&topic_id)).await {
            tracing::warn!(topic = %topic.name, error = %e, "cannot open this broker's partitions of a topic; retrying on the next change");
        }
    }
    if metadata.setting(BOOTSTRAPPED_SETTING).is_none() {
        return;
    }
    for local in engine.list_topics() {
        if local.name == METADATA_TOPIC || metadata.topic(&local.name).is_some() {
            continue;
        }
        tracing::info!(topic = %local.name, "the cluster deleted this topic: removing it here");
        if let Err(e) = engine.delete_topic(&local.name).await {
            tracing::warn!(topic = %local.name, error = %e, "removing a deleted topic");
        }
    }
}
