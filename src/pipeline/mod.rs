//! Rings between stages, the wait strategy, and thread pinning.
//!
//! Each ring is a bounded, lock-free `crossbeam` `ArrayQueue` of fixed-size [`Record`]s with
//! one producer and one consumer. A consumer that finds its ring empty spins, then yields,
//! then (with [`WaitStrategy::SpinPark`]) announces that it sleeps and parks; a producer
//! wakes it only when it announced that, so a busy pipeline pays no wake-up cost at all.
//! A producer that finds the ring full waits for room: rings apply backpressure, never
//! drop and never grow.
//!
//! Stages are [agents](agent) and which thread runs which is [`Threading`]: a thread per
//! stage (`dedicated`), or gateway, matcher and journal writer in turn on one thread
//! (`shared`), where the rings between them need no wake-up at all ([`Wake::None`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam::queue::ArrayQueue;
use crossbeam::sync::Unparker;

use crate::book::{Command, Event, Fill, Removal, Rested};

pub mod agent;
pub use agent::{Agent, AgentRunner, CompositeAgent, IdleStrategy, run_agent};

/// What travels through the rings: commands into the matcher, commands and events into
/// the journal writer, events to egress. `Shutdown` follows the last record and drains
/// the pipeline stage by stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// An input, in sequence.
    Command(Command),
    /// An output of the command before it.
    Event(Event),
    /// A match, output of the command before it: three events in one record, from the
    /// matcher to the journal writer, which expands it ([`Fill::events`]). Never
    /// further: egress and the journal see the events.
    Fill(Fill),
    /// A new order that went to the book as accepted
    /// ([`EventSink::rested`](crate::book::EventSink::rested)): its
    /// [`Accepted`](crate::book::EventBody::Accepted) and the feed's add, from the matcher
    /// to the journal writer as the order's two ids; the writer builds the events from the
    /// command before it ([`Rested::events_after`]).
    Rested(Rested),
    /// A displayed order canceled in full ([`Removal`]): its `Canceled` and the feed's
    /// `MdDelete` in one record, from the matcher to the journal writer, which expands it.
    Removed(Removal),
    /// No more records will follow.
    Shutdown,
}

impl Record {
    /// Journal records this record makes: one for a command or an event, three for a
    /// match, two for the other groups; none for the shutdown marker.
    #[inline]
    pub fn journal_records(&self) -> u64 {
        match self {
            Record::Command(_) | Record::Event(_) => 1,
            Record::Fill(_) => 3,
            Record::Removed(_) | Record::Rested(_) => 2,
            Record::Shutdown => 0,
        }
    }

    /// Hands `f` the events this record stands for, in order (none for a command or the
    /// shutdown marker): the journal writer writes these, one journal record each.
    /// `command` is the last command before this record: a [`Record::Rested`]'s events
    /// are built from it.
    ///
    /// # Panics
    /// On a [`Record::Rested`] that does not follow a new order's command: the matcher
    /// writes one only right after it, so a ring that says otherwise is out of order.
    #[inline]
    pub fn for_each_event(&self, command: Option<&Command>, mut f: impl FnMut(Event)) {
        match self {
            Record::Event(e) => f(*e),
            Record::Fill(fill) => fill.events().into_iter().for_each(f),
            Record::Removed(removal) => removal.events().into_iter().for_each(f),
            Record::Rested(rested) => command
                .and_then(|c| rested.events_after(c))
                .unwrap_or_else(|| panic!("{rested:?} does not follow its new order's command"))
                .into_iter()
                .for_each(f),
            Record::Command(_) | Record::Shutdown => {}
        }
    }
}

// One record is copied per hop; keep it within two cache lines.
const _: () = assert!(size_of::<Record>() <= 128);

/// How an idle consumer waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Spin forever: lowest latency, one core per stage. Only with dedicated cores.
    BusySpin,
    /// Spin, then yield the core between checks.
    SpinYield,
    /// Spin, then yield, then sleep until woken (or a short timeout). The default: three
    /// stages share two cores without starving each other.
    SpinPark,
}

impl WaitStrategy {
    /// Parses the configuration value.
    pub fn parse(text: &str) -> Option<WaitStrategy> {
        match text {
            "busy_spin" => Some(WaitStrategy::BusySpin),
            "spin_yield" => Some(WaitStrategy::SpinYield),
            "spin_park" => Some(WaitStrategy::SpinPark),
            _ => None,
        }
    }
}

