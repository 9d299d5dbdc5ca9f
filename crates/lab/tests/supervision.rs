//! The local platform supervises its services as a Deployment would: a
//! death is reported (which service, how it ended) and the service started
//! again with backoff; a scale to zero is a stop, never restarted.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use foodlab_lab::platform::local::{Ended, ServiceEvent};
use foodlab_lab::{LocalPlatform, Platform, Service, Transport};
use serde_json::json;
use support::{alive, died_and_restarted, part_options, post, sigkill};
use tokio::sync::broadcast::Receiver;

async fn next_event(events: &mut Receiver<ServiceEvent>) -> ServiceEvent {
    tokio::time::timeout(Duration::from_secs(30), events.recv())
        .await
        .expect("no service event within 30 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_is_reported_with_its_signal_and_restarted() {
    let platform = LocalPlatform::start(part_options(Transport::Rest))
        .await
        .unwrap();
    let mut events = platform.events();
    let before = platform.pids().await[&Service::Inventory];
    sigkill(before);

    let death = died_and_restarted(&mut events, Service::Inventory, 30).await;
    assert_eq!(
        death,
        ServiceEvent::Died {
            service: Service::Inventory,
            pid: before,
            ended: Ended::Signal(9),
            restart_in: Duration::from_millis(500),
        }
    );
    let after = platform.pids().await[&Service::Inventory];
    assert_ne!(after, before);
    assert!(alive(after) && !alive(before));
    assert_eq!(platform.replicas(Service::Inventory).await.unwrap(), 1);
    let (status, order) = post(
        &platform,
        Service::Order,
        "/order",
        json!({"item": "burger"}),
    )
    .await;
    assert_eq!(status, 201, "{order}");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_cannot_come_back_is_retried_with_doubling_backoff() {
    let platform = LocalPlatform::start(part_options(Transport::Rest))
        .await
        .unwrap();
    let mut events = platform.events();
    // Its next starts fail: inventory refuses a malformed stock.
    platform
        .set_service_env(
            Service::Inventory,
            vec![("FOODLAB_STOCK".into(), "burger".into())],
        )
        .await;
    let pid = platform.pids().await[&Service::Inventory];
    sigkill(pid);

    let mut delays = Vec::new();
    match next_event(&mut events).await {
        ServiceEvent::Died { restart_in, .. } => delays.push(restart_in),
        other => panic!("{other}"),
    }
    for _ in 0..2 {
        match next_event(&mut events).await {
            ServiceEvent::RestartFailed {
                service,
                reason,
                retry_in,
            } => {
                assert_eq!(service, Service::Inventory);
                assert!(reason.contains("exited with code"), "{reason}");
                delays.push(retry_in);
            }
            other => panic!("{other}"),
        }
    }
    assert_eq!(
        delays,
        [500, 1000, 2000].map(Duration::from_millis),
        "backoff doubles"
    );
    // Mended, the next try brings it back.
    platform
        .set_service_env(Service::Inventory, Vec::new())
        .await;
    match next_event(&mut events).await {
        ServiceEvent::Restarted {
            service, restarts, ..
        } => assert_eq!((service, restarts), (Service::Inventory, 1)),
        other => panic!("{other}"),
    }
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_whose_port_another_process_answers_is_not_taken_for_ready() {
    let platform = LocalPlatform::start(part_options(Transport::Rest))
        .await
        .unwrap();
    let mut events = platform.events();
    let url = platform.endpoint(Service::Inventory).unwrap();
    let address = url.trim_start_matches("http://").to_owned();
    sigkill(platform.pids().await[&Service::Inventory]);
    assert!(matches!(
        next_event(&mut events).await,
        ServiceEvent::Died { .. }
    ));
    // Before the restart (500 ms later), another process takes the port and
    // answers readiness as if it were inventory.
    let listener = loop {
        match tokio::net::TcpListener::bind(&address).await {
            Ok(listener) => break listener,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let impostor = axum::Router::new().route(
        "/readyz",
        axum::routing::get(|| async {
            axum::Json(json!({"ready": true, "service": "inventory", "pid": 1}))
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, impostor).await });
    match next_event(&mut events).await {
        ServiceEvent::RestartFailed {
            service, reason, ..
        } => {
            assert_eq!(service, Service::Inventory);
            assert!(
                reason.contains("is answered by inventory (pid 1)"),
                "{reason}"
            );
        }
        other => panic!("the impostor was taken for inventory: {other}"),
    }
    // The port free again, the next try brings inventory back on it.
    server.abort();
    let _ = server.await;
    loop {
        match next_event(&mut events).await {
            ServiceEvent::Restarted { service, .. } => {
                assert_eq!(service, Service::Inventory);
                break;
            }
            ServiceEvent::RestartFailed { .. } => {}
            other => panic!("{other}"),
        }
    }
    let (status, order) = post(
        &platform,
        Service::Order,
        "/order",
        json!({"item": "burger"}),
    )
    .await;
    assert_eq!(status, 201, "{order}");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_scaled_to_zero_is_stopped_not_restarted() {
    let platform = LocalPlatform::start(part_options(Transport::Rest))
        .await
        .unwrap();
    let mut events = platform.events();
    let inventory = platform.pids().await[&Service::Inventory];
    platform.scale(Service::Inventory, 0).await.unwrap();
    assert!(!alive(inventory));
    assert_eq!(platform.replicas(Service::Inventory).await.unwrap(), 0);

    // A real death meanwhile, to wait for: its restart takes longer than
    // inventory's first restart would have.
    sigkill(platform.pids().await[&Service::Notification]);
    let mut seen = Vec::new();
    loop {
        let event = next_event(&mut events).await;
        let restarted = matches!(event, ServiceEvent::Restarted { .. });
        seen.push(event.to_string());
        if restarted {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert!(
        seen.iter().all(|event| event.starts_with("notification ")),
        "{seen:#?}"
    );
    assert!(events.try_recv().is_err(), "nothing else was reported");
    let pids = platform.pids().await;
    assert_eq!(
        pids.keys().copied().collect::<Vec<_>>(),
        [Service::Order, Service::Notification],
        "inventory stays stopped"
    );

    platform.scale(Service::Inventory, 1).await.unwrap();
    assert!(platform.pids().await.contains_key(&Service::Inventory));
    platform.shutdown().await;
}
