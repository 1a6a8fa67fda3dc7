//! Step 4 of the reconcile pipeline, **client required**: server-side apply
//! of every built object with one field manager; a PodDisruptionBudget no
//! longer wanted is removed.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Error;
use crate::build::{
    Validated, build_configmap, build_deployment, build_pdb, build_service, build_servicemonitor,
    object_name, servicemonitor_resource,
};
use crate::config::FIELD_MANAGER;

async fn apply<K>(api: &Api<K>, name: &str, obj: &K, kind: &str) -> Result<K, Error>
where
    K: Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|source| Error::Kube {
        what: format!("apply {kind} {name}"),
        source,
    })
}

/// Applies the policy's objects; returns the Deployment as the API server has it.
/// The ServiceMonitor only when the cluster has the Prometheus Operator's CRD.
pub async fn apply_all(
    client: &Client,
    v: &Validated,
    service_monitor: bool,
) -> Result<Deployment, Error> {
    let ns = v.namespace.as_str();
    let name = object_name(&v.name);
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), ns),
        &name,
        &build_configmap(v),
        "ConfigMap",
    )
    .await?;
    let deployment = apply(
        &Api::<Deployment>::namespaced(client.clone(), ns),
        &name,
        &build_deployment(v),
        "Deployment",
    )
    .await?;
    apply(
        &Api::<Service>::namespaced(client.clone(), ns),
        &name,
        &build_service(v),
        "Service",
    )
    .await?;
    if service_monitor {
        let api =
            Api::<DynamicObject>::namespaced_with(client.clone(), ns, &servicemonitor_resource());
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&build_servicemonitor(v)),
        )
        .await
        .map_err(|source| Error::Kube {
            what: format!("apply ServiceMonitor {name}"),
            source,
        })?;
    }
    let pdbs = Api::<PodDisruptionBudget>::namespaced(client.clone(), ns);
    match build_pdb(v) {
        Some(pdb) => {
            apply(&pdbs, &name, &pdb, "PodDisruptionBudget").await?;
        }
        None => match pdbs.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::Kube {
                    what: format!("delete PodDisruptionBudget {name}"),
                    source,
                });
            }
        },
    }
    Ok(deployment)
}
