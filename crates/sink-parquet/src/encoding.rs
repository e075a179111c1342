//! How a data file's columns are encoded: compression, which columns get a dictionary, bloom
//! filters and row group limits. The choices were measured by `cargo xtask bench --only
//! encoding` on the mock's events (figures in ARCHITECTURE.md).

use std::collections::{BTreeSet, HashSet};

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use transform::{CONTENT_HASH, PARENT_ID, ROOT_ID, ROW_ID};

use crate::ParquetSinkConfig;
use crate::columns::key_column_of;

/// The columns of a table, in schema order, whose data is zstd-compressed; the columns after
/// them get LZ4_RAW. The Parquet writer keeps a zstd context pair per column (about 100 KB
/// allocated, 25 KB touched), which made a table of 10,000 columns cost 270 MB to write;
/// LZ4_RAW keeps none. Tables this narrow or narrower are all zstd.
const ZSTD_COLUMNS: usize = 256;

/// Rows of a file's first batch looked at to decide its dictionaries.
const SAMPLE_ROWS: usize = 1024;

/// Fewer values than this in the sample decide nothing: the column keeps its dictionary.
const MIN_SAMPLE_VALUES: usize = 16;

/// The columns of one file written without a dictionary (plain encoding), besides the row
/// id columns and content hashes, which never get one.
///
/// A dictionary pays for values that repeat (severities, class names, release stages) and
/// costs for those that do not: every value is interned into a hash table, and the
/// dictionary page (up to 1 MiB per column) is held until the row group ends, only for the
/// writer to fall back to plain encoding once it is full. Whether a column's values repeat
/// is decided from the file's first batch: a column whose sampled values are more than half
/// distinct is written plain.
///
/// The same sample sizes the key column's bloom filters (see [`key_filter_ndv`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnEncodings {
    plain: BTreeSet<String>,
    /// Of the sample's key values (`_dlt_root_id` in a child table), how many were distinct
    /// and how many there were; `None` when not sampled (a rewrite, a table without a key).
    key_sample: Option<(usize, usize)>,
}

impl ColumnEncodings {
    /// Every column keeps its dictionary (except row id columns and content hashes).
    pub fn dictionaries() -> Self {
        ColumnEncodings::default()
    }

    /// No column has a dictionary.
    pub fn all_plain(schema: &SchemaRef) -> Self {
        ColumnEncodings {
            plain: schema.fields().iter().map(|f| f.name().clone()).collect(),
            key_sample: None,
        }
    }

    /// Decides from a sample of the data (a file's first batch) which columns go plain, and
    /// notes how often the key column's values repeat in it.
    pub fn sample(batch: &RecordBatch) -> Self {
        let rows = batch.num_rows().min(SAMPLE_ROWS);
        let schema = batch.schema();
        let key = key_column_of(&schema);
        let mut key_sample = None;
        let mut plain = BTreeSet::new();
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            let counts = distinct_values(&column.slice(0, rows));
            if key == Some(field.name().as_str()) {
                key_sample = counts;
            }
            // More than half of the values distinct.
            if counts.is_some_and(|(distinct, values)| distinct * 2 > values) {
                plain.insert(field.name().clone());
            }
        }
        ColumnEncodings { plain, key_sample }
    }

    /// The choice an existing file made (a rewrite keeps it): the columns whose chunks in its
    /// first row group have no dictionary page.
    pub fn of_file(metadata: &parquet::file::metadata::ParquetMetaData) -> Self {
        let plain = metadata
            .row_groups()
            .first()
            .into_iter()
            .flat_map(|rg| rg.columns())
            .filter(|chunk| chunk.dictionary_page_offset().is_none())
            .filter_map(|chunk| match chunk.column_path().parts() {
                [name] => Some(name.clone()),
                _ => None,
            })
            .collect();
        ColumnEncodings {
            plain,
            key_sample: None,
        }
    }

    /// The columns written plain.
    pub fn plain_columns(&self) -> impl Iterator<Item = &str> {
        self.plain.iter().map(String::as_str)
    }
}

