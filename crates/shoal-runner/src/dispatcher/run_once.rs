//! Run-once fixtures (`shoal_run_once`): the first worker that needs one sets it up, the
//! others wait for its value, and its owner tears it down once every other worker is done.
//!
//! Pure bookkeeping, like the scheduler: the dispatcher reports what workers said and sends
//! the messages this module answers with.

use std::collections::{HashMap, HashSet};

use shoal_protocol::{SetupFailure, ToPython};

enum State {
    /// `owner` is running the setup; `waiters` get the value when it is ready.
    SettingUp {
        owner: usize,
        waiters: Vec<usize>,
    },
    Ready {
        owner: usize,
        value: serde_json::Value,
    },
    Failed {
        text: String,
        kind: SetupFailure,
    },
}

/// Messages to send: (worker, message).
pub type Replies = Vec<(usize, ToPython)>;

#[derive(Default)]
pub struct RunOnceFixtures {
    fixtures: HashMap<String, State>,
    /// Owners waiting to tear a fixture down: (fixture, worker).
    releases: Vec<(String, usize)>,
    /// Fixtures whose owner reached their teardown.
    let_go: HashSet<String>,
}

impl RunOnceFixtures {
    /// Worker `w` needs `name`: it runs the setup, waits, or gets the outcome at once.
    pub fn request(&mut self, name: String, w: usize) -> Replies {
        let reply = match self.fixtures.get_mut(&name) {
            None => {
                let owner = State::SettingUp {
                    owner: w,
                    waiters: Vec::new(),
                };
                self.fixtures.insert(name.clone(), owner);
                ToPython::FixtureRun { name }
            }
            Some(State::SettingUp { waiters, .. }) => {
                waiters.push(w);
                return Vec::new();
            }
            Some(State::Ready { value, .. }) => ToPython::FixtureValue {
                name,
                value: value.clone(),
            },
            Some(State::Failed { text, kind }) => ToPython::FixtureError {
                name,
                text: text.clone(),
                kind: *kind,
            },
        };
        vec![(w, reply)]
    }

    /// The setup by `owner` produced `value`.
    pub fn ready(&mut self, name: String, owner: usize, value: serde_json::Value) -> Replies {
        self.settle(name, State::Ready { owner, value })
    }

    pub fn failed(&mut self, name: String, text: String, kind: SetupFailure) -> Replies {
        self.settle(name, State::Failed { text, kind })
    }

    /// The owner reached the fixture's teardown and waits to be released.
    pub fn owner_done(&mut self, name: String, owner: usize) {
        self.let_go.insert(name.clone());
        self.releases.push((name, owner));
    }

    /// Fails the waiters of setups whose worker died (`dead(w)`, named `id(w)`), and
    /// releases owners once every other worker is done (`done(w)`).
    pub fn housekeeping(
        &mut self,
        workers: usize,
        dead: impl Fn(usize) -> bool,
        done: impl Fn(usize) -> bool,
        id: impl Fn(usize) -> String,
    ) -> Replies {
        let orphaned: Vec<(String, usize)> = self
            .fixtures
            .iter()
            .filter_map(|(name, state)| match state {
                State::SettingUp { owner, .. } if dead(*owner) => Some((name.clone(), *owner)),
                _ => None,
            })
            .collect();
        let mut replies = Vec::new();
        for (name, owner) in orphaned {
            let text = format!(
                "worker '{}' died while setting up run-once fixture '{name}'",
                id(owner)
            );
            replies.extend(self.failed(name, text, SetupFailure::Error));
        }
        let (due, waiting): (Vec<_>, Vec<_>) = self
            .releases
            .drain(..)
            .partition(|(_, owner)| (0..workers).all(|w| w == *owner || done(w)));
        self.releases = waiting;
        replies.extend(
            due.into_iter()
                .map(|(name, owner)| (owner, ToPython::FixtureRelease { name })),
        );
        replies
    }

    /// The worker setting `name` up, while it does.
    pub fn setting_up(&self, name: &str) -> Option<usize> {
        match self.fixtures.get(name) {
            Some(State::SettingUp { owner, .. }) => Some(*owner),
            _ => None,
        }
    }

    /// Whether `w` is setting `name` up or waiting for its value.
    pub fn waits(&self, name: &str, w: usize) -> bool {
        matches!(self.fixtures.get(name),
            Some(State::SettingUp { owner, waiters }) if *owner == w || waiters.contains(&w))
    }

    /// Whether `w` set `name` up and has not yet asked to tear it down.
    pub fn owned_and_held(&self, name: &str, w: usize) -> bool {
        matches!(self.fixtures.get(name), Some(State::Ready { owner, .. }) if *owner == w)
            && !self.let_go.contains(name)
    }

    fn settle(&mut self, name: String, outcome: State) -> Replies {
        let waiters = match self.fixtures.insert(name.clone(), outcome) {
            Some(State::SettingUp { waiters, .. }) => waiters,
            _ => Vec::new(),
        };
        let reply = match &self.fixtures[&name] {
            State::Ready { value, .. } => ToPython::FixtureValue {
                name,
                value: value.clone(),
            },
            State::Failed { text, kind } => ToPython::FixtureError {
                name,
                text: text.clone(),
                kind: *kind,
            },
            State::SettingUp { .. } => return Vec::new(),
        };
        waiters.into_iter().map(|w| (w, reply.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_setup_many_values_one_release_after_the_others() {
        let mut f = RunOnceFixtures::default();
        assert_eq!(
            f.request("db".into(), 0),
            vec![(0, ToPython::FixtureRun { name: "db".into() })]
        );
        assert!(f.request("db".into(), 1).is_empty(), "waits while set up");
        let value = serde_json::json!({"url": "x"});
        let replies = f.ready("db".into(), 0, value.clone());
        let expected = ToPython::FixtureValue {
            name: "db".into(),
            value,
        };
        assert_eq!(replies, vec![(1, expected.clone())]);
        assert_eq!(f.request("db".into(), 2), vec![(2, expected)]);
        f.owner_done("db".into(), 0);
        let none_dead = |_| false;
        let id = |w: usize| format!("gw{w}");
        assert!(f.housekeeping(3, none_dead, |w| w == 1, id).is_empty());
        assert_eq!(
            f.housekeeping(3, none_dead, |w| w != 0, id),
            vec![(0, ToPython::FixtureRelease { name: "db".into() })]
        );
    }

    #[test]
    fn a_dead_owner_fails_its_waiters() {
        let mut f = RunOnceFixtures::default();
        f.request("db".into(), 0);
        f.request("db".into(), 1);
        let replies = f.housekeeping(2, |w| w == 0, |_| false, |w| format!("gw{w}"));
        assert!(
            matches!(&replies[..], [(1, ToPython::FixtureError { text, .. })] if text.contains("gw0"))
        );
    }
}
