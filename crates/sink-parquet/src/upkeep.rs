//! Keeping a destination sound: what errlake owns there (and what it must never touch),
//! the data files a table's version references that are gone, and their repair.

use std::collections::BTreeMap;

use deltalake::DeltaTable;
use object_store::path::Path as StorePath;

use crate::catalog::LOADS_FOLDER;
use crate::files::is_own_object;
use crate::lake::{Lake, data_files};
use crate::{Result, SinkError};

/// What errlake owns in a destination, and what a table's version needs that is gone.
impl Lake {
    /// Whether errlake has run into this destination before: it holds a run report.
    pub async fn has_load_history(&self) -> Result<bool> {
        let folder = self.prefix().clone().join(LOADS_FOLDER);
        let listing = self
            .store()
            .list_with_delimiter(Some(&folder))
            .await
            .map_err(|source| SinkError::Store {
                path: folder.to_string(),
                source,
            })?;
        Ok(!listing.objects.is_empty())
    }

    /// Up to `limit` objects of the destination that errlake did not write (paths relative
    /// to the destination): anything but its own data files in table folders, its run
    /// reports, and the Delta logs of tables whose first commit errlake made. A first run
    /// refuses a destination that holds any, so that errlake never writes into, and never
    /// sweeps, another tool's data unless the user asks.
    pub async fn foreign_objects(&self, limit: usize) -> Result<Vec<String>> {
        use object_store::ObjectStoreExt;
        let objects = self.list_under(self.prefix()).await?;
        // Each table folder's first commit, which says whether errlake created the table.
        let mut first_commits: BTreeMap<String, StorePath> = BTreeMap::new();
        for (rel, o) in &objects {
            if let Some((folder, log_file)) = rel.split_once("/_delta_log/")
                && !log_file.contains('/')
                && log_file.ends_with(".json")
            {
                let entry = first_commits
                    .entry(folder.to_owned())
                    .or_insert_with(|| o.location.clone());
                if o.location < *entry {
                    *entry = o.location.clone();
                }
            }
        }
        let mut own_logs = std::collections::HashSet::new();
        for (folder, path) in first_commits {
            let read = async { self.store().get(&path).await?.bytes().await };
            let bytes = read.await.map_err(|source| SinkError::Store {
                path: path.to_string(),
                source,
            })?;
            if memchr_contains(&bytes, b"\"errlake.load_id\"") {
                own_logs.insert(folder);
            }
        }
        let own = |folder: &str| own_logs.contains(folder);
        let mut foreign: Vec<String> = objects
            .into_iter()
            .map(|(rel, _)| rel)
            .filter(|rel| !is_own_object(rel, &own))
            .collect();
        foreign.sort();
        foreign.truncate(limit);
        Ok(foreign)
    }

    /// The data files the current version of `table` references that are not in its
    /// folder (deleted by hand, or lost): a load would fail on them part-way, so it checks
    /// before its first commit. Files referenced by an absolute URL are not checked.
    ///
    /// Another writer's merge may commit and delete the files it replaced between reading
    /// the version and listing the folder; such files are not missing, so when the table
    /// moved in between, the check is made again on its new version.
    pub async fn missing_files(&self, table: &str) -> Result<Vec<String>> {
        const ATTEMPTS: usize = 5;
        let mut missing = Vec::new();
        for _ in 0..ATTEMPTS {
            let Some(t) = self.load_table(table).await? else {
                return Ok(Vec::new());
            };
            missing = self.missing_in(table, &t).await?;
            let moved = match self.load_table(table).await? {
                Some(now) => now.version() != t.version(),
                None => false,
            };
            if missing.is_empty() || !moved {
                return Ok(missing);
            }
        }
        Ok(missing)
    }

    /// The files version `t` of `table` references that its folder does not hold.
    async fn missing_in(&self, table: &str, t: &DeltaTable) -> Result<Vec<String>> {
        let referenced = data_files(t, table)?;
        if referenced.is_empty() {
            return Ok(Vec::new());
        }
        let folder = self.prefix().clone().join(table);
        let present: std::collections::HashSet<String> = self
            .list_under(&folder)
            .await?
            .into_iter()
            .map(|(relative, _)| relative)
            .collect();
        Ok(referenced
            .into_iter()
            .map(|(path, _)| path)
            .filter(|p| !p.contains("://") && !present.contains(p))
            .collect())
    }
}

impl Lake {
    /// Drops from `table`'s current version the data files it references that are gone (see
    /// [`Lake::missing_files`]) in one commit, as Delta's `FSCK REPAIR TABLE` does: their rows
    /// are lost, and the table reads again. Returns the files dropped (none: no commit).
    pub async fn repair(&self, table: &str) -> Result<Vec<String>> {
        use deltalake::kernel::Action;
        use deltalake::kernel::transaction::CommitBuilder;
        let missing = self.missing_files(table).await?;
        if missing.is_empty() {
            return Ok(missing);
        }
        let delta_err = |source| SinkError::Delta {
            table: table.to_owned(),
            source,
        };
        let Some(t) = self.load_table(table).await? else {
            return Ok(Vec::new());
        };
        let state = t.snapshot().map_err(delta_err)?;
        let gone: std::collections::HashSet<&str> = missing.iter().map(String::as_str).collect();
        let actions: Vec<Action> = state
            .log_data()
            .iter()
            .filter(|f| gone.contains(f.path().as_ref()))
            .map(|f| Action::Remove(f.remove_action(true)))
            .collect();
        let properties = crate::table_commit::commit_properties()
            .with_metadata([("errlake.repair".to_owned(), serde_json::json!(missing))]);
        CommitBuilder::from(properties)
            .with_actions(actions)
            .build(
                Some(state),
                t.log_store(),
                deltalake::protocol::DeltaOperation::FileSystemCheck {},
            )
            .await
            .map_err(delta_err)?;
        Ok(missing)
    }
}

/// Whether `needle` occurs in `haystack`.
fn memchr_contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
