//! The producer's send path grows the heap for batches, never per record:
//! a tagged send copies the record into its partition's open batch and
//! allocates nothing (the batch's lists grow by doubling).
//!
//! Counted on the sending thread only: the sender and reader threads, and
//! the in-process broker, allocate as they please.

use mamba_engine::{Engine, EngineConfig};
use mamba_net::client::{
    block_on, Admin, Delivery, DeliveryHandler, Producer, ProducerConfig, SendRecord,
};
use mamba_net::server::{Broker, BrokerConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call goes to `System` unchanged; the count is a
// const-initialized thread local, which never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations_on_this_thread() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn a_tagged_send_allocates_nothing_per_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EngineConfig { shards: Some(1), pin_shards: false, ..EngineConfig::default() };
    let engine = Engine::open(dir.path(), config).expect("open engine");
    let listen = "127.0.0.1:0".parse().expect("addr");
    let broker = Broker::start(engine.clone(), BrokerConfig { listen, ..BrokerConfig::default() })
        .expect("start broker");
    let addr = broker.local_addr().to_string();
    let admin = Admin::connect(&addr).expect("admin");
    block_on(admin.create_topic("quiet", 1, vec![])).expect("create");

    let delivered = Arc::new(AtomicU64::new(0));
    let counter = delivered.clone();
    let handler: DeliveryHandler = Arc::new(move |d: &Delivery<'_>| {
        assert!(d.outcome.is_ok(), "{:?}", d.outcome);
        counter.fetch_add(d.tagged.len() as u64, Ordering::Relaxed);
    });
    // One batch holds every record, and lingers until the flush.
    let config =
        ProducerConfig { linger_ms: 600_000, batch_bytes: 4 << 20, ..ProducerConfig::default() };
    let producer = Producer::connect_with_delivery(&addr, config, handler).expect("producer");
    let value = [7u8; 100];
    let record = SendRecord { topic: "quiet", value: &value, ..SendRecord::default() };
    // The first send learns the topic and opens the batch.
    producer.send_tagged(&record, 0).expect("send");

    const RECORDS: u64 = 10_000;
    let before = allocations_on_this_thread();
    for tag in 1..=RECORDS {
        producer.send_tagged(&record, tag).expect("send");
    }
    let allocations = allocations_on_this_thread() - before;
    // Two lists of the batch (its tags, the writer's record slots) double
    // their way to 10 001 entries: 14 times each at most.
    let doublings = u64::from(64 - RECORDS.leading_zeros());
    assert!(allocations <= 2 * doublings, "{allocations} allocations for {RECORDS} sends");

    producer.flush();
    assert_eq!(delivered.load(Ordering::Relaxed), RECORDS + 1);
    producer.close();
    engine.close().expect("close engine");
}
