//! Calls: checking that one may run, running it (inline when it does not
//! wait, in its own task when it does), and answering.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::time::{Instant, timeout_at};

use super::Session;
use crate::conn::{self, Arrival, Reply};
use crate::metrics::server::CallStats;
use crate::server::budget::Held;
use crate::server::dedup::{self, Claim, Completion};
use crate::server::registry::{self, Context, Handler, Outcome};
use crate::wire::DESCRIBE_METHOD;
use crate::wire::StatusCode;

/// Arguments up to this size take no bytes from the server's request
/// budget: calls with them are bounded by their number instead, so that
/// large uploads filling the budget do not keep small calls out.
const SMALL_ARGUMENTS: usize = 64 << 10;

/// The function a call may run: its handler (`None` for the built-in
/// introspection call) and its name, shared with the registry.
pub(super) struct Callee {
    pub(super) handler: Option<Handler>,
    pub(super) method: Arc<str>,
    /// Its counters, when the server has metrics.
    pub(super) stats: Option<Arc<CallStats>>,
}

/// A call that may run, with what of its message it still needs: the
/// rest (its method's name) is dropped once the function is found.
pub(super) struct Admitted {
    pub(super) function: Callee,
    pub(super) timeout_ms: Option<u64>,
    pub(super) idempotency_key: Option<[u8; 16]>,
    pub(super) received_at: Arrival,
}

impl Session {
    /// Checks that a call may run: the function exists, the caller's role may
    /// call it, and the types agree.
    pub(super) fn admit(
        &self,
        method: &str,
        schema_hash: Option<u64>,
    ) -> Result<Callee, (StatusCode, String)> {
        let admitted = self.find(method, schema_hash);
        if let (Err((status, _)), Some((stats, _))) = (&admitted, &self.shared.stats) {
            stats.refuse_call(*status);
        }
        admitted
    }

    fn find(&self, method: &str, schema_hash: Option<u64>) -> Result<Callee, (StatusCode, String)> {
        if method == DESCRIBE_METHOD {
            return Ok(Callee {
                handler: None,
                method: Arc::from(DESCRIBE_METHOD),
                stats: self
                    .shared
                    .stats
                    .as_ref()
                    .map(|(_, describe)| Arc::clone(describe)),
            });
        }
        let Some((name, function)) = self.shared.registry.get_key_value(method) else {
            return Err((
                StatusCode::NOT_FOUND,
                format!("no function named {method:?}"),
            ));
        };
        if !function.admits(&self.peer) {
            return Err((
                StatusCode::FORBIDDEN,
                format!("the caller's role may not call {method:?}"),
            ));
        }
        if let (Some(theirs), Some(ours)) = (schema_hash, function.options.schema_hash)
            && theirs != ours
        {
            return Err((
                StatusCode::INCOMPATIBLE,
                format!(
                    "{method:?} has schema {ours:016x} here but the caller was built for {theirs:016x}"
                ),
            ));
        }
        Ok(Callee {
            handler: Some(Arc::clone(&function.handler)),
            method: Arc::clone(name),
            stats: function.stats.clone(),
        })
    }

