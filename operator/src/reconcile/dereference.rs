//! Step 1 of the reconcile pipeline, **client required**: the storage
//! credentials from the Secret the policy names.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::Error;
use crate::build::Validated;
use crate::storage::s3::S3Target;

/// The store and the credentials to reach it.
pub async fn storage_target(secrets: &Api<Secret>, v: &Validated) -> Result<S3Target, Error> {
    let keys = &v.storage.credentials_secret;
    let secret = secrets
        .get_opt(&keys.name)
        .await
        .map_err(|source| Error::Kube {
            what: format!("get Secret {}", keys.name),
            source,
        })?;
    let secret = secret.ok_or_else(|| Error::SecretMissing(keys.name.clone()))?;
    let data = secret.data.unwrap_or_default();
    let value = |key: &str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::SecretKeyMissing {
                secret: keys.name.clone(),
                key: key.to_owned(),
            })
    };
    Ok(S3Target {
        endpoint: v.storage.endpoint.clone(),
        region: v.storage.region.clone(),
        path_style: v.storage.path_style,
        access_key_id: value(&keys.access_key_id_key)?,
        secret_access_key: value(&keys.secret_access_key_key)?,
    })
}
