//! Warnings about a failure that repeats (a coordinator that cannot be
//! reached, a certificate it refuses): said once when it starts or
//! changes, not on every retry.

/// Remembers the last failure warned about.
#[derive(Debug, Default)]
pub(crate) struct WarnOnChange {
    last: Option<String>,
}

impl WarnOnChange {
    /// Warns `what: error` unless the same error was the last one warned
    /// about.
    pub(crate) fn failed(&mut self, what: &str, error: &dyn std::fmt::Display) {
        let error = error.to_string();
        if self.last.as_deref() != Some(error.as_str()) {
            tracing::warn!(%error, "{what}; retrying");
            self.last = Some(error);
        }
    }

    /// The failure is over: the next one is warned about again.
    pub(crate) fn recovered(&mut self) {
        self.last = None;
    }
}