/// How many of a sample's values (nulls aside) are distinct, and how many there are; `None`
/// for samples too small to say, and for types other than text, 64-bit numbers and times,
/// whose dictionaries stay.
fn distinct_values(sample: &dyn Array) -> Option<(usize, usize)> {
    let values = sample.len() - sample.null_count();
    if values < MIN_SAMPLE_VALUES {
        return None;
    }
    let distinct = match sample.data_type() {
        DataType::Utf8 => {
            let set: HashSet<&str> = sample.as_string::<i32>().iter().flatten().collect();
            set.len()
        }
        // 64-bit numbers and times alike: their values' bits.
        DataType::Int64 | DataType::Float64 | DataType::Timestamp(..) => {
            let data = sample.to_data();
            let bits = data.buffer::<u64>(0);
            let set: HashSet<u64> = (0..data.len())
                .filter(|&i| data.is_valid(i))
                .map(|i| bits[i])
                .collect();
            set.len()
        }
        _ => return None,
    };
    Some((distinct, values))
}

/// The size at which a column's data page is compressed and added to its row group. Every
/// open column of every open file holds one page being filled, and closing it makes two
/// more buffers of its size (the encoded and the compressed page): at parquet's default of
/// 1 MiB these were the largest part of the sink's memory churn (by `perf record -e
/// page-faults`, three quarters of the fresh pages a run touched). At 256 KiB the
/// resident peak of a 200,000-event run fell from 183 to 158-164 MB and that of a
/// 5,000,000-event run from 198 to 183 MB, with files 1% larger at most and no change in
/// speed beyond the noise.
pub(crate) const DATA_PAGE_BYTES: usize = 256 * 1024;

/// The false-positive rate a key column's bloom filters are written for.
pub(crate) const KEY_FILTER_FPP: f64 = 1e-7;

/// The fewest distinct keys a key column's bloom filter is sized for (about 64 KiB at
/// [`KEY_FILTER_FPP`]), however much the sample's keys repeat.
const MIN_KEY_FILTER_NDV: usize = 8192;

/// The distinct keys a row group's key-column bloom filter is sized for: twice the row
/// group's rows times the share of distinct keys in the file's first batch, at least
/// [`MIN_KEY_FILTER_NDV`], at most the row group's rows (without a sample: its rows).
///
/// A root table's ids are all distinct, so its filters are sized for every row. A child
/// table's rows share their root's id (nine stack frames to an event in the mock), and a
/// filter sized for every row (512 KiB at 65,536 rows) was mostly empty: parquet folds it
/// down to the target rate once the row group is written, so the file held the same bits
/// either way, but filling it was a cache miss a row, and each open child file held 512 KiB
/// more while its row group lasted. Twice the sampled share, and parquet's rounding up to a
/// power of two, leave room for later pages whose lists are shorter than the first's; keys
/// beyond that make the filter answer yes more often (a merge then reads that row group's
/// keys for nothing), never answer no wrongly.
fn key_filter_ndv(row_group_rows: usize, key_sample: Option<(usize, usize)>) -> u64 {
    let rows = row_group_rows.max(1);
    let ndv = match key_sample {
        Some((distinct, values)) if values >= MIN_SAMPLE_VALUES => {
            (rows.saturating_mul(distinct).saturating_mul(2) / values).max(MIN_KEY_FILTER_NDV)
        }
        _ => rows,
    };
    ndv.min(rows) as u64
}