    /// Runs a call: right here if it finishes without waiting, else in its
    /// own task, which answers when done. `held` is its arguments' share of
    /// the server's request budget, when they came chunked; inline ones
    /// over [`SMALL_ARGUMENTS`] take theirs, and every call a slot of the
    /// server's running calls, only if the call has to wait.
    pub(super) async fn start_call(
        &mut self,
        id: u64,
        admitted: Admitted,
        args: Bytes,
        held: Option<Held>,
    ) {
        let Admitted {
            function,
            timeout_ms,
            idempotency_key,
            received_at,
        } = admitted;
        let answering = Answering::start(function.stats, received_at);
        let large = args.len() > SMALL_ARGUMENTS;
        let room = match (&held, large) {
            (None, true) => self.shared.requests.check(args.len() as u64),
            _ => Ok(()),
        }
        .and_then(|()| self.shared.calls.check(1));
        if let Err(exhausted) = room {
            let reply = Reply::from(Outcome::Status(
                StatusCode::RESOURCE_EXHAUSTED,
                exhausted.to_string(),
            ));
            answering.answered(reply.status);
            self.respond(id, reply, received_at).await;
            return;
        }
        let deadline =
            timeout_ms.and_then(|ms| received_at.at.checked_add(Duration::from_millis(ms)));
        // A deadline already past (`timeout_ms = 0`, or a call that waited
        // for its arguments too long) is answered without running.
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            answering.answered(StatusCode::DEADLINE_EXCEEDED);
            self.respond(id, deadline_passed(), received_at).await;
            return;
        }
        let span = tracing::debug_span!(
            "call",
            method = %function.method,
            id,
            status = tracing::field::Empty,
            elapsed_us = tracing::field::Empty,
        );
        let context = Context {
            peer: Arc::clone(&self.peer),
            method: function.method,
            deadline,
        };
        let claim = idempotency_key.map(|key| self.shared.dedup.claim(self.peer.principal, key));
        let waiters = match &claim {
            Some(Claim::Run(completion)) => Some(completion.waiters()),
            _ => None,
        };
        let chunk_len = crate::transfer::chunk_len_for(self.peer_limits.max_frame_len);
        let max_payload = self.peer_limits.max_payload_len;
        let args_len = args.len() as u64;
        // Most functions finish without waiting: run them right here, so that
        // their responses join the same write as their neighbours' and cost
        // no task and no timer; spawn only those that wait. A future may be
        // polled with any waker first; the spawned task polls it again with
        // its own.
        let work: registry::BoxFuture<Reply> = match (claim, function.handler) {
            // The common case, without a wrapper future.
            (None, Some(handler)) => {
                let mut run = handler(context, args);
                match poll_once(&span, run.as_mut()) {
                    Poll::Ready(outcome) => {
                        let reply = within_deadline(Reply::from(outcome), deadline);
                        record_outcome(&span, &reply, received_at);
                        answering.answered(reply.status);
                        self.respond(id, reply, received_at).await;
                        return;
                    }
                    Poll::Pending => finish(run, None),
                }
            }
            (Some(Claim::Wait(slot)), _) => Box::pin(async move {
                match dedup::wait(slot).await {
                    Some(reply) => (*reply).clone(),
                    None => Reply::from(Outcome::Status(
                        StatusCode::UNAVAILABLE,
                        "the first attempt of this call was abandoned; retry".into(),
                    )),
                }
            }),
            (Some(Claim::Run(completion)), handler) => {
                self.invoke(context, handler, args, Some(completion))
            }
            (None, None) => self.invoke(context, None, args, None),
        };
        let mut work = work;
        if let Poll::Ready(reply) = poll_once(&span, work.as_mut()) {
            let reply = within_deadline(reply, deadline);
            record_outcome(&span, &reply, received_at);
            answering.answered(reply.status);
            self.respond(id, reply, received_at).await;
            return;
        }
        let outbox = self.outbox.clone();
        let done = self.done.clone();
        let held = held.or_else(|| large.then(|| self.shared.requests.take(args_len)));
        let slot = self.shared.calls.take(1);
        let task = async move {
            let _held = (held, slot);
            let reply = match deadline {
                Some(deadline) => timeout_at(deadline, work).await.map_or_else(
                    |_| deadline_passed(),
                    |reply| within_deadline(reply, Some(deadline)),
                ),
                None => work.await,
            };
            record_outcome(&tracing::Span::current(), &reply, received_at);
            answering.answered(reply.status);
            // Reported before the answer leaves, so that the caller's next
            // call can never find this one still counted as running.
            let _ = done.send(id);
            conn::send_reply(&outbox, id, reply, received_at, chunk_len, max_payload).await;
        };
        let handle = tokio::spawn(tracing::Instrument::instrument(task, span));
        self.running.insert(id, handle.abort_handle());
        if let Some(waiters) = waiters {
            self.keyed.insert(id, waiters);
        }
    }

    /// The future that runs the function (`handler`, or the introspection
    /// call for `None`), turns a panic into `500`, and reports to duplicates.
    fn invoke(
        &self,
        context: Context,
        handler: Option<Handler>,
        args: Bytes,
        completion: Option<Completion>,
    ) -> registry::BoxFuture<Reply> {
        let run: registry::BoxFuture<Outcome> = match handler {
            Some(handler) => handler(context, args),
            None => {
                let infos = registry::describe(&self.shared.registry);
                Box::pin(async move {
                    match postcard::to_allocvec(&infos) {
                        Ok(bytes) => Outcome::Ok(Bytes::from(bytes)),
                        Err(error) => Outcome::Status(StatusCode::INTERNAL, error.to_string()),
                    }
                })
            }
        };
        finish(run, completion)
    }
}

