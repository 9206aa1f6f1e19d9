//! `poll_oneoff`, the one WASI call a guest can block in (`sleep`,
//! `nanosleep`, `poll` with a timeout), held to the job's deadline and
//! interrupted by cancellation.
//!
//! Epoch interruption stops a guest only while it runs wasm code; a guest
//! asleep in the host would sleep through its deadline and its caller's
//! cancel. WASI's own `poll_oneoff` is shadowed: polls that only wait for
//! clocks are served here, sleeping in short steps that check the job's
//! deadline and cancel flag; polls that also wait for file descriptors go
//! to WASI's own, since no descriptor a job can hold ever blocks (stdin is
//! in memory, stdout and stderr are bounded buffers, files are files).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Extern, Linker};

use super::engine::TICK;
use super::state::{Interrupt, JobState, Stopped};

const MODULE: &str = "wasi_snapshot_preview1";
const NAME: &str = "poll_oneoff";

/// Bytes of one `subscription` and one `event` in guest memory.
const SUBSCRIPTION_LEN: usize = 48;
const EVENT_LEN: usize = 32;
/// Subscriptions one call may pass; real programs pass a handful.
const MAX_SUBSCRIPTIONS: u32 = 4096;

/// WASI errno values this call returns.
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOTSUP: i32 = 58;

/// WASI clock ids and flags.
const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;
const SUBSCRIPTION_CLOCK_ABSTIME: u16 = 1;
const EVENTTYPE_CLOCK: u8 = 0;

