//! Frames: the envelope of every request and response.
//!
//! ```text
//! offset size field
//!      0    4 frame_length    u32  bytes after this field
//!      4    2 api_key         u16
//!      6    2 api_version     u16
//!      8    4 correlation_id  u32  echoed in the response
//!     12    2 flags           u16  bit 0: response
//!     14    2 error_code      u16  frame-level error (responses), else 0
//!     16    4 body_bytes      u32  length of the rkyv body
//!     20    4 payload_bytes   u32  length of the raw payload
//!     24    8 (reserved, 0)
//!     32      body            rkyv archive, zero-padded to 16 bytes
//!      …      payload         raw bytes (record batches), a multiple of 16
//! ```
//!
//! All integers little-endian. The body starts 16-byte aligned and so does
//! the payload, so a receiver that reads a frame into 16-byte aligned memory
//! can access both in place. Decoding is pure and never panics.

use rkyv::util::AlignedVec;

pub const FRAME_HEADER_BYTES: usize = 32;
pub const FRAME_ALIGN_BYTES: usize = 16;
pub const FLAG_RESPONSE: u16 = 1;

const _: () = assert!(FRAME_HEADER_BYTES.is_multiple_of(FRAME_ALIGN_BYTES));

fn align16(n: usize) -> usize {
    n.div_ceil(FRAME_ALIGN_BYTES) * FRAME_ALIGN_BYTES
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {frame_bytes} bytes exceeds the limit of {limit_bytes}")]
    TooLarge { frame_bytes: usize, limit_bytes: usize },
    #[error("frame of {frame_bytes} bytes is shorter than its header")]
    TooShort { frame_bytes: usize },
    #[error(
        "frame lengths disagree: {frame_bytes} bytes, body {body_bytes}, payload {payload_bytes}"
    )]
    Inconsistent { frame_bytes: usize, body_bytes: u32, payload_bytes: u32 },
    #[error("reserved header bytes are not zero")]
    Reserved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub api_key: u16,
    pub api_version: u16,
    pub correlation_id: u32,
    pub flags: u16,
    pub error_code: u16,
    pub body_bytes: u32,
    pub payload_bytes: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl FrameHeader {
    /// Total bytes of the frame this header describes, length field included.
    pub fn frame_bytes(&self) -> usize {
        self.head_bytes() + self.payload_bytes as usize
    }

    /// The header and the padded body: everything before the payload.
    pub fn head_bytes(&self) -> usize {
        FRAME_HEADER_BYTES + align16(self.body_bytes as usize)
    }

    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }

    pub fn encode(&self) -> [u8; FRAME_HEADER_BYTES] {
        let mut out = [0u8; FRAME_HEADER_BYTES];
        let frame_length = (self.frame_bytes() - 4) as u32;
        out[0..4].copy_from_slice(&frame_length.to_le_bytes());
        out[4..6].copy_from_slice(&self.api_key.to_le_bytes());
        out[6..8].copy_from_slice(&self.api_version.to_le_bytes());
        out[8..12].copy_from_slice(&self.correlation_id.to_le_bytes());
        out[12..14].copy_from_slice(&self.flags.to_le_bytes());
        out[14..16].copy_from_slice(&self.error_code.to_le_bytes());
        out[16..20].copy_from_slice(&self.body_bytes.to_le_bytes());
        out[20..24].copy_from_slice(&self.payload_bytes.to_le_bytes());
        out
    }

    /// The frame-level error code of an encoded frame's head (0 when it is
    /// shorter than a header).
    pub fn error_code_of(head: &[u8]) -> u16 {
        if head.len() < FRAME_HEADER_BYTES {
            return 0;
        }
        u16_at(head, 14)
    }

    /// Decodes and checks a header; `frame_bytes_max` bounds the whole frame.
    pub fn decode(
        bytes: &[u8; FRAME_HEADER_BYTES],
        frame_bytes_max: usize,
    ) -> Result<FrameHeader, FrameError> {
        let frame_bytes = u32_at(bytes, 0) as usize + 4;
        if frame_bytes > frame_bytes_max {
            return Err(FrameError::TooLarge { frame_bytes, limit_bytes: frame_bytes_max });
        }
        if frame_bytes < FRAME_HEADER_BYTES {
            return Err(FrameError::TooShort { frame_bytes });
        }
        let header = FrameHeader {
            api_key: u16_at(bytes, 4),
            api_version: u16_at(bytes, 6),
            correlation_id: u32_at(bytes, 8),
            flags: u16_at(bytes, 12),
            error_code: u16_at(bytes, 14),
            body_bytes: u32_at(bytes, 16),
            payload_bytes: u32_at(bytes, 20),
        };
        let declared = (FRAME_HEADER_BYTES as u64)
            + align16(header.body_bytes as usize) as u64
            + u64::from(header.payload_bytes);
        if declared != frame_bytes as u64
            || !(header.payload_bytes as usize).is_multiple_of(FRAME_ALIGN_BYTES)
        {
            return Err(FrameError::Inconsistent {
                frame_bytes,
                body_bytes: header.body_bytes,
                payload_bytes: header.payload_bytes,
            });
        }
        if bytes[24..32].iter().any(|&b| b != 0) {
            return Err(FrameError::Reserved);
        }
        Ok(header)
    }
}

