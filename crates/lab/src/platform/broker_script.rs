//! The project's broker scripts (`scripts/<broker>.sh`): starting a broker
//! when a lab needs it and nothing answers yet, and the commands on its
//! nodes (`pid N`, `kill N`, `start-node N`) the local platform's broker
//! chaos uses.

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
    /// The variable that asks the script for a cluster, e.g. `RABBITMQ_NODES`.
    pub nodes_env: &'static str,
}

impl BrokerScript {
    /// `script`, else the one named by the environment, else the default path.
    pub fn path(&self, script: Option<PathBuf>) -> PathBuf {
        script
            .or_else(|| std::env::var_os(self.env).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(self.default_path))
    }

    /// Runs `start` (of `nodes` nodes). `absent` says what was looked for
    /// and not found.
    pub async fn start(
        &self,
        script: Option<PathBuf>,
        nodes: u32,
        absent: &str,
    ) -> Result<(), PlatformError> {
        let script = self.path(script);
        if !script.is_file() {
            return Err(PlatformError::Setup(format!(
                "{absent} and {} is not here to start one \
                 (run from the repository, `make {}`, or set {})",
                script.display(),
                self.make_target,
                self.env
            )));
        }
        tracing::info!(script = %script.display(), broker = self.broker, nodes, "starting the broker");
        let status = tokio::process::Command::new(&script)
            .arg("start")
            .env(self.nodes_env, nodes.to_string())
            .stdin(std::process::Stdio::null())
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

    /// Runs `script ARGS` for a broker of `nodes` nodes; its output, trimmed
    /// (on failure, the error says the script's last line on stderr).
    pub async fn run(
        &self,
        script: &std::path::Path,
        nodes: u32,
        args: &[&str],
    ) -> Result<String, PlatformError> {
        let output = tokio::process::Command::new(script)
            .args(args)
            .env(self.nodes_env, nodes.to_string())
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| PlatformError::Setup(format!("cannot run {}: {e}", script.display())))?;
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stderr);
            return Err(PlatformError::Setup(format!(
                "{} {} failed ({}): {}",
                script.display(),
                args.join(" "),
                output.status,
                said.lines().last().unwrap_or("no output")
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}
