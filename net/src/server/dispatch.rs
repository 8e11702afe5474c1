//! Routes each request frame to its API: checks the header, decodes the
//! body, calls the handler of its family and encodes the answer. Nothing
//! here does an API's work.

use super::answer::{error_answer, response, Answer};
use super::handlers::{cluster, fetch, groups, metadata, produce, replication, topics};
use super::{metrics, ServerContext};
use crate::protocol::*;
use futures::future::LocalBoxFuture;
use std::net::SocketAddr;
use std::sync::Arc;

/// The API of a request this broker can take: a request (not a response)
/// of an API and version it speaks.
fn check_header(h: &FrameHeader) -> Result<ApiKey, Answer> {
    if h.is_response() {
        return Err(error_answer(
            h,
            ErrorCode::InvalidRequest,
            "a client sent a response frame".into(),
        ));
    }
    let Some(api) = ApiKey::from_u16(h.api_key) else {
        let message = format!("api key {} is not supported", h.api_key);
        return Err(error_answer(h, ErrorCode::UnsupportedApi, message));
    };
    if !api.versions().contains(&h.api_version) {
        let versions = api.versions();
        let (min, max) = (versions.start(), versions.end());
        let message = format!("api {api} speaks versions {min}..={max}, not {}", h.api_version);
        return Err(error_answer(h, ErrorCode::UnsupportedVersion, message));
    }
    Ok(api)
}

/// Starts a request and returns the future of its answer (`None` when no
/// answer is due: produce with acks=0). Produce requests are submitted to
/// their partitions before this returns (see `produce::start_produce`);
/// everything else starts when the future is polled.
pub(crate) async fn start(
    frame: Frame,
    ctx: Arc<ServerContext>,
    peer: Option<SocketAddr>,
) -> LocalBoxFuture<'static, Option<Answer>> {
    match check_header(&frame.header) {
        Err(answer) => Box::pin(std::future::ready(Some(answer))),
        Ok(ApiKey::Produce) => produce::start_produce(frame, &ctx).await,
        Ok(api) => Box::pin(async move { Some(handle(api, frame, &ctx, peer).await) }),
    }
}