/// Parquet settings of a data file: zstd at the configured level, dictionaries as `encodings`
/// says, and a bloom filter per row group on the key column (the id a merge looks rows up
/// by), so a merge reads only files that may hold an incoming id.
pub(crate) fn writer_properties(
    config: &ParquetSinkConfig,
    schema: &SchemaRef,
    encodings: &ColumnEncodings,
) -> WriterProperties {
    let mut builder = WriterProperties::builder();
    for field in schema.fields().iter().skip(ZSTD_COLUMNS) {
        builder = builder.set_column_compression(
            ColumnPath::from(field.name().as_str()),
            Compression::LZ4_RAW,
        );
    }
    if let Some(key) = key_column_of(schema) {
        let path = ColumnPath::from(key);
        builder = builder
            .set_column_bloom_filter_enabled(path.clone(), true)
            // A checkpoint probes every row group with all its ids (250,000 at the default
            // interval). The writer folds each filter down to this target, and folded filters
            // answer yes more often than their target says: measured on the mock's events at
            // 10^-7, one row group in five still reads its key column for nothing, against
            // nearly all at 10^-5, for files about 4% larger in all.
            .set_column_bloom_filter_fpp(path.clone(), KEY_FILTER_FPP)
            .set_column_bloom_filter_max_ndv(
                path,
                key_filter_ndv(config.row_group_rows, encodings.key_sample),
            );
    }
    // Row ids, their parents' and roots' ids and content hashes are hex digests, unique or
    // repeated only by the few children of one parent: a dictionary of them never pays, and
    // interning every one cost about a twentieth of a demo run.
    for plain in [ROW_ID, PARENT_ID, ROOT_ID, CONTENT_HASH]
        .into_iter()
        .chain(encodings.plain_columns())
    {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(plain), false);
    }
    // Nor do their minimums and maximums, nor those of the other text columns whose values
    // rarely repeat (free text: messages, paths, lines of code), but for ids (`id`,
    // `error_id`: Bugsnag's are time-ordered, so their ranges do let readers skip row
    // groups): digests spread evenly over their whole range and free text over most of it,
    // so every row group spans nearly all of it, while comparing every value twice was a
    // twentieth of a run. (Null counts go with them.)
    let unsorted_text = |name: &&str| {
        let is_id = *name == "id" || name.ends_with("_id");
        let is_text = schema
            .field_with_name(name)
            .is_ok_and(|f| f.data_type() == &DataType::Utf8);
        is_text && !is_id
    };
    let digests = [ROW_ID, PARENT_ID, ROOT_ID, CONTENT_HASH];
    let plain_text = encodings.plain_columns().filter(unsorted_text);
    for column in digests.into_iter().chain(plain_text) {
        builder = builder
            .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
    }
    builder
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(config.zstd_level).unwrap_or_default(),
        ))
        .set_max_row_group_row_count(Some(config.row_group_rows.max(1)))
        .set_max_row_group_bytes(Some(config.row_group_bytes.max(1)))
        .set_data_page_size_limit(DATA_PAGE_BYTES)
        .build()
}

/// A Parquet file encoded in memory.
#[derive(Debug)]
pub struct EncodedFile {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// The most memory the writer held while encoding (its row group in progress).
    pub most_held: usize,
}

