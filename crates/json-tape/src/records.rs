//! The records of a page: a shared document and where its records are on the tape.

use std::sync::Arc;

use crate::{Document, Kind, Value};

/// The records a data selector found in a page: the items of a list, a lone object, or
/// none for `null`. Cheap to clone; the document is shared.
#[derive(Debug, Clone)]
pub struct Records {
    doc: Arc<Document>,
    positions: Vec<u32>,
}

/// What a data selector found instead of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotRecords(pub Kind);

impl Records {
    /// The records at `selected` (a position of `doc`, from [`Value::position`]).
    pub fn select(doc: Arc<Document>, selected: u32) -> Result<Records, NotRecords> {
        let value = doc.at(selected);
        let positions = match value.kind() {
            Kind::Array => value.elements().map(|v| v.position()).collect(),
            Kind::Null => Vec::new(),
            Kind::Object => vec![selected],
            other => return Err(NotRecords(other)),
        };
        Ok(Records { doc, positions })
    }

    /// The records of a list of `serde_json` values (written as JSON text and parsed).
    pub fn from_serde(records: &[serde_json::Value]) -> Result<Records, crate::Problem> {
        let doc = Arc::new(Document::parse(
            serde_json::to_vec(records).unwrap_or_default(),
        )?);
        Records::select(doc, 0).map_err(|_| crate::Problem {
            offset: 0,
            problem: "not a list".into(),
        })
    }

    /// No records.
    pub fn empty() -> Records {
        Records {
            doc: Arc::new(Document {
                text: "[]".into(),
                nodes: Vec::new(),
            }),
            positions: Vec::new(),
        }
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// The records, in page order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Value<'_>> + Clone {
        self.positions.iter().map(|&p| Value {
            doc: &self.doc,
            idx: p,
        })
    }

    /// The document the records are in.
    pub fn document(&self) -> &Arc<Document> {
        &self.doc
    }
}
