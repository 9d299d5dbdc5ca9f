//! One service's process, kept at the replica count it was asked for, as a
//! Deployment would keep it: started and waited for until ready, watched,
//! and when it ends without being asked to, reported at once and started
//! again with backoff. Scaling to zero is a stop, not a death.
//!
//! Each service has a task of its own that owns its child process; the
//! platform talks to it through requests, so a scale and a death never race.

use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use foodlab_domain::Backoff;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

use super::Logs;
use crate::platform::PlatformError;
use crate::spec::Service;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The first restart waits this long; each death in a row doubles it.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A service that stayed up this long starts its backoff afresh.
const BACKOFF_RESET: Duration = Duration::from_secs(60);

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Code(i32),
    Signal(i32),
    /// Its status could not be read.
    Unknown,
}

impl From<ExitStatus> for Ended {
    fn from(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Code(code),
            (None, Some(signal)) => Self::Signal(signal),
            (None, None) => Self::Unknown,
        }
    }
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exited with code {code}"),
            Self::Signal(signal) => match Signal::try_from(*signal) {
                Ok(name) => write!(f, "was killed by {name}"),
                Err(_) => write!(f, "was killed by signal {signal}"),
            },
            Self::Unknown => f.write_str("ended (status unknown)"),
        }
    }
}

/// What the supervisor reports about a service it did not stop itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceEvent {
    /// The service ended on its own; it is started again after `restart_in`.
    Died {
        service: Service,
        pid: u32,
        ended: Ended,
        restart_in: Duration,
    },
    /// The service is running (and ready) again.
    Restarted {
        service: Service,
        pid: u32,
        restarts: u32,
    },
    /// A restart did not bring it back; the next try is after `retry_in`.
    RestartFailed {
        service: Service,
        reason: String,
        retry_in: Duration,
    },
}

impl ServiceEvent {
    pub fn service(&self) -> Service {
        match self {
            Self::Died { service, .. }
            | Self::Restarted { service, .. }
            | Self::RestartFailed { service, .. } => *service,
        }
    }
}

impl fmt::Display for ServiceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Died {
                service,
                pid,
                ended,
                restart_in,
            } => write!(
                f,
                "{service} (pid {pid}) {ended}; restarting in {:.1} s",
                restart_in.as_secs_f64()
            ),
            Self::Restarted {
                service,
                pid,
                restarts,
            } => write!(
                f,
                "{service} restarted (pid {pid}, restart {restarts}) and ready"
            ),
            Self::RestartFailed {
                service,
                reason,
                retry_in,
            } => write!(
                f,
                "{service} could not be restarted: {reason}; next try in {:.1} s",
                retry_in.as_secs_f64()
            ),
        }
    }
}

/// How to start every service of a platform; shared by their supervisors.
pub(super) struct Launcher {
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    pub logs: Logs,
    pub env: Vec<(String, String)>,
    pub http: reqwest::Client,
    pub events: broadcast::Sender<ServiceEvent>,
}

/// One process of a service: its command line.
pub(super) struct Unit {
    pub service: Service,
    /// Its log file's name (`super::process_name`).
    pub name: String,
    pub port: u16,
    pub args: Vec<String>,
    /// Environment of this service only; replaceable before its next start.
    pub env: Vec<(String, String)>,
}

enum Request {
    Scale(u32, oneshot::Sender<Result<(), PlatformError>>),
    /// Kill the running process as a pod kill does: SIGTERM and the grace
    /// period first unless it is zero, then SIGKILL; it is started again
    /// like any process that died. Answers its pid, `None` if none ran.
    Kill(Duration, oneshot::Sender<Option<u32>>),
    SetEnv(Vec<(String, String)>),
    Status(oneshot::Sender<Status>),
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Status {
    /// Replicas asked for (what a Deployment's `spec.replicas` says).
    pub desired: u32,
    /// The running process, if there is one.
    pub pid: Option<u32>,
}

/// The handle the platform keeps: dropping it kills the service.
pub(super) struct Supervisor {
    service: Service,
    requests: mpsc::Sender<Request>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // The task owns the child (spawned with kill_on_drop): aborting it kills the process.
        self.task.abort();
    }
}

impl Supervisor {
    /// Starts supervising `unit` at zero replicas.
    pub fn spawn(unit: Unit, launcher: std::sync::Arc<Launcher>) -> Self {
        let service = unit.service;
        let (requests, inbox) = mpsc::channel(16);
        let task = tokio::spawn(
            Watch {
                unit,
                launcher,
                running: None,
                desired: 0,
                restart_at: None,
                backoff: Backoff::new(BACKOFF_START, BACKOFF_MAX),
                restarts: 0,
            }
            .run(inbox),
        );
        Self {
            service,
            requests,
            task,
        }
    }

    fn gone(&self) -> PlatformError {
        PlatformError::Setup(format!("the supervisor of {} has stopped", self.service))
    }

