//! `foodlab`: bring a part up on this machine, run labs, benchmark, print the
//! CRD, write the report of a lab that ran on a cluster.

mod bench;
mod bench_scale;
mod cluster_report;
mod compare;
mod crd;
mod floor;
mod hop_report;
mod html;
mod interrupt;
mod junit;
mod machine;
mod progress;
mod report;
mod run;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use foodlab_lab::Transport;
use foodlab_lab::spec::Replicas;

/// What `foodlab` exits with, as `--help` says.
pub mod exit {
    use std::process::ExitCode;

    /// Every lab passed (or the command did what it was asked).
    pub const PASS: u8 = 0;
    /// A lab ran and its verdict is Fail.
    pub const FAILED: u8 = 1;
    /// Something could not run: a bad file or spec, a part that did not come up.
    pub const COULD_NOT_RUN: u8 = 2;
    /// Ctrl-C or SIGTERM (the part released first).
    pub const INTERRUPTED: u8 = 130;

    pub fn code(code: u8) -> ExitCode {
        ExitCode::from(code)
    }
}

#[derive(Parser)]
#[command(
    name = "foodlab",
    version,
    about = "FoodLab: one ordering workflow, three ways to wire it, with the evidence",
    after_help = "Exit status: 0 every lab passed (or the command did what it was asked); \
                  1 a lab's verdict is Fail; 2 something could not run (a bad file or spec, \
                  a part that did not come up; the other labs of a batch still run); \
                  130 interrupted (Ctrl-C, SIGTERM), the part released first."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the parts keep their state.
#[derive(clap::Args, Debug)]
struct DatabaseArgs {
    /// The PostgreSQL every service of a part keeps its state in
    /// (`postgres://user:password@host:port/db`; `scripts/postgres.sh url`
    /// prints the project's); each service's own SQLite file when not given.
    /// More than one replica of a service needs it.
    #[arg(long, env = "FOODLAB_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl DatabaseArgs {
    /// The URL; an empty FOODLAB_DATABASE_URL asks for SQLite.
    fn url(&self) -> Option<&str> {
        self.database_url
            .as_deref()
            .filter(|url| !url.trim().is_empty())
    }
}

/// A part named on the command line (`sync-rest`, ...): the transport it runs.
fn part() -> impl TypedValueParser<Value = Transport> {
    let about = |transport| match transport {
        Transport::Rest => "Synchronous REST calls (order → inventory → notification).",
        Transport::Rabbitmq => "Events over RabbitMQ (order → inventory → notification and order).",
        Transport::Kafka => {
            "An event log in Kafka (order → inventory; analytics reads both topics)."
        }
    };
    PossibleValuesParser::new(
        Transport::ALL.map(|transport| PossibleValue::new(transport.part()).help(about(transport))),
    )
    .try_map(|name: String| Transport::of_part(&name).ok_or(format!("no part {name}")))
}

