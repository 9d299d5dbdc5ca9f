//! `foodlab-operator`: the controller (default), or `lab-job`, the workload
//! it runs as a Job.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use clap::{Parser, Subcommand};
use foodlab_lab::FoodLab;
use foodlab_operator::controller::{Context, error_policy, reconcile};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use prometheus_client::registry::Registry;

#[derive(Parser)]
#[command(
    name = "foodlab-operator",
    about = "Reconciles FoodLab resources: faults, chaos with guaranteed restore, the workload, the verdict"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address of the health and metrics server.
    #[arg(long, env = "FOODLAB_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Watch only this namespace (all namespaces when unset).
    #[arg(long, env = "FOODLAB_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Image of the workload Job (the FoodLab image).
    #[arg(long, env = "FOODLAB_JOB_IMAGE", default_value = "foodlab:dev")]
    job_image: String,
    #[arg(
        long,
        env = "FOODLAB_JOB_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    job_image_pull_policy: String,
    /// Log format: text or json.
    #[arg(long, env = "FOODLAB_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run a lab's workload inside the cluster (what the workload Job runs).
    LabJob {
        #[arg(long, env = "FOODLAB_NAMESPACE", default_value = "default")]
        namespace: String,
    },
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logs(&args.log_format);
    if let Some(Command::LabJob { namespace }) = &args.command {
        let passed = foodlab_operator::lab_job::run(namespace).await?;
        std::process::exit(if passed { 0 } else { 1 });
    }
    let client = Client::try_default().await?;
    let reporter = Reporter {
        controller: "foodlab-operator".into(),
        instance: std::env::var("FOODLAB_POD_NAME").ok(),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let context = Context::new(
        client.clone(),
        Some(recorder),
        args.job_image.clone(),
        args.job_image_pull_policy.clone(),
        foodlab_operator::admin_tokens::AdminTokens::from_env()?,
    );
    let namespaces: Vec<&str> = context.faults.namespaces().collect();
    tracing::info!(?namespaces, "admin tokens of their own");
    let context = Arc::new(context);
    let mut registry = Registry::with_prefix("foodlab_operator");
    context.metrics.register(&mut registry);
    let registry = Arc::new(registry);
    let (labs, jobs, config_maps): (Api<FoodLab>, Api<Job>, Api<ConfigMap>) =
        match &args.watch_namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
    let server = serve(args.listen, registry);
    let controller = Controller::new(labs, watcher::Config::default())
        .owns(jobs, watcher::Config::default())
        // The Job's writes to the run ConfigMap (its first order, its report) wake the lab at once.
        .owns(
            config_maps,
            watcher::Config::default().labels("app.kubernetes.io/name=foodlab-workload"),
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile ended with an error");
            }
        });
    tracing::info!(listen = %args.listen, "foodlab-operator started");
    tokio::select! {
        () = controller => {},
        result = server => result?,
    }
    Ok(())
}

async fn serve(listen: SocketAddr, registry: Arc<Registry>) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let registry = Arc::clone(&registry);
                async move {
                    let mut body = String::new();
                    match prometheus_client::encoding::text::encode(&mut body, &registry) {
                        Ok(()) => body,
                        Err(error) => format!("# cannot encode metrics: {error}\n"),
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