/// The future that runs a function's future to its end, turns a panic into
/// `500`, and reports to duplicates.
fn finish(
    run: registry::BoxFuture<Outcome>,
    completion: Option<Completion>,
) -> registry::BoxFuture<Reply> {
    Box::pin(async move {
        let outcome = AssertUnwindSafe(run)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| panicked());
        let reply = Reply::from(outcome);
        if let Some(completion) = completion {
            completion.finish(&reply);
        }
        reply
    })
}

fn panicked() -> Outcome {
    tracing::error!("a function panicked");
    Outcome::Status(StatusCode::INTERNAL, "the function panicked".into())
}

/// Polls `future` once, in `span`, with a waker that does nothing; a panic
/// becomes `500` (for a function's future) and the future is not polled
/// again.
fn poll_once<T: FromPanic>(
    span: &tracing::Span,
    future: Pin<&mut (dyn Future<Output = T> + Send)>,
) -> Poll<T> {
    let _entered = span.enter();
    let mut no_wake = std::task::Context::from_waker(std::task::Waker::noop());
    std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(&mut no_wake)))
        .unwrap_or_else(|_| Poll::Ready(T::from_panic()))
}

/// What a call ends with when its function panics.
trait FromPanic {
    fn from_panic() -> Self;
}

impl FromPanic for Outcome {
    fn from_panic() -> Outcome {
        panicked()
    }
}

impl FromPanic for Reply {
    fn from_panic() -> Reply {
        Reply::from(panicked())
    }
}

/// Records a call's status and duration on its span, and logs it.
fn record_outcome(span: &tracing::Span, reply: &Reply, received_at: Arrival) {
    if span.is_disabled() {
        return;
    }
    let elapsed_us = u64::try_from(received_at.at.elapsed().as_micros()).unwrap_or(u64::MAX);
    span.record("status", reply.status.as_u16());
    span.record("elapsed_us", elapsed_us);
    tracing::debug!(parent: span, status = reply.status.as_u16(), elapsed_us, "call answered");
}

/// Counts a call that began and, once, its answer: a call whose task is
/// stopped before it answers (cancelled, or its connection gone) counts as
/// `499`, so that none stays in flight forever.
struct Answering {
    stats: Option<Arc<CallStats>>,
    received_at: Arrival,
}

impl Answering {
    fn start(stats: Option<Arc<CallStats>>, received_at: Arrival) -> Answering {
        if let Some(stats) = &stats {
            stats.start();
        }
        Answering { stats, received_at }
    }

    fn answered(mut self, status: StatusCode) {
        self.count(status);
    }

    fn count(&mut self, status: StatusCode) {
        if let Some(stats) = self.stats.take() {
            let elapsed = self.received_at.at.elapsed().as_micros();
            stats.answer(status, u64::try_from(elapsed).unwrap_or(u64::MAX));
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.count(StatusCode::CANCELLED);
    }
}

/// The answer to a call whose deadline passed before its answer was ready.
fn deadline_passed() -> Reply {
    Reply::from(Outcome::Status(
        StatusCode::DEADLINE_EXCEEDED,
        "the call's deadline passed".into(),
    ))
}

/// `reply`, or `504` if the call's deadline passed before it was ready:
/// one condition, one status, whether the server's timer or the function
/// (seeing [`Context::deadline`]) noticed it first.
fn within_deadline(reply: Reply, deadline: Option<Instant>) -> Reply {
    match deadline {
        Some(deadline) if Instant::now() >= deadline => deadline_passed(),
        _ => reply,
    }
}
