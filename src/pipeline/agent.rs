//! Stages as agents, threads as configuration (Agrona / Aeron's `Agent`, `AgentRunner`,
//! `CompositeAgent` and `IdleStrategy`).
//!
//! A stage is an [`Agent`]: [`Agent::do_work`] does one bounded batch of what waits on its
//! input and says how much it did. It never decides which thread it runs on. An
//! [`AgentRunner`] owns a thread, pins it if configured, and calls `do_work` in a loop with
//! an [`IdleStrategy`] until the agent is done (its shutdown marker went through). A
//! [`CompositeAgent`] runs several agents in turn on one runner: with the gateway, the
//! matcher and the journal writer in one composite, a batch runs to completion on one
//! thread with no wake-up on its path.
//!
//! Which thread runs what: the runner's thread runs `on_start`, every `do_work` and
//! `on_close` of its agents. Nothing here allocates after start.

use std::io;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{WaitStrategy, pin};

/// A pipeline stage as a step function.
pub trait Agent: Send {
    /// The stage's name, for thread names and logs.
    fn role(&self) -> &'static str;

    /// Called once on the runner's thread before the first `do_work`.
    fn on_start(&mut self) {}

    /// Does one bounded batch of waiting work; returns how much (0 = nothing waited).
    fn do_work(&mut self) -> usize;

    /// Whether the agent has finished (its shutdown marker went through): the runner stops
    /// calling it.
    fn is_done(&self) -> bool;

    /// Called once on the runner's thread after the agent is done.
    fn on_close(&mut self) {}

    /// Before sleeping: announces the sleep to the producers of this agent's inputs, then
    /// checks them again. Returns false (and takes the announcement back) if work arrived.
    fn prepare_sleep(&mut self) -> bool {
        true
    }

    /// Whether [`Agent::block`] can wait for this agent's inputs (a `mio` poll can; a ring
    /// consumer parks its thread instead).
    fn can_block(&self) -> bool {
        false
    }

    /// Waits at most `timeout` for input, after a successful [`Agent::prepare_sleep`] (or
    /// while it has work it cannot do: see [`IdleStrategy::idle`]).
    /// Only called when [`Agent::can_block`]; the default sleeps.
    fn block(&mut self, timeout: Duration) {
        std::thread::sleep(timeout);
    }

    /// After sleeping: the producers need not wake this agent any more.
    fn woke(&mut self) {}
}

/// Several agents run in turn by one runner. Done when all are.
pub struct CompositeAgent {
    agents: Vec<Box<dyn Agent>>,
    role: &'static str,
}

impl CompositeAgent {
    /// Runs `agents` in this order on each duty cycle (pipeline order: a batch goes
    /// through every stage in one cycle).
    pub fn new(role: &'static str, agents: Vec<Box<dyn Agent>>) -> CompositeAgent {
        CompositeAgent { agents, role }
    }
}

impl Agent for CompositeAgent {
    fn role(&self) -> &'static str {
        self.role
    }

    fn on_start(&mut self) {
        self.agents.iter_mut().for_each(|a| a.on_start());
    }

    fn do_work(&mut self) -> usize {
        let mut work = 0;
        for agent in self.agents.iter_mut().filter(|a| !a.is_done()) {
            work += agent.do_work();
        }
        work
    }

    fn is_done(&self) -> bool {
        self.agents.iter().all(|a| a.is_done())
    }

    fn on_close(&mut self) {
        self.agents.iter_mut().for_each(|a| a.on_close());
    }

    fn prepare_sleep(&mut self) -> bool {
        for i in 0..self.agents.len() {
            if !self.agents[i].is_done() && !self.agents[i].prepare_sleep() {
                self.agents[..i].iter_mut().for_each(|a| a.woke());
                return false;
            }
        }
        true
    }

    fn can_block(&self) -> bool {
        self.agents.iter().any(|a| !a.is_done() && a.can_block())
    }

    fn block(&mut self, timeout: Duration) {
        if let Some(a) = self
            .agents
            .iter_mut()
            .find(|a| !a.is_done() && a.can_block())
        {
            a.block(timeout);
        }
    }

    fn woke(&mut self) {
        self.agents.iter_mut().for_each(|a| a.woke());
    }
}

/// Spin this long before yielding: a reply usually comes back within it.
pub const SPIN_FOR: Duration = Duration::from_micros(5);
/// Yield until this long before sleeping.
pub const YIELD_FOR: Duration = Duration::from_micros(20);
/// Longest sleep; a lost wake-up costs at most this. Also bounds how late the gateway's
/// timers and the shutdown flag are seen.
pub const SLEEP_MAX: Duration = Duration::from_millis(2);
/// Shortest sleep of an agent that has work but could do none (see [`IdleStrategy::idle`]).
const STALL_SLEEP_MIN: Duration = Duration::from_micros(10);
/// Longest sleep of an agent that blocks in its own poll (woken by its `mio` waker).
pub const POLL_SLEEP_MAX: Duration = Duration::from_millis(20);

