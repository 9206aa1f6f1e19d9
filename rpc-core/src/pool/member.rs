//! One server of a pool: its client, its load, its latency and whether it
//! is in or out.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::client::Client;

/// Weight of a new round-trip sample in the moving average.
const EWMA_WEIGHT: f64 = 0.3;

#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) addr: String,
    pub(crate) client: Client,
    outstanding: AtomicU32,
    /// Exponentially weighted moving average of round trips, in
    /// microseconds; 0 until the first sample.
    ewma_us: AtomicU64,
    picks: AtomicU64,
    health: Mutex<Health>,
    /// Wakes the requests in flight on it when health checks find it
    /// silent, so that they go to another server.
    silent: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Health {
    /// Out of rotation until then.
    ejected_until: Option<Instant>,
    /// Failures in a row, for the backoff.
    failures: u32,
    /// Its backoff passed and one request is finding out whether it is
    /// back; the others keep away until it answers.
    probing: bool,
}

impl Member {
    pub(crate) fn new(addr: String, client: Client) -> Member {
        Member {
            addr,
            client,
            outstanding: AtomicU32::new(0),
            ewma_us: AtomicU64::new(0),
            picks: AtomicU64::new(0),
            health: Mutex::new(Health::default()),
            silent: tokio::sync::Notify::new(),
        }
    }

    /// What sending one more request here is expected to cost: latency
    /// times the queue it would join. Unmeasured members cost little, so
    /// that they are tried.
    pub(crate) fn cost(&self) -> f64 {
        let ewma = self.ewma_us.load(Ordering::Relaxed).max(1) as f64;
        ewma * f64::from(self.outstanding.load(Ordering::Relaxed) + 1)
    }

    /// Whether it may be given a request now: in rotation, or its backoff
    /// passed and no other request is probing it.
    pub(crate) fn available(&self, now: Instant) -> bool {
        let health = self.lock();
        match health.ejected_until {
            None => true,
            Some(until) => until <= now && !health.probing,
        }
    }

    /// Claims it for a request; for an ejected member whose backoff passed,
    /// that request becomes the probe. `false` if another request got
    /// there first.
    pub(crate) fn admit(&self, now: Instant) -> bool {
        let mut health = self.lock();
        match health.ejected_until {
            None => true,
            Some(until) if until <= now && !health.probing => {
                health.probing = true;
                true
            }
            Some(_) => false,
        }
    }

    fn is_in(&self) -> bool {
        self.lock().ejected_until.is_none()
    }

    /// When it comes back, if it is out.
    pub(crate) fn ejected_until(&self) -> Option<Instant> {
        self.lock().ejected_until
    }

    pub(crate) fn start(&self) {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        self.picks.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finish(&self, elapsed: Duration, succeeded: bool) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        if succeeded {
            self.record_rtt(elapsed);
            *self.lock() = Health::default();
        }
    }

