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

use std::future::Future;
use std::pin::Pin;

use lifecycle::PolicyRule;
use s3::{Enforced, S3Client, S3Target, StorageError};

/// What the reconciler asks of a store: check access, then make the bucket
/// enforce a rule. Behind a trait so the controller's tests can watch every
/// storage call (and prove none of them deletes anything).
pub trait Storage: Send + Sync {
    /// Checks credentials and bucket, then keeps `rule`: whether it changed,
    /// and any other rule that expires the policy's recordings sooner.
    fn enforce<'a>(
        &'a self,
        target: S3Target,
        bucket: &'a str,
        rule: &'a PolicyRule,
    ) -> Pin<Box<dyn Future<Output = Result<Enforced, StorageError>> + Send + 'a>>;
}

/// The real thing: S3 over HTTP, one writer per bucket at a time.
#[derive(Debug, Default)]
pub struct S3Storage {
    locks: BucketLocks,
}

impl Storage for S3Storage {
    fn enforce<'a>(
        &'a self,
        target: S3Target,
        bucket: &'a str,
        rule: &'a PolicyRule,
    ) -> Pin<Box<dyn Future<Output = Result<Enforced, StorageError>> + Send + 'a>> {
        Box::pin(async move {
            let _turn = self.locks.lock(&target.endpoint, bucket).await;
            let client = S3Client::new(target);
            client.head_bucket(bucket).await?;
            client.ensure_rule(bucket, rule).await
        })
    }
}
