//! Every Kubernetes API call the operator makes, as RBAC rules. The chart's
//! Role grants exactly these (a test compares them), and the reconcile tests
//! check every request they see against them.

/// (API group, resource, verbs, resource names: empty for any). A request
/// without a name (list, watch, create) can only be granted without names,
/// so what has fixed names is split: named for get/patch/update/delete.
pub const RULES: &[(&str, &str, &[&str], &[&str])] = &[
    // The controller lists and watches labs; the finalizer helper patches
    // them; the claim reads the lab holding the part.
    (
        "foodlab.dev",
        "foodlabs",
        &["get", "list", "watch", "patch"],
        &[],
    ),
    // Status is written with server-side apply.
    ("foodlab.dev", "foodlabs/status", &["patch"], &[]),
    // Needed to set blockOwnerDeletion on owner references.
    ("foodlab.dev", "foodlabs/finalizers", &["update"], &[]),
    // ScaleToZero and spec.replicas read and set replicas through the
    // scale subresource of the part's Deployments only (a PodKill reads
    // their pod selector there); reading it also tells whether the part is
    // installed.
    ("apps", "deployments/scale", &["get", "patch"], &SERVICES),
    // The workload Job: created, read, and watched (the controller owns Jobs);
    // deleting a lab deletes its Job through the owner reference.
    ("batch", "jobs", &["get", "list", "watch", "create"], &[]),
    // The run ConfigMap between the operator and the Job (watched: the
    // Job's first order wakes the lab).
    (
        "",
        "configmaps",
        &["get", "list", "watch", "create", "patch"],
        &[],
    ),
    // Each lab's Job runs as a ServiceAccount of its own that may read and
    // patch its lab's run ConfigMap only: a Role naming it and a binding,
    // made before the Job (the operator holds what they grant, so no
    // escalate or bind).
    ("", "serviceaccounts", &["create"], &[]),
    ("rbac.authorization.k8s.io", "roles", &["create"], &[]),
    (
        "rbac.authorization.k8s.io",
        "rolebindings",
        &["create"],
        &[],
    ),
    // One lab at a time per namespace: the `foodlab-part` Lease, and no other.
    ("coordination.k8s.io", "leases", &["create"], &[]),
    (
        "coordination.k8s.io",
        "leases",
        &["get", "update", "delete"],
        &[crate::claim::LEASE],
    ),
    // Faults and settings go to every ready pod of a service: its
    // EndpointSlices name them.
    ("discovery.k8s.io", "endpointslices", &["list"], &[]),
    // PodKill deletes pods its Deployment's own selector matches (names and
    // labels cannot be bound in RBAC: the selection is the operator's).
    ("", "pods", &["list", "delete"], &[]),
    // The part's broker: its StatefulSet's nodes (replicas) and pod
    // selector, read before a lab runs and for a PodKill of a broker node.
    ("apps", "statefulsets", &["get"], &BROKERS),
    ("events.k8s.io", "events", &["create", "patch"], &[]),
];

/// The Deployments of a part: FoodLab's services.
const SERVICES: [&str; 4] = ["order", "inventory", "notification", "analytics"];

/// The StatefulSets of a part: its broker.
const BROKERS: [&str; 2] = ["kafka", "rabbitmq"];

/// What an API request needs: group, resource, verb, and the object's name
/// when the request names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    pub group: String,
    pub resource: String,
    pub verb: String,
    pub name: Option<String>,
}

/// What an API request needs, from its method and path.
pub fn needed(method: &str, path: &str, query: &str) -> Option<Needed> {
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
    let (resource, name) = match rest {
        [resource] => ((*resource).to_owned(), None),
        [resource, name] => ((*resource).to_owned(), Some(*name)),
        [resource, name, sub] => (format!("{resource}/{sub}"), Some(*name)),
        _ => return None,
    };
    let verb = match (method, name.is_some()) {
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
    Some(Needed {
        group: group.to_owned(),
        resource,
        verb: verb.to_owned(),
        // A create's name is in its body, not its path: RBAC sees none.
        name: name.filter(|_| method != "POST").map(str::to_owned),
    })
}

pub fn permits(needed: &Needed) -> bool {
    RULES.iter().any(|(g, r, verbs, names)| {
        *g == needed.group
            && *r == needed.resource
            && verbs.contains(&needed.verb.as_str())
            && (names.is_empty()
                || needed
                    .name
                    .as_deref()
                    .is_some_and(|name| names.contains(&name)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(g: &str, r: &str, v: &str, name: Option<&str>) -> Needed {
        Needed {
            group: g.into(),
            resource: r.into(),
            verb: v.into(),
            name: name.map(str::to_owned),
        }
    }

    #[test]
    fn requests_map_to_the_permissions_they_need() {
        let cases = [
            (
                "PATCH",
                "/apis/foodlab.dev/v1alpha1/namespaces/d/foodlabs/x/status",
                "",
                need("foodlab.dev", "foodlabs/status", "patch", Some("x")),
            ),
            (
                "GET",
                "/apis/apps/v1/namespaces/d/deployments/inventory/scale",
                "",
                need("apps", "deployments/scale", "get", Some("inventory")),
            ),
            (
                "GET",
                "/api/v1/namespaces/d/pods",
                "labelSelector=a",
                need("", "pods", "list", None),
            ),
            (
                "GET",
                "/apis/batch/v1/jobs",
                "watch=true",
                need("batch", "jobs", "watch", None),
            ),
            (
                "POST",
                "/apis/batch/v1/namespaces/d/jobs",
                "",
                need("batch", "jobs", "create", None),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/d/pods/p",
                "",
                need("", "pods", "delete", Some("p")),
            ),
        ];
        for (method, path, query, want) in cases {
            assert_eq!(needed(method, path, query), Some(want), "{method} {path}");
        }
    }

    #[test]
    fn what_has_fixed_names_is_granted_by_name_only() {
        assert!(permits(&need(
            "apps",
            "deployments/scale",
            "patch",
            Some("inventory")
        )));
        assert!(!permits(&need(
            "apps",
            "deployments/scale",
            "patch",
            Some("postgres")
        )));
        assert!(!permits(&need("apps", "deployments/scale", "get", None)));
        assert!(permits(&need(
            "coordination.k8s.io",
            "leases",
            "delete",
            Some("foodlab-part")
        )));
        assert!(!permits(&need(
            "coordination.k8s.io",
            "leases",
            "delete",
            Some("kube-scheduler")
        )));
        assert!(permits(&need(
            "coordination.k8s.io",
            "leases",
            "create",
            None
        )));
    }
}