/// Answers one request of `api` other than produce.
async fn handle(
    api: ApiKey,
    frame: Frame,
    ctx: &ServerContext,
    peer: Option<SocketAddr>,
) -> Answer {
    let h = frame.header;
    macro_rules! decode {
        ($ty:ty) => {
            match <$ty>::decode(frame.body()) {
                Ok(body) => body,
                Err(e) => return error_answer(&h, ErrorCode::InvalidRequest, e.to_string()),
            }
        };
    }
    let no_payload = Vec::new();
    match api {
        ApiKey::ApiVersions => {
            let _request = decode!(ApiVersionsRequest);
            response(&h, &metadata::api_versions(), no_payload)
        }
        ApiKey::Metadata => {
            response(&h, &metadata::metadata(ctx, decode!(MetadataRequest)), no_payload)
        }
        ApiKey::DescribeBroker => {
            let _request = decode!(DescribeBrokerRequest);
            response(&h, &metadata::describe_broker(ctx).await, no_payload)
        }
        ApiKey::CreateTopics => {
            let request = decode!(CreateTopicsRequest);
            response(&h, &topics::create_topics(ctx, request).await, no_payload)
        }
        ApiKey::DeleteTopics => {
            let request = decode!(DeleteTopicsRequest);
            response(&h, &topics::delete_topics(ctx, request).await, no_payload)
        }
        ApiKey::DescribeConfigs => {
            let request = decode!(DescribeConfigsRequest);
            response(&h, &topics::describe_configs(ctx, request), no_payload)
        }
        ApiKey::AlterConfigs => {
            let request = decode!(AlterConfigsRequest);
            response(&h, &topics::alter_configs(ctx, request).await, no_payload)
        }
        ApiKey::CreatePartitions => {
            let request = decode!(CreatePartitionsRequest);
            response(&h, &topics::create_partitions(ctx, request).await, no_payload)
        }
        ApiKey::DescribePartitions => {
            let request = decode!(DescribePartitionsRequest);
            response(&h, &topics::describe_partitions(ctx, request).await, no_payload)
        }
        ApiKey::Fetch => {
            let request = decode!(FetchRequest);
            let (answer, chunks) = fetch::fetch(ctx, &request).await;
            metrics::partition_errors(api, answer.partitions.iter().map(|p| p.error_code));
            response(&h, &answer, chunks)
        }
        ApiKey::ListOffsets => {
            let request = decode!(ListOffsetsRequest);
            response(&h, &fetch::list_offsets(ctx, request).await, no_payload)
        }
        ApiKey::InitProducerId => {
            let _request = decode!(InitProducerIdRequest);
            response(&h, &produce::init_producer_id(ctx).await, no_payload)
        }
        ApiKey::GroupHeartbeat => {
            let request = decode!(GroupHeartbeatRequest);
            response(&h, &groups::heartbeat(ctx, request, peer).await, no_payload)
        }
        ApiKey::OffsetCommit => {
            let request = decode!(OffsetCommitRequest);
            response(&h, &groups::offset_commit(ctx, request).await, no_payload)
        }
        ApiKey::OffsetFetch => {
            let request = decode!(OffsetFetchRequest);
            response(&h, &groups::offset_fetch(ctx, request).await, no_payload)
        }
        ApiKey::ResetOffsets => {
            let request = decode!(ResetOffsetsRequest);
            response(&h, &groups::reset_offsets(ctx, request).await, no_payload)
        }
        ApiKey::ListGroups => {
            let _request = decode!(ListGroupsRequest);
            response(&h, &groups::list_groups(ctx).await, no_payload)
        }
        ApiKey::DescribeGroups => {
            let request = decode!(DescribeGroupsRequest);
            response(&h, &groups::describe_groups(ctx, request).await, no_payload)
        }
        ApiKey::DeleteGroups => {
            let request = decode!(DeleteGroupsRequest);
            response(&h, &groups::delete_groups(ctx, request).await, no_payload)
        }
        ApiKey::RaftMessages => {
            let request = decode!(RaftMessagesRequest);
            response(&h, &cluster::raft_messages(ctx, request), no_payload)
        }
        ApiKey::BrokerHeartbeat => {
            let request = decode!(BrokerHeartbeatRequest);
            response(&h, &cluster::broker_heartbeat(ctx, request).await, no_payload)
        }
        ApiKey::ClusterStatus => {
            let _request = decode!(ClusterStatusRequest);
            response(&h, &cluster::cluster_status(ctx).await, no_payload)
        }
        ApiKey::AlterVoters => {
            let request = decode!(AlterVotersRequest);
            response(&h, &cluster::alter_voters(ctx, request).await, no_payload)
        }
        ApiKey::ClusterAction => {
            let request = decode!(ClusterActionRequest);
            response(&h, &cluster::cluster_action(ctx, request).await, no_payload)
        }
        ApiKey::AllocateProducerIds => {
            let request = decode!(AllocateProducerIdsRequest);
            response(&h, &cluster::allocate_producer_ids(ctx, request).await, no_payload)
        }
        ApiKey::ReplicaFetch => {
            let request = decode!(ReplicaFetchRequest);
            let (answer, chunks) = replication::replica_fetch(ctx, &request).await;
            response(&h, &answer, chunks)
        }
        ApiKey::AlterPartition => {
            let request = decode!(AlterPartitionRequest);
            response(&h, &replication::alter_partition(ctx, request).await, no_payload)
        }
        ApiKey::FindCoordinator => {
            let request = decode!(FindCoordinatorRequest);
            response(&h, &groups::find_coordinator(ctx, &request).await, no_payload)
        }
        ApiKey::Produce => {
            unreachable!("produce is started by `start`, before its future is polled")
        }
    }
}
