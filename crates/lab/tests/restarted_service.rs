//! A service the local supervisor restarts in the middle of a lab comes back
//! with its start-up flags only; the engine gives it the lab's faults and
//! runtime settings again, as the operator does on every reconcile.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use foodlab_lab::spec::FoodLabSpec;
use foodlab_lab::{LocalPlatform, Quiet, Service, Transport, run_lab};
use serde_json::{Value, json};
use support::{died_and_restarted, eventually, get, part_options, sigkill};

const ORDERS: u64 = 100;
const STOCK: u64 = 1000;

async fn delay_ms(platform: &LocalPlatform, service: Service) -> Value {
    get(platform, service, "/admin/faults").await["delay_ms"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labs_delay_and_dependency_timeout_survive_a_sigkill_and_restart() {
    let platform = LocalPlatform::start(part_options(Transport::Rest))
        .await
        .unwrap();
    let spec: FoodLabSpec = serde_json::from_value(json!({
        "transport": "rest",
        "workload": {"orders": ORDERS, "ratePerSecond": 10, "items": ["burger"]},
        "faults": {"inventory": {"delaySeconds": 0.2}},
        "settings": {"stock": format!("burger={STOCK}"), "dependencyTimeout": "3s"},
        "expect": {}
    }))
    .unwrap();
    let mut events = platform.events();

    let disrupt = async {
        assert!(
            eventually(30, || async {
                delay_ms(&platform, Service::Inventory).await == json!(200)
            })
            .await,
            "the lab never set its delay on inventory"
        );
        sigkill(platform.pids().await[&Service::Inventory]);
        died_and_restarted(&mut events, Service::Inventory, 30).await;
        let inventory_back = eventually(10, || async {
            delay_ms(&platform, Service::Inventory).await == json!(200)
        })
        .await;

        sigkill(platform.pids().await[&Service::Order]);
        died_and_restarted(&mut events, Service::Order, 30).await;
        let timeout_back = eventually(10, || async {
            get(&platform, Service::Order, "/admin/settings").await["dependencyTimeout"]
                == json!("3s")
        })
        .await;
        (inventory_back, timeout_back)
    };
    let (report, (inventory_back, timeout_back)) =
        tokio::join!(run_lab(&platform, &spec, Arc::new(Quiet)), disrupt);
    let report = report.unwrap();

    assert!(
        inventory_back,
        "inventory came back without the lab's delay"
    );
    assert!(
        timeout_back,
        "order came back without the lab's dependency timeout"
    );
    assert_eq!(
        report.results.status_codes.values().sum::<u64>(),
        ORDERS,
        "{:?}",
        report.results.status_codes
    );
    // Stock is durable: every order answered 201 took one burger, no other did.
    let created = report.results.status_codes.get("201").copied().unwrap_or(0);
    assert!(created > 0 && created < ORDERS, "{created} orders created");
    let stock = get(&platform, Service::Inventory, "/stock").await;
    assert_eq!(stock["burger"], json!(STOCK - created), "{stock}");
    // The lab's end cleared what it set, restarted services included.
    assert_eq!(delay_ms(&platform, Service::Inventory).await, json!(0));
    assert!(report.unreleased.is_empty(), "{:?}", report.unreleased);
    platform.shutdown().await;
}
