//! The loop that drives one (resource, partition)'s pages through the HTTP client.

use std::sync::Arc;

use http::HeaderMap;
use json_tape::{Document, Records};
use url::Url;

use http_core::Client;

use crate::json_path::JsonPath;
use crate::paginator::{Next, Paginator, PagingProblem, Strategy};
use crate::{PaginateError, Result};

/// One fetched page: its records, selected from the body, and what came with them.
#[derive(Debug, Clone)]
pub struct FetchedPage {
    /// The URL fetched.
    pub url: Url,
    /// The page's position in this run's part of its paging, from 0.
    pub page_idx: usize,
    /// The page's number in its paging, from 1, counting the pages earlier runs landed of
    /// an unfinished paging this run resumed: the number errors and logs show.
    pub page_no: usize,
    /// The response headers.
    pub headers: HeaderMap,
    /// The records (the data selector's list; a lone object becomes a list of one), in the
    /// page's parsed body.
    pub records: Records,
    /// The body's size in bytes.
    pub n_bytes: usize,
    /// Retries this page took.
    pub n_retries: u32,
}

/// The pages of one paging, fetched one after another.
#[derive(Debug)]
pub struct PageLoop {
    client: Client,
    paginator: Paginator,
    data_selector: Option<JsonPath>,
    /// Where the paging is, for errors: `resource` or `resource[partition]`.
    label: String,
    next: Option<Url>,
    page_idx: usize,
    /// Pages of this paging that earlier runs landed (a resumed paging).
    pages_before: usize,
    max_pages: Option<usize>,
}

impl PageLoop {
    /// A paging that starts at `first_url`. `label` names the resource and partition in errors.
    pub fn new(
        client: Client,
        first_url: Url,
        strategy: Strategy,
        data_selector: Option<JsonPath>,
        label: String,
        max_pages: Option<usize>,
    ) -> Self {
        PageLoop {
            client,
            paginator: Paginator::new(strategy),
            data_selector,
            label,
            next: Some(first_url),
            page_idx: 0,
            pages_before: 0,
            max_pages,
        }
    }

    /// A paging resumed after `pages_before` pages that earlier runs landed: page numbers in
    /// errors go on from there.
    pub fn resuming_after(mut self, pages_before: usize) -> Self {
        self.pages_before = pages_before;
        self
    }

    /// The URL of the next page, if the paging goes on (`None` after its last page).
    pub fn next_url(&self) -> Option<&Url> {
        self.next.as_ref()
    }

    /// The next page, or `None` when the paging is done.
    pub async fn next_page(&mut self) -> Result<Option<FetchedPage>> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        if self.max_pages.is_some_and(|m| self.page_idx >= m) {
            tracing::warn!(paging = %self.label, max_pages = self.page_idx, "stopping at max_pages");
            return Ok(None);
        }
        let page_idx = self.page_idx;
        let page_no = self.pages_before + page_idx + 1;
        let response = self
            .client
            .get(&url)
            .await
            .map_err(|source| PaginateError::Fetch {
                paging: self.label.clone(),
                page_no,
                source,
            })?;
        let n_bytes = response.body.len();
        let body: Arc<Document> = Arc::new(crate::body::parse_body(response.body).map_err(
            |p| PaginateError::Body {
                paging: self.label.clone(),
                page_no,
                url: self.client.redact(&url),
                offset: p.offset,
                problem: p.problem,
            },
        )?);
        let selected = match &self.data_selector {
            Some(path) => path
                .find(body.root())
                .ok_or_else(|| PaginateError::DataSelector {
                    paging: self.label.clone(),
                    page_no,
                    selector: path.to_string(),
                })?,
            None => body.root(),
        };
        let next = self
            .paginator
            .next_in(&url, &response.headers, body.root(), selected)
            .map_err(|problem| match problem {
                PagingProblem::Repeated(u) => PaginateError::Loop {
                    paging: self.label.clone(),
                    page_no,
                    url: self
                        .client
                        .redact(&Url::parse(&u).unwrap_or_else(|_| url.clone())),
                },
                PagingProblem::Malformed(m) | PagingProblem::StopCondition(m) => {
                    PaginateError::Paginator {
                        paging: self.label.clone(),
                        page_no,
                        message: m,
                    }
                }
            })?;
        let selected = selected.position();
        let records = Records::select(body.clone(), selected).map_err(|found| {
            PaginateError::DataSelector {
                paging: self.label.clone(),
                page_no,
                selector: format!(
                    "{} (found {})",
                    self.data_selector
                        .as_ref()
                        .map_or("$".to_owned(), ToString::to_string),
                    found.0.described()
                ),
            }
        })?;
        if let Next::Url(u) = next {
            if records.is_empty() && !self.paginator.continues_past_empty_pages() {
                tracing::warn!(paging = %self.label, page_no, "empty page although a next page was announced; stopping");
            } else {
                self.next = Some(u);
            }
        }
        self.page_idx += 1;
        Ok(Some(FetchedPage {
            url,
            page_idx,
            page_no,
            headers: response.headers,
            records,
            n_bytes,
            n_retries: response.n_retries,
        }))
    }
}