/// Which thread runs which stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threading {
    /// [`Threading::Dedicated`] with a core per stage and one to spare, else
    /// [`Threading::Shared`]; see [`Threading::choose`].
    Auto,
    /// A thread per stage (gateway, matcher, journal writer): for a machine with a core per
    /// stage, with `busy_spin` and pinning.
    Dedicated,
    /// Gateway, matcher and journal writer in turn on one thread, each batch run to
    /// completion: no wake-up on the path. For small machines.
    Shared,
}

/// Threads of the `dedicated` pipeline: gateway, matcher, journal writer.
pub const DEDICATED_THREADS: usize = 3;

impl Threading {
    /// Parses the configuration value.
    pub fn parse(text: &str) -> Option<Threading> {
        match text {
            "auto" => Some(Threading::Auto),
            "dedicated" => Some(Threading::Dedicated),
            "shared" => Some(Threading::Shared),
            _ => None,
        }
    }

    /// The configuration value.
    pub fn name(self) -> &'static str {
        match self {
            Threading::Auto => "auto",
            Threading::Dedicated => "dedicated",
            Threading::Shared => "shared",
        }
    }

    /// Resolves `auto` from the cores this process may use (its CPU affinity mask):
    /// `dedicated` needs a core per stage plus one for the feed, the snapshots and the
    /// system; with fewer, stages on their own threads take turns on a core and every hop
    /// pays a wake-up, so `shared` is faster. Returns the mode and why.
    pub fn choose(self) -> (Threading, String) {
        if self != Threading::Auto {
            return (self, "configured".to_string());
        }
        let cores = usable_cores();
        let needed = DEDICATED_THREADS + 1;
        if cores >= needed {
            (
                Threading::Dedicated,
                format!("auto: {cores} cores usable, a thread per stage needs {needed}"),
            )
        } else {
            (
                Threading::Shared,
                format!(
                    "auto: {cores} cores usable, fewer than the {needed} a thread per stage needs"
                ),
            )
        }
    }
}

/// Cores this process may run on, at least 1: its affinity mask, or fewer under a cgroup's
/// CPU quota (`cpu.max`, a container's `--cpus`), which `available_parallelism` counts
/// (the mask alone counted a 16-core host's cores for a container allowed 2, and `auto`
/// chose a thread per stage).
pub fn usable_cores() -> usize {
    let mask = core_affinity::get_core_ids().map(|ids| ids.len());
    let allowed = std::thread::available_parallelism().ok().map(|n| n.get());
    match (mask, allowed) {
        (Some(mask), Some(allowed)) => mask.min(allowed),
        (mask, allowed) => mask.or(allowed).unwrap_or(1),
    }
    .max(1)
}

/// Rounds of `spin_loop` before yielding.
const SPINS_MAX: u32 = 200;
/// Rounds of `yield_now` before parking.
const YIELDS_MAX: u32 = 50;
/// Longest park; a lost wake-up costs at most this.
const PARK_MAX: Duration = Duration::from_millis(2);

/// How a sleeping consumer is woken.
#[derive(Debug)]
pub enum Wake {
    /// A thread parked with a `crossbeam` `Parker`.
    Thread(Unparker),
    /// A `mio` poll loop.
    Poll(Arc<mio::Waker>),
    /// Nobody: producer and consumer run on the same thread, so the consumer never sleeps
    /// while the producer has work (`shared` threading).
    None,
    /// A function (the raft thread's proposer waits on a tokio `Notify`).
    Callback(Callback),
}

/// A wake-up function, for consumers that are neither a parked thread nor a `mio` poll.
#[derive(Clone)]
pub struct Callback(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Callback")
    }
}

/// A bounded single-producer, single-consumer ring with sleep/wake support.
#[derive(Debug)]
pub struct Ring<T> {
    queue: ArrayQueue<T>,
    /// The consumer's sleep announcement and how to wake it.
    signal: Signal,
}

impl<T> Ring<T> {
    /// A ring of `capacity` records whose consumer is woken through `wake`.
    pub fn new(capacity: usize, wake: Wake) -> Ring<T> {
        Ring {
            queue: ArrayQueue::new(capacity),
            signal: Signal::new(wake),
        }
    }

