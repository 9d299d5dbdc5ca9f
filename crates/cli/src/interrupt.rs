//! Ctrl-C and SIGTERM: a lab or a bench stops, releasing its part first.

/// Resolves on Ctrl-C or SIGTERM. The handlers are in place when this
/// returns, before the future is first polled: a signal that arrives while
/// the caller still prints is not lost (nor does it kill the process).
pub fn interrupted() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    async fn next(signal: Option<&mut Signal>) {
        match signal {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    async move {
        tokio::select! {
            () = next(term.as_mut()) => {}
            () = next(int.as_mut()) => {}
        }
    }
}

/// Becomes true on Ctrl-C or SIGTERM, whenever it comes during the run.
pub fn flag() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let signalled = interrupted();
    tokio::spawn(async move {
        signalled.await;
        let _ = tx.send(true);
    });
    rx
}
