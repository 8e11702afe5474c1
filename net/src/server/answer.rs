//! Answers: frames the broker writes back, with their payload sent from
//! where it is.

use crate::protocol::{
    encode_frame, encode_frame_head, ErrorCode, ErrorResponse, FrameHeader, Message, FLAG_RESPONSE,
};
use bytes::Bytes;
use futures::io::AsyncWriteExt;
use rkyv::util::AlignedVec;

/// An answer frame: the head (header and body), then payload pieces sent
/// from where they are (stored batches, not copied into the frame).
pub(crate) struct Answer {
    pub head: AlignedVec<16>,
    pub payload: Vec<bytes::Bytes>,
}

impl From<AlignedVec<16>> for Answer {
    fn from(head: AlignedVec<16>) -> Answer {
        Answer { head, payload: Vec::new() }
    }
}

/// Answers up to this size go out in one write (copied together); larger
/// pieces are written as they are.
const COALESCE_BYTES: usize = 64 * 1024;

impl Answer {
    /// The frame-level error code in its header (0: none).
    pub(crate) fn error_code(&self) -> u16 {
        FrameHeader::error_code_of(&self.head)
    }

    pub(crate) async fn write_to(
        self,
        out: &mut (impl futures::io::AsyncWrite + Unpin),
    ) -> std::io::Result<()> {
        let total: usize = self.head.len() + self.payload.iter().map(|p| p.len()).sum::<usize>();
        if total <= COALESCE_BYTES {
            let mut whole = Vec::with_capacity(total);
            whole.extend_from_slice(&self.head);
            for piece in &self.payload {
                whole.extend_from_slice(piece);
            }
            return out.write_all(&whole).await;
        }
        out.write_all(&self.head).await?;
        for piece in &self.payload {
            out.write_all(piece).await?;
        }
        Ok(())
    }
}

/// A frame-level error answer: the header carries the code, the body a
/// message for people.
pub(crate) fn error_frame(
    api_key: u16,
    api_version: u16,
    correlation_id: u32,
    code: ErrorCode,
    message: String,
) -> AlignedVec<16> {
    let body = ErrorResponse { message }.encode().map(|b| b.to_vec()).unwrap_or_default();
    let header = FrameHeader {
        api_key,
        api_version,
        correlation_id,
        flags: FLAG_RESPONSE,
        error_code: code.as_u16(),
        body_bytes: 0,
        payload_bytes: 0,
    };
    encode_frame(header, &body, &[])
}

/// An answer frame; `payload` goes out from where it is (stored batches
/// are not copied into the frame).
pub(crate) fn response(request: &FrameHeader, body: &impl Message, payload: Vec<Bytes>) -> Answer {
    match body.encode() {
        Ok(bytes) => {
            let header = FrameHeader {
                flags: FLAG_RESPONSE,
                error_code: 0,
                body_bytes: 0,
                payload_bytes: 0,
                ..*request
            };
            let payload_bytes = payload.iter().map(Bytes::len).sum();
            Answer { head: encode_frame_head(header, &bytes, payload_bytes), payload }
        }
        Err(e) => Answer::from(error_frame(
            request.api_key,
            request.api_version,
            request.correlation_id,
            ErrorCode::Unknown,
            e.to_string(),
        )),
    }
}

pub(crate) fn error_answer(h: &FrameHeader, code: ErrorCode, message: String) -> Answer {
    Answer::from(error_frame(h.api_key, h.api_version, h.correlation_id, code, message))
}
