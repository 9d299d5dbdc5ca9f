//! One lab at a time per part: a lab claims its part (the services behind
//! its order endpoint) before it touches it, and a second lab for the same
//! part waits, saying so, until the first has released it. On a cluster the
//! operator claims the part for the lab (a Lease per namespace).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::observer::Observer;
use crate::platform::{Platform, PlatformError};
use crate::spec::Service;

static PARTS: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Mutex::default);

/// Held while a lab runs; dropping it lets the next lab for the part run.
pub struct Claim {
    _guard: OwnedMutexGuard<()>,
}

/// Claims the part `platform` runs, waiting for a lab holding it.
pub async fn claim<P: Platform>(
    platform: &P,
    observer: &dyn Observer,
) -> Result<Claim, PlatformError> {
    let part = platform.endpoint(Service::Order)?;
    let lock = Arc::clone(
        PARTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(part.clone())
            .or_default(),
    );
    let guard = match Arc::clone(&lock).try_lock_owned() {
        Ok(guard) => guard,
        Err(_) => {
            observer.note(&format!(
                "queued: another lab is running on the part at {part}"
            ));
            lock.lock_owned().await
        }
    };
    Ok(Claim { _guard: guard })
}
