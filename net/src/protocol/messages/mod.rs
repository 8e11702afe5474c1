//! Request and response bodies, one file per family of APIs. Bodies are
//! rkyv archives, validated (bytecheck) when decoded; record batches never
//! go in a body but in the frame payload, referenced by [`Slice`].

mod cluster;
mod fetch;
mod groups;
mod metadata;
mod produce;
mod topics;

pub use super::api::ApiKey;
pub use cluster::*;
pub use fetch::*;
pub use groups::*;
pub use metadata::*;
pub use produce::*;
pub use topics::*;

use rkyv::util::AlignedVec;

/// Why a body could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad message body: {reason}")]
pub struct BodyError {
    pub reason: String,
}

/// A request or response body.
pub trait Message: Sized {
    fn encode(&self) -> Result<AlignedVec, BodyError>;
    /// Validates and decodes untrusted bytes (16-byte aligned).
    fn decode(bytes: &[u8]) -> Result<Self, BodyError>;
}

/// A request body: the API its frame names.
pub trait Request: Message {
    const API_KEY: ApiKey;
    const VERSION: u16 = 0;
}

/// `Message` for bodies, `Request` for the first of each line: `API =>
/// Request, Responses...`.
macro_rules! messages {
    ($($api:expr => $request:ident $(, $response:ident)*;)+) => {
        $(
            impl $crate::protocol::messages::Request for $request {
                const API_KEY: $crate::protocol::api::ApiKey = $api;
            }
            $crate::protocol::messages::body!($request);
            $($crate::protocol::messages::body!($response);)*
        )+
    };
}

macro_rules! body {
    ($ty:ident) => {
        impl $crate::protocol::messages::Message for $ty {
            fn encode(
                &self,
            ) -> Result<rkyv::util::AlignedVec, $crate::protocol::messages::BodyError> {
                rkyv::to_bytes::<rkyv::rancor::Error>(self)
                    .map_err(|e| $crate::protocol::messages::BodyError { reason: e.to_string() })
            }
            fn decode(bytes: &[u8]) -> Result<Self, $crate::protocol::messages::BodyError> {
                rkyv::from_bytes::<$ty, rkyv::rancor::BoxedError>(bytes)
                    .map_err(|e| $crate::protocol::messages::BodyError { reason: e.to_string() })
            }
        }
    };
}

pub(crate) use {body, messages};

/// The body of a response whose header carries a frame-level error code.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub message: String,
}

body!(ErrorResponse);

/// A range of the frame payload: `offset` and `len` in bytes from its start.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default,
)]
pub struct Slice {
    pub offset: u32,
    pub len: u32,
}

/// Resolves a payload slice; `None` when it points outside the payload or
/// is not 16-byte aligned (batches always are).
pub fn slice_of(payload: &[u8], slice: Slice) -> Option<&[u8]> {
    let start = slice.offset as usize;
    let end = start.checked_add(slice.len as usize)?;
    if !start.is_multiple_of(16) {
        return None;
    }
    payload.get(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip() {
        let request = ProduceRequest {
            acks: -1,
            timeout_ms: 5000,
            partitions: vec![ProducePartition {
                topic: "t".into(),
                partition: 3,
                batch: Slice { offset: 0, len: 128 },
            }],
        };
        let bytes = request.encode().expect("encode");
        assert_eq!(ProduceRequest::decode(&bytes).expect("decode"), request);
    }

    #[test]
    fn admin_bodies_round_trip_and_requests_know_their_api() {
        let request = CreatePartitionsRequest {
            topics: vec![NewPartitions { name: "orders".into(), partition_count: 8 }],
        };
        let bytes = request.encode().expect("encode");
        assert_eq!(CreatePartitionsRequest::decode(&bytes).expect("decode"), request);
        let answer = DescribeBrokerResponse {
            error_code: 0,
            message: String::new(),
            node_id: 3,
            version: "0.1.0".into(),
            data_dir: "/var/lib/mamba".into(),
            shards: 8,
            listeners: vec![Listener { name: "client".into(), address: "10.0.0.7:9400".into() }],
            started_ms: 1_764_504_000_000,
            uptime_ms: 60_000,
            topic_count: 2,
            partitions_online: 11,
            partitions_offline: 1,
            disk: DiskUsage {
                error_code: 0,
                message: String::new(),
                total_bytes: 1 << 40,
                free_bytes: 1 << 39,
            },
        };
        let bytes = answer.encode().expect("encode");
        assert_eq!(DescribeBrokerResponse::decode(&bytes).expect("decode"), answer);
        assert_eq!(CreatePartitionsRequest::API_KEY, ApiKey::CreatePartitions);
    }

    #[test]
    fn every_request_speaks_a_version_its_api_has() {
        fn speaks<R: Request>() {
            let versions = R::API_KEY.versions();
            assert!(
                versions.contains(&R::VERSION),
                "{} v{} not in {versions:?}",
                R::API_KEY,
                R::VERSION
            );
        }
        speaks::<ApiVersionsRequest>();
        speaks::<MetadataRequest>();
        speaks::<CreateTopicsRequest>();
        speaks::<DeleteTopicsRequest>();
        speaks::<DescribeConfigsRequest>();
        speaks::<AlterConfigsRequest>();
        speaks::<ProduceRequest>();
        speaks::<FetchRequest>();
        speaks::<ListOffsetsRequest>();
        speaks::<InitProducerIdRequest>();
        speaks::<CreatePartitionsRequest>();
        speaks::<DescribePartitionsRequest>();
        speaks::<DescribeBrokerRequest>();
        speaks::<GroupHeartbeatRequest>();
        speaks::<OffsetCommitRequest>();
        speaks::<OffsetFetchRequest>();
        speaks::<ResetOffsetsRequest>();
        speaks::<ListGroupsRequest>();
        speaks::<DescribeGroupsRequest>();
        speaks::<DeleteGroupsRequest>();
        speaks::<FindCoordinatorRequest>();
    }

    #[test]
    fn find_coordinator_bodies_round_trip() {
        let request = FindCoordinatorRequest { group_id: "billing".into() };
        let bytes = request.encode().expect("encode");
        assert_eq!(FindCoordinatorRequest::decode(&bytes).expect("decode"), request);
        assert_eq!(FindCoordinatorRequest::API_KEY, ApiKey::FindCoordinator);
        let answer = FindCoordinatorResponse {
            error_code: 0,
            message: String::new(),
            node_id: 2,
            host: "10.0.0.2".into(),
            port: 9400,
        };
        let bytes = answer.encode().expect("encode");
        assert_eq!(FindCoordinatorResponse::decode(&bytes).expect("decode"), answer);
    }

    #[test]
    fn garbage_bodies_are_errors() {
        let mut bytes = AlignedVec::<16>::new();
        bytes.extend_from_slice(&[0xff; 64]);
        assert!(FetchRequest::decode(&bytes).is_err());
        assert!(MetadataRequest::decode(&[]).is_err());
    }

    #[test]
    fn slices_outside_the_payload_are_rejected() {
        let payload = [0u8; 64];
        assert_eq!(slice_of(&payload, Slice { offset: 16, len: 32 }).map(<[u8]>::len), Some(32));
        assert!(slice_of(&payload, Slice { offset: 48, len: 32 }).is_none());
        assert!(slice_of(&payload, Slice { offset: 8, len: 8 }).is_none());
        assert!(slice_of(&payload, Slice { offset: u32::MAX, len: u32::MAX }).is_none());
    }
}
