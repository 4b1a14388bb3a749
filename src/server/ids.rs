//! Request identifiers.

use std::fmt;

/// `req_` followed by a UUIDv7: unique without coordination, and sortable by
/// time, so ledger keys and log lines order naturally.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// A fresh id, for a request that has just arrived.
    pub fn new() -> Self {
        RequestId(format!("req_{}", uuid::Uuid::now_v7().simple()))
    }

    /// The id as it appears in headers, log lines and the ledger.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_prefixed() {
        let a = RequestId::new();
        let b = RequestId::new();
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("req_"));
        assert_eq!(a.as_str().len(), 4 + 32);
    }
}
