//! `cargo xtask bench --only encoding`: the Parquet settings the sink uses, measured against
//! their alternatives on the mock's events: each table's batches (as the transform workers
//! make them, one per page) written with each candidate setting, on one core.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use sink_parquet::ParquetSinkConfig;
use sink_parquet::encoding::{ColumnEncodings, encode};
use transform::{NormalizeConfig, Normalizer, SchemaRegistry};

/// How a candidate picks a file's dictionaries.
#[derive(Clone, Copy)]
enum Dictionaries {
    /// Every column but row ids and content hashes (the sink's choice before sampling).
    Everywhere,
    /// Only columns whose first batch repeats values ([`ColumnEncodings::sample`]).
    Sampled,
    /// None at all.
    Nowhere,
}

/// One table's batches and its widest schema.
struct Table {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

pub(crate) fn encoding_bench(n_events: usize, repeat: usize) -> anyhow::Result<()> {
    let pages = crate::bench::event_pages(n_events);
    let json_mb = pages.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    let tables = normalized_tables(&pages)?;
    let rows: usize = tables
        .values()
        .flat_map(|t| &t.batches)
        .map(RecordBatch::num_rows)
        .sum();
    println!();
    println!(
        "encoding, one core: {n_events} mock events ({json_mb:.1} MB of JSON) as {rows} rows in {} tables, each table written as one file",
        tables.len()
    );
    println!(
        "  {:<40} {:>9} {:>10} {:>11} {:>16}",
        "setting", "seconds", "MB/s JSON", "file MB", "writers' peak MB"
    );
    let candidates = [
        (
            "zstd(3), dictionaries everywhere",
            3,
            Dictionaries::Everywhere,
        ),
        ("zstd(3), sampled dictionaries", 3, Dictionaries::Sampled),
        (
            "zstd(1), dictionaries everywhere",
            1,
            Dictionaries::Everywhere,
        ),
        ("zstd(1), sampled dictionaries", 1, Dictionaries::Sampled),
        ("zstd(1), no dictionaries", 1, Dictionaries::Nowhere),
    ];
    for (label, level, dictionaries) in candidates {
        let config = ParquetSinkConfig {
            zstd_level: level,
            ..ParquetSinkConfig::default()
        };
        let mut times = Vec::new();
        let (mut bytes, mut held) = (0usize, 0usize);
        for _ in 0..repeat {
            let mut seconds = Duration::ZERO;
            (bytes, held) = (0, 0);
            for (name, table) in &tables {
                let encodings = match dictionaries {
                    Dictionaries::Everywhere => ColumnEncodings::dictionaries(),
                    Dictionaries::Sampled => ColumnEncodings::sample(&table.batches[0]),
                    Dictionaries::Nowhere => ColumnEncodings::all_plain(&table.schema),
                };
                let started = Instant::now();
                let file = encode(&config, &table.schema, &encodings, &table.batches, name)?;
                seconds += started.elapsed();
                bytes += file.bytes.len();
                held += file.most_held;
            }
            times.push(seconds);
        }
        let secs = crate::bench::median(times).as_secs_f64();
        println!(
            "  {:<40} {:>9.2} {:>10.0} {:>11.1} {:>16.1}",
            label,
            secs,
            json_mb / secs,
            bytes as f64 / 1e6,
            held as f64 / 1e6
        );
    }
    Ok(())
}

/// The pages normalized into the events tables, batches grouped by table.
fn normalized_tables(pages: &[Vec<u8>]) -> anyhow::Result<BTreeMap<String, Table>> {
    let events = crate::bench::events_table();
    let mut normalizer = Normalizer::new(NormalizeConfig::default(), SchemaRegistry::default());
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    for (seq, page) in pages.iter().enumerate() {
        let records = crate::bench::page_records(page.clone())?;
        for tb in normalizer.normalize_records(&events, "bench", seq as u64, &records, None)? {
            let table = tables
                .entry(tb.table.name.clone())
                .or_insert_with(|| Table {
                    schema: tb.batch.schema(),
                    batches: Vec::new(),
                });
            if tb.batch.schema().fields().len() > table.schema.fields().len() {
                table.schema = tb.batch.schema();
            }
            table.batches.push(tb.batch);
        }
    }
    Ok(tables)
}
