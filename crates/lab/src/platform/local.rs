//! The local platform: the service binaries as child processes on 127.0.0.1.
//!
//! Each service is kept running by a supervisor of its own (`supervisor`):
//! a service that dies is reported and restarted with backoff; a scale to
//! zero stops it for good until it is scaled up again. Children are started
//! in their own process group with a parent-death signal, so they go away
//! with the platform whatever way it ends (return, Ctrl-C, SIGTERM, panic
//! or SIGKILL).

mod broker_nodes;
mod supervisor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;

use crate::platform::kafka::{KAFKA_SCRIPT, KafkaBroker, KafkaNames};
use crate::platform::rabbitmq::{RABBITMQ_SCRIPT, RabbitAdmin, RabbitBroker};
use crate::platform::{Platform, PlatformError};
use crate::spec::{Broker, Replicas, Service, Transport};
use broker_nodes::BrokerNodes;
use foodlab_transport::rabbitmq::QueueType;
pub use supervisor::{Ended, ServiceEvent};
use supervisor::{Launcher, Supervisor, Unit};

/// Where the services listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// The documented defaults: order 8000, inventory 8001, notification 8002.
    Defaults,
    /// Free ports picked at start (tests, labs running beside `foodlab up`).
    Free,
}

/// Where the services' output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logs {
    /// Into the supervisor's own stdout/stderr (`foodlab up`).
    Inherit,
    /// Into `<data dir>/logs/<service>.log`.
    Files,
}

#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub transport: Transport,
    pub ports: Ports,
    pub logs: Logs,
    /// Data directory; a temporary one (removed at the end) when `None`.
    pub data_dir: Option<PathBuf>,
    /// Directory holding the service binaries; found next to the running
    /// executable when `None` (or from `FOODLAB_BIN_DIR`).
    pub bin_dir: Option<PathBuf>,
    /// Extra environment for every service (e.g. `FOODLAB_STOCK`).
    pub env: Vec<(String, String)>,
    /// Environment for one service only (e.g. a crash point for inventory).
    pub service_env: Vec<(Service, String, String)>,
    /// `--dependency-timeout` for the order service.
    pub dependency_timeout: Option<Duration>,
    /// The RabbitMQ of the async-rabbitmq part.
    pub broker: RabbitBroker,
    /// The type of its queues (`FOODLAB_AMQP_QUEUE_TYPE`); the services'
    /// default (classic) when `None`.
    pub queue_type: Option<QueueType>,
    /// The Kafka-protocol broker of the streaming-kafka part.
    pub kafka: KafkaBroker,
    /// Nodes of the project's broker (1 or 3; `spec.broker.nodes`). Three
    /// RabbitMQ nodes mean quorum queues unless `queue_type` says otherwise.
    pub broker_nodes: u32,
    /// How long a broker node a chaos step killed stays down before it is
    /// started again (a StatefulSet slow to recreate its pod); none by default.
    pub broker_restart_after: Duration,
    /// Processes per service (1 when not named). More than one needs a
    /// shared database (`database_url`).
    pub replicas: Replicas,
    /// The PostgreSQL database every process of the part shares
    /// (`FOODLAB_DATABASE_URL`); each service's SQLite file when `None`.
    pub database_url: Option<String>,
}

impl LocalOptions {
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            ports: Ports::Free,
            logs: Logs::Files,
            data_dir: None,
            bin_dir: None,
            env: Vec::new(),
            service_env: Vec::new(),
            dependency_timeout: None,
            broker: RabbitBroker::default(),
            queue_type: None,
            kafka: KafkaBroker::from_env(),
            broker_nodes: 1,
            broker_restart_after: Duration::ZERO,
            replicas: Replicas::default(),
            database_url: None,
        }
    }

    /// The options to run a lab on, at its shape (`spec.replicas`): the part
    /// starts with the services' defaults: the engine's prepare
    /// step sets the lab's settings (stock, dependency timeout) through the
    /// admin APIs, as it does on a cluster.
    pub fn for_lab(lab: &crate::spec::FoodLabSpec) -> Self {
        Self {
            replicas: lab.replicas.clone(),
            broker_nodes: lab.broker_nodes(),
            ..Self::new(lab.transport)
        }
    }
}

