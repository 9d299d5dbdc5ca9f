//! A service stopped while it is still starting (here: waiting for a database
//! that does not answer) goes at once and cleanly, as a pod stopped or failing
//! its probes at that moment must.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn sigterm_while_waiting_for_the_database_stops_the_service_with_success() {
    // A port nothing listens on: every connection is refused, so order keeps waiting.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_order"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(data.path())
        .arg("--database-url")
        .arg(format!("postgres://foodlab@127.0.0.1:{port}/foodlab"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let waiting = std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(30)).ok())
        .find(|line| line.contains("database not reachable yet"));
    assert!(
        waiting.is_some(),
        "order never said it was waiting for the database"
    );

    kill(
        Pid::from_raw(i32::try_from(child.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_up_to(&mut child, Duration::from_secs(30));
    let said: Vec<String> = lines.iter().collect();
    assert!(
        status.is_some_and(|s| s.success()),
        "order did not end cleanly on SIGTERM while starting: {status:?}, it said {said:?}"
    );
    assert!(
        said.iter()
            .any(|line| line.contains("stopped while starting")),
        "{said:?}"
    );
    assert!(
        !said.iter().any(|line| line.contains("\"listening\"")),
        "{said:?}"
    );
}

fn wait_up_to(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
