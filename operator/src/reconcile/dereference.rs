//! Step 2 of the reconcile pipeline, **client required**: the storage
//! credentials from the Secret the policy names, and the announcement
//! prompt's ConfigMap.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use serde::de::DeserializeOwned;

use super::Error;
use crate::build::Validated;
use crate::storage::s3::S3Target;

/// An object of the policy's namespace, `None` when it does not exist.
async fn get_opt<K>(api: &Api<K>, kind: &str, name: &str) -> Result<Option<K>, Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.map_err(|source| Error::Kube {
        what: format!("get {kind} {name}"),
        source,
    })
}

/// A credential from a Secret: present and not blank.
fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The store and the operator's own key for it, `None` when the platform
/// gave it none for this store: the operator then talks to the store not at
/// all. The tenant's key is never sent anywhere; its Secret must still exist
/// with both keys (the recorders mount it), and only that is checked.
pub async fn storage_target(
    secrets: &Api<Secret>,
    v: &Validated,
) -> Result<Option<S3Target>, Error> {
    let keys = &v.storage.credentials_secret;
    let secret = get_opt(secrets, "Secret", &keys.name)
        .await?
        .ok_or_else(|| Error::SecretMissing(keys.name.clone()))?;
    for key in [&keys.access_key_id_key, &keys.secret_access_key_key] {
        if secret_value(&secret, key).is_none() {
            return Err(Error::SecretKeyMissing {
                secret: keys.name.clone(),
                key: key.clone(),
            });
        }
    }
    let Some(dir) = &v.lifecycle_credentials else {
        return Ok(None);
    };
    let (access_key_id, secret_access_key) = operator_key(dir)?;
    Ok(Some(S3Target {
        endpoint: v.storage.endpoint.clone(),
        region: v.storage.region.clone(),
        path_style: v.storage.path_style,
        access_key_id,
        secret_access_key,
        operator_key: true,
    }))
}

/// The operator's own key for a store: files `accessKeyId` and
/// `secretAccessKey` in `dir` (a mounted Secret).
pub fn operator_key(dir: &std::path::Path) -> Result<(String, String), Error> {
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::OperatorKeyMissing(path.display().to_string()))
    };
    Ok((read("accessKeyId")?, read("secretAccessKey")?))
}

/// Checks that the prompt of `Prompt` announcements exists, so the recorder
/// pods (which mount it) can start.
pub async fn prompt(configmaps: &Api<ConfigMap>, v: &Validated) -> Result<(), Error> {
    let Some(p) = v.policy.spec.announcement.prompt_in_use() else {
        return Ok(());
    };
    let missing = || Error::PromptMissing {
        config_map: p.config_map.clone(),
        key: p.key.clone(),
    };
    let cm = get_opt(configmaps, "ConfigMap", &p.config_map)
        .await?
        .ok_or_else(missing)?;
    let has = cm
        .binary_data
        .as_ref()
        .is_some_and(|d| d.contains_key(&p.key))
        || cm.data.as_ref().is_some_and(|d| d.contains_key(&p.key));
    if has { Ok(()) } else { Err(missing()) }
}

/// When the policy's console is enabled: what is wrong with the read-only
/// key's Secret, if anything. The console pod waits for it (Kubernetes
/// retries); the operator says why in an Event.
pub async fn console_secret(secrets: &Api<Secret>, v: &Validated) -> Result<Option<String>, Error> {
    let Some(c) = v.policy.spec.console.as_ref().filter(|c| c.enabled) else {
        return Ok(None);
    };
    let keys = &c.credentials_secret;
    let Some(secret) = get_opt(secrets, "Secret", &keys.name).await? else {
        return Ok(Some(format!(
            "Secret {} named in spec.console.credentialsSecret does not exist in the policy's namespace; the console starts once it does",
            keys.name
        )));
    };
    let missing: Vec<&str> = [&keys.access_key_id_key, &keys.secret_access_key_key]
        .into_iter()
        .filter(|k| secret_value(&secret, k).is_none())
        .map(String::as_str)
        .collect();
    Ok((!missing.is_empty()).then(|| {
        format!(
            "Secret {} has no key {} (spec.console.credentialsSecret)",
            keys.name,
            missing.join(", ")
        )
    }))
}
