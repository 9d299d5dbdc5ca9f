//! The nodes of the project's broker, as the local platform's chaos sees
//! them: each a process of the broker's script (`pid N`, `kill N`,
//! `start-node N`), named `<broker>-N`. A killed node is started again, as
//! a StatefulSet recreates a pod under its name, and is back once the
//! script says it serves.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::platform::PlatformError;
use crate::platform::broker_script::BrokerScript;
use crate::spec::Broker;

/// Where a killed node is on its way back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Return {
    Starting,
    Back,
    Failed(String),
}

pub struct BrokerNodes {
    broker: Broker,
    script: &'static BrokerScript,
    path: PathBuf,
    nodes: u32,
    /// How long a killed node stays down before it is started again.
    restart_after: Duration,
    returns: Arc<Mutex<BTreeMap<u32, Return>>>,
}

impl BrokerNodes {
    pub fn new(
        broker: Broker,
        script: &'static BrokerScript,
        path: PathBuf,
        nodes: u32,
        restart_after: Duration,
    ) -> Self {
        Self {
            broker,
            script,
            path,
            nodes,
            restart_after,
            returns: Arc::default(),
        }
    }

    pub fn broker(&self) -> Broker {
        self.broker
    }

    fn name(&self, node: u32) -> String {
        format!("{}-{node}", self.broker)
    }

    fn number(&self, name: &str) -> Result<u32, PlatformError> {
        name.strip_prefix(self.broker.name())
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|n| n.parse().ok())
            .filter(|n| (1..=self.nodes).contains(n))
            .ok_or_else(|| self.error(format!("no node named {name}")))
    }

    fn error(&self, reason: String) -> PlatformError {
        PlatformError::Broker {
            broker: self.broker,
            reason,
        }
    }

    fn returns(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Return>> {
        self.returns.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn pid(&self, node: u32) -> Option<u32> {
        let n = node.to_string();
        let pid = self.script.run(&self.path, self.nodes, &["pid", &n]).await;
        pid.ok().and_then(|pid| pid.parse().ok())
    }

    /// The nodes running now and not on their way back from a kill.
    pub async fn running(&self) -> Result<Vec<String>, PlatformError> {
        let mut running = Vec::new();
        for node in 1..=self.nodes {
            let returning = self
                .returns()
                .get(&node)
                .is_some_and(|r| *r != Return::Back);
            if !returning && self.pid(node).await.is_some() {
                running.push(self.name(node));
            }
        }
        Ok(running)
    }

    /// Kills the node (SIGTERM and `grace` to stop, then SIGKILL; zero:
    /// SIGKILL at once) and starts it again after `restart_after`.
    pub async fn kill(&self, name: &str, grace: Duration) -> Result<(), PlatformError> {
        let node = self.number(name)?;
        let Some(pid) = self.pid(node).await else {
            return Err(self.error(format!("{name} is not running")));
        };
        self.returns().insert(node, Return::Starting);
        if !grace.is_zero() {
            terminate(pid, grace).await;
        }
        let n = node.to_string();
        if self.pid(node).await.is_some()
            && let Err(error) = self.script.run(&self.path, self.nodes, &["kill", &n]).await
        {
            // Not killed: not on its way back either.
            self.returns().remove(&node);
            return Err(self.error(format!("{name}: {error}")));
        }
        tracing::warn!(broker = %self.broker, node = name, pid, "broker node killed");
        let (script, path, nodes, delay) = (
            self.script,
            self.path.clone(),
            self.nodes,
            self.restart_after,
        );
        let returns = self.returns.clone();
        let (broker, name) = (self.broker, name.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let started = script.run(&path, nodes, &["start-node", &n]).await;
            let state = match started {
                Ok(_) => {
                    tracing::info!(%broker, node = %name, "broker node back");
                    Return::Back
                }
                Err(error) => {
                    tracing::error!(%broker, node = %name, %error, "broker node did not start again");
                    Return::Failed(error.to_string())
                }
            };
            returns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(node, state);
        });
        Ok(())
    }

    /// Those of `names` not serving again yet; an error for one whose start failed.
    pub fn down(&self, names: &[String]) -> Result<Vec<String>, PlatformError> {
        let mut down = Vec::new();
        for name in names {
            let node = self.number(name)?;
            match self.returns().get(&node) {
                Some(Return::Starting) => down.push(name.clone()),
                Some(Return::Failed(reason)) => {
                    return Err(self.error(format!("{name} did not start again: {reason}")));
                }
                Some(Return::Back) | None => {}
            }
        }
        Ok(down)
    }
}

/// SIGTERM, and up to `grace` for the process to end.
async fn terminate(pid: u32, grace: Duration) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    if kill(Pid::from_raw(raw), Signal::SIGTERM).is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline && kill(Pid::from_raw(raw), None).is_ok() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
