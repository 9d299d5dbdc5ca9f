//! Settings every service shares, as flags with environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;

use foodlab_domain::{Faults, Transport};
use foodlab_store::{Database, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors and `kubectl logs | jq`.
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// How the workflow's services talk to each other.
    #[arg(long, env = "FOODLAB_TRANSPORT", value_enum, default_value_t = Transport::Rest)]
    pub transport: Transport,

    /// Address to listen on [default: 127.0.0.1 and the service's own port].
    #[arg(long, env = "FOODLAB_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Directory for the service's SQLite database.
    #[arg(long, env = "FOODLAB_DATA_DIR", default_value = ".foodlab/data")]
    pub data_dir: PathBuf,

    /// A PostgreSQL database shared by every replica of every service of the
    /// part (`postgres://user:password@host:port/database`), instead of a
    /// SQLite file of the service's own in the data directory.
    #[arg(long, env = "FOODLAB_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Log format.
    #[arg(long, env = "FOODLAB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub faults: FaultArgs,

    #[command(flatten)]
    pub admin: crate::admin_auth::AdminArgs,
}

/// Faults injected from start-up; the admin API changes them later.
#[derive(Debug, Clone, clap::Args)]
pub struct FaultArgs {
    /// Delay added to every business request, in milliseconds.
    #[arg(long, env = "FOODLAB_FAULT_DELAY_MS", default_value_t = 0)]
    pub fault_delay_ms: u64,

    /// Fraction of business requests that fail (0..1).
    #[arg(long, env = "FOODLAB_FAULT_FAIL_RATE", default_value_t = 0.0)]
    pub fault_fail_rate: f64,

    /// Status code of injected failures.
    #[arg(long, env = "FOODLAB_FAULT_FAIL_STATUS", default_value_t = foodlab_domain::fault::DEFAULT_FAIL_STATUS)]
    pub fault_fail_status: u16,
}

impl FaultArgs {
    pub fn to_faults(&self) -> Result<Faults, foodlab_domain::FaultError> {
        let faults = Faults {
            delay_ms: self.fault_delay_ms,
            fail_rate: self.fault_fail_rate,
            fail_status: self.fault_fail_status,
        };
        faults.validate()?;
        Ok(faults)
    }
}

impl ServiceArgs {
    pub fn listen_or(&self, default_port: u16) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default_port)))
    }

    /// The token the admin API asks for (none: open).
    pub fn admin_token(&self) -> std::io::Result<crate::AdminToken> {
        self.admin.token()
    }

    /// The service's database: the PostgreSQL one when a URL is given, else
    /// its SQLite file `SERVICE.db` in the data directory.
    pub fn database(&self, service: &str) -> Result<Database, StoreError> {
        Database::for_service(service, &self.data_dir, self.database_url.as_deref())
    }
}