    // Microsecond averages fit easily in u64; the float is non-negative.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn record_rtt(&self, elapsed: Duration) {
        let sample = elapsed.as_micros().min(u128::from(u64::MAX)) as f64;
        let old = self.ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old as f64 * (1.0 - EWMA_WEIGHT) + sample * EWMA_WEIGHT
        };
        self.ewma_us.store(new.max(1.0) as u64, Ordering::Relaxed);
    }

    /// Takes it out of rotation for a backoff that doubles with each
    /// failure in a row.
    pub(crate) fn eject(&self, initial: Duration, max: Duration) {
        let mut health = self.lock();
        health.failures = health.failures.saturating_add(1);
        let backoff = initial
            .saturating_mul(1 << health.failures.saturating_sub(1).min(16))
            .min(max);
        health.ejected_until = Some(Instant::now() + backoff);
        health.probing = false;
    }

    /// Resolves when health checks find the server silent (a stopped
    /// process, a dead link): requests in flight on it should give up.
    pub(crate) async fn fell_silent(&self) {
        self.silent.notified().await;
    }

    /// Tells the requests in flight that the server fell silent.
    pub(crate) fn declare_silent(&self) {
        self.silent.notify_waiters();
    }

    /// Ends a request that neither succeeded nor showed the server failing
    /// (the job's own error): a probe that got any answer proves the server
    /// is back.
    pub(crate) fn answered(&self) {
        *self.lock() = Health::default();
    }

    pub(crate) fn status(&self) -> MemberStatus {
        MemberStatus {
            addr: self.addr.clone(),
            healthy: self.is_in(),
            outstanding: self.outstanding.load(Ordering::Relaxed),
            rtt: Duration::from_micros(self.ewma_us.load(Ordering::Relaxed)),
            picks: self.picks.load(Ordering::Relaxed),
            route: self.client.route(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a pool knows about one of its servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its address.
    pub addr: String,
    /// In rotation (not ejected after failures).
    pub healthy: bool,
    /// Requests sent to it and not yet answered.
    pub outstanding: u32,
    /// Moving average of its round trips (zero until measured).
    pub rtt: Duration,
    /// Requests it has been given, in all.
    pub picks: u64,
    /// The route its connection goes over, if one is open: for an address
    /// with several routes, the fastest ([`Client::route`]).
    pub route: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn member() -> Member {
        Member::new("127.0.0.1:1".into(), Client::new("127.0.0.1:1"))
    }

    #[tokio::test]
    async fn an_unmeasured_member_costs_little_and_its_cost_grows_with_its_queue() {
        let member = member();
        assert_eq!(member.cost(), 1.0, "tried before any measured one");
        member.start();
        member.finish(Duration::from_micros(100), true);
        assert_eq!(member.cost(), 100.0);
        member.start();
        member.start();
        assert_eq!(
            member.cost(),
            300.0,
            "latency times the queue it would join"
        );
        assert_eq!(member.status().outstanding, 2);
        assert_eq!(member.status().picks, 3);
    }

    #[tokio::test]
    async fn round_trips_are_a_moving_average_and_failures_do_not_count() {
        let member = member();
        member.start();
        member.finish(Duration::from_micros(1000), true);
        member.start();
        member.finish(Duration::from_micros(2000), true);
        // 1000 * 0.7 + 2000 * 0.3
        assert_eq!(member.status().rtt, Duration::from_micros(1300));
        member.start();
        member.finish(Duration::from_secs(60), false);
        assert_eq!(member.status().rtt, Duration::from_micros(1300));
    }

    #[tokio::test]
    async fn ejection_backs_off_doubling_up_to_the_maximum() {
        let member = member();
        let backoff = |member: &Member| {
            member
                .ejected_until()
                .expect("ejected")
                .saturating_duration_since(Instant::now())
        };
        member.eject(SECOND, 3 * SECOND);
        assert!(backoff(&member) <= SECOND && backoff(&member) > SECOND / 2);
        member.eject(SECOND, 3 * SECOND);
        assert!(backoff(&member) > SECOND && backoff(&member) <= 2 * SECOND);
        for _ in 0..40 {
            member.eject(SECOND, 3 * SECOND);
        }
        assert!(backoff(&member) <= 3 * SECOND, "capped, without overflow");
        assert!(!member.status().healthy);
    }

    #[tokio::test]
    async fn after_its_backoff_one_request_probes_it_and_the_others_keep_away() {
        let member = member();
        member.eject(Duration::from_millis(1), SECOND);
        let now = Instant::now();
        assert!(!member.available(now), "out during the backoff");
        assert!(!member.admit(now));
        let later = now + SECOND;
        assert!(member.available(later));
        assert!(member.admit(later), "the first request becomes the probe");
        assert!(!member.available(later), "the others keep away");
        assert!(!member.admit(later));
        // The probe fails: out again, with a longer backoff.
        member.eject(Duration::from_millis(1), SECOND);
        assert!(!member.available(Instant::now()));
    }

    #[tokio::test]
    async fn a_success_or_any_answer_brings_it_back_into_rotation() {
        let member = member();
        member.eject(SECOND, SECOND);
        member.start();
        member.finish(Duration::from_micros(10), true);
        assert!(member.status().healthy);
        assert!(member.available(Instant::now()));
        member.eject(SECOND, SECOND);
        // A job's own error is still an answer from a live server.
        member.answered();
        assert!(member.status().healthy);
        // And the backoff starts over after it.
        member.eject(SECOND, 8 * SECOND);
        let until = member.ejected_until().expect("ejected");
        assert!(until.saturating_duration_since(Instant::now()) <= SECOND);
    }
}