#[derive(Subcommand)]
enum Command {
    /// Start a part on the default ports (order 8000, inventory 8001,
    /// notification or analytics 8002), with its broker, and keep it up until
    /// Ctrl-C; a service that dies is reported and restarted with backoff.
    Up {
        #[arg(value_parser = part())]
        part: Transport,
        /// Where the parts keep their databases, one directory per part
        /// (`<data-dir>/<part>`).
        #[arg(long, default_value = ".foodlab/up")]
        data_dir: PathBuf,
        /// Keep the part's data from its last run (by default it starts fresh).
        #[arg(long)]
        keep_data: bool,
        /// Stock levels to set, e.g. `burger=100000,pizza=5` (items not named
        /// keep theirs: 100 on fresh data); applied on kept data too.
        #[arg(long, env = "FOODLAB_STOCK")]
        stock: Option<String>,
        /// Listen on free ports instead of the defaults.
        #[arg(long)]
        free_ports: bool,
        /// Processes per service, e.g. `inventory=3,order=2`: the first on
        /// the usual port, the others on free ports, all on one database
        /// (more than one needs --database-url).
        #[arg(long, value_parser = Replicas::parse, default_value = "")]
        replicas: Replicas,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Run FoodLab files on this machine and print their results; exits 0
    /// only if every lab passes, 1 if one failed, 2 if one could not run (the
    /// others still run).
    Run {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print each lab's report as JSON, one document per line, instead
        /// of tables.
        #[arg(long)]
        json: bool,
        /// Also write the labs as JUnit XML to this file (a lab is a test
        /// suite, each expectation a test case).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Also write report.html (charts inlined), report.json and a CSV
        /// per series into this directory.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// Keep the parts' databases and service logs in this directory
        /// (`<dir>/<part>/logs/<service>.log`); by default they are removed.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Start each part once and run all its labs on it, in the order
        /// given, as on a cluster install (by default each lab gets a fresh
        /// part).
        #[arg(long)]
        reuse_part: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Measure the parts of an order's way no design removes, each alone on
    /// this machine: one loopback HTTP round trip (the services' client and
    /// server), one SQLite commit of a reservation, one persistent RabbitMQ
    /// publish and its confirm, one Kafka produce with acks=all (the project's
    /// brokers, on a queue and a topic of its own, removed after); then each
    /// path's floor as the sum of the parts it takes. `make bench` sets the
    /// bench's figures beside them.
    Floor {
        /// Times each part is measured (after a tenth as many untimed).
        #[arg(long, default_value_t = 2000)]
        rounds: u32,
        /// Print the figures as one JSON document.
        #[arg(long)]
        json: bool,
        /// The RabbitMQ to publish to.
        #[arg(
            long,
            env = "FOODLAB_AMQP_URL",
            default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
        )]
        amqp_url: String,
        /// The Kafka to produce to.
        #[arg(long, env = "FOODLAB_KAFKA_BROKERS", default_value = foodlab_transport::kafka::DEFAULT_BROKERS)]
        kafka_brokers: String,
    },
    /// Run one workload (and at most one fault or chaos step) on each part
    /// in turn on this machine and print them side by side
    /// (a `kind: FoodLabComparison` file, see manifests/compare/).
    Compare {
        file: PathBuf,
        /// Print each part's report as JSON, one document per line (as `run
        /// --json`), instead of the table.
        #[arg(long)]
        json: bool,
        /// Also write report.html (charts inlined), report.json and a CSV
        /// per series into this directory.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Measure a part on this machine: figures, not a verdict.
    ///
    /// The part starts with one replica of each service (--replicas to change),
    /// on SQLite files (--database-url: one PostgreSQL) and a billion of every
    /// item in stock, then runs its phases in turn:
    ///
    /// sync-rest: a warm-up of 500 orders at --concurrency; latency:
    /// --latency-orders orders one at a time (p50, p99, p99.9, max of POST
    /// /order, answers other than 201); throughput: --throughput-orders orders
    /// at --concurrency (orders per second and the same percentiles).
    ///
    /// async-rabbitmq: the same warm-up; accept: --latency-orders orders one
    /// at a time (the time to the 202, then waits for them to settle); end to
    /// end: 5000 orders at 500 a second, each timed from placed to reserved;
    /// drain: inventory stopped, 10,000 orders queued at --concurrency,
    /// inventory started again, and the time until its queue is empty.
    ///
    /// streaming-kafka: a warm-up of 1000 orders in one POST /orders/bulk;
    /// burst: 10,000 orders in one request, timed until accepted, until
    /// inventory decided every one and until analytics counted every order
    /// and result; replay: analytics rewound to the earliest offsets and the
    /// log read again (events per second, totals identical or not). The size
    /// flags do not apply.
    ///
    /// After each phase: every service's hop histograms (from /admin/metrics)
    /// as percentiles of what the phase added, and its CPU per order, message
    /// or event. Every wait has a deadline (a minute for orders to settle,
    /// 120 s for the others), so a bench cannot hang. The lines for people go
    /// to stderr, with a progress line while stderr is a terminal.
    Bench {
        #[arg(value_parser = part())]
        part: Transport,
        /// Orders placed one at a time: sync-rest's latency phase,
        /// async-rabbitmq's accept phase.
        #[arg(long, default_value_t = 2000)]
        latency_orders: u32,
        /// Orders of sync-rest's throughput phase.
        #[arg(long, default_value_t = 20000)]
        throughput_orders: u32,
        /// Orders in flight at once: sync-rest's throughput phase, the
        /// warm-up of sync-rest and async-rabbitmq, async-rabbitmq's backlog.
        #[arg(long, default_value_t = 16)]
        concurrency: u32,
        /// Instead: an async-rabbitmq lab at each of these sizes (e.g.
        /// `20000,200000`, 32 orders in flight) in turn on one part, through
        /// the lab engine, with what each cost: its time, verdict and
        /// latencies, the engine's memory (before, peak, after), its CPU and
        /// each service's per 1000 orders.
        #[arg(
            long,
            value_delimiter = ',',
            value_name = "ORDERS,...",
            conflicts_with_all = ["latency_orders", "throughput_orders", "concurrency", "replicas"]
        )]
        scale: Vec<u32>,
        /// Print every figure as one JSON document, on one line of stdout
        /// (the lines for people go to stderr), so two runs can be kept and
        /// compared.
        #[arg(long)]
        json: bool,
        /// Processes per service, e.g. `inventory=3` (needs --database-url).
        #[arg(long, value_parser = Replicas::parse, default_value = "")]
        replicas: Replicas,
        /// Nodes of the part's broker: 1, or 3 (the project's three-node
        /// Kafka or RabbitMQ, started if need be; RabbitMQ's queues quorum).
        #[arg(long, default_value_t = 1, value_parser = clap::builder::PossibleValuesParser::new(["1", "3"]).map(|n| n.parse::<u32>().unwrap_or(1)))]
        broker_nodes: u32,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Write the report of a FoodLab that ran on a cluster (report.html,
    /// report.json and a CSV per series, as `run --report` does), from the
    /// report its workload left beside it. Kube config from KUBECONFIG,
    /// ~/.kube/config or the pod's ServiceAccount.
    Report {
        /// The FoodLab's name.
        name: String,
        /// Its namespace (by default the kube config's).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Where to write the report (by default `.foodlab/report/<NAME>`).
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// Print the report as one JSON document (as `run --json`) instead
        /// of the table.
        #[arg(long)]
        json: bool,
    },
    /// Print the FoodLab CustomResourceDefinition as YAML.
    Crd,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs();
    let outcome = match cli.command {
        Command::Up {
            part,
            data_dir,
            keep_data,
            stock,
            free_ports,
            replicas,
            database,
        } => {
            let options = up::UpOptions {
                replicas,
                database_url: database.url().map(str::to_owned),
                transport: part,
                data_root: data_dir,
                keep_data,
                // An empty FOODLAB_STOCK asks for nothing.
                stock: stock.filter(|spec| !spec.trim().is_empty()),
                free_ports,
            };
            up::run(options).await
        }
        Command::Run {
            files,
            json,
            junit,
            report,
            data_dir,
            reuse_part,
            database,
        } => {
            let options = run::RunOptions {
                json,
                reuse_part,
                data_dir,
                junit,
                report,
                database_url: database.url().map(str::to_owned),
            };
            run::run(&files, &options).await
        }
        Command::Bench {
            part, scale, json, ..
        } if !scale.is_empty() => bench_scale::run(part, &scale, json).await,
        Command::Bench {
            part,
            latency_orders,
            throughput_orders,
            concurrency,
            json,
            replicas,
            broker_nodes,
            database,
            ..
        } => {
            let size = bench::BenchSize {
                latency_orders,
                throughput_orders,
                concurrency,
            };
            let setup = bench::BenchSetup {
                replicas,
                broker_nodes,
                database_url: database.url().map(str::to_owned),
            };
            bench::run(part, size, setup, json).await
        }
        Command::Floor {
            rounds,
            json,
            amqp_url,
            kafka_brokers,
        } => floor::run(&amqp_url, &kafka_brokers, rounds, json).await,
        Command::Compare {
            file,
            json,
            report,
            database,
        } => compare::run(&file, json, report.as_ref(), database.url()).await,
        Command::Report {
            name,
            namespace,
            report,
            json,
        } => {
            let dir = report.unwrap_or_else(|| PathBuf::from(".foodlab/report").join(&name));
            cluster_report::run(&name, namespace.as_deref(), &dir, json).await
        }
        Command::Crd => crd::print(),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            exit::code(exit::COULD_NOT_RUN)
        }
    }
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
