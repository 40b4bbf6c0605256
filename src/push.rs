//! The process's push runtime: one library thread running a current-thread tokio runtime,
//! started on first use, that serves every push stream of the process (never a caller's thread,
//! never a thread per client). A forked child leaks the parent's (its thread does not exist
//! there) and starts its own when a client of the child first needs one.

use std::future::Future;
use std::sync::atomic::AtomicPtr;
use std::sync::OnceLock;

use crate::refresher::per_fork;

struct Runtime {
    fork_generation: u64,
    handle: OnceLock<Option<tokio::runtime::Handle>>,
}

static RUNTIME: AtomicPtr<Runtime> = AtomicPtr::new(std::ptr::null_mut());

fn runtime() -> &'static Runtime {
    per_fork(
        &RUNTIME,
        |r| r.fork_generation,
        |generation| Runtime {
            fork_generation: generation,
            handle: OnceLock::new(),
        },
    )
}

/// The runtime's handle; `None` when its thread cannot be started (then there is no push, and
/// polling serves).
fn handle() -> Option<&'static tokio::runtime::Handle> {
    runtime()
        .handle
        .get_or_init(|| {
            // One blocking thread at most, for the logins push needs (over HTTP, as the Nacos
            // clients do); it exits when idle.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .max_blocking_threads(1)
                .thread_keep_alive(std::time::Duration::from_secs(10))
                .build()
                .ok()?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("easdirect-push".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .ok()?;
            Some(handle)
        })
        .as_ref()
}

/// A task on the push runtime; dropping it stops the task at its next await.
pub(crate) struct Task {
    abort: tokio::task::AbortHandle,
    fork_generation: u64,
}

impl Drop for Task {
    fn drop(&mut self) {
        // In a child after fork the task belongs to the parent's runtime, which no thread runs
        // here: nothing of it may be touched (its locks may be held by threads that are gone).
        if self.fork_generation == crate::refresher::fork_generation() {
            self.abort.abort();
        }
    }
}

/// Runs `task` on the push runtime; `None` when the runtime cannot start.
pub(crate) fn spawn(task: impl Future<Output = ()> + Send + 'static) -> Option<Task> {
    let handle = handle()?;
    Some(Task {
        abort: handle.spawn(task).abort_handle(),
        fork_generation: crate::refresher::fork_generation(),
    })
}
