//! Configuring and starting a [`Batcher`]: the top of the crate, the one place that puts the
//! handle, the shared state and the driver together.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc as StdArc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::Notify;

use crate::ConfigError;
use crate::batcher::Batcher;
use crate::answers::Answered;
use crate::clock::Clock;
use crate::observe::Observer;
use crate::driver::Driver;
use crate::policy::Policy;
use crate::ring::Ring;
use crate::settings::{Overflow, Settings, Validated};
use crate::shared::{BatchFn, BatchFuture, Shared};
use crate::signals::Signals;
use crate::stats::StatsCells;
use crate::sync::AtomicBool;

/// Builds a [`Batcher`]; see [`Batcher::builder`].
pub struct Builder<K, V, E> {
    batch_fn: BatchFn<K, V, E>,
    settings: Settings,
    runtime: Option<tokio::runtime::Handle>,
    name: StdArc<str>,
    /// The precise timer thread, once a template is [`pinned`](Builder::pinned) with settings
    /// that need it: the batchers built from it use it rather than start it again.
    timer: Option<crate::timer::Handle>,
}

/// The name a batcher reports itself under when none is given (see [`Builder::name`]).
pub const DEFAULT_NAME: &str = "busline";

impl<K, V, E> fmt::Debug for Builder<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("settings", &self.settings)
            .field("runtime", &self.runtime)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<K, V, E> Batcher<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Starts configuring a batcher around `batch_fn`, which receives the distinct keys of one
    /// batch (each once, at most `max_batch_size`, in the order their first callers boarded)
    /// and returns their values. A key missing from the map is answered `Ok(None)`.
    pub fn builder<F, Fut>(batch_fn: F) -> Builder<K, V, E>
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HashMap<K, V>, E>> + Send + 'static,
    {
        let batch_fn: BatchFn<K, V, E> = StdArc::new(move |keys| {
            Box::pin(batch_fn(keys).map(|answer| answer.map(Answered::plain))) as BatchFuture<K, V, E>
        });
        Builder::with(batch_fn)
    }

    /// Like [`builder`](Batcher::builder), for a batch function that answers each key on its
    /// own: `Ok(map)` where each key maps to `Ok(value)` or to its own `Err(e)`. A key's error
    /// reaches only that key's callers, as [`Error::Key`](crate::Error::Key) (its duplicate
    /// callers share one `Arc`); a key missing from the map is still `Ok(None)` ("not found",
    /// not "failed"); the outer `Err` still fails the whole batch.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let users = busline::Batcher::builder_per_key(|ids: Vec<u32>| async move {
    ///     let answers: HashMap<u32, Result<String, String>> = ids
    ///         .into_iter()
    ///         .filter(|&id| id != 404) // not found: left out
    ///         .map(|id| (id, if id == 13 { Err(format!("row {id} is corrupt")) } else { Ok(format!("user {id}")) }))
    ///         .collect();
    ///     Ok::<_, String>(answers)
    /// })
    /// .build()?;
    ///
    /// let (a, b, c) = tokio::join!(users.load(1), users.load(13), users.load(404));
    /// assert_eq!(a.unwrap(), Some("user 1".to_string()));
    /// assert_eq!(b.unwrap_err().key_error().map(String::as_str), Some("row 13 is corrupt"));
    /// assert_eq!(c.unwrap(), None);
    /// # Ok(()) }
    /// ```
    pub fn builder_per_key<F, Fut>(batch_fn: F) -> Builder<K, V, E>
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HashMap<K, Result<V, E>>, E>> + Send + 'static,
    {
        let batch_fn: BatchFn<K, V, E> = StdArc::new(move |keys| {
            Box::pin(batch_fn(keys).map(|answer| answer.map(Answered::per_key))) as BatchFuture<K, V, E>
        });
        Builder::with(batch_fn)
    }
}

impl<K, V, E> Builder<K, V, E> {
    fn with(batch_fn: BatchFn<K, V, E>) -> Self {
        Builder { batch_fn, settings: Settings::default(), runtime: None, name: DEFAULT_NAME.into(), timer: None }
    }
}