    /// Adds a record, or gives it back if the ring is full.
    #[inline]
    pub fn try_push(&self, record: T) -> Result<(), T> {
        self.queue.push(record)
    }

    /// Adds a record, waiting for room (backpressure). Wakes the consumer while waiting,
    /// since it may be asleep on a ring we filled.
    pub fn push(&self, mut record: T) {
        let mut idle = 0u32;
        loop {
            match self.queue.push(record) {
                Ok(()) => return,
                Err(back) => {
                    record = back;
                    self.notify();
                    backoff(&mut idle);
                }
            }
        }
    }

    /// Takes a record if there is one.
    #[inline]
    pub fn try_pop(&self) -> Option<T> {
        self.queue.pop()
    }

    /// Records waiting.
    #[inline]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no record waits.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Records it can hold.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Free slots.
    #[inline]
    pub fn room(&self) -> usize {
        self.queue.capacity() - self.queue.len()
    }

    /// Called by the producer after pushing a batch: wakes the consumer if it sleeps.
    #[inline]
    pub fn notify(&self) {
        self.signal.notify();
    }

    /// Called by the consumer before sleeping: announces it, then re-checks the ring.
    /// Returns false (and takes the announcement back) if records arrived meanwhile.
    pub fn prepare_sleep(&self) -> bool {
        self.signal.announce_sleep();
        if self.queue.is_empty() {
            true
        } else {
            self.signal.woke();
            false
        }
    }

    /// Called by the consumer after waking.
    pub fn woke(&self) {
        self.signal.woke();
    }
}

/// A consumer's sleep announcement and how to wake it: the producer calls
/// [`Signal::notify`] after each batch and pays only an atomic load unless the consumer
/// announced that it sleeps. Every [`Ring`] has one; the feed publisher, which follows the
/// journal files instead of a ring, can be given one by the journal writer.
#[derive(Debug)]
pub struct Signal {
    sleeping: AtomicBool,
    wake: Wake,
}

impl Signal {
    /// A signal that wakes through `wake`.
    pub fn new(wake: Wake) -> Signal {
        Signal {
            sleeping: AtomicBool::new(false),
            wake,
        }
    }

    /// Producer side: wakes the consumer if it announced sleep.
    #[inline]
    pub fn notify(&self) {
        if matches!(self.wake, Wake::None) {
            return;
        }
        // SeqCst pairs with the consumer's announce-then-recheck: either the consumer sees
        // the producer's work, or the producer sees its announcement.
        if self.sleeping.load(Ordering::SeqCst) {
            self.sleeping.store(false, Ordering::SeqCst);
            match &self.wake {
                Wake::Thread(unparker) => unparker.unpark(),
                Wake::Poll(waker) => {
                    // A failed wake only delays the consumer until its poll timeout.
                    let _ = waker.wake();
                }
                Wake::Callback(f) => (f.0)(),
                Wake::None => {}
            }
        }
    }

    /// Consumer side, before its last check for work: from here on a producer wakes it.
    pub fn announce_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
    }

    /// Consumer side, after waking or when it found work after all.
    pub fn woke(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }
}

