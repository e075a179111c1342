//! Paginators and the loop that drives one resource's pages through `http-core`.
//!
//! Role in the pipeline: between the HTTP client and the source. A [`Paginator`] is a pure
//! state machine (the request made and its response in, the next URL or the end out), so it
//! is tested without a server; a [`PageLoop`] fetches page after page with a
//! [`http_core::Client`], parses each body once, selects the records and asks the paginator
//! for the next URL. Next URLs are used exactly as the API gave them.
//!
//! The loop sits behind the default feature `fetch`; without it (`default-features = false`)
//! the crate is the paginators, the stop condition and the JSON paths, with no HTTP client
//! and no async runtime.
//!
//! Guards: a next URL seen before in the same paging is an error (it would loop), an empty
//! page where more were announced ends the paging with a warning, and `max_pages` caps it.
//!
//! ```
//! use paginate::{Next, Paginator, PaginatorConfig};
//! let config: PaginatorConfig = serde_json::from_value(serde_json::json!({
//!     "type": "cursor", "cursor_param": "Link", "limit": 50,
//!     "stop_condition": "not headers.get('Link') or 'rel=\"next\"' not in headers.get('Link')",
//! })).unwrap();
//! let (strategy, first_params) = config.compile().unwrap();
//! assert_eq!(first_params, vec![("per_page".to_string(), "50".to_string())]);
//! let mut paginator = Paginator::new(strategy);
//! let mut headers = http::HeaderMap::new();
//! headers.insert("link", "<https://api.example.com/x?offset=50>; rel=\"next\"".parse().unwrap());
//! let url = "https://api.example.com/x".parse().unwrap();
//! let next = paginator.next(&url, &headers, &serde_json::json!([]), &serde_json::json!([1])).unwrap();
//! assert_eq!(next, Next::Url("https://api.example.com/x?offset=50".parse().unwrap()));
//! ```

#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod body;
mod json_path;
#[cfg(feature = "fetch")]
mod page_loop;
mod paginator;
mod stop_condition;

pub use body::{BodyProblem, MAX_DEPTH, parse_body};
pub use json_path::JsonPath;
#[cfg(feature = "fetch")]
pub use page_loop::{FetchedPage, PageLoop};
pub use paginator::{
    FirstRequestParams, MAX_PAGE_SIZE, Next, Paginator, PaginatorConfig, PagingProblem,
    SettingError, Strategy, check_page_size, next_link,
};
pub use stop_condition::StopCondition;

/// Why a paging stopped with an error. `paging` names the resource and partition.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PaginateError {
    /// The request for a page failed (after retries, where retryable).
    #[cfg(feature = "fetch")]
    #[error("paginate: page {page_no} of `{paging}`")]
    Fetch {
        /// The resource and partition.
        paging: String,
        /// The page's number in its paging, from 1 (an unfinished paging resumed by a later
        /// run goes on counting).
        page_no: usize,
        /// The HTTP failure.
        #[source]
        source: http_core::FetchError,
    },
    /// The body is not JSON the pipeline can read.
    #[error(
        "paginate: page {page_no} of `{paging}` ({url}) is not valid JSON at byte {offset}: {problem}"
    )]
    Body {
        /// The resource and partition.
        paging: String,
        /// The page's number in its paging, from 1 (an unfinished paging resumed by a later
        /// run goes on counting).
        page_no: usize,
        /// The URL, redacted.
        url: String,
        /// The byte of the body where the problem is.
        offset: usize,
        /// What is wrong there.
        problem: String,
    },
    /// The data selector found nothing usable.
    #[error("paginate: data selector `{selector}` found no list in page {page_no} of `{paging}`")]
    DataSelector {
        /// The resource and partition.
        paging: String,
        /// The page's number in its paging, from 1 (an unfinished paging resumed by a later
        /// run goes on counting).
        page_no: usize,
        /// The selector.
        selector: String,
    },
    /// The next URL was already fetched in this paging.
    #[error(
        "paginate: page {page_no} of `{paging}` points back to {url}, which was fetched already; stopping to avoid a loop"
    )]
    Loop {
        /// The resource and partition.
        paging: String,
        /// The page's number in its paging, from 1 (an unfinished paging resumed by a later
        /// run goes on counting).
        page_no: usize,
        /// The repeated URL, redacted.
        url: String,
    },
    /// The paginator could not read the response.
    #[error("paginate: page {page_no} of `{paging}`: {message}")]
    Paginator {
        /// The resource and partition.
        paging: String,
        /// The page's number in its paging, from 1 (an unfinished paging resumed by a later
        /// run goes on counting).
        page_no: usize,
        /// What went wrong.
        message: String,
    },
}

/// The result type of this crate.
pub type Result<T, E = PaginateError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