pub struct LocalPlatform {
    data_dir: PathBuf,
    /// One supervisor per process (a pod, on a cluster), the first on the
    /// service's usual port.
    supervisors: BTreeMap<Service, Vec<Supervisor>>,
    events: broadcast::Sender<ServiceEvent>,
    ports: BTreeMap<Service, Vec<u16>>,
    rabbitmq: Option<RabbitAdmin>,
    /// The vhost, or the Kafka topics and groups, were made for this
    /// platform and go with it.
    owns_vhost: bool,
    /// Bootstrap servers and topic/group names of the streaming part.
    kafka: Option<KafkaNames>,
    /// The broker's nodes, where the project's script runs it.
    broker_nodes: Option<BrokerNodes>,
    _temp: Option<tempfile::TempDir>,
}

/// Where a process of the local platform listens.
fn local_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// A process's name (its log file's, the one `foodlab up` prints): the
/// service's, with the replica's number after the first (`inventory`,
/// `inventory-2`, …).
pub fn process_name(service: Service, replica: usize) -> String {
    match replica {
        0 => service.name().to_owned(),
        n => format!("{}-{}", service.name(), n + 1),
    }
}

impl LocalPlatform {
    /// Starts every service of the part and waits until each is ready.
    pub async fn start(options: LocalOptions) -> Result<Self, PlatformError> {
        // Dependencies first.
        let services = options.transport.services();
        let replicas = |service: &Service| options.replicas.get(*service).unwrap_or(1);
        let problems = options.replicas.problems(options.transport);
        if !problems.is_empty() {
            return Err(PlatformError::Setup(problems.join("; ")));
        }
        if options.replicas.scaled_out() && options.database_url.is_none() {
            return Err(PlatformError::Setup(format!(
                "{}: more than one process of a service needs a shared database: give a \
                 PostgreSQL URL (--database-url, FOODLAB_DATABASE_URL; scripts/postgres.sh url); \
                 a SQLite file serves one process",
                options.replicas
            )));
        }
        let mut env = options.env.clone();
        if let Some(url) = &options.database_url {
            env.push(("FOODLAB_DATABASE_URL".into(), url.clone()));
        }
        // `foodlab up` uses the broker's default vhost, so its queues are the
        // ones people look for; every other run gets a vhost of its own.
        let owns_vhost = options.ports == Ports::Free;
        let rabbitmq = match options.transport {
            Transport::Rabbitmq => {
                let vhost = if owns_vhost {
                    format!(
                        "foodlab-{}",
                        &uuid::Uuid::new_v4().simple().to_string()[..12]
                    )
                } else {
                    "/".to_owned()
                };
                let admin = options.broker.ready(&vhost, options.broker_nodes).await?;
                if owns_vhost {
                    admin.create_vhost().await?;
                }
                env.push(("FOODLAB_TRANSPORT".into(), "rabbitmq".into()));
                env.push(("FOODLAB_AMQP_URL".into(), admin.amqp_url()));
                let queue_type = options
                    .queue_type
                    .or((options.broker_nodes > 1).then_some(QueueType::Quorum));
                if let Some(queue_type) = queue_type {
                    env.push(("FOODLAB_AMQP_QUEUE_TYPE".into(), queue_type.to_string()));
                }
                Some(admin)
            }
            Transport::Rest => {
                env.push(("FOODLAB_TRANSPORT".into(), "rest".into()));
                None
            }
            Transport::Kafka => None,
        };
        let kafka = match options.transport {
            Transport::Kafka => {
                let brokers = options.kafka.ready(options.broker_nodes).await?;
                // Like the vhost: runs on free ports get topics and groups of their own.
                let suffix = owns_vhost
                    .then(|| format!("-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
                let names = KafkaNames::new(brokers, suffix.as_deref().unwrap_or(""));
                env.push(("FOODLAB_TRANSPORT".into(), "kafka".into()));
                env.extend(names.env());
                Some(names)
            }
            Transport::Rest | Transport::Rabbitmq => None,
        };
        // The broker's nodes are this platform's to kill where its script runs them.
        let local_script = match options.transport.broker() {
            Some(Broker::Rabbitmq) => match &options.broker {
                RabbitBroker::Local { script } => {
                    Some((Broker::Rabbitmq, &RABBITMQ_SCRIPT, script))
                }
                RabbitBroker::At { .. } => None,
            },
            Some(Broker::Kafka) => match &options.kafka {
                KafkaBroker::Local { script } => Some((Broker::Kafka, &KAFKA_SCRIPT, script)),
                KafkaBroker::At { .. } => None,
            },
            None => None,
        };
        let broker_nodes = local_script.map(|(broker, runner, script)| {
            BrokerNodes::new(
                broker,
                runner,
                runner.path(script.clone()),
                options.broker_nodes,
                options.broker_restart_after,
            )
        });
        let bin_dir = match options.bin_dir {
            Some(dir) => dir,
            None => find_bin_dir()?,
        };
        let (data_dir, temp) = match options.data_dir {
            Some(dir) => (dir, None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("foodlab-")
                    .tempdir()
                    .map_err(|e| {
                        PlatformError::Setup(format!("cannot create a data directory: {e}"))
                    })?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let mut ports = BTreeMap::new();
        // Each free port is held until all are chosen, so no two processes
        // of the part are handed the same one.
        let mut held = Vec::new();
        for service in services {
            let mut of_service = Vec::new();
            for replica in 0..replicas(service) {
                let port = match options.ports {
                    Ports::Defaults if replica == 0 => service.default_port(),
                    _ => {
                        let listener = free_port().map_err(|source| PlatformError::Io {
                            service: *service,
                            source,
                        })?;
                        let port = listener.local_addr().map(|a| a.port());
                        held.push(listener);
                        port.map_err(|source| PlatformError::Io {
                            service: *service,
                            source,
                        })?
                    }
                };
                of_service.push(port);
            }
            ports.insert(*service, of_service);
        }
        drop(held);
        let data = data_dir.display().to_string();
        let (events, _) = broadcast::channel(64);
        let launcher = Arc::new(Launcher {
            bin_dir,
            data_dir: data_dir.clone(),
            logs: options.logs,
            env,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .map_err(|e| PlatformError::Setup(e.to_string()))?,
            events: events.clone(),
        });
        let mut supervisors = BTreeMap::new();
        for service in services {
            let mut args = vec!["--data-dir".to_owned(), data.clone()];
            if *service == Service::Order {
                // The URLs of the services order calls (sync-rest).
                for (flag, callee) in [
                    ("--inventory-url", Service::Inventory),
                    ("--notification-url", Service::Notification),
                ] {
                    if let Some(ports) = ports.get(&callee) {
                        let urls: Vec<String> = ports.iter().copied().map(local_url).collect();
                        args.extend([flag.to_owned(), urls.join(",")]);
                    }
                }
                if let Some(timeout) = options.dependency_timeout {
                    args.extend([
                        "--dependency-timeout".to_owned(),
                        format!("{}ms", timeout.as_millis()),
                    ]);
                }
            }
            let env: Vec<(String, String)> = options
                .service_env
                .iter()
                .filter(|(s, _, _)| s == service)
                .map(|(_, k, v)| (k.clone(), v.clone()))
                .collect();
            let processes = ports[service]
                .iter()
                .enumerate()
                .map(|(replica, port)| {
                    let mut args = args.clone();
                    args.extend(["--listen".to_owned(), format!("127.0.0.1:{port}")]);
                    let unit = Unit {
                        service: *service,
                        name: process_name(*service, replica),
                        port: *port,
                        args,
                        env: env.clone(),
                    };
                    Supervisor::spawn(unit, launcher.clone())
                })
                .collect();
            supervisors.insert(*service, processes);
        }
        let platform = Self {
            data_dir,
            supervisors,
            events,
            ports,
            rabbitmq,
            owns_vhost,
            kafka,
            broker_nodes,
            _temp: temp,
        };
        for service in services {
            platform.scale(*service, replicas(service)).await?;
        }
        Ok(platform)
    }

    /// The streaming part's broker and names (topics, groups), if it runs here.
    pub fn kafka(&self) -> Option<&KafkaNames> {
        self.kafka.as_ref()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn services(&self) -> impl Iterator<Item = Service> + '_ {
        self.ports.keys().copied()
    }

    /// Replaces the environment one service gets on its next start
    /// (a restart after a death included).
    pub async fn set_service_env(&self, service: Service, env: Vec<(String, String)>) {
        for supervisor in self.processes(service).unwrap_or_default() {
            let _ = supervisor.set_env(env.clone()).await;
        }
    }

    /// What the supervisors report: deaths, restarts, failed restarts.
    pub fn events(&self) -> broadcast::Receiver<ServiceEvent> {
        self.events.subscribe()
    }

    /// Process ids of the running services (the first process of each).
    pub async fn pids(&self) -> BTreeMap<Service, u32> {
        let mut pids = BTreeMap::new();
        for service in self.supervisors.keys() {
            if let Some(Some(pid)) = self.replica_pids(*service).await.first() {
                pids.insert(*service, *pid);
            }
        }
        pids
    }

    /// The base URL of each process of a service, in replica order.
    fn process_urls(&self, service: Service) -> Result<Vec<String>, PlatformError> {
        self.ports
            .get(&service)
            .map(|ports| ports.iter().copied().map(local_url).collect())
            .ok_or(PlatformError::NotDeployed(service))
    }

    /// The process id of each process of a service, in replica order (`None`: not running).
    pub async fn replica_pids(&self, service: Service) -> Vec<Option<u32>> {
        let mut pids = Vec::new();
        for supervisor in self.processes(service).unwrap_or_default() {
            pids.push(supervisor.status().await.ok().and_then(|status| status.pid));
        }
        pids
    }

    /// Stops every service (SIGTERM, then SIGKILL after a grace period) and
    /// removes what the platform made on the broker.
    pub async fn shutdown(&self) {
        for (service, processes) in self.supervisors.iter().rev() {
            for supervisor in processes {
                if let Err(error) = supervisor.scale(0).await {
                    tracing::warn!(%service, %error, "could not stop the service");
                }
            }
        }
        if let Some(admin) = &self.rabbitmq {
            admin.close().await;
            if self.owns_vhost
                && let Err(error) = admin.delete_vhost().await
            {
                tracing::warn!(%error, "could not delete the lab's vhost");
            }
        }
        if self.owns_vhost
            && let Some(names) = &self.kafka
            && let Err(error) = names.delete().await
        {
            tracing::warn!(%error, "could not delete the lab's Kafka topics");
        }
    }

    fn broker(&self, broker: Broker) -> Result<&BrokerNodes, PlatformError> {
        match &self.broker_nodes {
            Some(nodes) if nodes.broker() == broker => Ok(nodes),
            Some(_) => Err(PlatformError::Broker {
                broker,
                reason: "not the broker of this part".into(),
            }),
            None => Err(PlatformError::Broker {
                broker,
                reason: "not a broker of the project's script (FOODLAB_KAFKA_BROKERS or a \
                         RabbitMQ given by address): its nodes are not this platform's to kill"
                    .into(),
            }),
        }
    }

    fn processes(&self, service: Service) -> Result<&[Supervisor], PlatformError> {
        self.supervisors
            .get(&service)
            .map(Vec::as_slice)
            .ok_or(PlatformError::NotDeployed(service))
    }
}

impl Platform for LocalPlatform {
    fn endpoint(&self, service: Service) -> Result<String, PlatformError> {
        self.process_urls(service)?
            .into_iter()
            .next()
            .ok_or(PlatformError::NotDeployed(service))
    }

    /// The processes asked to run (a pod of the Deployment's replicas); one
    /// a scale has stopped is not among them.
    async fn endpoints(&self, service: Service) -> Result<Vec<String>, PlatformError> {
        let mut running = Vec::new();
        for (supervisor, url) in self
            .processes(service)?
            .iter()
            .zip(self.process_urls(service)?)
        {
            if supervisor.status().await?.desired > 0 {
                running.push(url);
            }
        }
        Ok(running)
    }

    /// The first `replicas` processes run, the others stop (all at once,
    /// each ready or gone before this returns).
    async fn scale(&self, service: Service, replicas: u32) -> Result<(), PlatformError> {
        let processes = self.processes(service)?;
        if replicas as usize > processes.len() {
            return Err(PlatformError::Unsupported {
                service,
                reason: format!(
                    "{} process(es) were started; {replicas} asked for (foodlab up --replicas)",
                    processes.len()
                ),
            });
        }
        futures::future::try_join_all(
            processes
                .iter()
                .enumerate()
                .map(|(n, supervisor)| supervisor.scale(u32::from((n as u32) < replicas))),
        )
        .await?;
        Ok(())
    }

    fn rabbitmq(&self) -> Option<&RabbitAdmin> {
        self.rabbitmq.as_ref()
    }

    /// The replicas asked for, as a Deployment's `spec.replicas`: a service
    /// that died and waits for its restart still counts.
    async fn replicas(&self, service: Service) -> Result<u32, PlatformError> {
        let mut desired = 0;
        for supervisor in self.processes(service)? {
            desired += supervisor.status().await?.desired;
        }
        Ok(desired)
    }

    /// The processes running now, by their names (`process_name`).
    async fn pods(&self, service: Service) -> Result<Vec<String>, PlatformError> {
        let mut running = Vec::new();
        for (replica, supervisor) in self.processes(service)?.iter().enumerate() {
            let status = supervisor.status().await?;
            if status.desired > 0 && status.pid.is_some() {
                running.push(process_name(service, replica));
            }
        }
        Ok(running)
    }

    async fn kill_pod(
        &self,
        service: Service,
        pod: &str,
        grace: Duration,
    ) -> Result<(), PlatformError> {
        let processes = self.processes(service)?;
        let supervisor = (0..processes.len())
            .find(|&replica| process_name(service, replica) == pod)
            .map(|replica| &processes[replica])
            .ok_or_else(|| PlatformError::Unsupported {
                service,
                reason: format!("no process named {pod}"),
            })?;
        match supervisor.kill(grace).await? {
            Some(pid) => {
                tracing::warn!(%service, pod, pid, "process killed");
                Ok(())
            }
            None => Err(PlatformError::NotReady {
                service,
                reason: format!("{pod} was not running"),
            }),
        }
    }

    async fn broker_nodes(&self, broker: Broker) -> Result<Vec<String>, PlatformError> {
        self.broker(broker)?.running().await
    }

    async fn kill_broker_node(
        &self,
        broker: Broker,
        node: &str,
        grace: Duration,
    ) -> Result<(), PlatformError> {
        self.broker(broker)?.kill(node, grace).await
    }

    async fn broker_nodes_down(
        &self,
        broker: Broker,
        nodes: &[String],
    ) -> Result<Vec<String>, PlatformError> {
        self.broker(broker)?.down(nodes)
    }

    fn restarts(&self) -> Option<BoxStream<'static, Service>> {
        let restarted = futures::stream::unfold(self.events(), |mut events| async move {
            loop {
                match events.recv().await {
                    Ok(ServiceEvent::Restarted { service, .. }) => return Some((service, events)),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "service events missed");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Some(restarted.boxed())
    }
}

/// A port no one listens on, held by the listener returned.
fn free_port() -> std::io::Result<std::net::TcpListener> {
    std::net::TcpListener::bind("127.0.0.1:0")
}

/// The service binaries sit next to the `foodlab` binary, or one level up
/// from a test binary in `target/<profile>/deps`.
fn find_bin_dir() -> Result<PathBuf, PlatformError> {
    if let Some(dir) = std::env::var_os("FOODLAB_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()
        .map_err(|e| PlatformError::Setup(format!("cannot locate the running executable: {e}")))?;
    let mut dir = exe
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| PlatformError::Setup("executable has no directory".into()))?;
    if dir.ends_with("deps") {
        dir.pop();
    }
    if !dir.join(Service::Order.name()).is_file() {
        return Err(PlatformError::Setup(format!(
            "the service binaries are not in {} (build them with `cargo build --workspace --bins`, \
             or point FOODLAB_BIN_DIR at them)",
            dir.display()
        )));
    }
    Ok(dir)
}
