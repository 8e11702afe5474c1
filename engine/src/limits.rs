//! Every limit of the engine in one place, with the compile-time checks that
//! tie them together. Values a user may change live in `config`; these are the
//! ones the format or the I/O path depends on.

/// The unit of O_DIRECT I/O: every write and read is aligned to it. 4 KiB
/// matches the physical block of the disks we run on (and of most NVMe).
pub const BLOCK_BYTES: u64 = 4096;

/// Every batch starts at a multiple of this in segments and frames, so the
/// rkyv records archive can be accessed in place.
pub const BATCH_ALIGN_BYTES: usize = 16;

/// Size of the fixed little-endian batch header.
pub const BATCH_HEADER_BYTES: usize = 64;

/// The largest batch the engine accepts (header + records), before padding.
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The most records one batch may carry.
pub const BATCH_RECORD_COUNT_MAX: u32 = 1 << 20;

/// Size of one write chunk of the segment appender. Appends fill chunks; a
/// flush submits all of them at once, so one flush is at most a few large
/// sequential writes.
pub const WRITE_CHUNK_BYTES: usize = 1024 * 1024;

/// Disk reads are issued in units of at least this many bytes.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes of log between two offset-index entries (and time-index entries).
pub const INDEX_INTERVAL_BYTES: u64 = 4096;

/// Longest topic name; names are directory names, so they are also bounded
/// to a safe character set (see `config::validate_topic_name`).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Most topics one consumer-group member may subscribe to. The broker
/// keeps every member's subscription in memory and writes it as one record
/// of `__consumer_offsets`, and looks each topic up on every heartbeat, so
/// it is bounded like everything a client sends.
pub const GROUP_SUBSCRIBED_TOPICS_MAX: usize = 10_000;

/// Most partitions in one topic.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;

/// Requests queued to one shard before callers wait (backpressure).
pub const SHARD_INBOX_CAPACITY: usize = 1024;

/// Appends queued to one partition's writer before callers wait (they park
/// on the shard, see `shard.rs`). The queue's slots are allocated and
/// touched when the partition opens, about 128 bytes each: at 4096 they
/// were 470 KiB of every idle partition's memory. A writer takes every
/// waiting append each round, so a short queue costs no throughput.
pub const PARTITION_INBOX_CAPACITY: usize = 128;

/// Segments are at least this large, so a roll never happens per batch.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;

/// Most entries a partition's leader epoch history holds (one per leader
/// epoch with data in the log). A log with more distinct epochs forgets the
/// oldest, as retention would: asked about it, the partition answers that it
/// knows no such epoch (see `leader_epochs.rs`).
pub const LEADER_EPOCH_ENTRIES_MAX: usize = 1 << 14;

/// The longest entry line of the leader epoch file: a `u32` epoch in
/// decimal, a space, a `u64` offset, a newline.
pub const LEADER_EPOCH_LINE_BYTES_MAX: usize = 10 + 1 + 20 + 1;

/// The room the leader epoch file's header and checksum lines take, at most.
pub const LEADER_EPOCH_FRAME_BYTES_MAX: usize = 64;

/// The largest leader epoch file; a larger one is damage, never read whole.
pub const LEADER_EPOCH_FILE_BYTES_MAX: usize =
    LEADER_EPOCH_FRAME_BYTES_MAX + LEADER_EPOCH_ENTRIES_MAX * LEADER_EPOCH_LINE_BYTES_MAX;

const _: () = assert!(BATCH_HEADER_BYTES.is_multiple_of(BATCH_ALIGN_BYTES));
const _: () = assert!((BLOCK_BYTES as usize).is_multiple_of(BATCH_ALIGN_BYTES));
const _: () = assert!(WRITE_CHUNK_BYTES.is_multiple_of(BLOCK_BYTES as usize));
const _: () = assert!(READ_CHUNK_BYTES.is_multiple_of(BLOCK_BYTES as usize));
const _: () = assert!(BATCH_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(SEGMENT_BYTES_MIN >= BLOCK_BYTES);
// The leader epoch file is read at open in one buffer of at most 1 MiB.
const _: () = assert!(LEADER_EPOCH_FILE_BYTES_MAX <= WRITE_CHUNK_BYTES);
// The largest subscription (names and their length words) fits in a batch
// with room to spare.
const _: () =
    assert!(GROUP_SUBSCRIBED_TOPICS_MAX * (TOPIC_NAME_BYTES_MAX + 16) < BATCH_BYTES_MAX / 4);

/// Rounds `value` up to a multiple of `align` (a power of two).
pub const fn align_up(value: u64, align: u64) -> u64 {
    assert!(align.is_power_of_two());
    (value + align - 1) & !(align - 1)
}

/// Rounds `value` down to a multiple of `align` (a power of two).
pub const fn align_down(value: u64, align: u64) -> u64 {
    assert!(align.is_power_of_two());
    value & !(align - 1)
}
