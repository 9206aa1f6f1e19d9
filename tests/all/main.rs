//! Cross-crate integration tests, in one binary so that they link once.

// Test code panics on purpose: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod properties;
mod tcp;
mod vectors;