/// How a runner waits when its agent did nothing: spin, then yield, then sleep (parked,
/// or in the agent's own poll), as configured by the [`WaitStrategy`].
#[derive(Debug)]
pub struct IdleStrategy {
    wait: WaitStrategy,
    idle_since: Option<Instant>,
    /// Since when the agent has had work it could not do (see [`IdleStrategy::idle`]).
    stalled_since: Option<Instant>,
    parker: crossbeam::sync::Parker,
}

impl IdleStrategy {
    /// An idle strategy parking on `parker` (the one whose unparker the agent's input rings
    /// wake) unless the agent blocks in its own poll.
    pub fn new(wait: WaitStrategy, parker: crossbeam::sync::Parker) -> IdleStrategy {
        IdleStrategy {
            wait,
            idle_since: None,
            stalled_since: None,
            parker,
        }
    }

    /// After one duty cycle that did `work`.
    #[inline]
    pub fn idle(&mut self, agent: &mut dyn Agent, work: usize) {
        if work > 0 {
            self.idle_since = None;
            self.stalled_since = None;
            return;
        }
        if self.wait == WaitStrategy::BusySpin {
            return std::hint::spin_loop();
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        let idle_for = since.elapsed();
        if idle_for < SPIN_FOR {
            std::hint::spin_loop();
        } else if self.wait == WaitStrategy::SpinYield || idle_for < YIELD_FOR {
            std::thread::yield_now();
        } else if agent.prepare_sleep() {
            if agent.can_block() {
                agent.block(POLL_SLEEP_MAX);
            } else {
                self.parker.park_timeout(SLEEP_MAX);
            }
            agent.woke();
            self.stalled_since = None;
        } else {
            // Work waits, yet the agent did none. Just arrived (it is taken on the next
            // turn), or the agent waits for room downstream (a stalled disk, a slow
            // consumer), where no one wakes it when room comes: after a while of that, a
            // short sleep, a quarter of the stall so far (at most SLEEP_MAX), instead of
            // spinning a core for the whole stall.
            let stalled_for = self
                .stalled_since
                .get_or_insert_with(Instant::now)
                .elapsed();
            if stalled_for < YIELD_FOR {
                std::thread::yield_now();
            } else {
                let sleep = (stalled_for / 4).clamp(STALL_SLEEP_MIN, SLEEP_MAX);
                if agent.can_block() {
                    // In its own poll: its sockets and wakers still end the sleep.
                    agent.block(sleep);
                } else {
                    self.parker.park_timeout(sleep);
                }
            }
        }
    }
}

/// Runs `agent` on the current thread until it is done.
pub fn run_agent(agent: &mut dyn Agent, idle: &mut IdleStrategy) {
    agent.on_start();
    while !agent.is_done() {
        let work = agent.do_work();
        idle.idle(agent, work);
    }
    agent.on_close();
}

#[cfg(test)]
thread_local! {
    /// Tests: the role whose [`AgentRunner::start`] on this thread fails, as a spawn the
    /// system refuses (out of threads or memory) would (`"raft"`: the cluster's thread,
    /// `crate::cluster::spawn`).
    pub static REFUSED_SPAWN: std::cell::Cell<Option<&'static str>> =
        const { std::cell::Cell::new(None) };
}

/// A thread driving one agent (maybe a composite) with an idle strategy.
pub struct AgentRunner {
    thread: JoinHandle<()>,
}

impl AgentRunner {
    /// Starts a thread named `im-<role>`, pinned to `core` if given, that runs `agent`
    /// until it is done.
    ///
    /// A stage that panics ends the process (exit code 70, after saying so): the stages
    /// before and after it would otherwise wait for it for ever (a producer for room on
    /// its ring, a consumer for the shutdown marker), leaving an engine that takes logins
    /// and acknowledges nothing and that no signal stops. What it had not journaled was not
    /// acknowledged; the next start recovers from the journal.
    pub fn start(
        mut agent: Box<dyn Agent>,
        mut idle: IdleStrategy,
        core: Option<usize>,
    ) -> io::Result<AgentRunner> {
        let role = agent.role();
        #[cfg(test)]
        if REFUSED_SPAWN.with(|r| r.get()) == Some(role) {
            return Err(io::Error::other(format!("thread im-{role} refused (test)")));
        }
        let thread = std::thread::Builder::new()
            .name(format!("im-{role}"))
            .spawn(move || {
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    pin(core, role);
                    run_agent(agent.as_mut(), &mut idle)
                }));
                if run.is_err() {
                    // The panic's message went to stderr already.
                    eprintln!("ironmatch: the {role} stage failed; stopping the engine");
                    std::process::exit(70);
                }
            })?;
        Ok(AgentRunner { thread })
    }

    /// The runner's thread, to join.
    pub fn into_thread(self) -> JoinHandle<()> {
        self.thread
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts down; done at zero.
    struct Countdown(usize, &'static str);

    impl Agent for Countdown {
        fn role(&self) -> &'static str {
            self.1
        }
        fn do_work(&mut self) -> usize {
            self.0 = self.0.saturating_sub(1);
            1
        }
        fn is_done(&self) -> bool {
            self.0 == 0
        }
    }

    #[test]
    fn a_composite_runs_every_agent_until_all_are_done() {
        let mut composite = CompositeAgent::new(
            "both",
            vec![Box::new(Countdown(3, "a")), Box::new(Countdown(10, "b"))],
        );
        let mut idle = IdleStrategy::new(WaitStrategy::SpinPark, crossbeam::sync::Parker::new());
        run_agent(&mut composite, &mut idle);
        assert!(composite.is_done());
    }

    #[test]
    fn a_runner_thread_ends_when_its_agent_is_done() {
        let runner = AgentRunner::start(
            Box::new(Countdown(100, "count")),
            IdleStrategy::new(WaitStrategy::SpinYield, crossbeam::sync::Parker::new()),
            None,
        )
        .unwrap();
        let thread = runner.into_thread();
        assert_eq!(thread.thread().name(), Some("im-count"));
        thread.join().unwrap();
    }

    /// Has work it can never do (as a stage whose downstream ring stays full): does
    /// nothing, and never may sleep; counts its rounds.
    struct Stalled(u64);

    impl Agent for Stalled {
        fn role(&self) -> &'static str {
            "stalled"
        }
        fn do_work(&mut self) -> usize {
            self.0 += 1;
            0
        }
        fn is_done(&self) -> bool {
            false
        }
        fn prepare_sleep(&mut self) -> bool {
            false
        }
    }

    /// A stage that waits for room downstream (a stalled journal writer's disk) backs off
    /// into short sleeps instead of spinning its core for the whole stall. It spun: in an
    /// engine whose journal writer was held for a second (dedicated threading), the
    /// matcher's thread took 100 ticks of CPU in that second, all of a core, and 1 after
    /// this change. Counted in rounds, not time: spinning makes hundreds of thousands of
    /// rounds in these 200 ms even on a loaded machine, the back-off a few hundred.
    #[test]
    fn a_stage_with_work_it_cannot_do_backs_off() {
        let mut idle = IdleStrategy::new(WaitStrategy::SpinPark, crossbeam::sync::Parker::new());
        let mut agent = Stalled(0);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(200) {
            let work = agent.do_work();
            idle.idle(&mut agent, work);
        }
        assert!(agent.0 < 5_000, "{} rounds in 200 ms", agent.0);
        // Work resets it: the next stall starts with spinning and yielding again.
        idle.idle(&mut agent, 1);
        assert!(idle.stalled_since.is_none() && idle.idle_since.is_none());
    }

    /// Panics at its third round.
    struct Faulty(usize);

    impl Agent for Faulty {
        fn role(&self) -> &'static str {
            "faulty"
        }
        fn do_work(&mut self) -> usize {
            self.0 += 1;
            assert!(self.0 < 3, "a stage's invariant broke");
            1
        }
        fn is_done(&self) -> bool {
            false
        }
    }

    /// A stage that panics ends the process with code 70 rather than leave the others
    /// waiting for it. Run in a child process (this test's binary again, with only this
    /// test and an environment switch), since the process ends.
    #[test]
    fn a_panicking_stage_ends_the_process() {
        if std::env::var_os("IRONMATCH_TEST_FAULTY_STAGE").is_some() {
            let runner = AgentRunner::start(
                Box::new(Faulty(0)),
                IdleStrategy::new(WaitStrategy::SpinYield, crossbeam::sync::Parker::new()),
                None,
            )
            .unwrap();
            let _ = runner.into_thread().join();
            // Not reached: the runner ended the process.
            std::process::exit(0);
        }
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "pipeline::agent::tests::a_panicking_stage_ends_the_process",
                "--nocapture",
            ])
            .env("IRONMATCH_TEST_FAULTY_STAGE", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&child.stderr);
        assert_eq!(child.status.code(), Some(70), "{stderr}");
        assert!(
            stderr.contains("the faulty stage failed; stopping the engine"),
            "{stderr}"
        );
    }
}
