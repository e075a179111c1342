//! What the source, the normalizer and the lake say alike about a resource's table: how its
//! rows land ([`WriteDisposition`]).
//!
//! Role in the pipeline: the one definition the config (`source-errors`) reads and the stages
//! downstream (`transform`, `sink-parquet`) act on, so no stage maps one enum onto another.
//! It depends on nothing of errlake's, so every crate may use it.
//!
//! ```
//! use table_model::WriteDisposition;
//! let d: WriteDisposition = serde_json::from_str("\"merge\"").unwrap();
//! assert_eq!(d, WriteDisposition::Merge);
//! assert_eq!(d.to_string(), "merge");
//! assert_eq!(WriteDisposition::default(), WriteDisposition::Append);
//! ```

#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

use std::fmt;

/// How a resource's rows land in its table (dlt's `write_disposition`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum WriteDisposition {
    /// Rows are added to the table (the default, as in dlt).
    #[default]
    Append,
    /// The run's rows replace the table's content in one commit.
    Replace,
    /// Rows replace the rows with the same primary key; new keys are added.
    Merge,
}

impl fmt::Display for WriteDisposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteDisposition::Append => "append",
            WriteDisposition::Replace => "replace",
            WriteDisposition::Merge => "merge",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::WriteDisposition;

    #[test]
    fn a_disposition_reads_and_prints_as_the_pipeline_file_writes_it() {
        for (text, d) in [
            ("append", WriteDisposition::Append),
            ("replace", WriteDisposition::Replace),
            ("merge", WriteDisposition::Merge),
        ] {
            let read: WriteDisposition = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(read, d);
            assert_eq!(d.to_string(), text);
            assert_eq!(serde_json::to_value(d).unwrap(), serde_json::json!(text));
        }
        assert!(serde_json::from_value::<WriteDisposition>(serde_json::json!("upsert")).is_err());
    }
}
