//! One lab at a time per part: a Lease per namespace (`foodlab-part`) names
//! the lab that holds the part. A lab takes it when it is free (or its
//! holder is gone, or finished with every disruption undone) and gives it
//! back when it ends; every other lab waits in phase Queued. The Lease is
//! owned by its holder, so it goes with a deleted lab even if the release
//! was missed. Whether a lab must undo something never depends on the
//! Lease: that comes from the lab's own records.

use foodlab_lab::FoodLab;
use foodlab_lab::spec::{FoodLabStatus, Phase};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Api, Client, Resource, ResourceExt};

pub const LEASE: &str = "foodlab-part";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This lab holds the part.
    Held,
    /// Another lab does.
    Queued { holder: String },
}

/// `<name>/<uid>`: a recreated lab of the same name is another holder.
pub fn identity(lab: &FoodLab) -> String {
    format!(
        "{}/{}",
        lab.name_any(),
        lab.metadata.uid.as_deref().unwrap_or_default()
    )
}

fn lease(lab: &FoodLab, namespace: &str, resource_version: Option<String>) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(LEASE.into()),
            namespace: Some(namespace.into()),
            resource_version,
            owner_references: lab.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity(lab)),
            ..LeaseSpec::default()
        }),
    }
}

fn conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Takes the part for `lab`, or says who holds it.
pub async fn claim(client: &Client, namespace: &str, lab: &FoodLab) -> Result<Claim, kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let me = identity(lab);
    let Some(existing) = leases.get_opt(LEASE).await? else {
        return match leases
            .create(&PostParams::default(), &lease(lab, namespace, None))
            .await
        {
            Ok(_) => Ok(Claim::Held),
            Err(error) if conflict(&error) => Ok(Claim::Queued {
                holder: "another lab".into(),
            }),
            Err(error) => Err(error),
        };
    };
    let holder = existing
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default();
    if holder == me {
        return Ok(Claim::Held);
    }
    if holder_still_holds(client, namespace, &holder).await? {
        return Ok(Claim::Queued { holder });
    }
    // The holder is gone or finished without giving the part back: take it,
    // unless another lab took it first (the resourceVersion guards that).
    let takeover = lease(lab, namespace, existing.metadata.resource_version.clone());
    match leases
        .replace(LEASE, &PostParams::default(), &takeover)
        .await
    {
        Ok(_) => Ok(Claim::Held),
        Err(error) if conflict(&error) => Ok(Claim::Queued { holder }),
        Err(error) => Err(error),
    }
}

async fn holder_still_holds(
    client: &Client,
    namespace: &str,
    holder: &str,
) -> Result<bool, kube::Error> {
    let Some((name, uid)) = holder.split_once('/') else {
        return Ok(false);
    };
    let labs: Api<FoodLab> = Api::namespaced(client.clone(), namespace);
    Ok(labs.get_opt(name).await?.is_some_and(|lab| {
        let status = lab.status.as_ref();
        let finished = status
            .and_then(|s| s.phase)
            .is_some_and(|p| matches!(p, Phase::Succeeded | Phase::Failed));
        // A finished lab whose disruption is not undone yet still holds the
        // part: a lab taking it now would record the disrupted shape as the
        // original one.
        let undoing = status.is_some_and(FoodLabStatus::in_place);
        lab.metadata.uid.as_deref() == Some(uid) && (!finished || undoing)
    }))
}

/// Gives the part back if `lab` holds it.
pub async fn release(client: &Client, namespace: &str, lab: &FoodLab) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let Some(existing) = leases.get_opt(LEASE).await? else {
        return Ok(());
    };
    let holder = existing
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref());
    if holder != Some(identity(lab).as_str()) {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: existing.metadata.resource_version.clone(),
            uid: existing.metadata.uid.clone(),
        }),
        ..DeleteParams::default()
    };
    match leases.delete(LEASE, &params).await {
        Ok(_) => Ok(()),
        // Gone already, or taken over meanwhile: not ours to delete.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Who holds the part now (`identity` of a lab), if anyone.
pub async fn holder(client: &Client, namespace: &str) -> Result<Option<String>, kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    Ok(leases
        .get_opt(LEASE)
        .await?
        .and_then(|l| l.spec?.holder_identity))
}
