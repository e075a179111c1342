//! The content-hash rows a load stores for its root records (`_errlake_hashes_<root>`), held
//! as two text columns between the probe of the stored hashes and the hash table's commit.

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::{Array, BooleanArray, StringArray};

use crate::{Result, SinkError};

/// The `(row id, hash)` rows of a load's root records, in the order they were read, with
/// their id keys sorted for lookup: about 90 bytes a record at a checkpoint of 250,000.
/// (A map of two `String`s per record cost twice that, and it came on top of the streaming
/// working set at every checkpoint.)
pub(crate) struct HashRows {
    ids: StringArray,
    hashes: StringArray,
    /// Each id key with the row of its last copy, sorted by key.
    keys: Vec<(u128, u32)>,
}

/// Collects [`HashRows`]: one call of [`HashRowsBuilder::push`] per record read.
pub(crate) struct HashRowsBuilder {
    /// The records expected (the staged files' rows): the columns are sized for them at the
    /// first record, so they are not doubled past it while the commit holds them.
    expected: usize,
    ids: Option<StringBuilder>,
    hashes: Option<StringBuilder>,
    keys: Vec<(u128, u32)>,
}

impl HashRowsBuilder {
    /// A builder for about `expected` records.
    pub(crate) fn with_capacity(expected: usize) -> Self {
        HashRowsBuilder {
            expected,
            ids: None,
            hashes: None,
            keys: Vec::with_capacity(expected),
        }
    }

    /// A record's id key, row id and hash.
    pub(crate) fn push(&mut self, key: u128, id: &str, hash: &str) {
        // Ids and hashes are digests or ids of one width, mostly: the first record's widths
        // size the columns.
        let rows = self.expected.max(1);
        self.keys.push((key, self.keys.len() as u32));
        self.ids
            .get_or_insert_with(|| StringBuilder::with_capacity(rows, rows * id.len()))
            .append_value(id);
        self.hashes
            .get_or_insert_with(|| StringBuilder::with_capacity(rows, rows * hash.len().max(1)))
            .append_value(hash);
    }

    /// The rows; of an id read twice, the later copy is the one looked up and kept. The
    /// keys are sorted and their repeats dropped in place.
    pub(crate) fn finish(mut self) -> HashRows {
        // Sorted by row too: of two copies of an id, the later one comes last.
        self.keys.sort_unstable();
        self.keys.dedup_by(|later, kept| {
            let same_id = later.0 == kept.0;
            if same_id {
                kept.1 = later.1;
            }
            same_id
        });
        let finish = |b: Option<StringBuilder>| {
            b.map_or_else(|| StringArray::from(Vec::<&str>::new()), |mut b| b.finish())
        };
        HashRows {
            ids: finish(self.ids.take()),
            hashes: finish(self.hashes.take()),
            keys: self.keys,
        }
    }
}

impl HashRows {
    /// Whether no record was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The hash of the record with this id key.
    pub(crate) fn hash_of(&self, key: u128) -> Option<&str> {
        let at = self.keys.binary_search_by_key(&key, |&(k, _)| k).ok()?;
        Some(self.hashes.value(self.keys[at].1 as usize))
    }

    /// The id and hash columns of the rows to store: each id's last copy, but those `skip`
    /// picks.
    pub(crate) fn columns_without(
        self,
        skip: impl Fn(u128) -> bool,
    ) -> Result<(StringArray, StringArray)> {
        let mut keep = vec![false; self.ids.len()];
        let mut kept = 0;
        for &(key, row) in &self.keys {
            let stays = !skip(key);
            keep[row as usize] = stays;
            kept += usize::from(stays);
        }
        // Every row stays (no repeated id, nothing unchanged: a first load, new records):
        // the columns as they are, not a copy of them beside them.
        if kept == self.ids.len() {
            return Ok((self.ids, self.hashes));
        }
        let mask = BooleanArray::from(keep);
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
        Ok((filter(&self.ids)?, filter(&self.hashes)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The later copy of a repeated id is the one looked up and stored, once; skipped ids
    /// are not stored; the rows keep the order they were read in.
    #[test]
    fn an_ids_last_copy_is_looked_up_and_stored_once() {
        let mut b = HashRowsBuilder::with_capacity(4);
        b.push(7, "id-7", "old");
        b.push(3, "id-3", "h3");
        b.push(9, "id-9", "h9");
        b.push(7, "id-7", "new");
        let rows = b.finish();
        assert_eq!(rows.hash_of(7), Some("new"));
        assert_eq!(rows.hash_of(3), Some("h3"));
        assert_eq!(rows.hash_of(4), None);
        let (ids, hashes) = rows.columns_without(|k| k == 9).unwrap();
        let ids: Vec<_> = ids.iter().flatten().collect();
        let hashes: Vec<_> = hashes.iter().flatten().collect();
        assert_eq!(ids, vec!["id-3", "id-7"]);
        assert_eq!(hashes, vec!["h3", "new"]);
    }

    /// Rows that all stay come back as they were read; a builder that read nothing gives
    /// no rows.
    #[test]
    fn rows_that_all_stay_are_returned_whole_and_no_rows_give_none() {
        let mut b = HashRowsBuilder::with_capacity(1);
        b.push(2, "id-2", "h2");
        b.push(1, "id-1", "a longer hash than the first");
        let (ids, hashes) = b.finish().columns_without(|_| false).unwrap();
        let ids: Vec<_> = ids.iter().flatten().collect();
        let hashes: Vec<_> = hashes.iter().flatten().collect();
        assert_eq!(ids, vec!["id-2", "id-1"]);
        assert_eq!(hashes, vec!["h2", "a longer hash than the first"]);
        let none = HashRowsBuilder::with_capacity(0).finish();
        assert!(none.is_empty());
        let (ids, _) = none.columns_without(|_| false).unwrap();
        assert_eq!(ids.len(), 0);
    }
}
