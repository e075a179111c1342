//! The content-hash rows a load stores for its root records (`_errlake_hashes_<root>`), held
//! between the probe of the stored hashes and the hash table's commit.

use arrow_array::StringArray;
use arrow_array::builder::StringBuilder;
use transform::Hex;

use crate::writer::id_key;

/// The `(row id, hash)` rows of a load's root records, each id once (its last copy), sorted
/// by id.
///
/// Row ids and hashes are the normalizer's digests, 32 and 16 lowercase hex digits: held as
/// their bytes, a record takes 32 bytes (250,000 records at a checkpoint, 8 MB). Held as
/// text with a sorted index of id keys, as other ids still are, it took 88, on top of the
/// streaming working set at every checkpoint.
pub(crate) struct HashRows {
    rows: Rows,
}

/// Collects [`HashRows`]: one call of [`HashRowsBuilder::push`] per record read, then
/// [`HashRowsBuilder::finish`].
pub(crate) struct HashRowsBuilder {
    /// The records expected (the staged files' rows), to size the rows at the first one.
    expected: usize,
    rows: HashRows,
}

enum Rows {
    /// Every id and hash in hex, sorted by id once finished.
    Packed(Vec<PackedRow>),
    /// Otherwise, as read, sorted by id key once finished.
    Text(Vec<TextRow>),
}

/// A row id of 32 hex digits and its hash of 16 (or none: an id the load brings twice or
/// deletes is stored without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PackedRow {
    id: [u8; 16],
    hash: u64,
    /// The record's place among those read (in the room the row's alignment leaves).
    seq: u32,
    has_hash: bool,
}

/// A row whose id or hash is not a digest.
struct TextRow {
    key: u128,
    seq: u32,
    id: Box<str>,
    hash: Box<str>,
}

impl HashRowsBuilder {
    /// A builder for about `expected` records.
    pub(crate) fn with_capacity(expected: usize) -> Self {
        HashRowsBuilder {
            expected,
            rows: HashRows {
                rows: Rows::Packed(Vec::new()),
            },
        }
    }

    /// A record's id key, row id and hash (empty: none).
    pub(crate) fn push(&mut self, key: u128, id: &str, hash: &str) {
        let expected = self.expected.max(1);
        let seq = self.rows.len() as u32;
        if let Rows::Packed(rows) = &mut self.rows.rows {
            match PackedRow::of(id, hash, seq) {
                Some(row) => {
                    if rows.capacity() == 0 {
                        rows.reserve_exact(expected);
                    }
                    rows.push(row);
                    return;
                }
                None => self.switch_to_text(),
            }
        }
        if let Rows::Text(rows) = &mut self.rows.rows {
            rows.push(TextRow {
                key,
                seq,
                id: id.into(),
                hash: hash.into(),
            });
        }
    }

    /// From packed rows to text, at the first id or hash that is not a digest: the rows
    /// read so far are written out as text.
    #[cold]
    fn switch_to_text(&mut self) {
        let Rows::Packed(packed) = &self.rows.rows else {
            return;
        };
        let text = packed
            .iter()
            .map(|row| {
                let id = row.id_text();
                TextRow {
                    key: id_key(id.as_str()),
                    seq: row.seq,
                    id: id.as_str().into(),
                    hash: row.hash_text().as_ref().map_or("", Hex::as_str).into(),
                }
            })
            .collect();
        self.rows.rows = Rows::Text(text);
    }

    /// The rows; of an id read twice, the later copy is the one looked up and kept.
    pub(crate) fn finish(mut self) -> HashRows {
        match &mut self.rows.rows {
            Rows::Packed(rows) => {
                last_copies(rows, |r| (r.id, r.seq));
                rows.shrink_to_fit();
            }
            Rows::Text(rows) => last_copies(rows, |r| (r.key, r.seq)),
        }
        self.rows
    }
}

/// Sorts `rows` by the id `place` gives (an unstable sort: a stable one would take a buffer
/// as large as the rows) and keeps the last read copy of each id.
fn last_copies<T, K: Ord + Copy>(rows: &mut Vec<T>, place: impl Fn(&T) -> (K, u32)) {
    rows.sort_unstable_by_key(&place);
    rows.dedup_by(|later, kept| {
        let same_id = place(later).0 == place(kept).0;
        if same_id {
            std::mem::swap(later, kept);
        }
        same_id
    });
}