/// Encodes batches of `table` (each a prefix of `schema`) as one Parquet file in memory:
/// what the sink does with a small rewritten file, and what the encoding bench compares.
pub fn encode(
    config: &ParquetSinkConfig,
    schema: &SchemaRef,
    encodings: &ColumnEncodings,
    batches: &[RecordBatch],
    table: &str,
) -> crate::Result<EncodedFile> {
    let fail = |source| crate::SinkError::Parquet {
        table: table.to_owned(),
        source,
    };
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        Vec::new(),
        schema.clone(),
        Some(writer_properties(config, schema, encodings)),
    )
    .map_err(fail)?;
    let mut most_held = 0;
    for b in batches {
        writer
            .write(&crate::columns::widen(b, schema)?)
            .map_err(fail)?;
        most_held = most_held.max(writer.memory_size());
    }
    Ok(EncodedFile {
        bytes: writer.into_inner().map_err(fail)?,
        most_held,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, StringArray};
    use arrow_schema::{Field, Schema};

    use super::*;

    /// The footer of `batch` written as one file with `encodings`.
    fn written_metadata(
        batch: &RecordBatch,
        encodings: &ColumnEncodings,
    ) -> parquet::file::metadata::ParquetMetaData {
        let file = encode(
            &ParquetSinkConfig::default(),
            &batch.schema(),
            encodings,
            std::slice::from_ref(batch),
            "t",
        )
        .unwrap();
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(
            bytes::Bytes::from(file.bytes),
        )
        .unwrap();
        parquet::file::reader::FileReader::metadata(&reader).clone()
    }

    #[test]
    fn unique_text_goes_plain_and_repeated_text_keeps_its_dictionary() {
        let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..100).map(|i| format!("event-{i}")),
        ));
        let severities: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..100).map(|i| ["error", "warning", "info"][i % 3]),
        ));
        let few: ArrayRef = Arc::new(StringArray::from_iter(
            (0..100).map(|i| (i < 5).then(|| format!("only-{i}"))),
        ));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("severity", DataType::Utf8, false),
            Field::new("rare", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(schema, vec![ids, severities, few]).unwrap();
        let encodings = ColumnEncodings::sample(&batch);
        assert_eq!(encodings.plain_columns().collect::<Vec<_>>(), ["id"]);

        // The file holds what was chosen, and a rewrite reading it keeps the choice.
        let metadata = written_metadata(&batch, &encodings);
        assert_eq!(ColumnEncodings::of_file(&metadata), encodings);
    }

    /// Readers skip row groups by the ranges of ids and repeated values; digests and free
    /// text have none to skip by, and computing theirs cost a twentieth of a run.
    #[test]
    fn digests_and_free_text_have_no_statistics_ids_and_repeated_values_do() {
        let column = |f: &dyn Fn(usize) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values((0..100).map(f)))
        };
        let names = [
            "id",
            "error_id",
            "message",
            "severity",
            ROW_ID,
            CONTENT_HASH,
        ];
        let schema = Arc::new(Schema::new(
            names.map(|n| Field::new(n, DataType::Utf8, false)).to_vec(),
        ));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                column(&|i| format!("5f{i:022x}")),
                column(&|i| format!("6a{i:022x}")),
                column(&|i| format!("undefined is not a function ({i})")),
                column(&|i| ["error", "warning"][i % 2].to_owned()),
                column(&|i| format!("{:032x}", i * 7919)),
                column(&|i| format!("{:016x}", i * 104_729)),
            ],
        )
        .unwrap();
        let metadata = written_metadata(&batch, &ColumnEncodings::sample(&batch));
        let with_statistics: Vec<&str> = metadata.row_groups()[0]
            .columns()
            .iter()
            .zip(names)
            .filter(|(chunk, _)| chunk.statistics().is_some())
            .map(|(_, name)| name)
            .collect();
        assert_eq!(with_statistics, ["id", "error_id", "severity"]);
    }
}