impl<K, V, E> Builder<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// A fixed collection window: the bus waits this long after its first passenger.
    /// `Duration::ZERO` is natural batching: the bus leaves as soon as the driver runs, with
    /// every request already queued, and no timer. Shorthand for
    /// `.policy(Policy::window(window))`.
    pub fn window(mut self, window: Duration) -> Self {
        self.settings.policy = Policy::window(window);
        self
    }

    /// The departure policy. Default: [`Policy::Natural`].
    pub fn policy(mut self, policy: Policy) -> Self {
        self.settings.policy = policy;
        self
    }

    /// The most keys one batch function call receives; a full bus leaves at once.
    /// Default [`DEFAULT_MAX_BATCH_SIZE`](crate::DEFAULT_MAX_BATCH_SIZE). Zero is a
    /// [`ConfigError`]; `usize::MAX` means no limit. Seats are allocated as requests arrive,
    /// so a large limit costs no memory until a batch grows that large.
    pub fn max_batch_size(mut self, max_batch_size: usize) -> Self {
        self.settings.max_batch_size = max_batch_size;
        self
    }

    /// The most batch function calls running at once. Default
    /// [`DEFAULT_MAX_IN_FLIGHT`](crate::DEFAULT_MAX_IN_FLIGHT); at most 62.
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.settings.max_in_flight = max_in_flight;
        self
    }

    /// The most requests admitted at once (waiting, in flight, or being answered), rounded up to
    /// whole batches. Default `(max_in_flight + 2) × max_batch_size`: one bus boarding,
    /// `max_in_flight` running, one being read. It must hold `max_in_flight + 1` batches and at
    /// most 64. With an unlimited `max_batch_size` (`usize::MAX`) the capacity sets the batch
    /// size instead: a bus holds at most `capacity / (max_in_flight + 1)` keys, so that the
    /// batches it must hold fit.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.settings.capacity = Some(capacity);
        self
    }

    /// What a request does when the batcher is at capacity. Default [`Overflow::Wait`].
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.settings.overflow = overflow;
        self
    }

    /// The longest a batch call may run: a call still running after `timeout` is dropped, its
    /// callers get [`Error::Timeout`](crate::Error::Timeout), and its in-flight place is freed,
    /// so a hung backend cannot wedge the batcher. Also bounds a solo run under
    /// [`Overflow::RunAlone`]. Measured on tokio's clock; needs the runtime's time driver
    /// (`enable_time`), which [`build`](Builder::build) checks. Default: none. Zero is a
    /// [`ConfigError`].
    pub fn batch_timeout(mut self, timeout: Duration) -> Self {
        self.settings.batch_timeout = Some(timeout);
        self
    }

    /// Whether windows may spend CPU to close on time. On (the default), a window closes within
    /// a few microseconds of its deadline: busline's timer thread spins through a lightly
    /// loaded window's last ~100 µs and the driver stays runnable (re-polling itself) through
    /// the last tens of microseconds. Off, deadlines go to tokio's own timer, which has a 1 ms
    /// resolution and rounds up (a window closes up to ~1 ms late), and a window costs about
    /// what a batch without one does: for batchers that mostly idle at light load with windows
    /// of a few milliseconds or more. core/README.md has the figures. (Under a paused tokio
    /// clock deadlines always go to tokio's timer; see the crate docs.) Off needs the runtime's
    /// time driver (`enable_time`) for every policy but `Car`: `build` says so otherwise (except under
    /// `panic = "abort"`; see [`build`](Builder::build)). On, every policy needs busline's timer
    /// thread (one per process; natural's holds use it too): `build` fails naming `spin` if it
    /// cannot be spawned.
    pub fn spin(mut self, spin: bool) -> Self {
        self.settings.spin = spin;
        self
    }

    /// The runtime the driver (and every batch function's future) runs on. Default: the
    /// runtime `build` is called in. See the crate docs on `current_thread` runtimes.
    pub fn runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// The name the batcher reports itself under: the `batcher` label of its metrics and the
    /// `batcher` field of its batch spans (features `metrics` and `tracing`). Default
    /// [`DEFAULT_NAME`]. Give each batcher of a service its own.
    pub fn name(mut self, name: impl Into<StdArc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Starts the batcher's driver on its runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the setting if one is out of range; `runtime` if no runtime
    /// was given and `build` is called outside one, or if the runtime has no time driver and
    /// `batch_timeout` is set, or a policy other than `Car` runs with `spin(false)` (tokio's timer then
    /// closes the windows); `spin` if spinning is on and busline's timer thread (one per
    /// process, started by the first such `build`) cannot be spawned: the process is out of
    /// threads or memory. That is an error rather than a quiet fall-back to tokio's timer,
    /// whose 1 ms resolution is `spin(false)`'s trade, for the user to choose; a later `build`
    /// tries the spawn again.
    ///
    /// tokio offers no way to ask a runtime whether it has its time driver, only a timer that
    /// panics without one: `build` makes one and catches the panic, which the panic hook still
    /// prints to stderr before `build` returns the error. Under `panic = "abort"` that check
    /// would abort the process, so it is skipped: the runtime is trusted to have its time
    /// driver (`#[tokio::main]`, `Runtime::new` and `enable_all` do), and one without it aborts
    /// the process at the first tokio timer the batcher makes, with tokio's message naming
    /// `enable_time`.
    pub fn build(self) -> Result<Batcher<K, V, E>, ConfigError> {
        let alarms = self.settings.sets_alarms();
        let policy = self.settings.policy.name();
        let validated = self.settings.validate()?;
        let runtime = match self.runtime {
            Some(runtime) => runtime,
            None => current_runtime()?,
        };
        check_timers(&validated, alarms, &runtime)?;
        let precise = match self.timer {
            Some(timer) => Some(timer),
            None => precise_timer(&validated)?,
        };
        let clock = {
            let _entered = runtime.enter();
            Clock::start()
        };
        let shared = StdArc::new(Shared {
            ring: Ring::new(validated.slots, validated.seats),
            signals: Signals::new(),
            room: Notify::new(),
            finished: AtomicBool::new(false),
            finished_notify: Notify::new(),
            overflow: validated.overflow,
            batch_fn: self.batch_fn,
            batch_timeout: validated.batch_timeout,
            stats: StatsCells::new(),
            observer: Observer::new(&self.name, policy),
            clock,
            runtime: runtime.clone(),
        });
        let driver = Driver::new(StdArc::clone(&shared), validated.scheduler, runtime.clone(), precise);
        runtime.spawn(driver.run());
        Ok(Batcher::from_shared(shared))
    }
}

