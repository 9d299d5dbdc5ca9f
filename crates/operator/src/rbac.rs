//! Every Kubernetes API call the operator makes, as RBAC rules. The chart's
//! Role grants exactly these (a test compares them), and the reconcile tests
//! check every request they see against them.

/// (API group, resource, verbs)
pub const RULES: &[(&str, &str, &[&str])] = &[
    // The controller lists and watches labs; the finalizer helper patches
    // them; the claim reads the lab holding the part.
    (
        "foodlab.dev",
        "foodlabs",
        &["get", "list", "watch", "patch"],
    ),
    // Status is written with server-side apply.
    ("foodlab.dev", "foodlabs/status", &["patch"]),
    // Needed to set blockOwnerDeletion on owner references.
    ("foodlab.dev", "foodlabs/finalizers", &["update"]),
    // ScaleToZero reads and sets replicas through the scale subresource
    // only; reading it also tells whether the part is installed.
    ("apps", "deployments/scale", &["get", "patch"]),
    // The workload Job: created, read, and watched (the controller owns Jobs);
    // deleting a lab deletes its Job through the owner reference.
    ("batch", "jobs", &["get", "list", "watch", "create"]),
    // The run ConfigMap between the operator and the Job (watched: the
    // Job's first order wakes the lab).
    (
        "",
        "configmaps",
        &["get", "list", "watch", "create", "patch"],
    ),
    // One lab at a time per namespace: the `foodlab-part` Lease.
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update", "delete"],
    ),
    // Faults and settings go to every ready pod of a service: its
    // EndpointSlices name them.
    ("discovery.k8s.io", "endpointslices", &["list"]),
    // PodKill deletes the target's pods.
    ("", "pods", &["list", "delete"]),
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// The (group, resource, verb) an API request needs, from its method and path.
pub fn needed(method: &str, path: &str, query: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => return None,
    };
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) if query.contains("watch=true") => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some((group.to_owned(), resource, verb.to_owned()))
}

pub fn permits(group: &str, resource: &str, verb: &str) -> bool {
    RULES
        .iter()
        .any(|(g, r, verbs)| *g == group && *r == resource && verbs.contains(&verb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_the_permissions_they_need() {
        let cases = [
            (
                "PATCH",
                "/apis/foodlab.dev/v1alpha1/namespaces/d/foodlabs/x/status",
                "",
                ("foodlab.dev", "foodlabs/status", "patch"),
            ),
            (
                "GET",
                "/apis/apps/v1/namespaces/d/deployments/inventory/scale",
                "",
                ("apps", "deployments/scale", "get"),
            ),
            (
                "GET",
                "/api/v1/namespaces/d/pods",
                "labelSelector=a",
                ("", "pods", "list"),
            ),
            (
                "GET",
                "/apis/batch/v1/jobs",
                "watch=true",
                ("batch", "jobs", "watch"),
            ),
            (
                "POST",
                "/apis/batch/v1/namespaces/d/jobs",
                "",
                ("batch", "jobs", "create"),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/d/pods/p",
                "",
                ("", "pods", "delete"),
            ),
        ];
        for (method, path, query, (g, r, v)) in cases {
            assert_eq!(
                needed(method, path, query),
                Some((g.into(), r.into(), v.into())),
                "{method} {path}"
            );
        }
    }
}
