//! The content-hash rows a load stores for its root records (`_errlake_hashes_<root>`), held
//! between the probe of the stored hashes and the hash table's commit.

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::{Array, BooleanArray, StringArray};

use crate::writer::id_key;
use crate::{Result, SinkError};

/// The `(row id, hash)` rows of a load's root records, each id once (its last copy).
///
/// Row ids and hashes are the normalizer's digests, 32 and 16 lowercase hex digits: held as
/// their bytes, sorted by id, a record takes 32 bytes (250,000 records at a checkpoint, 8 MB).
/// Held as text with a sorted index of id keys, as any other ids are, it took 88, on top of
/// the streaming working set at every checkpoint.
pub(crate) struct HashRows {
    rows: Rows,
}

enum Rows {
    /// Every id and hash in hex, sorted by id, one row per id.
    Packed(Vec<PackedRow>),
    /// Otherwise, as read (see [`TextRows`]).
    Text(Box<TextRows>),
}

/// Rows of any text, as read: each id key with the row of its last copy, sorted by key.
struct TextRows {
    ids: StringArray,
    hashes: StringArray,
    keys: Vec<(u128, u32)>,
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

/// Collects [`HashRows`]: one call of [`HashRowsBuilder::push`] per record read.
pub(crate) struct HashRowsBuilder {
    /// The records expected (the staged files' rows), to size the rows at the first one.
    expected: usize,
    rows: BuildRows,
}

enum BuildRows {
    Packed(Vec<PackedRow>),
    Text(Box<TextBuilder>),
}

struct TextBuilder {
    ids: StringBuilder,
    hashes: StringBuilder,
    keys: Vec<(u128, u32)>,
}

impl HashRowsBuilder {
    /// A builder for about `expected` records.
    pub(crate) fn with_capacity(expected: usize) -> Self {
        HashRowsBuilder {
            expected,
            rows: BuildRows::Packed(Vec::new()),
        }
    }

    /// A record's id key, row id and hash (empty: none).
    pub(crate) fn push(&mut self, key: u128, id: &str, hash: &str) {
        if let BuildRows::Packed(rows) = &mut self.rows {
            match PackedRow::of(id, hash, rows.len() as u32) {
                Some(row) => {
                    if rows.capacity() == 0 {
                        rows.reserve_exact(self.expected.max(1));
                    }
                    rows.push(row);
                    return;
                }
                None => self.switch_to_text(),
            }
        }
        if let BuildRows::Text(text) = &mut self.rows {
            text.keys.push((key, text.keys.len() as u32));
            text.ids.append_value(id);
            text.hashes.append_value(hash);
        }
    }

    /// From packed rows to text, at the first id or hash that is not in hex: the rows read
    /// so far are written out as text, in their order.
    #[cold]
    fn switch_to_text(&mut self) {
        let BuildRows::Packed(packed) = &self.rows else {
            return;
        };
        let rows = self.expected.max(packed.len()).max(1);
        let mut ids = StringBuilder::with_capacity(rows, rows * 32);
        let mut hashes = StringBuilder::with_capacity(rows, rows * 16);
        let mut keys = Vec::with_capacity(rows);
        let mut buf = [0u8; 48];
        for row in packed {
            let (id, hash) = row.text(&mut buf);
            keys.push((id_key(id), keys.len() as u32));
            ids.append_value(id);
            hashes.append_value(hash);
        }
        self.rows = BuildRows::Text(Box::new(TextBuilder { ids, hashes, keys }));
    }

    /// The rows; of an id read twice, the later copy is the one looked up and kept.
    pub(crate) fn finish(self) -> Result<HashRows> {
        let rows = match self.rows {
            BuildRows::Packed(mut rows) => {
                // Of two copies of an id, the later one comes last and stays. (A stable sort
                // would take a buffer as large as the rows.)
                rows.sort_unstable_by_key(|r| (r.id, r.seq));
                rows.dedup_by(|later, kept| {
                    let same_id = later.id == kept.id;
                    if same_id {
                        *kept = *later;
                    }
                    same_id
                });
                rows.shrink_to_fit();
                Rows::Packed(rows)
            }
            BuildRows::Text(text) => {
                let TextBuilder {
                    mut ids,
                    mut hashes,
                    mut keys,
                } = *text;
                // Sorted by row too: of two copies of an id, the later one comes last.
                keys.sort_unstable();
                keys.dedup_by(|later, kept| {
                    let same_id = later.0 == kept.0;
                    if same_id {
                        kept.1 = later.1;
                    }
                    same_id
                });
                let (mut ids, mut hashes) = (ids.finish(), hashes.finish());
                keep_text(&mut ids, &mut hashes, &mut keys, |_| true)?;
                Rows::Text(Box::new(TextRows { ids, hashes, keys }))
            }
        };
        Ok(HashRows { rows })
    }
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

