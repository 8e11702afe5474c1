//! Frame decoding on arbitrary bytes: an error or a frame whose body and
//! payload lie inside it; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamba_net::protocol::Frame;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data, 1 << 20) {
        assert!(frame.body().len() + frame.payload().len() <= data.len());
        // Batches are read in place: a payload that holds any is aligned.
        let payload = frame.payload();
        assert!(payload.is_empty() || payload.as_ptr() as usize % 16 == 0);
    }
});