/// Replaces WASI's `poll_oneoff` in `linker` (which already holds WASI's
/// functions, the async ones) with the bounded one.
pub(crate) fn shadow(linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    let wasi = Arc::new(linker.clone());
    linker.allow_shadowing(true);
    linker.func_wrap_async(
        MODULE,
        NAME,
        move |mut caller: Caller<'_, JobState>,
              (subscriptions, events, count, nevents): (i32, i32, i32, i32)| {
            let wasi = Arc::clone(&wasi);
            Box::new(async move {
                let args = (subscriptions, events, count, nevents);
                match clock_subscriptions(&mut caller, subscriptions, count) {
                    Ok(Some(clocks)) => sleep(&mut caller, &clocks, events, nevents).await,
                    Ok(None) => {
                        // Descriptors are involved: WASI's own answers at once.
                        let original = wasi.get(&mut caller, MODULE, NAME).ok();
                        let Some(original) = original.and_then(Extern::into_func) else {
                            return Ok(ERRNO_NOTSUP);
                        };
                        original
                            .typed::<(i32, i32, i32, i32), i32>(&caller)?
                            .call_async(&mut caller, args)
                            .await
                    }
                    Err(errno) => Ok(errno),
                }
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// One clock subscription: its user data and when it fires.
struct Clock {
    userdata: u64,
    wake: Instant,
}

/// The clock subscriptions at `at`, or `None` if any subscription is not a
/// clock; a WASI errno for arguments that are not valid.
fn clock_subscriptions(
    caller: &mut Caller<'_, JobState>,
    at: i32,
    count: i32,
) -> Result<Option<Vec<Clock>>, i32> {
    let count = u32::try_from(count).map_err(|_| ERRNO_INVAL)?;
    if count == 0 || count > MAX_SUBSCRIPTIONS {
        return Err(ERRNO_INVAL);
    }
    let memory = memory(caller)?;
    let start = at as u32 as usize;
    let len = count as usize * SUBSCRIPTION_LEN;
    let bytes = memory
        .data(&*caller)
        .get(start..start.saturating_add(len))
        .ok_or(ERRNO_FAULT)?;
    let now = Instant::now();
    let base = caller.data().clock_base;
    let mut clocks = Vec::with_capacity(count as usize);
    for subscription in bytes.chunks_exact(SUBSCRIPTION_LEN) {
        let field = |offset: usize, len: usize| subscription.get(offset..offset + len);
        let u64_at = |offset| {
            field(offset, 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        let tag = field(8, 1).and_then(|b| b.first().copied());
        if tag != Some(EVENTTYPE_CLOCK) {
            return Ok(None);
        }
        let id = field(16, 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes);
        let flags = field(40, 2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)
            .unwrap_or(0);
        let (Some(userdata), Some(timeout), Some(id)) = (u64_at(0), u64_at(24), id) else {
            return Err(ERRNO_FAULT);
        };
        let absolute = flags & SUBSCRIPTION_CLOCK_ABSTIME != 0;
        let wait = match (id, absolute) {
            (CLOCK_MONOTONIC | CLOCK_REALTIME, false) => Duration::from_nanos(timeout),
            (CLOCK_MONOTONIC, true) => {
                let target = base + Duration::from_nanos(timeout);
                target.saturating_duration_since(now)
            }
            (CLOCK_REALTIME, true) => {
                let since_epoch = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                Duration::from_nanos(timeout).saturating_sub(since_epoch)
            }
            _ => return Err(ERRNO_INVAL),
        };
        // A wait too long to represent is the same as forever: the
        // deadline ends it.
        let wake = now
            .checked_add(wait)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        clocks.push(Clock { userdata, wake });
    }
    Ok(Some(clocks))
}

/// Sleeps until the first clock fires, then reports the clocks that fired;
/// stops the guest if its deadline passes or it is cancelled first.
async fn sleep(
    caller: &mut Caller<'_, JobState>,
    clocks: &[Clock],
    events: i32,
    nevents: i32,
) -> wasmtime::Result<i32> {
    let Some(first) = clocks.iter().map(|clock| clock.wake).min() else {
        return Ok(ERRNO_INVAL);
    };
    let interrupt = caller.data().interrupt.clone();
    sleep_until(first, &interrupt)
        .await
        .map_err(wasmtime::Error::new)?;
    let now = Instant::now();
    let fired: Vec<&Clock> = clocks.iter().filter(|clock| clock.wake <= now).collect();
    let memory = match memory(caller) {
        Ok(memory) => memory,
        Err(errno) => return Ok(errno),
    };
    let data = memory.data_mut(&mut *caller);
    let start = events as u32 as usize;
    let Some(out) = data.get_mut(start..start.saturating_add(fired.len() * EVENT_LEN)) else {
        return Ok(ERRNO_FAULT);
    };
    for (event, clock) in out.chunks_exact_mut(EVENT_LEN).zip(&fired) {
        event.fill(0);
        if let Some(userdata) = event.get_mut(..8) {
            userdata.copy_from_slice(&clock.userdata.to_le_bytes());
        }
        // error (offset 8) is 0: success; type (offset 10) is clock (0).
    }
    let count = u32::try_from(fired.len()).unwrap_or(u32::MAX);
    let at = nevents as u32 as usize;
    let Some(slot) = data.get_mut(at..at.saturating_add(4)) else {
        return Ok(ERRNO_FAULT);
    };
    slot.copy_from_slice(&count.to_le_bytes());
    Ok(0)
}

/// Sleeps until `wake` in steps of at most one epoch tick, checking the
/// job's cancel flag and deadline between them. The sleep is a timer: it
/// never blocks a thread of the async runtime.
async fn sleep_until(wake: Instant, interrupt: &Interrupt) -> Result<(), Stopped> {
    loop {
        interrupt.check()?;
        let now = Instant::now();
        if now >= wake {
            return Ok(());
        }
        let until = wake.min(interrupt.deadline).min(now + TICK);
        tokio::time::sleep_until(until.into()).await;
    }
}

fn memory(caller: &mut Caller<'_, JobState>) -> Result<wasmtime::Memory, i32> {
    caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or(ERRNO_FAULT)
}

/// The guest's monotonic clock: nanoseconds since its job began, so that
/// absolute waits on it map to this host's instants.
pub(crate) struct JobClock(pub(crate) Instant);

impl wasmtime_wasi::HostMonotonicClock for JobClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
