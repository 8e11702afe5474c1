//! Every request body decoder on arbitrary (aligned) bytes, as the broker
//! runs them on what a client sends: an error or a value, never a panic.
//! Also the cluster metadata decoders (a record of the Raft log, a
//! snapshot from a peer), which take the same untrusted bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamba_net::cluster::metadata::{MetadataRecord, MetadataState};
use mamba_net::protocol::*;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    let bytes: &[u8] = &aligned;
    match which % 31 {
        0 => drop(ApiVersionsRequest::decode(bytes)),
        1 => drop(MetadataRequest::decode(bytes)),
        2 => drop(CreateTopicsRequest::decode(bytes)),
        3 => drop(DeleteTopicsRequest::decode(bytes)),
        4 => drop(DescribeConfigsRequest::decode(bytes)),
        5 => drop(AlterConfigsRequest::decode(bytes)),
        6 => {
            if let Ok(request) = ProduceRequest::decode(bytes) {
                for p in &request.partitions {
                    std::hint::black_box(slice_of(bytes, p.batch));
                }
            }
        }
        7 => drop(FetchRequest::decode(bytes)),
        8 => drop(ListOffsetsRequest::decode(bytes)),
        9 => drop(InitProducerIdRequest::decode(bytes)),
        10 => drop(CreatePartitionsRequest::decode(bytes)),
        11 => drop(DescribePartitionsRequest::decode(bytes)),
        12 => drop(DescribeBrokerRequest::decode(bytes)),
        13 => drop(GroupHeartbeatRequest::decode(bytes)),
        14 => drop(OffsetCommitRequest::decode(bytes)),
        15 => drop(OffsetFetchRequest::decode(bytes)),
        16 => drop(ResetOffsetsRequest::decode(bytes)),
        17 => drop(ListGroupsRequest::decode(bytes)),
        18 => drop(DescribeGroupsRequest::decode(bytes)),
        19 => drop(DeleteGroupsRequest::decode(bytes)),
        20 => drop(FindCoordinatorRequest::decode(bytes)),
        21 => drop(RaftMessagesRequest::decode(bytes)),
        22 => drop(BrokerHeartbeatRequest::decode(bytes)),
        23 => drop(ClusterStatusRequest::decode(bytes)),
        24 => drop(AlterVotersRequest::decode(bytes)),
        25 => drop(AllocateProducerIdsRequest::decode(bytes)),
        26 => drop(ReplicaFetchRequest::decode(bytes)),
        27 => drop(AlterPartitionRequest::decode(bytes)),
        28 => drop(ClusterActionRequest::decode(bytes)),
        29 => drop(MetadataRecord::decode(body)),
        _ => drop(MetadataState::restore(body)),
    }
});
