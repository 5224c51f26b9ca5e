//! Group commit: concurrent writers share one append and one fsync.
//!
//! Writers enqueue their command and wait. Whoever finds no commit in
//! progress becomes the leader: it takes a bounded group from the front of
//! the queue (at most `max_commit_group_bytes`), commits it with one write
//! and one fsync, hands every member its result, and wakes the others.
//! Writers that arrive meanwhile form the next group. The queue holds at most
//! one command per blocked caller thread, so it is bounded by them.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::command::Command;
use crate::error::Result;

/// A command waiting for its group, and then its result.
pub struct Ticket<T> {
    pub command: Command,
    /// (completed, result not yet taken)
    result: Mutex<(bool, Option<Result<T>>)>,
}

impl<T> Ticket<T> {
    fn new(command: Command) -> Self {
        Ticket {
            command,
            result: Mutex::new((false, None)),
        }
    }

    fn take(&self) -> Option<Result<T>> {
        self.result.lock().expect("ticket lock poisoned").1.take()
    }

    /// Delivers this ticket's result; the leader calls it once per ticket.
    pub fn complete(&self, result: Result<T>) {
        let mut slot = self.result.lock().expect("ticket lock poisoned");
        assert!(!slot.0, "a ticket is completed once");
        *slot = (true, Some(result));
    }

    fn is_completed(&self) -> bool {
        self.result.lock().map(|slot| slot.0).unwrap_or(true)
    }
}

struct QueueState<T> {
    pending: VecDeque<Arc<Ticket<T>>>,
    leader_active: bool,
    /// How many writers the next leader waits for (see `gather`).
    expected: usize,
}

pub struct CommitQueue<T> {
    state: Mutex<QueueState<T>>,
    wake: Condvar,
    /// Signalled when a writer enqueues, for a leader that is gathering.
    arrived: Condvar,
    max_group_bytes: u64,
    gather_wait: Duration,
}

impl<T> CommitQueue<T> {
    /// `gather_wait`: how long a new leader may wait for as many writers as
    /// were active in the previous round to queue up (zero: never waits).
    pub fn new(max_group_bytes: u64, gather_wait: Duration) -> Self {
        CommitQueue {
            state: Mutex::new(QueueState {
                pending: VecDeque::new(),
                leader_active: false,
                expected: 0,
            }),
            wake: Condvar::new(),
            arrived: Condvar::new(),
            max_group_bytes,
            gather_wait,
        }
    }

    /// A new leader lets the writers of the previous round catch up before
    /// it commits (PostgreSQL's commit_delay/commit_siblings). Without this,
    /// writers split into two halves that take turns, each sharing an fsync
    /// with only half of the others. A lone writer expects only itself and
    /// never waits; the wait is bounded by `gather_wait`.
    fn gather<'g>(
        &self,
        mut state: MutexGuard<'g, QueueState<T>>,
    ) -> MutexGuard<'g, QueueState<T>> {
        let deadline = Instant::now() + self.gather_wait;
        while state.pending.len() < state.expected {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .arrived
                .wait_timeout(state, deadline - now)
                .expect("commit queue lock poisoned")
                .0;
        }
        state
    }

    /// Submits `command` and blocks until its group is committed. `commit`
    /// runs on whichever caller leads; it must complete every ticket it gets.
    pub fn submit(&self, command: Command, commit: impl Fn(&[Arc<Ticket<T>>])) -> Result<T> {
        let ticket = Arc::new(Ticket::new(command));
        let mut state = self.state.lock().expect("commit queue lock poisoned");
        state.pending.push_back(ticket.clone());
        self.arrived.notify_one();
        loop {
            if let Some(result) = ticket.take() {
                return result;
            }
            if state.leader_active {
                state = self.wake.wait(state).expect("commit queue lock poisoned");
                continue;
            }
            state.leader_active = true;
            state = self.gather(state);
            let group = self.take_group(&mut state.pending);
            drop(state);
            let lead = LeaderGuard {
                queue: self,
                group: &group,
            };
            commit(&group);
            drop(lead);
            state = self.state.lock().expect("commit queue lock poisoned");
        }
    }

    /// The front of the queue, up to the byte bound (always at least one).
    fn take_group(&self, pending: &mut VecDeque<Arc<Ticket<T>>>) -> Vec<Arc<Ticket<T>>> {
        let mut bytes = 0;
        let mut group = Vec::new();
        while let Some(next) = pending.front() {
            let size = next.command.encoded_len();
            if !group.is_empty() && bytes + size > self.max_group_bytes {
                break;
            }
            bytes += size;
            group.push(pending.pop_front().expect("front exists"));
        }
        group
    }
}