    /// Returns once the service is ready (1) or stopped (0).
    pub async fn scale(&self, replicas: u32) -> Result<(), PlatformError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Scale(replicas, reply))
            .await
            .map_err(|_| self.gone())?;
        answer.await.map_err(|_| self.gone())?
    }

    /// Kills the running process (see `Request::Kill`); its pid, if one ran.
    pub async fn kill(&self, grace: Duration) -> Result<Option<u32>, PlatformError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Kill(grace, reply))
            .await
            .map_err(|_| self.gone())?;
        answer.await.map_err(|_| self.gone())
    }

    pub async fn set_env(&self, env: Vec<(String, String)>) -> Result<(), PlatformError> {
        self.requests
            .send(Request::SetEnv(env))
            .await
            .map_err(|_| self.gone())
    }

    pub async fn status(&self) -> Result<Status, PlatformError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Status(reply))
            .await
            .map_err(|_| self.gone())?;
        answer.await.map_err(|_| self.gone())
    }
}

struct Running {
    child: Child,
    pid: u32,
    since: Instant,
}

/// The state one supervisor task owns.
struct Watch {
    unit: Unit,
    launcher: std::sync::Arc<Launcher>,
    running: Option<Running>,
    desired: u32,
    /// A restart is due at this time (the service died and is still wanted).
    restart_at: Option<Instant>,
    backoff: Backoff,
    restarts: u32,
}

impl Watch {
    async fn run(mut self, mut inbox: mpsc::Receiver<Request>) {
        loop {
            tokio::select! {
                request = inbox.recv() => match request {
                    Some(request) => self.handle(request).await,
                    // The platform is gone; dropping the child kills it.
                    None => return,
                },
                status = exited(&mut self.running) => self.died(status),
                () = due(self.restart_at) => self.restart().await,
            }
        }
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Scale(replicas, reply) => {
                let result = self.scale(replicas).await;
                let _ = reply.send(result);
            }
            Request::Kill(grace, reply) => {
                let pid = self.kill(grace).await;
                let _ = reply.send(pid);
            }
            Request::SetEnv(env) => self.unit.env = env,
            Request::Status(reply) => {
                let _ = reply.send(Status {
                    desired: self.desired,
                    pid: self.running.as_ref().map(|r| r.pid),
                });
            }
        }
    }

    async fn scale(&mut self, replicas: u32) -> Result<(), PlatformError> {
        let service = self.unit.service;
        match replicas {
            0 => {
                self.desired = 0;
                self.restart_at = None;
                if let Some(running) = self.running.take() {
                    stop(service, running.child).await;
                }
                Ok(())
            }
            1 => {
                self.desired = 1;
                if self.running.is_some() {
                    return Ok(());
                }
                self.restart_at = None;
                match self.launcher.start(&self.unit).await {
                    Ok(running) => {
                        self.running = Some(running);
                        Ok(())
                    }
                    Err(error) => {
                        // Still wanted: keep trying, as a Deployment would.
                        self.restart_at = Some(Instant::now() + self.next_backoff());
                        Err(error)
                    }
                }
            }
            n => Err(PlatformError::Unsupported {
                service,
                reason: format!("the local platform runs one replica per service, not {n}"),
            }),
        }
    }

    async fn kill(&mut self, grace: Duration) -> Option<u32> {
        let running = self.running.as_mut()?;
        let pid = running.pid;
        tracing::warn!(service = %self.unit.service, pid, grace_ms = grace.as_millis(), "killing the process");
        if !grace.is_zero() {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
            }
            if let Ok(status) = tokio::time::timeout(grace, running.child.wait()).await {
                self.died(status);
                return Some(pid);
            }
        }
        // The death itself is seen by the watch loop, which restarts it.
        let _ = running.child.start_kill();
        Some(pid)
    }

    fn died(&mut self, status: std::io::Result<ExitStatus>) {
        let Some(running) = self.running.take() else {
            return;
        };
        if running.since.elapsed() >= BACKOFF_RESET {
            self.backoff.reset();
        }
        let ended = status.map_or(Ended::Unknown, Ended::from);
        let restart_in = self.next_backoff();
        self.restart_at = (self.desired > 0).then(|| Instant::now() + restart_in);
        let event = ServiceEvent::Died {
            service: self.unit.service,
            pid: running.pid,
            ended,
            restart_in,
        };
        tracing::warn!(
            service = %self.unit.service,
            pid = running.pid,
            %ended,
            restart_in_ms = restart_in.as_millis(),
            "service died"
        );
        let _ = self.launcher.events.send(event);
    }

    async fn restart(&mut self) {
        self.restart_at = None;
        let service = self.unit.service;
        let event = match self.launcher.start(&self.unit).await {
            Ok(running) => {
                self.restarts += 1;
                let pid = running.pid;
                self.running = Some(running);
                tracing::info!(%service, pid, restarts = self.restarts, "service restarted");
                ServiceEvent::Restarted {
                    service,
                    pid,
                    restarts: self.restarts,
                }
            }
            Err(error) => {
                let retry_in = self.next_backoff();
                self.restart_at = Some(Instant::now() + retry_in);
                tracing::error!(%service, %error, retry_in_ms = retry_in.as_millis(), "restart failed");
                ServiceEvent::RestartFailed {
                    service,
                    reason: error.to_string(),
                    retry_in,
                }
            }
        };
        let _ = self.launcher.events.send(event);
    }

    fn next_backoff(&mut self) -> Duration {
        self.backoff.pause()
    }
}

