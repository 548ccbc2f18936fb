//! Waiting until every kernel program that was running has finished.
//!
//! The programs run inside RCU read-side sections (tracepoints, and the
//! BPF trampolines of fentry and fexit, which also disable migration), and
//! the kernel completes an update of a map of maps only after an RCU grace
//! period, so that its caller knows no program still uses what it
//! replaced. Writing the one slot of `BARRIER`, which no program reads,
//! therefore returns only once every program that started before the write
//! has returned, however long it was preempted or its virtual CPU stolen.
//!
//! The collector waits so:
//! - after flipping the allocation-failure epoch, so that nothing counts
//!   under the old one while it is read ([`crate::alloc_failures`]);
//! - after detaching the hooks at shutdown, so that the last drain of the
//!   ring buffer takes every record a hook wrote.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aya::maps::{Array, ArrayOfMaps, MapData, MapError};

/// A handle on `BARRIER`; clones share it.
#[derive(Clone)]
pub struct ProgramBarrier {
    maps: Arc<Mutex<Maps>>,
}

struct Maps {
    outer: ArrayOfMaps<MapData, Array<MapData, u32>>,
    /// What is written into the slot, again and again.
    inner: Array<MapData, u32>,
}

impl ProgramBarrier {
    /// `outer` is the object's `BARRIER`, loaded or opened from its pin.
    pub fn new(outer: ArrayOfMaps<MapData, Array<MapData, u32>>) -> Result<Self, MapError> {
        Ok(Self {
            maps: Arc::new(Mutex::new(Maps {
                outer,
                inner: Array::create(1, 0)?,
            })),
        })
    }

    /// Returns once every program running when it was called has finished,
    /// with how long that took. Blocks the calling thread for an RCU grace
    /// period: milliseconds, longer on a loaded host.
    pub fn wait_blocking(&self) -> Result<Duration, MapError> {
        let started = Instant::now();
        let mut maps = self
            .maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Maps { outer, inner } = &mut *maps;
        outer.set(0, inner, 0)?;
        Ok(started.elapsed())
    }

    /// [`Self::wait_blocking`] on a thread of the runtime's blocking pool,
    /// so the event loop goes on meanwhile.
    pub async fn wait(&self) -> Result<Duration, MapError> {
        let barrier = self.clone();
        match tokio::task::spawn_blocking(move || barrier.wait_blocking()).await {
            Ok(waited) => waited,
            // The closure does not panic; if the pool is gone, wait here.
            Err(_) => self.wait_blocking(),
        }
    }
}