    /// The row's id and hash as text, as they were read, written into `buf`.
    fn text<'b>(&self, buf: &'b mut [u8; 48]) -> (&'b str, &'b str) {
        let (id, hash) = buf.split_at_mut(32);
        let id = hex(&self.id, id);
        let hash = if self.has_hash {
            hex(&self.hash.to_be_bytes(), hash)
        } else {
            ""
        };
        (id, hash)
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

/// `bytes` as lowercase hex digits, written into `out` (twice as long as `bytes`).
fn hex<'o>(bytes: &[u8], out: &'o mut [u8]) -> &'o str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    // Hex digits are ASCII: this never fails.
    std::str::from_utf8(&out[..2 * bytes.len()]).unwrap_or_default()
}

impl HashRows {
    /// How many rows there are.
    pub(crate) fn len(&self) -> usize {
        match &self.rows {
            Rows::Packed(rows) => rows.len(),
            Rows::Text(text) => text.keys.len(),
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
                let mut bytes = [0u8; 16];
                if unhex(id.as_bytes(), &mut bytes).is_none() {
                    return false;
                }
                match rows.binary_search_by_key(&bytes, |r| r.id) {
                    Ok(at) => {
                        let row = rows[at];
                        let mut h = [0u8; 8];
                        row.has_hash
                            && unhex(hash.as_bytes(), &mut h).is_some()
                            && u64::from_be_bytes(h) == row.hash
                    }
                    Err(_) => false,
                }
            }
            Rows::Text(text) => text
                .keys
                .binary_search_by_key(&key, |&(k, _)| k)
                .is_ok_and(|at| text.hashes.value(text.keys[at].1 as usize) == hash),
        }
    }

    /// Leaves out the rows whose id key `skip` picks.
    pub(crate) fn remove(&mut self, skip: impl Fn(u128) -> bool) -> Result<()> {
        match &mut self.rows {
            Rows::Packed(rows) => {
                let mut buf = [0u8; 32];
                rows.retain(|r| !skip(id_key(hex(&r.id, &mut buf))));
                Ok(())
            }
            Rows::Text(text) => {
                let TextRows { ids, hashes, keys } = &mut **text;
                keep_text(ids, hashes, keys, |k| !skip(k))
            }
        }
    }

    /// The ids and hashes of rows `start..start + len`, as text columns.
    pub(crate) fn columns(&self, start: usize, len: usize) -> (StringArray, StringArray) {
        match &self.rows {
            Rows::Packed(rows) => {
                let rows = &rows[start..start + len];
                let mut ids = StringBuilder::with_capacity(len, 32 * len);
                let mut hashes = StringBuilder::with_capacity(len, 16 * len);
                let mut buf = [0u8; 48];
                for row in rows {
                    let (id, hash) = row.text(&mut buf);
                    ids.append_value(id);
                    hashes.append_value(hash);
                }
                (ids.finish(), hashes.finish())
            }
            Rows::Text(text) => (text.ids.slice(start, len), text.hashes.slice(start, len)),
        }
    }
}