/// A whole frame in 16-byte aligned memory: the head (header and body) and
/// the payload in separate buffers, so a payload holding one record batch
/// can become that batch without a copy.
pub struct Frame {
    pub header: FrameHeader,
    head: AlignedVec<FRAME_ALIGN_BYTES>,
    payload: AlignedVec<FRAME_ALIGN_BYTES>,
}

impl Frame {
    /// Wraps received bytes whose header was decoded: `head` from the
    /// header to the end of the padded body, then the payload.
    pub fn from_parts(
        header: FrameHeader,
        head: AlignedVec<FRAME_ALIGN_BYTES>,
        payload: AlignedVec<FRAME_ALIGN_BYTES>,
    ) -> Frame {
        assert_eq!(head.len(), header.head_bytes(), "frame head must match the header");
        assert_eq!(payload.len(), header.payload_bytes as usize, "payload must match the header");
        Frame { header, head, payload }
    }

    /// Decodes a complete frame from `bytes` (tests, fuzzing).
    pub fn decode(bytes: &[u8], frame_bytes_max: usize) -> Result<Frame, FrameError> {
        let Some(head) = bytes.first_chunk::<FRAME_HEADER_BYTES>() else {
            return Err(FrameError::TooShort { frame_bytes: bytes.len() });
        };
        let header = FrameHeader::decode(head, frame_bytes_max)?;
        if bytes.len() != header.frame_bytes() {
            return Err(FrameError::Inconsistent {
                frame_bytes: bytes.len(),
                body_bytes: header.body_bytes,
                payload_bytes: header.payload_bytes,
            });
        }
        let (head, payload) = bytes.split_at(header.head_bytes());
        let aligned = |piece: &[u8]| {
            let mut out = AlignedVec::<FRAME_ALIGN_BYTES>::with_capacity(piece.len());
            out.extend_from_slice(piece);
            out
        };
        Ok(Frame { header, head: aligned(head), payload: aligned(payload) })
    }

    pub fn body(&self) -> &[u8] {
        &self.head[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + self.header.body_bytes as usize]
    }

    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload buffer itself.
    pub fn into_payload(self) -> AlignedVec<FRAME_ALIGN_BYTES> {
        self.payload
    }
}

/// Builds a frame: header, body, then the payload pieces back to back.
/// Each payload piece must be a multiple of 16 bytes (record batches are).
pub fn encode_frame(
    header: FrameHeader,
    body: &[u8],
    payload: &[&[u8]],
) -> AlignedVec<FRAME_ALIGN_BYTES> {
    let payload_bytes: usize = payload.iter().map(|p| p.len()).sum();
    let mut out = encode_frame_head(header, body, payload_bytes);
    out.reserve(payload_bytes);
    for piece in payload {
        out.extend_from_slice(piece);
    }
    out
}

/// The frame up to its payload (header, body, padding), for writers that
/// send the payload pieces from where they are (vectored writes).
pub fn encode_frame_head(
    mut header: FrameHeader,
    body: &[u8],
    payload_bytes: usize,
) -> AlignedVec<FRAME_ALIGN_BYTES> {
    assert!(
        payload_bytes.is_multiple_of(FRAME_ALIGN_BYTES),
        "payload pieces are 16-byte multiples"
    );
    header.body_bytes = u32::try_from(body.len()).expect("bodies are far below 4 GiB");
    header.payload_bytes =
        u32::try_from(payload_bytes).expect("payloads are bounded by the frame limit");
    let head_bytes = FRAME_HEADER_BYTES + align16(body.len());
    let mut out = AlignedVec::<FRAME_ALIGN_BYTES>::with_capacity(head_bytes);
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(body);
    out.resize(head_bytes, 0);
    debug_assert_eq!(out.len() + payload_bytes, header.frame_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> FrameHeader {
        FrameHeader {
            api_key: 6,
            api_version: 0,
            correlation_id: 42,
            flags: 0,
            error_code: 0,
            body_bytes: 0,
            payload_bytes: 0,
        }
    }

    #[test]
    fn frames_round_trip_with_aligned_body_and_payload() {
        let payload = [7u8; 32];
        let bytes = encode_frame(header(), b"hello body", &[&payload]);
        let frame = Frame::decode(&bytes, 1 << 20).expect("valid");
        assert_eq!(frame.header.correlation_id, 42);
        assert_eq!(frame.body(), b"hello body");
        assert_eq!(frame.payload(), &payload[..]);
        assert_eq!(frame.payload().as_ptr() as usize % 16, 0);
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        let bytes = encode_frame(header(), b"x", &[]);
        let mut huge = bytes.to_vec();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Frame::decode(&huge, 1 << 20), Err(FrameError::TooLarge { .. })));
        let mut lying = bytes.to_vec();
        lying[16..20].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(Frame::decode(&lying, 1 << 20), Err(FrameError::Inconsistent { .. })));
        assert!(matches!(Frame::decode(&bytes[..10], 1 << 20), Err(FrameError::TooShort { .. })));
        let mut reserved = bytes.to_vec();
        reserved[30] = 1;
        assert!(matches!(Frame::decode(&reserved, 1 << 20), Err(FrameError::Reserved)));
    }
}