/// Ends a leader's turn, even if its commit panicked, so the queue never
/// stalls; members of a group whose commit panicked get an error.
struct LeaderGuard<'q, T> {
    queue: &'q CommitQueue<T>,
    group: &'q [Arc<Ticket<T>>],
}

impl<T> Drop for LeaderGuard<'_, T> {
    fn drop(&mut self) {
        for ticket in self.group.iter().filter(|t| !t.is_completed()) {
            let reason =
                "the thread committing this write panicked; its outcome is unknown".to_string();
            if let Ok(mut slot) = ticket.result.lock() {
                *slot = (true, Some(Err(crate::error::Error::Poisoned { reason })));
            }
        }
        let mut state = match self.queue.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        state.leader_active = false;
        // Writers active this round: the group just committed and those who queued meanwhile.
        state.expected = self.group.len() + state.pending.len();
        self.queue.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn set(n: usize) -> Command {
        Command::Set {
            key: n.to_string().into_bytes(),
            value: vec![0; 10],
        }
    }

    #[test]
    fn a_lone_writer_commits_its_own_command() {
        let queue = CommitQueue::<usize>::new(1 << 20, Duration::from_micros(50));
        let result = queue.submit(set(1), |group| {
            assert_eq!(group.len(), 1);
            group[0].complete(Ok(7));
        });
        assert_eq!(result.unwrap(), 7);
    }

    #[test]
    fn concurrent_writers_share_groups_and_each_gets_its_own_result() {
        let queue = Arc::new(CommitQueue::<usize>::new(
            1 << 20,
            Duration::from_micros(50),
        ));
        let groups = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (queue, groups) = (queue.clone(), groups.clone());
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let n = t * 1000 + i;
                        let got = queue
                            .submit(set(n), |group| {
                                groups.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_micros(200)); // an "fsync"
                                for ticket in group {
                                    let Command::Set { key, .. } = &ticket.command else {
                                        unreachable!()
                                    };
                                    ticket.complete(Ok(String::from_utf8(key.clone())
                                        .unwrap()
                                        .parse()
                                        .unwrap()));
                                }
                            })
                            .unwrap();
                        assert_eq!(got, n);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let groups = groups.load(Ordering::Relaxed);
        assert!(
            groups < 400,
            "400 commands should share groups, took {groups}"
        );
    }

    #[test]
    fn groups_respect_the_byte_bound() {
        let queue = CommitQueue::<usize>::new(1, Duration::ZERO);
        let mut pending: VecDeque<_> = (0..3).map(|n| Arc::new(Ticket::new(set(n)))).collect();
        assert_eq!(
            queue.take_group(&mut pending).len(),
            1,
            "at least one, even over the bound"
        );
        assert_eq!(pending.len(), 2);
    }

    #[test]
    fn a_panicking_leader_does_not_stall_the_queue() {
        let queue = CommitQueue::<usize>::new(1 << 20, Duration::from_micros(50));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = queue.submit(set(1), |_| panic!("commit failed"));
        }));
        assert!(panicked.is_err());
        assert_eq!(queue.submit(set(2), |g| g[0].complete(Ok(2))).unwrap(), 2);
    }
}