impl PackedRow {
    /// The row of `id` and `hash` when they are in lowercase hex, 32 and 16 digits (or no
    /// hash).
    fn of(id: &str, hash: &str, seq: u32) -> Option<PackedRow> {
        let mut bytes = [0u8; 16];
        unhex(id.as_bytes(), &mut bytes)?;
        let (hash, has_hash) = if hash.is_empty() {
            (0, false)
        } else {
            let mut h = [0u8; 8];
            unhex(hash.as_bytes(), &mut h)?;
            (u64::from_be_bytes(h), true)
        };
        Some(PackedRow {
            id: bytes,
            hash,
            seq,
            has_hash,
        })
    }

    /// The row's id as text, as it was read.
    fn id_text(&self) -> Hex<32> {
        Hex::of(u128::from_be_bytes(self.id))
    }

    /// The row's hash as text, as it was read (`None`: it had none).
    fn hash_text(&self) -> Option<Hex<16>> {
        self.has_hash.then(|| Hex::of(u128::from(self.hash)))
    }
}

/// The bytes of `digits` (two lowercase hex digits each) into `out`, when it has exactly
/// that many.
fn unhex(digits: &[u8], out: &mut [u8]) -> Option<()> {
    if digits.len() != 2 * out.len() {
        return None;
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (value(pair[0])? << 4) | value(pair[1])?;
    }
    Some(())
}

