//! The lab's admin calls over a Service that is not routed yet: transient
//! failures (refused connections, 503) are retried, a 4xx is not, and a
//! service that never comes up fails with its name and the last error.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use foodlab_domain::Faults;
use foodlab_lab::Service;
use foodlab_lab::faults::{AdminCallError, FaultClient};
use support::OneEndpoint;

/// Answers `failure` to the first `failing` requests, then 204; counts them all.
async fn stub_on(
    listener: tokio::net::TcpListener,
    failing: u32,
    failure: StatusCode,
) -> Arc<AtomicU32> {
    let count = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&count);
    let answer = move || {
        let counted = Arc::clone(&counted);
        async move {
            if counted.fetch_add(1, Ordering::SeqCst) < failing {
                failure
            } else {
                StatusCode::NO_CONTENT
            }
        }
    };
    let router = axum::Router::new()
        .route("/admin/faults", axum::routing::put(answer.clone()))
        .route("/admin/settings", axum::routing::put(answer));
    tokio::spawn(async move { axum::serve(listener, router).await });
    count
}

async fn listener() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

fn faults() -> Faults {
    Faults {
        delay_ms: 50,
        ..Faults::default()
    }
}

#[tokio::test]
async fn three_503s_then_success_takes_exactly_four_attempts() {
    let (listener, url) = listener().await;
    let count = stub_on(listener, 3, StatusCode::SERVICE_UNAVAILABLE).await;
    let client = FaultClient::new().unwrap().patient(Duration::from_secs(30));
    client
        .set(&OneEndpoint(url), Service::Inventory, &faults())
        .await
        .unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn refused_connections_are_retried_until_the_service_listens() {
    // A free port nothing listens on yet: connections are refused.
    let (listener, url) = listener().await;
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let platform = OneEndpoint(url);
    let client = FaultClient::new().unwrap().patient(Duration::from_secs(30));
    let call = client.set_dependency_timeout(&platform, Duration::from_millis(800));
    let late = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        stub_on(listener, 0, StatusCode::SERVICE_UNAVAILABLE).await
    };
    let (called, count) = tokio::join!(call, late);
    called.unwrap();
    // Only the call that found the service listening reached it.
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_422_fails_at_the_first_attempt() {
    let (listener, url) = listener().await;
    let count = stub_on(listener, u32::MAX, StatusCode::UNPROCESSABLE_ENTITY).await;
    let client = FaultClient::new().unwrap().patient(Duration::from_secs(30));
    let error = client
        .set_dependency_timeout(&OneEndpoint(url), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(error.service, Service::Order);
    assert_eq!(error.what, "settings");
    assert!(
        matches!(
            &error.reason,
            AdminCallError::Status { status, url, .. }
                if *status == StatusCode::UNPROCESSABLE_ENTITY && url.ends_with("/admin/settings")
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_service_that_never_comes_up_fails_after_the_patience_naming_it() {
    let (listener, url) = listener().await;
    drop(listener);
    let client = FaultClient::new().unwrap().patient(Duration::from_secs(1));
    let error = client
        .set(&OneEndpoint(url), Service::Inventory, &faults())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("cannot set the faults of inventory: PUT http://127.0.0.1:"),
        "{message}"
    );
    assert!(message.contains("/admin/faults"), "{message}");
    assert!(message.contains("attempts)"), "{message}");
    let AdminCallError::Exhausted { attempts, last } = &error.reason else {
        panic!("{error:?}");
    };
    assert!(*attempts > 1, "{error}");
    assert!(
        matches!(**last, AdminCallError::Unanswered { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_default_client_tries_once() {
    let (listener, url) = listener().await;
    let count = stub_on(listener, 1, StatusCode::SERVICE_UNAVAILABLE).await;
    let error = FaultClient::new()
        .unwrap()
        .set(&OneEndpoint(url), Service::Order, &faults())
        .await
        .unwrap_err();
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(
        matches!(
            &error.reason,
            AdminCallError::Status { status, .. } if *status == StatusCode::SERVICE_UNAVAILABLE
        ),
        "{error:?}"
    );
}