/// Resolves when the running child ends; never when there is none.
async fn exited(running: &mut Option<Running>) -> std::io::Result<ExitStatus> {
    match running {
        Some(running) => running.child.wait().await,
        None => std::future::pending().await,
    }
}

async fn due(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Launcher {
    /// Starts a service and waits until it answers ready.
    async fn start(&self, unit: &Unit) -> Result<Running, PlatformError> {
        let service = unit.service;
        let binary = self.bin_dir.join(service.name());
        let io = |source| PlatformError::Io { service, source };
        let mut command = Command::new(&binary);
        command
            .args(&unit.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(unit.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .process_group(0);
        if self.logs == Logs::Files {
            let dir = self.data_dir.join("logs");
            std::fs::create_dir_all(&dir).map_err(io)?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{}.log", unit.name)))
                .map_err(io)?;
            command.stdout(file.try_clone().map_err(io)?).stderr(file);
        }
        die_with_parent(&mut command);
        let child = command.spawn().map_err(|e| PlatformError::Io {
            service,
            source: std::io::Error::new(
                e.kind(),
                format!("cannot start {}: {e}", binary.display()),
            ),
        })?;
        let pid = child.id().unwrap_or_default();
        tracing::info!(%service, port = unit.port, pid, "service started");
        let mut running = Running {
            child,
            pid,
            since: Instant::now(),
        };
        match self.wait_ready(unit, &mut running.child, pid).await {
            Ok(()) => Ok(running),
            Err(error) => {
                stop(service, running.child).await;
                Err(error)
            }
        }
    }

    /// Ready when the child itself says so: an answer from another process
    /// on its port (one that took the port first) is not the child's.
    async fn wait_ready(
        &self,
        unit: &Unit,
        child: &mut Child,
        pid: u32,
    ) -> Result<(), PlatformError> {
        let service = unit.service;
        let url = format!("http://127.0.0.1:{}/readyz", unit.port);
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut other = None;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let taken = other
                    .map(|o| format!(" (port {} is answered by {o})", unit.port))
                    .unwrap_or_default();
                return Err(PlatformError::NotReady {
                    service,
                    reason: format!("{}{taken}{}", Ended::from(status), self.log_tail(unit)),
                });
            }
            if let Ok(response) = self.http.get(&url).send().await {
                let ok = response.status().is_success();
                let answer: serde_json::Value = response.json().await.unwrap_or_default();
                let answered_by = answer["pid"].as_u64();
                if answered_by == Some(u64::from(pid)) && answer["service"] == service.name() {
                    if ok {
                        return Ok(());
                    }
                } else {
                    other = Some(format!(
                        "{} (pid {})",
                        answer["service"]
                            .as_str()
                            .unwrap_or("a process that is not a FoodLab service"),
                        answered_by.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
                    ));
                }
            }
            if Instant::now() >= deadline {
                let taken = other
                    .map(|o| format!("; the port is answered by {o}"))
                    .unwrap_or_default();
                return Err(PlatformError::NotReady {
                    service,
                    reason: format!("no ready answer at {url} within {READY_TIMEOUT:?}{taken}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn log_tail(&self, unit: &Unit) -> String {
        let path = self
            .data_dir
            .join("logs")
            .join(format!("{}.log", unit.name));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(10)..].join("\n");
                format!("; last log lines ({}):\n{tail}", path.display())
            }
            Err(_) => String::new(),
        }
    }
}

/// SIGTERM, then SIGKILL after a grace period.
async fn stop(service: Service, mut child: Child) {
    if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        if let Ok(Ok(status)) = tokio::time::timeout(STOP_GRACE, child.wait()).await {
            tracing::info!(%service, %status, "service stopped");
            return;
        }
    }
    let _ = child.kill().await;
    tracing::warn!(%service, "service killed after the grace period");
}

#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only makes
    // an async-signal-safe system call (prctl).
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ending_reads_as_a_code_or_a_signal() {
        assert_eq!(
            Ended::from(ExitStatus::from_raw(3 << 8)).to_string(),
            "exited with code 3"
        );
        assert_eq!(
            Ended::from(ExitStatus::from_raw(9)).to_string(),
            "was killed by SIGKILL"
        );
    }

    #[test]
    fn a_death_names_the_service_and_the_restart() {
        let event = ServiceEvent::Died {
            service: Service::Inventory,
            pid: 42,
            ended: Ended::Signal(9),
            restart_in: Duration::from_millis(500),
        };
        assert_eq!(
            event.to_string(),
            "inventory (pid 42) was killed by SIGKILL; restarting in 0.5 s"
        );
    }
}
