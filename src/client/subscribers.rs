//! A client's change subscribers and their delivery: one dispatcher per client at a time, so
//! that one client's callbacks never overlap and arrive in order.
//!
//! Invariant kept here: a subscription being ended (unsubscribe, close) stays listed as ending
//! until its `on_end` is over, so that a close racing an unsubscribe, or a second close, still
//! finds it and waits for it; once closed, no subscription is added.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::{ChangeFn, Inner};
use crate::callback::{CallbackGate, EndFn};
use crate::error::ErrorKind;
use crate::refresher::{self, gated};

#[derive(Default)]
pub(super) struct Subscribers {
    list: Mutex<List>,
    /// A dispatcher is running (or scheduled).
    dispatching: AtomicBool,
    /// A list arrived since the running dispatcher last looked.
    dirty: AtomicBool,
}

#[derive(Default)]
struct List {
    live: Vec<Arc<Subscription>>,
    /// Subscriptions whose end is under way, until it is over.
    ending: Vec<Arc<Subscription>>,
    next_id: u64,
    closed: bool,
}

struct Subscription {
    id: u64,
    callback: ChangeFn,
    gate: CallbackGate,
    /// Generation of the last list delivered.
    delivered: AtomicU64,
}

impl Subscribers {
    /// Adds a subscription; `Closed` (dropping `on_end` uncalled) once closed.
    pub(super) fn add(&self, callback: ChangeFn, on_end: Option<EndFn>) -> Result<u64, ErrorKind> {
        let (_gate, mut list) = gated(&self.list);
        if list.closed {
            return Err(ErrorKind::Closed);
        }
        list.next_id += 1;
        let id = list.next_id;
        list.live.push(Arc::new(Subscription {
            id,
            callback,
            gate: CallbackGate::new(on_end),
            delivered: AtomicU64::new(0),
        }));
        Ok(id)
    }

    /// Ends subscription `id`; its `on_end` has run when this returns (or, from inside its own
    /// callback, once that callback returns). `InvalidArgument` for an unknown id.
    pub(super) fn remove(&self, id: u64) -> Result<(), ErrorKind> {
        let found = {
            let (_gate, mut list) = gated(&self.list);
            let at = list.live.iter().position(|s| s.id == id);
            let found = at.map(|i| list.live.remove(i));
            if let Some(subscription) = &found {
                list.ending.push(subscription.clone());
            }
            found
        };
        let subscription = found.ok_or(ErrorKind::InvalidArgument)?;
        subscription.gate.end();
        self.forget_ended();
        Ok(())
    }

    /// Ends every subscription and refuses new ones; returns once every end is over, including
    /// those another close or an unsubscribe started.
    pub(super) fn close(&self) {
        let ending = {
            let (_gate, mut list) = gated(&self.list);
            list.closed = true;
            let closed = std::mem::take(&mut list.live);
            list.ending.extend(closed);
            list.ending.clone()
        };
        for subscription in &ending {
            subscription.gate.end();
        }
        self.forget_ended();
    }

    /// Drops the subscriptions whose end is over from those ending.
    fn forget_ended(&self) {
        let (_gate, mut list) = gated(&self.list);
        list.ending.retain(|s| !s.gate.is_ended());
    }

    /// In a child after fork: a dispatcher the parent was running does not exist here.
    pub(super) fn forget_dispatcher(&self) {
        self.dispatching.store(false, Ordering::Release);
    }

    /// A new list is current: delivers it to every subscriber on a background thread.
    pub(super) fn notify(&self, client: Weak<Inner>) {
        self.dirty.store(true, Ordering::Release);
        if self.dispatching.swap(true, Ordering::AcqRel) {
            return; // the running dispatcher sees `dirty`
        }
        refresher::spawn(Box::new(move || deliver(client)));
    }
}

/// Delivers the current list to every subscriber that has not seen it, until no new list came
/// meanwhile.
fn deliver(weak: Weak<Inner>) {
    let Some(inner) = weak.upgrade() else { return };
    let subscribers = &inner.subscribers;
    loop {
        subscribers.dirty.store(false, Ordering::Release);
        let live = {
            let (_gate, list) = gated(&subscribers.list);
            list.live.clone()
        };
        if let Some(snapshot) = inner.picker.current() {
            for subscription in live {
                if subscription.delivered.load(Ordering::Acquire) >= snapshot.generation
                    || inner.picker.is_closed()
                {
                    continue;
                }
                let ran = subscription
                    .gate
                    .run(|| (subscription.callback)(&snapshot.instances));
                if ran.is_some() {
                    subscription
                        .delivered
                        .store(snapshot.generation, Ordering::Release);
                }
            }
        }
        subscribers.dispatching.store(false, Ordering::Release);
        if !subscribers.dirty.load(Ordering::Acquire)
            || subscribers.dispatching.swap(true, Ordering::AcqRel)
        {
            return;
        }
    }
}
