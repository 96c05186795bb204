//! The durable store's cost: write a group of deliveries durably (one
//! fsync), then settle them, as the spool does for every collector batch —
//! against redb doing the same (one durable transaction inserting the
//! group, one non-durable transaction removing it). This is the measurement
//! behind choosing a segment log over an embedded database (issue 6).
//!
//!     cargo bench --bench spool
//!
//! Each iteration is one group; throughput is deliveries per second. The
//! disk is the machine's own (fsync costs dominate; compare within a run).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use redb::{
    Database, Durability, ReadableDatabase as _, ReadableTableMetadata as _, TableDefinition,
};

use tagproxy::delivery::spool::{record, Spool};
use tagproxy::metrics::Metrics;
use tagproxy::tools::{Delivery, HttpRequest, Payload};

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("deliveries");

/// A GA4-sized delivery (~600 bytes encoded).
fn delivery(i: usize) -> Delivery {
    Delivery {
        tool: "ga4".into(),
        event_id: format!("0193a0b2-7c1e-7d3a-9f00-{i:012}"),
        payload: Payload::Http(HttpRequest {
            method: "POST".into(),
            url: "https://www.google-analytics.com/g/collect?v=2&tid=G-TEST123&cid=1234567890.1700000000&sid=1732450000&sct=1&seg=1&_s=1&dl=https%3A%2F%2Fshop.example.com%2Fcheckout&dt=Checkout&en=page_view&ep.event_id=0193a0b2".into(),
            headers: vec![
                ("user-agent".into(), "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36".into()),
                ("content-type".into(), "text/plain".into()),
            ],
            body: Some(vec![b'x'; 200]),
        }),
        source: None,
        secrets: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("durable write + settle");
    group.sample_size(20);
    for size in [1usize, 32, 256] {
        let bodies: Vec<Vec<u8>> = (0..size)
            .map(|i| record::encode_body(0, &delivery(i)))
            .collect();
        group.throughput(Throughput::Elements(size as u64));

        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = rt
            .block_on(async { Spool::open(dir.path(), u64::MAX, Arc::new(Metrics::default())) })
            .unwrap();
        group.bench_function(format!("spool/{size}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let placed = spool.append(bodies.clone()).await.unwrap();
                    for (seq, _) in placed {
                        spool.ack(seq);
                    }
                })
            })
        });
        rt.block_on(spool.flush());

        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("spool.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(TABLE).unwrap();
        tx.commit().unwrap();
        let mut next = 0u64;
        group.bench_function(format!("redb/{size}"), |b| {
            b.iter(|| {
                let first = next;
                let tx = db.begin_write().unwrap();
                {
                    let mut t = tx.open_table(TABLE).unwrap();
                    for body in &bodies {
                        t.insert(next, body.as_slice()).unwrap();
                        next += 1;
                    }
                }
                tx.commit().unwrap();
                let mut tx = db.begin_write().unwrap();
                tx.set_durability(Durability::None).unwrap();
                {
                    let mut t = tx.open_table(TABLE).unwrap();
                    for k in first..next {
                        t.remove(k).unwrap();
                    }
                }
                tx.commit().unwrap();
            })
        });
        // Nothing is left behind in either store.
        let tx = db.begin_read().unwrap();
        assert!(tx.open_table(TABLE).unwrap().is_empty().unwrap());
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
