//! Op-level timing for `bench-train --profile`: when on, each instrumented op synchronises
//! the device around its work and adds the time to a table by name. Off (always, outside
//! the benchmark) it costs one relaxed atomic load.

use candle_core::{Device, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static ON: AtomicBool = AtomicBool::new(false);
static TIMES: Mutex<BTreeMap<&'static str, (f64, u64)>> = Mutex::new(BTreeMap::new());

pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Seconds and calls per op name since the last call.
pub fn take() -> BTreeMap<&'static str, (f64, u64)> {
    std::mem::take(&mut *TIMES.lock().expect("not poisoned"))
}

/// Run `f`, timed under `name` when profiling is on.
pub fn time<T>(name: &'static str, dev: &Device, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if !ON.load(Ordering::Relaxed) {
        return f();
    }
    dev.synchronize()?;
    let start = std::time::Instant::now();
    let out = f()?;
    dev.synchronize()?;
    let mut t = TIMES.lock().expect("not poisoned");
    let e = t.entry(name).or_default();
    e.0 += start.elapsed().as_secs_f64();
    e.1 += 1;
    Ok(out)
}