/// Text rows without those whose id key `keep` does not keep, nor the copies of an id that
/// `keys` (one entry per id, sorted by key) does not point to: the rest stay in the order
/// they were read, and `keys` points to their new places.
fn keep_text(
    ids: &mut StringArray,
    hashes: &mut StringArray,
    keys: &mut Vec<(u128, u32)>,
    keep: impl Fn(u128) -> bool,
) -> Result<()> {
    let mut mask = vec![false; ids.len()];
    keys.retain(|&(key, row)| {
        let stays = keep(key);
        mask[row as usize] = stays;
        stays
    });
    // Every row stays (no repeated id, nothing left out): the columns as they are.
    if keys.len() == ids.len() {
        return Ok(());
    }
    let mask = BooleanArray::from(mask);
    let filter = |column: &StringArray| -> Result<StringArray> {
        let kept =
            arrow_select::filter::filter(column, &mask).map_err(|e| SinkError::Internal {
                message: format!("selecting the hash rows to store: {e}"),
            })?;
        kept.as_string_opt::<i32>()
            .cloned()
            .ok_or_else(|| SinkError::Internal {
                message: "selecting the hash rows to store gave no text column".into(),
            })
    };
    *ids = filter(ids)?;
    *hashes = filter(hashes)?;
    // A kept row's new place is its rank among the kept rows.
    let mut by_row: Vec<usize> = (0..keys.len()).collect();
    by_row.sort_unstable_by_key(|&i| keys[i].1);
    for (new_row, i) in by_row.into_iter().enumerate() {
        keys[i].1 = new_row as u32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(rows: &HashRows) -> (Vec<String>, Vec<String>) {
        let (ids, hashes) = rows.columns(0, rows.len());
        let all = |a: StringArray| a.iter().flatten().map(str::to_owned).collect();
        (all(ids), all(hashes))
    }

    fn digest_id(n: u8) -> String {
        format!("{n:02x}").repeat(16)
    }

    /// Ids that are not digests are held as text: the later copy of a repeated id is the
    /// one looked up and stored, once; removed ids are not stored; the rows keep the order
    /// they were read in.
    #[test]
    fn an_ids_last_copy_is_looked_up_and_stored_once() {
        let mut b = HashRowsBuilder::with_capacity(4);
        b.push(7, "id-7", "old");
        b.push(3, "id-3", "h3");
        b.push(9, "id-9", "h9");
        b.push(7, "id-7", "new");
        let mut rows = b.finish().unwrap();
        assert!(rows.has_hash(7, "id-7", "new"));
        assert!(!rows.has_hash(7, "id-7", "old"));
        assert!(rows.has_hash(3, "id-3", "h3"));
        assert!(!rows.has_hash(4, "id-4", "h3"));
        assert_eq!(rows.len(), 3);
        rows.remove(|k| k == 9).unwrap();
        assert_eq!(
            texts(&rows),
            (
                vec!["id-3".to_owned(), "id-7".to_owned()],
                vec!["h3".to_owned(), "new".to_owned()]
            )
        );
        assert!(rows.has_hash(7, "id-7", "new"), "looked up after a removal");
    }

    /// Text rows that all stay come back as they were read; a builder that read nothing
    /// gives no rows.
    #[test]
    fn rows_that_all_stay_are_returned_whole_and_no_rows_give_none() {
        let mut b = HashRowsBuilder::with_capacity(1);
        b.push(2, "id-2", "h2");
        b.push(1, "id-1", "a longer hash than the first");
        let rows = b.finish().unwrap();
        assert_eq!(
            texts(&rows),
            (
                vec!["id-2".to_owned(), "id-1".to_owned()],
                vec!["h2".to_owned(), "a longer hash than the first".to_owned()]
            )
        );
        let none = HashRowsBuilder::with_capacity(0).finish().unwrap();
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
        let mut rows = builder.finish().unwrap();
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
        rows.remove(|k| k == ka).unwrap();
        assert_eq!(texts(&rows).0, vec![b, c]);
    }

    /// A row that is not a digest's (an upper-case digit, another width) turns the rows
    /// read before it into text, in their order, and nothing is lost.
    #[test]
    fn one_id_that_is_no_digest_keeps_every_row_as_text() {
        let a = digest_id(0x10);
        let upper = "AB".repeat(16);
        let mut builder = HashRowsBuilder::with_capacity(2);
        builder.push(id_key(&a), &a, "0123456789abcdef");
        builder.push(id_key(&upper), &upper, "0123456789abcdef");
        builder.push(id_key("short"), "short", "not hex");
        let rows = builder.finish().unwrap();
        assert!(matches!(rows.rows, Rows::Text(_)));
        assert_eq!(
            texts(&rows),
            (
                vec![a.clone(), upper.clone(), "short".to_owned()],
                vec![
                    "0123456789abcdef".to_owned(),
                    "0123456789abcdef".to_owned(),
                    "not hex".to_owned()
                ]
            )
        );
        assert!(rows.has_hash(id_key(&a), &a, "0123456789abcdef"));
        assert!(rows.has_hash(id_key("short"), "short", "not hex"));
    }
}
