//! End-to-end tests of whole errlake pipelines live in `it/`; this library is empty.