impl<K, V, E> Builder<K, V, E> {
    /// Checks the settings, pins the builder to its runtime (the one given, or the current
    /// one) and checks that runtime as `build` would: for builders kept as templates and
    /// built later, wherever a first call happens (the partitions' per-group batchers), so
    /// that a setting the runtime cannot serve is refused by the template's own `build`, not
    /// met by every group's first load.
    pub(crate) fn pinned(mut self) -> Result<Self, ConfigError> {
        let alarms = self.settings.sets_alarms();
        let validated = self.settings.clone().validate()?;
        let runtime = match self.runtime.take() {
            Some(runtime) => runtime,
            None => current_runtime()?,
        };
        check_timers(&validated, alarms, &runtime)?;
        // Started for the template: its batchers are built inside their first loads, which
        // must not be where a failed spawn is met.
        self.timer = precise_timer(&validated)?;
        self.runtime = Some(runtime);
        Ok(self)
    }

    /// The same settings (and runtime) around another batch function: the partitions'
    /// per-group batchers.
    pub(crate) fn with_batch_fn(&self, batch_fn: BatchFn<K, V, E>) -> Builder<K, V, E> {
        Builder {
            batch_fn,
            settings: self.settings.clone(),
            runtime: self.runtime.clone(),
            name: StdArc::clone(&self.name),
            timer: self.timer,
        }
    }
}

/// The runtime `build` is called in.
fn current_runtime() -> Result<tokio::runtime::Handle, ConfigError> {
    tokio::runtime::Handle::try_current()
        .map_err(|_| ConfigError::new("runtime", "build() must be called within a tokio runtime"))
}

/// Starts the precise timer thread whenever spinning is on (now rather than at the first
/// deadline, which would make the first load pay for it), or says why it cannot be: the driver
/// is handed the running thread, so it never spawns it (nor fails to) later. Untimed policies
/// need it too: natural's holds and any policy's deadline passed while every place is busy set
/// the alarm, and without the thread it falls back to tokio's timer, whose millisecond tick
/// made window-0 buses twice as large and throughput ~15 % lower (the compare runner).
///
/// A failed spawn is an error, not a quiet fall-back to tokio's timer: that timer closes a
/// window up to ~1 ms late, which is `spin(false)`'s trade and the user's to choose, and a
/// runtime chosen for a spinning batcher need not have the time driver it needs. The spawn
/// fails only when the process is out of threads or memory; a later `build` tries again.
fn precise_timer(validated: &Validated) -> Result<Option<crate::timer::Handle>, ConfigError> {
    if !validated.spin {
        return Ok(None);
    }
    crate::timer::start().map(Some).map_err(|e| {
        ConfigError::new(
            "spin",
            format!("the timer thread that spinning needs could not be started ({e}); spin(false) uses tokio's timer instead"),
        )
    })
}

