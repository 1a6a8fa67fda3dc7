//! Step 5 of the reconcile pipeline, **client required**: the policy's
//! storage — credentials and bucket checked, the lifecycle rule that
//! enforces its retention kept in the bucket (with the operator's own key),
//! and the recorders' key proved able to write under the policy's prefix
//! ([`probe_write`]).

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

use earshot_contracts::layout::Prefix;
use lifecycle::PolicyRule;
use s3::{Enforced, Probed, S3Client, S3Target, StorageError};

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

    /// Proves with the recorders' key (`target`) that recordings can be
    /// stored under `prefix` ([`probe_write`]).
    fn probe<'a>(
        &'a self,
        target: S3Target,
        bucket: &'a str,
        prefix: &'a str,
        nonce: u64,
    ) -> Pin<Box<dyn Future<Output = Result<Probed, StorageError>> + Send + 'a>>;
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

    fn probe<'a>(
        &'a self,
        target: S3Target,
        bucket: &'a str,
        prefix: &'a str,
        nonce: u64,
    ) -> Pin<Box<dyn Future<Output = Result<Probed, StorageError>> + Send + 'a>> {
        Box::pin(probe_write(target, bucket, prefix, nonce))
    }
}

/// The key of a write probe under `prefix`:
/// `<prefix>/.earshot-probe/<nonce, 16 hex digits>`. Under the prefix, so
/// the recorders' key (perhaps allowed only there) is tried where it writes
/// recordings, and a probe it may not delete expires by the policy's own
/// lifecycle rule; not a recording's name, so the console never lists it.
pub fn probe_key(prefix: &str, nonce: u64) -> String {
    Prefix::new(prefix).key(&format!(".earshot-probe/{nonce:016x}"))
}

/// Checks with the recorders' own key (`target`, from the policy's
/// credentials Secret) that recordings can be stored under `prefix`: writes
/// a small object at [`probe_key`]`(prefix, nonce)`, reads it back and
/// deletes it (see [`S3Client::probe_write`]). `nonce` is the caller's
/// randomness, so two reconciles never share a probe.
pub async fn probe_write(
    target: S3Target,
    bucket: &str,
    prefix: &str,
    nonce: u64,
) -> Result<Probed, StorageError> {
    S3Client::new(target)
        .probe_write(bucket, prefix, &probe_key(prefix, nonce))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_keys_go_under_the_prefix() {
        assert_eq!(
            probe_key("acme/office/", 0xff),
            "acme/office/.earshot-probe/00000000000000ff"
        );
        assert_eq!(
            probe_key("/acme/office", u64::MAX),
            "acme/office/.earshot-probe/ffffffffffffffff"
        );
        assert_eq!(probe_key("", 1), ".earshot-probe/0000000000000001");
    }
}
