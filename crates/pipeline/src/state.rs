//! The pipeline state in the destination: per (resource, partition), the incremental cursor
//! and where an unfinished paging goes on, as rows of the Delta table `_errlake_state`,
//! merged on `id` at each checkpoint after the data tables it describes; and the tracker
//! that says which state the landed pages make true.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};

use sink_parquet::{Lake, LoadWriter, ParquetSinkConfig, TableCommit};
use source_errors::{PartitionState, StateKey};
use transform::{NormalizeConfig, Normalizer, SchemaRegistry, TableMeta, WriteDisposition};

use crate::PipelineError;

/// The state table's name: dlt keeps its state in `_dlt_pipeline_state`; ours holds one row
/// per (resource, partition).
pub const STATE_TABLE: &str = "_errlake_state";

/// One (resource, partition)'s row of the state table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoredState {
    /// The cursor and resume point.
    pub state: PartitionState,
    /// Why the last run's paging failed, if it did (under `--keep-going`).
    pub error: Option<String>,
    /// The load that wrote the row.
    pub load_id: Option<String>,
    /// When (RFC 3339).
    pub updated_at: Option<String>,
    /// The shard (`1/4`) whose run wrote the row; `None` for an unsplit run.
    pub shard: Option<String>,
}

/// The state the destination holds; empty when it has none yet.
pub async fn load_state(lake: &Lake) -> Result<HashMap<StateKey, StoredState>, PipelineError> {
    let Some(rows) = lake.read_rows(STATE_TABLE).await? else {
        return Ok(HashMap::new());
    };
    let text = |row: &serde_json::Map<String, Value>, k: &str| {
        row.get(k).and_then(Value::as_str).map(str::to_owned)
    };
    let mut state = HashMap::new();
    for row in rows {
        let (Some(resource), partition) = (text(&row, "resource"), text(&row, "partition")) else {
            continue;
        };
        state.insert(
            (resource, partition.unwrap_or_default()),
            StoredState {
                state: PartitionState {
                    cursor: text(&row, "cursor"),
                    resume_url: text(&row, "resume_url"),
                    resume_cursor: text(&row, "resume_cursor"),
                    resume_page: text(&row, "resume_page").and_then(|n| n.parse().ok()),
                },
                error: text(&row, "error"),
                load_id: text(&row, "load_id"),
                updated_at: text(&row, "updated_at"),
                shard: text(&row, "shard"),
            },
        );
    }
    Ok(state)
}

/// Writes the changed rows of the state as one merge commit of the state table; no commit
/// when `changes` is empty.
pub(crate) async fn commit_state(
    (lake, sink): (&Lake, &ParquetSinkConfig),
    registry: &SchemaRegistry,
    load_id: &str,
    changes: &BTreeMap<StateKey, StoredState>,
) -> Result<Vec<TableCommit>, PipelineError> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let meta = Arc::new(TableMeta {
        name: STATE_TABLE.into(),
        parent: None,
        root: STATE_TABLE.into(),
        primary_key: Some("id".into()),
        write_disposition: WriteDisposition::Merge,
    });
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let records: Vec<Value> = changes
        .iter()
        .map(|((resource, partition), s)| {
            json!({
                "id": format!("{resource}|{partition}"),
                "resource": resource,
                "partition": partition,
                "cursor": s.state.cursor,
                "resume_url": s.state.resume_url,
                "resume_cursor": s.state.resume_cursor,
                // As text, as lakes written before null-only columns were declared have it.
                "resume_page": s.state.resume_page.map(|n| n.to_string()),
                "error": s.error,
                "load_id": load_id,
                "updated_at": now,
                "shard": s.shard,
            })
        })
        .collect();
    // The state's own columns are fixed; the user's hints and contracts are for API data.
    // Its rows change with every write (`load_id`, `updated_at`): no content hashes.
    let mut normalizer =
        Normalizer::new(NormalizeConfig::default(), registry.clone()).without_content_hashes();
    let batches = normalizer
        .normalize(&meta, load_id, 0, &records)
        .map_err(|source| PipelineError::Transform {
            resource: STATE_TABLE.into(),
            partition: String::new(),
            page_no: 1,
            source: Box::new(source),
        })?;
    // The user's `[sink]` settings hold for the state table too (its history, the grace of
    // orphaned files, the encoding).
    let mut writer = LoadWriter::new(lake.clone(), sink.clone(), load_id.to_owned(), vec![meta])
        .declaring_null_only_columns_of(registry.clone());
    writer.write(0, batches).await?;
    Ok(writer.commit().await?)
}

/// Which state the landed pages make true, per (resource, partition): the state after the
/// last page of the unbroken run of pages from the paging's first (pages reach the sink out
/// of order, through several transform workers).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pagings: HashMap<StateKey, Paging>,
}

#[derive(Debug, Default)]
struct Paging {
    next_idx: usize,
    waiting: BTreeMap<usize, Option<PartitionState>>,
    state: Option<PartitionState>,
}

impl Progress {
    /// A page landed (it is in staged files that the next commit adds).
    pub(crate) fn landed(
        &mut self,
        key: StateKey,
        page_idx: usize,
        state_after: Option<PartitionState>,
    ) {
        let p = self.pagings.entry(key).or_default();
        p.waiting.insert(page_idx, state_after);
        while let Some(state) = p.waiting.remove(&p.next_idx) {
            if state.is_some() {
                p.state = state;
            }
            p.next_idx += 1;
        }
    }

    /// The state each paging has reached.
    pub(crate) fn states(&self) -> impl Iterator<Item = (&StateKey, &PartitionState)> {
        self.pagings
            .iter()
            .filter_map(|(k, p)| p.state.as_ref().map(|s| (k, s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(url: &str) -> Option<PartitionState> {
        Some(PartitionState {
            cursor: None,
            resume_url: Some(url.into()),
            resume_cursor: None,
            resume_page: None,
        })
    }

    #[test]
    fn the_state_follows_the_unbroken_run_of_pages() {
        let key: StateKey = ("events".into(), "project_id=1".into());
        let mut progress = Progress::default();
        progress.landed(key.clone(), 1, at("page-2"));
        assert_eq!(progress.states().count(), 0, "page 0 has not landed");
        progress.landed(key.clone(), 0, at("page-1"));
        progress.landed(key.clone(), 3, at("page-4"));
        let states: Vec<_> = progress.states().collect();
        assert_eq!(states.len(), 1);
        assert_eq!(states[0].1.resume_url.as_deref(), Some("page-2"));
        progress.landed(key.clone(), 2, None);
        let states: Vec<_> = progress.states().collect();
        assert_eq!(states[0].1.resume_url.as_deref(), Some("page-4"));
    }
}