/// A producer waiting for room: spin, then yield, then short sleeps.
fn backoff(idle: &mut u32) {
    *idle = idle.saturating_add(1);
    if *idle < SPINS_MAX {
        std::hint::spin_loop();
    } else if *idle < SPINS_MAX + YIELDS_MAX {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// How long an idle consumer has been idle.
#[derive(Clone, Copy, Debug)]
pub struct Idle {
    rounds: u32,
    since: Instant,
}

impl Default for Idle {
    fn default() -> Idle {
        Idle::new()
    }
}

impl Idle {
    /// Not idle.
    pub fn new() -> Idle {
        Idle {
            rounds: 0,
            since: Instant::now(),
        }
    }

    /// Records were found: the next wait starts a new idle period.
    #[inline]
    pub fn reset(&mut self) {
        self.rounds = 0;
    }
}

/// Spin this long before yielding: a reply usually comes back within it.
const SPIN_FOR: Duration = Duration::from_micros(5);
/// Yield until this long before parking.
const YIELD_FOR: Duration = Duration::from_micros(20);

/// Waits for records on `ring` according to `strategy`. Call [`Idle::reset`] whenever
/// records were found. `parker` is the consumer thread's own.
pub fn idle_wait<T>(
    ring: &Ring<T>,
    strategy: WaitStrategy,
    idle: &mut Idle,
    parker: &crossbeam::sync::Parker,
) {
    if idle.rounds == 0 {
        idle.since = Instant::now();
    }
    idle.rounds = idle.rounds.saturating_add(1);
    if strategy == WaitStrategy::BusySpin {
        return std::hint::spin_loop();
    }
    let idle_for = idle.since.elapsed();
    if idle_for < SPIN_FOR {
        std::hint::spin_loop();
    } else if strategy == WaitStrategy::SpinYield || idle_for < YIELD_FOR {
        std::thread::yield_now();
    } else if ring.prepare_sleep() {
        parker.park_timeout(PARK_MAX);
        ring.woke();
    }
}

/// Pins the current thread to `core` if one is given. Returns whether it is pinned.
pub fn pin(core: Option<usize>, stage: &str) -> bool {
    let Some(id) = core else {
        return false;
    };
    // Only a core of the affinity mask: `core_affinity` indexes a fixed CPU set with the
    // id, and an id of 1024 or more panicked there, killing the stage's thread before it
    // ran (the engine then took orders and answered none).
    let usable = core_affinity::get_core_ids().is_some_and(|ids| ids.iter().any(|c| c.id == id));
    let pinned = usable && core_affinity::set_for_current(core_affinity::CoreId { id });
    if !pinned {
        eprintln!("ironmatch: could not pin the {stage} thread to core {id}; running unpinned");
    }
    pinned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam::sync::Parker;

    /// A core the process may not run on, however large its id, is refused with a warning
    /// (an id of 1024 or more panicked in the pinning library).
    #[test]
    fn a_core_that_is_not_usable_is_not_pinned_to() {
        assert!(!pin(Some(4096), "test"));
        assert!(!pin(Some(1 << 40), "test"));
        assert!(!pin(None, "test"));
    }

    #[test]
    fn records_cross_threads_in_order_with_backpressure() {
        let parker = Parker::new();
        let ring: Arc<Ring<u64>> = Arc::new(Ring::new(8, Wake::Thread(parker.unparker().clone())));
        let producer = {
            let ring = Arc::clone(&ring);
            std::thread::spawn(move || {
                for i in 0..100_000u64 {
                    ring.push(i);
                    if i % 64 == 0 {
                        ring.notify();
                    }
                }
                ring.notify();
            })
        };
        let mut expected = 0u64;
        let mut idle = Idle::new();
        while expected < 100_000 {
            match ring.try_pop() {
                Some(v) => {
                    assert_eq!(v, expected);
                    expected += 1;
                    idle.reset();
                }
                None => idle_wait(&ring, WaitStrategy::SpinPark, &mut idle, &parker),
            }
        }
        producer.join().unwrap();
        assert!(ring.is_empty());
    }

    #[test]
    fn threading_parses_and_auto_resolves_to_a_mode() {
        assert_eq!(Threading::parse("shared"), Some(Threading::Shared));
        assert_eq!(Threading::parse("dedicated"), Some(Threading::Dedicated));
        assert_eq!(Threading::parse("Shared"), None);
        assert_eq!(Threading::Shared.choose().0, Threading::Shared);
        assert_eq!(Threading::Dedicated.choose().0, Threading::Dedicated);
        let (mode, why) = Threading::Auto.choose();
        let expected = if usable_cores() > DEDICATED_THREADS {
            Threading::Dedicated
        } else {
            Threading::Shared
        };
        assert_eq!(mode, expected, "{why}");
        assert!(why.contains("cores usable"), "{why}");
    }

    #[test]
    fn a_ring_without_wake_notifies_nobody() {
        let ring: Ring<u8> = Ring::new(4, Wake::None);
        assert!(ring.prepare_sleep());
        ring.try_push(1).unwrap();
        ring.notify();
        assert_eq!(ring.try_pop(), Some(1));
    }

    #[test]
    fn a_full_ring_gives_the_record_back() {
        let ring: Ring<u8> = Ring::new(1, Wake::Thread(Parker::new().unparker().clone()));
        assert_eq!(ring.try_push(1), Ok(()));
        assert_eq!(ring.try_push(2), Err(2));
        assert_eq!(ring.room(), 0);
    }
}
