//! Batch validation on arbitrary bytes: must return an error or a view whose
//! records can all be read, never panic or read out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamba_engine::batch::{iter_batches, Batch};

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = Batch::from_bytes(data) {
        for record in batch.view().iter() {
            std::hint::black_box((record.key(), record.value(), record.headers().count()));
        }
    }
    // The same bytes as a run of batches, from aligned memory.
    let mut aligned = Vec::<u128>::with_capacity(data.len() / 16 + 1);
    aligned.resize(data.len() / 16 + 1, 0);
    // SAFETY: u128 storage reinterpreted as bytes; length within capacity.
    let bytes = unsafe { std::slice::from_raw_parts_mut(aligned.as_mut_ptr().cast::<u8>(), data.len()) };
    bytes.copy_from_slice(data);
    for batch in iter_batches(bytes) {
        match batch {
            Ok(view) => {
                std::hint::black_box(view.iter().count());
            }
            Err(_) => break,
        }
    }
});
