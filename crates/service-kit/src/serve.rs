//! Assembling a service's router and serving it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::serve::ListenerExt;
use foodlab_domain::Faults;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tower_http::trace::TraceLayer;

use crate::admin_auth::{self, AdminToken};
use crate::faults::{self, FaultState};
use crate::health::{self, Readiness};
use crate::hops::HopMetrics;
use crate::metrics::{self, HttpMetrics};
use crate::problem::no_route;
use crate::trace_context;

/// The shared parts of one service, before its router is built.
pub struct Kit {
    service: &'static str,
    faults: FaultState,
    readiness: Readiness,
    registry: Registry,
    http: HttpMetrics,
    hops: HopMetrics,
    admin_token: AdminToken,
}

impl Kit {
    pub fn new(service: &'static str, initial_faults: Faults) -> Self {
        let mut registry = Registry::with_prefix("foodlab");
        let http = HttpMetrics::register(&mut registry);
        let hops = HopMetrics::register(&mut registry);
        Self {
            service,
            faults: FaultState::new(initial_faults),
            readiness: Readiness::default(),
            registry,
            http,
            hops,
            admin_token: AdminToken::default(),
        }
    }

    /// Only callers holding this token may use `/admin/*` (open when it is none).
    pub fn with_admin_token(mut self, token: AdminToken) -> Self {
        if token.is_set() {
            tracing::info!(service = self.service, "admin API needs the admin token");
        }
        self.admin_token = token;
        self
    }

    pub fn faults(&self) -> FaultState {
        self.faults.clone()
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Where this service records how long each hop of an order took.
    pub fn hops(&self) -> HopMetrics {
        self.hops.clone()
    }

    /// For a service's own metrics, registered before `router` is called.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The full router: `business` behind fault injection, plus admin,
    /// health and metrics routes, all measured.
    pub fn router(self, business: Router) -> Router {
        self.router_with_counters(business, Router::new())
    }

    /// As `router`, with read-only `counters` (stock, figures, lag) that
    /// faults never touch: a lab must see what a faulty service did.
    pub fn router_with_counters(self, business: Router, counters: Router) -> Router {
        let business = business.layer(from_fn_with_state(self.faults.clone(), faults::inject));
        Router::new()
            .merge(business)
            .merge(counters)
            .merge(faults::admin_routes(self.faults))
            .merge(health::routes(self.service, self.readiness))
            .merge(metrics::routes(Arc::new(self.registry)))
            .fallback(no_route)
            .layer(from_fn_with_state(self.admin_token, admin_auth::require))
            .layer(from_fn_with_state(self.http, metrics::record))
            .layer(from_fn(trace_context::continue_trace))
            .layer(TraceLayer::new_for_http())
    }
}

/// Starts a service and serves it at `addr` until SIGTERM or Ctrl-C, then
/// finishes the requests in flight.
///
/// The signals are watched before `start` runs: `start` may wait a minute for
/// the database or the broker, and a container's first process that does not
/// handle SIGTERM ignores it, so a pod stopped (or failing its probes) while
/// starting would go on starting until the SIGKILL at the end of its grace
/// period, and take its first requests just before it.
pub async fn run<E>(
    service: &'static str,
    addr: SocketAddr,
    start: impl Future<Output = Result<Router, E>>,
) -> Result<(), E>
where
    E: From<std::io::Error>,
{
    let mut stop = Stop::listen()?;
    let router = tokio::select! {
        router = start => router?,
        () = stop.requested() => {
            tracing::info!(service, "stopped while starting");
            return Ok(());
        }
    };
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(service, addr = %listener.local_addr()?, "listening");
    // Small JSON answers go out at once instead of waiting for Nagle's algorithm.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            stop.requested().await;
            tracing::info!(service, "shutting down");
        })
        .await?;
    Ok(())
}

/// SIGTERM and SIGINT, handled from the moment of [`Stop::listen`].
struct Stop {
    terminate: Signal,
    interrupt: Signal,
}

impl Stop {
    fn listen() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn requested(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {},
            _ = self.interrupt.recv() => {},
        }
    }
}
