//! Starting one of the project's brokers with its script (`scripts/<broker>.sh start`),
//! when a lab needs it and nothing answers yet.

use std::path::PathBuf;

use crate::platform::PlatformError;

/// Which script starts a broker, and how to tell the user when it is missing.
pub struct BrokerScript {
    /// For logs, e.g. "RabbitMQ".
    pub broker: &'static str,
    /// Environment variable naming the script, e.g. `FOODLAB_RABBITMQ_SCRIPT`.
    pub env: &'static str,
    /// The script under the current directory, e.g. `scripts/rabbitmq.sh`.
    pub default_path: &'static str,
    /// The make target that starts it, e.g. `rabbitmq-up`.
    pub make_target: &'static str,
}

impl BrokerScript {
    /// Runs `script` (else the one named by the environment, else the default
    /// path) with `start`. `absent` says what was looked for and not found.
    pub async fn start(&self, script: Option<PathBuf>, absent: &str) -> Result<(), PlatformError> {
        let script = script
            .or_else(|| std::env::var_os(self.env).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(self.default_path));
        if !script.is_file() {
            return Err(PlatformError::Setup(format!(
                "{absent} and {} is not here to start one \
                 (run from the repository, `make {}`, or set {})",
                script.display(),
                self.make_target,
                self.env
            )));
        }
        tracing::info!(script = %script.display(), broker = self.broker, "starting the broker");
        let status = tokio::process::Command::new(&script)
            .arg("start")
            .status()
            .await
            .map_err(|e| PlatformError::Setup(format!("cannot run {}: {e}", script.display())))?;
        if !status.success() {
            return Err(PlatformError::Setup(format!(
                "{} start failed: {status}",
                script.display()
            )));
        }
        Ok(())
    }
}
