//! A probe that reads nothing says why, and the three kinds are told apart:
//! a service that is not there (refused), one that fails (5xx), and one
//! that answers something else (a body of another shape).

#![allow(clippy::unwrap_used)]

mod support;

use axum::http::StatusCode;
use foodlab_lab::probe::ProbeError;
use foodlab_lab::probe::observe::{Snapshot, order_cursor};
use support::OneEndpoint;

/// A service whose `/orders/cursor` answers `status` with `body`, and
/// whose `/stats` and `/stock` answer as inventory's do.
async fn serving(status: StatusCode, body: &'static str) -> OneEndpoint {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route(
            "/orders/cursor",
            axum::routing::get(move || async move { (status, body) }),
        )
        .route(
            "/stats",
            axum::routing::get(|| async {
                let stats = foodlab_domain::api::InventoryStats {
                    decisions: foodlab_domain::api::Decisions {
                        reserved_orders: 3,
                        out_of_stock_orders: 1,
                        ..Default::default()
                    },
                    ..Default::default()
                };
                axum::Json(stats)
            }),
        )
        .route(
            "/stock",
            axum::routing::get(|| async { r#"{"burger": 97, "pizza": 100}"# }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });
    OneEndpoint(base)
}

fn http() -> reqwest::Client {
    foodlab_lab::faults::http_client().unwrap()
}

#[tokio::test]
async fn a_cursor_read_says_whether_it_was_refused_failed_or_answered_otherwise() {
    // Nothing listens: the connection is refused.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let nobody = OneEndpoint(format!("http://127.0.0.1:{port}"));
    let error = order_cursor(&nobody, &http()).await.unwrap_err();
    assert!(matches!(error, ProbeError::Unreachable { .. }), "{error}");
    assert_eq!(error.kind(), "unreachable");

    let failing = serving(StatusCode::SERVICE_UNAVAILABLE, "{}").await;
    let error = order_cursor(&failing, &http()).await.unwrap_err();
    assert!(
        matches!(error, ProbeError::Status { status: 503, .. }),
        "{error}"
    );
    assert!(
        error.to_string().ends_with("/orders/cursor answered 503"),
        "{error}"
    );

    let html = serving(StatusCode::OK, "<html>a proxy's page</html>").await;
    let error = order_cursor(&html, &http()).await.unwrap_err();
    assert!(matches!(error, ProbeError::Body { .. }), "{error}");

    let no_cursor = serving(StatusCode::OK, r#"{"next": 7}"#).await;
    let error = order_cursor(&no_cursor, &http()).await.unwrap_err();
    assert_eq!(error.kind(), "body");
    assert!(
        error.to_string().contains("missing field `cursor`"),
        "{error}"
    );

    let answering = serving(StatusCode::OK, r#"{"cursor": 42}"#).await;
    assert_eq!(order_cursor(&answering, &http()).await.unwrap(), 42);
}

#[tokio::test]
async fn inventorys_counters_are_read_whole() {
    let inventory = serving(StatusCode::OK, "{}").await;
    let snapshot = Snapshot::take(&inventory, &http()).await.unwrap();
    assert_eq!(
        (snapshot.reservations, snapshot.decisions, snapshot.stock),
        (3, 4, 197)
    );
    assert_eq!(snapshot.dead_letters, None);
}
