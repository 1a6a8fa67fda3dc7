//! Step 2 of the reconcile pipeline, **client required**: the storage
//! credentials from the Secret the policy names (and the operator's own key
//! for the store), and the announcement prompt's ConfigMap.

use earshot_crds::policy::{SecretKeys, StorageSpec};
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

/// The tenant's key from the Secret the policy names: (access key id,
/// secret access key), both present and not blank.
fn tenant_key(secret: &Secret, keys: &SecretKeys) -> Result<(String, String), Error> {
    let value = |key: &String| {
        secret_value(secret, key).ok_or_else(|| Error::SecretKeyMissing {
            secret: keys.name.clone(),
            key: key.clone(),
        })
    };
    Ok((
        value(&keys.access_key_id_key)?,
        value(&keys.secret_access_key_key)?,
    ))
}

/// Who talks to the store, from one read of the policy's Secret.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The store with the operator's own key, `None` when the platform gave
    /// it none for this store: the operator then keeps no lifecycle rule
    /// (never with the tenant's key).
    pub operator: Option<S3Target>,
    /// The store with the recorders' key (the policy's Secret): only for
    /// the write probe that proves recordings can be stored.
    pub recorders: S3Target,
    /// Names the probe object: the same while the policy and its Secret
    /// stay as they are, so a key that may not delete leaves one object.
    pub nonce: u64,
}

/// The store, with the operator's own key and the recorders'.
pub async fn storage_target(secrets: &Api<Secret>, v: &Validated) -> Result<Targets, Error> {
    let keys = &v.storage.credentials_secret;
    let secret = get_opt(secrets, "Secret", &keys.name)
        .await?
        .ok_or_else(|| Error::SecretMissing(keys.name.clone()))?;
    let recorders = recorder_target_of(&v.storage, &secret)?;
    let nonce = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        v.policy.metadata.uid.hash(&mut h);
        v.policy.metadata.generation.hash(&mut h);
        secret.metadata.resource_version.hash(&mut h);
        h.finish()
    };
    let operator = match &v.lifecycle_credentials {
        None => None,
        Some(dir) => {
            let (access_key_id, secret_access_key) = operator_key(dir)?;
            Some(S3Target {
                endpoint: v.storage.endpoint.clone(),
                region: v.storage.region.clone(),
                path_style: v.storage.path_style,
                access_key_id,
                secret_access_key,
                operator_key: true,
            })
        }
    };
    Ok(Targets {
        operator,
        recorders,
        nonce,
    })
}

/// The store as the recorders reach it, with their own key from the
/// policy's Secret: only for the write probe that proves they can store
/// recordings, never for lifecycle rules.
fn recorder_target_of(storage: &StorageSpec, secret: &Secret) -> Result<S3Target, Error> {
    let (access_key_id, secret_access_key) = tenant_key(secret, &storage.credentials_secret)?;
    Ok(S3Target {
        endpoint: storage.endpoint.clone(),
        region: storage.region.clone(),
        path_style: storage.path_style,
        access_key_id,
        secret_access_key,
        operator_key: false,
    })
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

/// SIP over TLS: the `kubernetes.io/tls` Secret with `tls.crt` and
/// `tls.key`, and the CA bundle's ConfigMap with `ca.crt` when one is
/// named. Without them no recorder pod could start (it would wait in
/// ContainerCreating with nothing in the policy's status).
pub async fn tls(
    secrets: &Api<Secret>,
    configmaps: &Api<ConfigMap>,
    v: &Validated,
) -> Result<(), Error> {
    let Some(t) = v.policy.spec.recorder.sip.tls.as_ref() else {
        return Ok(());
    };
    let missing = |what: String| Error::TlsMissing(what);
    let secret = get_opt(secrets, "Secret", &t.secret_name)
        .await?
        .ok_or_else(|| missing(format!("Secret {} does not exist", t.secret_name)))?;
    for key in ["tls.crt", "tls.key"] {
        if secret_value(&secret, key).is_none() {
            return Err(missing(format!(
                "Secret {} has no key {key}",
                t.secret_name
            )));
        }
    }
    if let Some(ca) = &t.ca_config_map {
        let cm = get_opt(configmaps, "ConfigMap", ca)
            .await?
            .ok_or_else(|| missing(format!("ConfigMap {ca} does not exist")))?;
        if !cm.data.as_ref().is_some_and(|d| d.contains_key("ca.crt")) {
            return Err(missing(format!("ConfigMap {ca} has no key ca.crt")));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    fn mk_storage() -> StorageSpec {
        serde_json::from_value(serde_json::json!({
            "endpoint": "https://s3.eu-west-1.amazonaws.com",
            "bucket": "recordings",
            "region": "eu-west-1",
            "pathStyle": false,
            "credentialsSecret": {"name": "acme-s3", "accessKeyIdKey": "id", "secretAccessKeyKey": "key"},
        }))
        .expect("a valid StorageSpec")
    }

    fn mk_secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn the_recorders_key_comes_from_the_keys_the_policy_names() {
        let t = recorder_target_of(
            &mk_storage(),
            &mk_secret(&[("id", " AKIDEXAMPLE\n"), ("key", "s3cr3t"), ("other", "x")]),
        )
        .unwrap();
        assert_eq!(
            (
                t.endpoint.as_str(),
                t.region.as_str(),
                t.path_style,
                t.access_key_id.as_str(),
                t.secret_access_key.as_str(),
                t.operator_key
            ),
            (
                "https://s3.eu-west-1.amazonaws.com",
                "eu-west-1",
                false,
                "AKIDEXAMPLE",
                "s3cr3t",
                false
            )
        );
        for (data, missing) in [
            (&[("key", "s3cr3t")][..], "id"),
            (&[("id", "AKIDEXAMPLE"), ("key", "  ")][..], "key"),
        ] {
            match recorder_target_of(&mk_storage(), &mk_secret(data)) {
                Err(Error::SecretKeyMissing { secret, key }) => {
                    assert_eq!((secret.as_str(), key.as_str()), ("acme-s3", missing))
                }
                other => panic!("{missing}: {other:?}"),
            }
        }
    }
}
