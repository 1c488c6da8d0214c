//! Pieces every table-backed store shares: the integer encodings of stream
//! ids, counts and cursors, the outcome of a rolled-back contract, and
//! [`StoreThread`], the dedicated thread that owns a blocking connection.
//!
//! The stored names of indexes and codes of blobs are methods of the record
//! types ([`IndexKey::storage_name`](crate::records::IndexKey::storage_name),
//! [`BlobKind::code`](crate::records::BlobKind::code)), so every store writes
//! the same rows.

use std::sync::mpsc;

use ff_core::EngineError;
use ff_core::error::BackendErrorKind;
use ff_core::stream::EntryId;

/// A stream id part (`u64`) as a SQL integer (`i64`), order preserved: the
/// sign bit is flipped, so `0` maps to `i64::MIN` and `u64::MAX` to `i64::MAX`.
pub fn entry_part_to_sql(part: u64) -> i64 {
    (part ^ (1 << 63)) as i64
}

/// The inverse of [`entry_part_to_sql`].
pub fn entry_part_from_sql(stored: i64) -> u64 {
    (stored as u64) ^ (1 << 63)
}

/// An entry id as its stored `(ms, seq)` columns.
pub fn entry_id_to_sql(id: EntryId) -> (i64, i64) {
    (entry_part_to_sql(id.ms), entry_part_to_sql(id.seq))
}

/// An entry id read back from its stored `(ms, seq)` columns.
pub fn entry_id_from_sql(ms: i64, seq: i64) -> EntryId {
    EntryId { ms: entry_part_from_sql(ms), seq: entry_part_from_sql(seq) }
}

/// The stored bounds `[from.ms, from.seq, to.ms, to.seq]` of the inclusive
/// range `from..=to`; `None` when the range is empty (`from > to`).
pub fn entry_range_to_sql(from: EntryId, to: EntryId) -> Option<[i64; 4]> {
    if from > to {
        return None;
    }
    let (from_ms, from_seq) = entry_id_to_sql(from);
    let (to_ms, to_seq) = entry_id_to_sql(to);
    Some([from_ms, from_seq, to_ms, to_seq])
}

/// A limit, count or cursor as a SQL integer, saturating at `i64::MAX`.
pub fn int_to_sql(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// A stored count, sequence or event id as `u64`; a negative value reads as 0.
pub fn uint_from_sql(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or(0)
}

/// What a contract returns once a storage fault rolled its transaction back:
/// the contract's own error, else a transport error (its writes are gone, so
/// its `Ok` would be a lie).
pub fn rolled_back<R>(backend: &'static str, outcome: Result<R, EngineError>) -> Result<R, EngineError> {
    match outcome {
        Err(e) => Err(e),
        Ok(_) => Err(EngineError::transport(backend, BackendErrorKind::Other, "statement failed".into())),
    }
}

/// A unit of work for a store's thread.
type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// Why a [`StoreThread`] did not start.
#[derive(Debug)]
pub enum StartError<E> {
    /// Opening the store failed; the opener's error.
    Open(E),
    /// The thread could not be spawned or stopped while opening; the reason.
    Thread(String),
}

impl<E> StartError<E> {
    /// The opener's error, or a thread failure turned into one by `thread`.
    pub fn into_open_error(self, thread: impl FnOnce(String) -> E) -> E {
        match self {
            Self::Open(e) => e,
            Self::Thread(reason) => thread(reason),
        }
    }
}

/// A dedicated thread that owns a store `S` (a blocking connection) and runs
/// jobs on it one at a time, in the order they were sent, so async callers
/// never block their runtime. Clones share the thread; it stops when the last
/// clone is dropped.
pub struct StoreThread<S> {
    jobs: mpsc::Sender<Job<S>>,
    /// The backend named in transport errors.
    backend: &'static str,
}

impl<S> Clone for StoreThread<S> {
    fn clone(&self) -> Self {
        Self { jobs: self.jobs.clone(), backend: self.backend }
    }
}

impl<S> std::fmt::Debug for StoreThread<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreThread").field("backend", &self.backend).finish()
    }
}