/// Refuses settings that need tokio's timer on a runtime without its time driver (the driver
/// would panic at its first deadline or batch, and every load would be `Closed` from then on).
fn check_timers(validated: &Validated, alarms: bool, runtime: &tokio::runtime::Handle) -> Result<(), ConfigError> {
    let needs_timers = validated.batch_timeout.is_some() || (alarms && !validated.spin);
    if !needs_timers || !lacks_time_driver(runtime) {
        return Ok(());
    }
    Err(if validated.batch_timeout.is_some() {
        ConfigError::new("runtime", "batch_timeout needs the runtime's time driver (enable_time)")
    } else {
        ConfigError::new("runtime", "a policy other than Car with spin(false) needs the runtime's time driver (enable_time)")
    })
}

/// Whether `runtime` is known to lack its time driver. tokio has no way to ask (the request,
/// tokio-rs/tokio#8361, is open; `Handle`'s `Debug` shows nothing): making a timer is the one
/// test, and it panics without the driver. So the test catches that panic, which the
/// process's panic hook still reports on stderr (once per `build` refused this way);
/// replacing the hook around it would be process-wide and race other threads' panics.
#[cfg(panic = "unwind")]
fn lacks_time_driver(runtime: &tokio::runtime::Handle) -> bool {
    let _entered = runtime.enter();
    match std::panic::catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO))) {
        Ok(()) => false,
        Err(payload) => {
            crate::shared::forget_payload(payload);
            true
        }
    }
}

/// Under `panic = "abort"` the test above would abort the process, so nothing is checked:
/// the runtime is trusted to have its time driver, and one without it aborts the process at
/// the first tokio timer the batcher makes, with tokio's message naming `enable_time` (as any
/// tokio timer does there).
#[cfg(not(panic = "unwind"))]
fn lacks_time_driver(_runtime: &tokio::runtime::Handle) -> bool {
    false
}

#[cfg(all(test, not(busline_loom)))]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use crate::timer::tests::refusing_spawn;
    use crate::{Batcher, Grouped};

    fn echo() -> super::Builder<u32, u32, ()> {
        Batcher::builder(|keys: Vec<u32>| async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) })
    }

    #[tokio::test]
    async fn a_timer_thread_that_cannot_be_spawned_fails_build_with_a_config_error() {
        let err = refusing_spawn(|| echo().window(Duration::from_millis(1)).build()).unwrap_err();
        assert_eq!(err.setting(), "spin");
        assert!(err.reason().contains("spawn refused by the test"), "{err}");
        assert!(err.reason().contains("spin(false)"), "the error names the way out: {err}");

        // An untimed policy spins too (natural's holds, a deadline passed while every place is
        // busy), so it needs the thread as well.
        assert_eq!(refusing_spawn(|| echo().build()).unwrap_err().setting(), "spin");

        // What needs no timer thread still builds, and serves.
        let unspun = refusing_spawn(|| echo().spin(false).build()).unwrap();
        let unspun_window = refusing_spawn(|| echo().window(Duration::from_millis(1)).spin(false).build()).unwrap();
        assert_eq!(unspun.load(1).await.unwrap(), Some(1));
        assert_eq!(unspun_window.load(2).await.unwrap(), Some(2));

        // Once the thread can be spawned, the same settings build.
        let spun = echo().window(Duration::from_millis(1)).build().unwrap();
        assert_eq!(spun.load(3).await.unwrap(), Some(3));
    }

    /// A partition builds each group's batcher inside that group's first load: the template's
    /// `build` must be the one that meets a failed spawn, not a caller's poll.
    #[tokio::test]
    async fn a_partition_meets_a_failed_timer_spawn_at_build_not_in_a_load() {
        let grouped = || {
            Grouped::builder(|_group: u8, keys: Vec<u32>| async move {
                Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
            })
            .window(Duration::from_millis(1))
        };
        let err = refusing_spawn(|| grouped().build()).unwrap_err();
        assert_eq!(err.setting(), "spin");
        let built = grouped().build().unwrap();
        // A group made while a spawn would fail gets the thread its template started.
        let _refused = crate::timer::tests::refuse_spawn();
        assert_eq!(built.load(0, 4).await.unwrap(), Some(4));
        assert_eq!(built.load(1, 5).await.unwrap(), Some(5));
    }
}
