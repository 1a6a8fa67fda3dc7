//! Step 5 of the reconcile pipeline, **client required**: the policy's
//! storage — credentials and bucket checked, and the lifecycle rule that
//! enforces its retention kept in the bucket.

pub mod lifecycle;
pub mod s3;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One lock per bucket: lifecycle configuration is read-modify-write on the
/// whole document, so two policies on one bucket must take turns.
#[derive(Debug, Default, Clone)]
pub struct BucketLocks {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl BucketLocks {
    /// Waits for the bucket's turn.
    pub async fn lock(&self, endpoint: &str, bucket: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(format!("{endpoint}/{bucket}"))
                .or_default()
                .clone()
        };
        lock.lock_owned().await
    }
}
