//! Cross-crate integration tests, in one binary so that they link once.

// Test code panics on purpose: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// Helpers are `pub` within the test crate for its modules.
#![allow(unreachable_pub)]

mod calls;
mod coordinator;
mod examples;
mod faults;
mod guests;
mod hostile;
mod load;
mod macros;
mod metrics;
mod pki;
mod pool;
mod properties;
mod python;
mod scrape;
mod supernodes;
mod support;
mod tcp;
mod tls;
mod vectors;
mod worker;
mod worker_pool;