impl<S: 'static> StoreThread<S> {
    /// Spawns thread `thread_name`, runs `open` on it and returns once the store is open.
    ///
    /// Errors: [`StartError::Open`] with `open`'s error; [`StartError::Thread`]
    /// when the thread cannot be spawned or stops before reporting.
    pub fn start<E: Send + 'static>(
        thread_name: &str,
        backend: &'static str,
        open: impl FnOnce() -> Result<S, E> + Send + 'static,
    ) -> Result<Self, StartError<E>> {
        let (jobs, job_rx) = mpsc::channel::<Job<S>>();
        let (opened_tx, opened_rx) = mpsc::channel::<Result<(), E>>();
        std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || {
                let mut store = match open() {
                    Ok(store) => store,
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                if opened_tx.send(Ok(())).is_err() {
                    return;
                }
                while let Ok(job) = job_rx.recv() {
                    job(&mut store);
                }
            })
            .map_err(|e| StartError::Thread(e.to_string()))?;
        match opened_rx.recv() {
            Ok(Ok(())) => Ok(Self { jobs, backend }),
            Ok(Err(e)) => Err(StartError::Open(e)),
            Err(_) => Err(StartError::Thread("stopped while opening".to_owned())),
        }
    }

    /// Runs `f` on the thread and awaits its result without blocking the runtime.
    ///
    /// Errors: `Transport` when the thread has stopped.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Box::new(move |store| {
            let _ = tx.send(f(store));
        }))?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Runs `f` on the thread, blocking the caller until it returns.
    ///
    /// Errors: `Transport` when the thread has stopped.
    pub fn call_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        let (tx, rx) = mpsc::channel();
        self.send(Box::new(move |store| {
            let _ = tx.send(f(store));
        }))?;
        rx.recv().map_err(|_| self.stopped())
    }

    fn send(&self, job: Job<S>) -> Result<(), EngineError> {
        self.jobs.send(job).map_err(|_| self.stopped())
    }

    fn stopped(&self) -> EngineError {
        EngineError::transport(self.backend, BackendErrorKind::Transport, "connection thread stopped".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_parts_keep_their_order_as_sql_integers() {
        let parts = [0, 1, (1 << 63) - 1, 1 << 63, u64::MAX - 1, u64::MAX];
        for pair in parts.windows(2) {
            assert!(entry_part_to_sql(pair[0]) < entry_part_to_sql(pair[1]), "{pair:?}");
        }
        for part in parts {
            assert_eq!(entry_part_from_sql(entry_part_to_sql(part)), part);
        }
        let id = EntryId { ms: 7, seq: u64::MAX };
        let (ms, seq) = entry_id_to_sql(id);
        assert_eq!(entry_id_from_sql(ms, seq), id);
    }

    #[test]
    fn an_inverted_entry_range_is_empty() {
        let low = EntryId { ms: 1, seq: 0 };
        let high = EntryId { ms: 1, seq: 1 };
        assert_eq!(entry_range_to_sql(high, low), None);
        let bounds = entry_range_to_sql(low, high);
        assert_eq!(
            bounds,
            Some([entry_part_to_sql(1), entry_part_to_sql(0), entry_part_to_sql(1), entry_part_to_sql(1)])
        );
    }

    #[test]
    fn integers_saturate_at_the_sql_edges() {
        assert_eq!(int_to_sql(usize::MAX), i64::MAX);
        assert_eq!(int_to_sql(u64::MAX), i64::MAX);
        assert_eq!(int_to_sql(5_usize), 5);
        assert_eq!(uint_from_sql(-1), 0);
        assert_eq!(uint_from_sql(9), 9);
    }

    #[test]
    fn a_rolled_back_success_is_a_transport_error() {
        assert!(matches!(rolled_back("test", Ok(1)), Err(EngineError::Transport { .. })));
        let own = EngineError::invalid_input("mine");
        assert!(matches!(rolled_back::<()>("test", Err(own)), Err(EngineError::Validation { .. })));
    }

    #[tokio::test]
    async fn jobs_run_in_order_on_the_owning_thread() {
        let thread = StoreThread::start("ff-test", "test", || Ok::<_, ()>(Vec::<u32>::new()));
        let Ok(thread) = thread else { panic!("thread did not start") };
        thread.call_blocking(|v| v.push(1)).unwrap_or_default();
        thread.call(|v| v.push(2)).await.unwrap_or_default();
        let seen = thread.call(|v| v.clone()).await.unwrap_or_default();
        assert_eq!(seen, [1, 2]);
    }

    #[test]
    fn an_open_failure_is_reported_and_the_thread_stops() {
        let started = StoreThread::<()>::start("ff-test", "test", || Err::<(), _>("no"));
        assert!(matches!(started, Err(StartError::Open("no"))));
    }
}
