//! Every Kubernetes API call the operator makes, as (verb, API group,
//! resource). The Helm chart's ClusterRole and Role grant exactly these —
//! a chart test compares them — and the controller tests check that every
//! request the reconciler makes is in the list.

/// Grants an admission plugin checks rather than a request the operator
/// makes: they never appear in an audit log of the operator's calls.
pub const ADMISSION_ONLY: &[(&str, &str, &str)] =
    &[("update", "earshot.io", "recordingpolicies/finalizers")];

/// Cluster-wide calls: watching policies and what they own, writing them.
/// Server-side apply needs `create` too when the object does not exist yet.
pub const CLUSTER: &[(&str, &str, &str)] = &[
    // The controller's watches.
    ("list", "earshot.io", "recordingpolicies"),
    ("watch", "earshot.io", "recordingpolicies"),
    ("patch", "earshot.io", "recordingpolicies/status"),
    // The objects a policy owns carry `blockOwnerDeletion: true`; where the
    // OwnerReferencesPermissionEnforcement admission plugin is on (as on
    // OpenShift, and in the test control plane), setting it needs `update`
    // on the owner's finalizers. Checked by admission, never a request of
    // its own: see [`ADMISSION_ONLY`].
    ("update", "earshot.io", "recordingpolicies/finalizers"),
    // Host network: the nodes' addresses (watched: a change reconciles),
    // the namespace's Pod Security level; the recorder pods for status.
    ("list", "", "nodes"),
    ("watch", "", "nodes"),
    ("get", "", "namespaces"),
    ("list", "", "pods"),
    // dereference: the storage credentials and the announcement prompt.
    ("get", "", "secrets"),
    ("get", "", "configmaps"),
    // apply: the recorder's objects (watched because the controller owns them).
    ("list", "", "configmaps"),
    ("watch", "", "configmaps"),
    ("create", "", "configmaps"),
    ("patch", "", "configmaps"),
    ("list", "apps", "statefulsets"),
    ("watch", "apps", "statefulsets"),
    ("create", "apps", "statefulsets"),
    ("patch", "apps", "statefulsets"),
    ("list", "apps", "deployments"),
    ("watch", "apps", "deployments"),
    ("create", "apps", "deployments"),
    ("patch", "apps", "deployments"),
    // The console's Deployment and Service go when the policy disables it;
    // so does the recorders' pre-StatefulSet Deployment.
    ("delete", "apps", "deployments"),
    ("list", "", "services"),
    ("watch", "", "services"),
    ("create", "", "services"),
    ("patch", "", "services"),
    ("delete", "", "services"),
    ("create", "policy", "poddisruptionbudgets"),
    ("patch", "policy", "poddisruptionbudgets"),
    ("delete", "policy", "poddisruptionbudgets"),
    // An exposed console's NetworkPolicy, removed when it is no longer exposed.
    ("create", "networking.k8s.io", "networkpolicies"),
    ("patch", "networking.k8s.io", "networkpolicies"),
    ("delete", "networking.k8s.io", "networkpolicies"),
    ("create", "monitoring.coreos.com", "servicemonitors"),
    ("patch", "monitoring.coreos.com", "servicemonitors"),
    // Kubernetes Events about policies.
    ("create", "events.k8s.io", "events"),
    ("patch", "events.k8s.io", "events"),
];

/// Calls in the operator's own namespace: the leader-election Lease.
pub const OWN_NAMESPACE: &[(&str, &str, &str)] = &[
    ("get", "coordination.k8s.io", "leases"),
    ("create", "coordination.k8s.io", "leases"),
    ("patch", "coordination.k8s.io", "leases"),
];

/// The (verb, group, resource) of an API request, from its method and path.
pub fn classify(method: &str, path: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    let (resource, named) = match rest {
        [res] => (res.to_string(), false),
        [res, _name] => (res.to_string(), true),
        [res, _name, sub] => (format!("{res}/{sub}"), true),
        _ => return None,
    };
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", _) => "delete",
        _ => return None,
    };
    Some((verb.to_owned(), group.to_owned(), resource))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        let c = |m, p| classify(m, p).map(|(v, g, r)| format!("{v} {g} {r}"));
        assert_eq!(
            c("GET", "/api/v1/namespaces/acme/secrets/s3").as_deref(),
            Some("get  secrets")
        );
        assert_eq!(
            c(
                "PATCH",
                "/apis/earshot.io/v1alpha1/namespaces/acme/recordingpolicies/office/status"
            )
            .as_deref(),
            Some("patch earshot.io recordingpolicies/status")
        );
        assert_eq!(
            c("POST", "/apis/events.k8s.io/v1/namespaces/acme/events").as_deref(),
            Some("create events.k8s.io events")
        );
        assert_eq!(
            c("GET", "/apis/apps/v1/deployments").as_deref(),
            Some("list apps deployments")
        );
    }
}