impl HashRows {
    /// How many rows there are.
    pub(crate) fn len(&self) -> usize {
        match &self.rows {
            Rows::Packed(rows) => rows.len(),
            Rows::Text(rows) => rows.len(),
        }
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the record with id `id` (id key `key`) has the hash `hash`, not empty.
    pub(crate) fn has_hash(&self, key: u128, id: &str, hash: &str) -> bool {
        if hash.is_empty() {
            return false;
        }
        match &self.rows {
            Rows::Packed(rows) => {
                let (mut id_bytes, mut h) = ([0u8; 16], [0u8; 8]);
                unhex(id.as_bytes(), &mut id_bytes).is_some()
                    && unhex(hash.as_bytes(), &mut h).is_some()
                    && rows
                        .binary_search_by_key(&id_bytes, |r| r.id)
                        .is_ok_and(|at| rows[at].has_hash && rows[at].hash == u64::from_be_bytes(h))
            }
            Rows::Text(rows) => rows
                .binary_search_by_key(&key, |r| r.key)
                .is_ok_and(|at| *rows[at].hash == *hash),
        }
    }

    /// Leaves out the rows whose id key `skip` picks.
    pub(crate) fn remove(&mut self, skip: impl Fn(u128) -> bool) {
        match &mut self.rows {
            Rows::Packed(rows) => rows.retain(|r| !skip(id_key(r.id_text().as_str()))),
            Rows::Text(rows) => rows.retain(|r| !skip(r.key)),
        }
    }

    /// The ids and hashes of rows `start..start + len`, as text columns.
    pub(crate) fn columns(&self, start: usize, len: usize) -> (StringArray, StringArray) {
        let mut ids = StringBuilder::with_capacity(len, 32 * len);
        let mut hashes = StringBuilder::with_capacity(len, 16 * len);
        match &self.rows {
            Rows::Packed(rows) => {
                for row in &rows[start..start + len] {
                    ids.append_value(row.id_text().as_str());
                    hashes.append_value(row.hash_text().as_ref().map_or("", Hex::as_str));
                }
            }
            Rows::Text(rows) => {
                for row in &rows[start..start + len] {
                    ids.append_value(&row.id);
                    hashes.append_value(&row.hash);
                }
            }
        }
        (ids.finish(), hashes.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;

    fn texts(rows: &HashRows) -> (Vec<String>, Vec<String>) {
        let (ids, hashes) = rows.columns(0, rows.len());
        let all = |a: StringArray| a.iter().flatten().map(str::to_owned).collect();
        (all(ids), all(hashes))
    }

    fn digest_id(n: u8) -> String {
        format!("{n:02x}").repeat(16)
    }

    /// Ids that are not digests are held as text: the later copy of a repeated id is the
    /// one looked up and stored, once; removed ids are not stored; the rows come in the
    /// order of their id keys.
    #[test]
    fn an_ids_last_copy_is_looked_up_and_stored_once() {
        let mut b = HashRowsBuilder::with_capacity(4);
        b.push(7, "id-7", "old");
        b.push(3, "id-3", "h3");
        b.push(9, "id-9", "h9");
        b.push(7, "id-7", "new");
        let mut rows = b.finish();
        assert!(rows.has_hash(7, "id-7", "new"));
        assert!(!rows.has_hash(7, "id-7", "old"));
        assert!(rows.has_hash(3, "id-3", "h3"));
        assert!(!rows.has_hash(4, "id-4", "h3"));
        assert_eq!(rows.len(), 3);
        rows.remove(|k| k == 9);
        assert_eq!(
            texts(&rows),
            (
                vec!["id-3".to_owned(), "id-7".to_owned()],
                vec!["h3".to_owned(), "new".to_owned()]
            )
        );
        assert!(rows.has_hash(7, "id-7", "new"), "looked up after a removal");
    }

    /// Text rows that all stay come back whole, in the order of their id keys; a builder
    /// that read nothing gives no rows.
    #[test]
    fn rows_that_all_stay_are_returned_whole_and_no_rows_give_none() {
        let mut b = HashRowsBuilder::with_capacity(1);
        b.push(2, "id-2", "h2");
        b.push(1, "id-1", "a longer hash than the first");
        let rows = b.finish();
        assert_eq!(
            texts(&rows),
            (
                vec!["id-1".to_owned(), "id-2".to_owned()],
                vec!["a longer hash than the first".to_owned(), "h2".to_owned()]
            )
        );
        let none = HashRowsBuilder::with_capacity(0).finish();
        assert!(none.is_empty());
        assert_eq!(none.columns(0, 0).0.len(), 0);
    }

    /// Digest ids and hashes are held as bytes, 32 a row, and come back as the same text:
    /// the later copy of an id wins, an empty hash matches nothing and is stored empty.
    #[test]
    fn digest_rows_are_held_as_bytes_and_read_back_as_their_text() {
        assert_eq!(std::mem::size_of::<PackedRow>(), 32);
        let (a, b, c) = (digest_id(0xab), digest_id(0x01), digest_id(0xfe));
        let mut builder = HashRowsBuilder::with_capacity(4);
        builder.push(id_key(&a), &a, "00000000000000ff");
        builder.push(id_key(&b), &b, "");
        builder.push(id_key(&c), &c, "0123456789abcdef");
        builder.push(id_key(&a), &a, "ffffffffffffffff");
        let mut rows = builder.finish();
        assert!(matches!(rows.rows, Rows::Packed(_)));
        assert_eq!(rows.len(), 3);
        assert!(rows.has_hash(id_key(&a), &a, "ffffffffffffffff"));
        assert!(!rows.has_hash(id_key(&a), &a, "00000000000000ff"));
        assert!(!rows.has_hash(id_key(&b), &b, ""));
        assert!(!rows.has_hash(id_key(&b), &b, "0000000000000000"));
        assert!(rows.has_hash(id_key(&c), &c, "0123456789abcdef"));
        assert!(!rows.has_hash(id_key("x"), "x", "0123456789abcdef"));
        assert_eq!(
            texts(&rows),
            (
                vec![b.clone(), a.clone(), c.clone()],
                vec![
                    String::new(),
                    "ffffffffffffffff".to_owned(),
                    "0123456789abcdef".to_owned()
                ]
            )
        );
        let ka = id_key(&a);
        rows.remove(|k| k == ka);
        assert_eq!(texts(&rows).0, vec![b, c]);
    }

    /// A row that is not a digest's (an upper-case digit, another width) turns the rows
    /// read before it into text, and nothing is lost.
    #[test]
    fn one_id_that_is_no_digest_keeps_every_row_as_text() {
        let a = digest_id(0x10);
        let upper = "AB".repeat(16);
        let mut builder = HashRowsBuilder::with_capacity(2);
        builder.push(id_key(&a), &a, "0123456789abcdef");
        builder.push(id_key(&upper), &upper, "0123456789abcdef");
        builder.push(id_key("short"), "short", "not hex");
        let rows = builder.finish();
        assert!(matches!(rows.rows, Rows::Text(_)));
        let mut expected = [
            (a.clone(), "0123456789abcdef"),
            (upper.clone(), "0123456789abcdef"),
            ("short".to_owned(), "not hex"),
        ];
        expected.sort_by_key(|(id, _)| id_key(id));
        assert_eq!(
            texts(&rows),
            (
                expected.iter().map(|(id, _)| id.clone()).collect(),
                expected.iter().map(|(_, h)| (*h).to_owned()).collect()
            )
        );
        assert!(rows.has_hash(id_key(&a), &a, "0123456789abcdef"));
        assert!(rows.has_hash(id_key("short"), "short", "not hex"));
    }
}
