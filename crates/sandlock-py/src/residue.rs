//! Disposal of what a finished run still holds, off the caller's path.
//!
//! A run with `max_disk` watches the writable directories with inotify, and closing an inotify
//! instance waits for a kernel grace period (10-20 ms). On an asyncio loop that would stall every
//! other task, and on a worker thread it would add to every run's latency, so such residues go to
//! one helper thread for the whole process, started the first time one is needed. Runs without
//! `max_disk` hold nothing and never start it.

use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};

use sandlock_core::Residue;

static DROPPER: OnceLock<Option<Mutex<Sender<Residue>>>> = OnceLock::new();

/// Drops `residue` on the helper thread (or here, if the thread cannot be started).
pub(crate) fn dispose(residue: Residue) {
    let sender = DROPPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Residue>();
        std::thread::Builder::new()
            .name("sandlock-residue".into())
            .spawn(move || rx.into_iter().for_each(drop))
            .ok()
            .map(|_| Mutex::new(tx))
    });
    let unsent = match sender {
        Some(tx) => match tx.lock() {
            Ok(tx) => tx.send(residue).err().map(|e| e.0),
            Err(_) => Some(residue),
        },
        None => Some(residue),
    };
    drop(unsent);
}
