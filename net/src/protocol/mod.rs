//! The wire protocol: pure codecs, bytes in and values out, no I/O.

pub mod api;
pub mod error_code;
pub mod frame;
pub mod messages;

pub use api::ApiKey;
pub use error_code::ErrorCode;
pub use frame::{
    encode_frame, encode_frame_head, Frame, FrameError, FrameHeader, FLAG_RESPONSE,
    FRAME_HEADER_BYTES,
};
pub use messages::*;