#[cfg(test)]
mod key_filter_tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, StringArray};
    use arrow_schema::{Field, Schema};
    use parquet::file::properties::ReaderProperties;
    use parquet::file::reader::FileReader;
    use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};

    use super::*;

    /// Child rows: `per_root` rows to each root id, from root `first` on.
    fn child_batch(first: usize, roots: usize, per_root: usize) -> RecordBatch {
        let root_ids: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..roots * per_root).map(|row| format!("{:032x}", first + row / per_root)),
        ));
        let schema = Arc::new(Schema::new(vec![Field::new(
            ROOT_ID,
            DataType::Utf8,
            false,
        )]));
        RecordBatch::try_new(schema, vec![root_ids]).unwrap()
    }

    fn sized_ndv(encodings: &ColumnEncodings, schema: &SchemaRef) -> u64 {
        let config = ParquetSinkConfig::default();
        writer_properties(&config, schema, encodings)
            .bloom_filter_properties(&ColumnPath::from(ROOT_ID))
            .map(|p| p.ndv())
            .unwrap()
    }

    #[test]
    fn filters_are_sized_for_the_distinct_keys_the_sample_shows() {
        let rows = ParquetSinkConfig::default().row_group_rows;
        assert_eq!(key_filter_ndv(rows, None), rows as u64);
        // Ids that never repeat (a root table): every row.
        assert_eq!(key_filter_ndv(rows, Some((1000, 1000))), rows as u64);
        // Too few values to say.
        assert_eq!(key_filter_ndv(rows, Some((1, 10))), rows as u64);
        // Nine rows to a key: twice a ninth of the rows.
        assert_eq!(key_filter_ndv(90_000, Some((100, 900))), 20_000);
        // Keys that repeat a thousand times still get the smallest filter.
        assert_eq!(
            key_filter_ndv(rows, Some((1, 1000))),
            MIN_KEY_FILTER_NDV as u64
        );

        let batch = child_batch(0, 100, 9);
        let sampled = ColumnEncodings::sample(&batch);
        assert_eq!(sampled.key_sample, Some((100, 900)));
        assert_eq!(
            sized_ndv(&sampled, &batch.schema()),
            key_filter_ndv(rows, Some((100, 900)))
        );
        assert!(sized_ndv(&sampled, &batch.schema()) < rows as u64);
        // A rewrite, which has no sample, sizes for every row.
        assert_eq!(
            sized_ndv(&ColumnEncodings::dictionaries(), &batch.schema()),
            rows as u64
        );
    }

    /// A filter sized from a first batch whose keys repeat nine times still holds every key
    /// when the later rows' keys repeat far less and outnumber what it was sized for.
    #[test]
    fn a_filter_sized_too_small_still_holds_every_key() {
        let first = child_batch(0, 100, 9);
        let encodings = ColumnEncodings::sample(&first);
        let rows = ParquetSinkConfig::default().row_group_rows;
        let sized_for = key_filter_ndv(rows, encodings.key_sample) as usize;
        // Then a key a row, three times as many keys as the filter was sized for.
        let roots = 3 * sized_for;
        let later = child_batch(100, roots, 1);
        let file = encode(
            &ParquetSinkConfig {
                row_group_rows: 4 * sized_for,
                ..ParquetSinkConfig::default()
            },
            &first.schema(),
            &encodings,
            &[first.clone(), later],
            "t",
        )
        .unwrap();
        let options = ReadOptionsBuilder::new()
            .with_reader_properties(
                ReaderProperties::builder()
                    .set_read_bloom_filter(true)
                    .build(),
            )
            .build();
        let reader =
            SerializedFileReader::new_with_options(bytes::Bytes::from(file.bytes), options)
                .unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 1);
        let row_group = reader.get_row_group(0).unwrap();
        let filter = row_group.get_column_bloom_filter(0).unwrap();
        let missing = (0..100 + roots)
            .filter(|r| !filter.check(format!("{r:032x}").as_str()))
            .count();
        assert_eq!(missing, 0, "a bloom filter must never leave a key out");
    }
}

#[cfg(test)]
mod number_tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, TimestampMicrosecondArray};
    use arrow_schema::{Field, Schema, TimeUnit};

    use super::*;

    #[test]
    fn numbers_and_times_are_sampled_by_their_values_nulls_aside() {
        let counts: ArrayRef = Arc::new(Int64Array::from_iter((0..100i64).map(Some)));
        let seen: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from_iter((0..100i64).map(|i| Some(i % 4)))
                .with_timezone("UTC"),
        );
        // Unique values, but one in ten: too few to decide.
        let sparse: ArrayRef = Arc::new(Int64Array::from_iter(
            (0..100i64).map(|i| (i % 10 == 0).then_some(i)),
        ));
        let schema = Arc::new(Schema::new(vec![
            Field::new("count", DataType::Int64, false),
            Field::new(
                "seen",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("sparse", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(schema, vec![counts, seen, sparse]).unwrap();
        let encodings = ColumnEncodings::sample(&batch.slice(1, 99));
        assert_eq!(encodings.plain_columns().collect::<Vec<_>>(), ["count"]);
    }
}
