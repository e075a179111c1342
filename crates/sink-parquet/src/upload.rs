//! A Parquet file encoded as its batches come and uploaded as it grows, without ever holding a
//! row group twice.
//!
//! parquet's `AsyncArrowWriter` serializes a finished row group into one `Vec`, which grows
//! by doubling while the row group's encoded column chunks are still held, and then copies
//! it into the upload's part buffers: closing a 20 MB row group briefly took 50 MB more. Here
//! the encoder writes into pieces of at most [`PIECE_BYTES`] ([`Pieces`]), each column
//! chunk is freed once written, and the pieces go to `object_store`'s `BufWriter` by value.

use std::io::Write;

use arrow_array::RecordBatch;
use bytes::Bytes;
use object_store::buffered::BufWriter;
use parquet::arrow::ArrowWriter;
use parquet::errors::{ParquetError, Result};
use tokio::io::AsyncWriteExt;

/// The largest piece the encoder's output is cut into: a few page sizes, so a piece is
/// rarely cut inside a page, and small beside a row group.
const PIECE_BYTES: usize = 1 << 20;

/// The smallest piece allocated: a page header alone does not take a whole piece.
const MIN_PIECE_BYTES: usize = 64 << 10;

/// A Parquet file of a table being written and uploaded.
pub(crate) struct UploadingParquetWriter {
    encoder: ArrowWriter<Pieces>,
    upload: BufWriter,
}

impl UploadingParquetWriter {
    pub(crate) fn try_new(
        upload: BufWriter,
        schema: arrow_schema::SchemaRef,
        properties: parquet::file::properties::WriterProperties,
    ) -> Result<Self> {
        Ok(UploadingParquetWriter {
            encoder: ArrowWriter::try_new(Pieces::default(), schema, Some(properties))?,
            upload,
        })
    }

    /// Encodes `batch`; a row group it completes is uploaded.
    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.encoder.write(batch)?;
        self.send().await
    }

    /// Ends the row group in progress and uploads it.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        self.encoder.flush()?;
        self.send().await
    }

    /// Ends the file: its last row group and footer are uploaded and the upload completed.
    pub(crate) async fn finish(&mut self) -> Result<()> {
        self.encoder.finish()?;
        self.send().await?;
        self.upload.shutdown().await.map_err(external)
    }

    /// The bytes of the file so far (row groups ended, and the footer once finished).
    pub(crate) fn bytes_written(&self) -> usize {
        self.encoder.bytes_written()
    }

    /// The memory held by the row group in progress.
    pub(crate) fn memory_size(&self) -> usize {
        self.encoder.memory_size()
    }

    /// The upload, for aborting an unfinished file.
    pub(crate) fn into_upload(self) -> BufWriter {
        self.upload
    }

    /// Hands what the encoder wrote to the upload.
    async fn send(&mut self) -> Result<()> {
        for piece in self.encoder.inner_mut().take() {
            self.upload.put(piece).await.map_err(external)?;
        }
        Ok(())
    }
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> ParquetError {
    ParquetError::External(Box::new(e))
}

/// The encoder's output so far, in pieces of at most [`PIECE_BYTES`] each allocated once at
/// the size it will hold (at least [`MIN_PIECE_BYTES`]): no buffer doubles, and nothing is
/// copied after the encoder's own write.
#[derive(Debug, Default)]
struct Pieces {
    full: Vec<Bytes>,
    current: Vec<u8>,
}

impl Pieces {
    /// Everything written since the last call, in order.
    fn take(&mut self) -> Vec<Bytes> {
        let mut pieces = std::mem::take(&mut self.full);
        if !self.current.is_empty() {
            pieces.push(Bytes::from(std::mem::take(&mut self.current)));
        }
        pieces
    }
}

impl Write for Pieces {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.current.capacity() == self.current.len() {
                if !self.current.is_empty() {
                    self.full
                        .push(Bytes::from(std::mem::take(&mut self.current)));
                }
                self.current = Vec::with_capacity(rest.len().clamp(MIN_PIECE_BYTES, PIECE_BYTES));
            }
            let n = rest.len().min(self.current.capacity() - self.current.len());
            self.current.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_keep_every_byte_in_order_and_stay_within_their_bounds() {
        let mut pieces = Pieces::default();
        let mut written = Vec::new();
        for (i, len) in [20, 3 * PIECE_BYTES + 7, 1, 200_000, 0, 64 << 10]
            .into_iter()
            .enumerate()
        {
            let chunk: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            assert_eq!(pieces.write(&chunk).unwrap(), len);
            written.extend_from_slice(&chunk);
        }
        let taken = pieces.take();
        assert!(
            taken
                .iter()
                .all(|p| !p.is_empty() && p.len() <= PIECE_BYTES)
        );
        assert_eq!(taken.concat(), written);
        assert!(pieces.take().is_empty(), "a second take has nothing new");
    }
}
