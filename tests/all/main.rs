//! Cross-crate integration tests, in one binary so that they link once.

mod vectors;
