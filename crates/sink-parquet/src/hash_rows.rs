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
    ids: StringBuilder,
    hashes: StringBuilder,
    keys: Vec<(u128, u32)>,
}

impl HashRowsBuilder {
    pub(crate) fn new() -> Self {
        HashRowsBuilder {
            ids: StringBuilder::new(),
            hashes: StringBuilder::new(),
            keys: Vec::new(),
        }
    }

    /// A record's id key, row id and hash.
    pub(crate) fn push(&mut self, key: u128, id: &str, hash: &str) {
        self.keys.push((key, self.keys.len() as u32));
        self.ids.append_value(id);
        self.hashes.append_value(hash);
    }

    /// The rows; of an id read twice, the later copy is the one looked up and kept.
    pub(crate) fn finish(mut self) -> HashRows {
        self.keys.sort_unstable();
        let mut keys: Vec<(u128, u32)> = Vec::with_capacity(self.keys.len());
        for (key, row) in self.keys {
            match keys.last_mut() {
                Some(last) if last.0 == key => last.1 = row,
                _ => keys.push((key, row)),
            }
        }
        HashRows {
            ids: self.ids.finish(),
            hashes: self.hashes.finish(),
            keys,
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
        for &(key, row) in &self.keys {
            keep[row as usize] = !skip(key);
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
        let mut b = HashRowsBuilder::new();
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
}
