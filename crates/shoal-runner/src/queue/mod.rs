//! `--queue`: one dynamic queue on Redis, shared by every CI node of a build.
//!
//! Every node collects; the first to claim the build pushes the work (the `--dist` mode's
//! units, longest first from history), every other node checks that its collection is the
//! same. Then each node leases units in small batches for its own forked workers, renews the
//! leases while it runs them and acknowledges each unit with its tests' results; a unit whose
//! lease expires (its node died or hangs) is taken over by another node. A node keeps working
//! until the whole build is done, and `shoal report` reads every result back into one run.
//!
//! - [`server`]: the Redis side, every atomic step a Lua script of `scripts/`;
//! - [`source`]: [`QueueSource`], the work source a node's dispatcher asks for tests;
//! - [`stored`]: a test's result as it lives in Redis (JSON, never code or pickles);
//! - [`report`]: `shoal report`.
//!
//! The design, the keys and the guarantees are in `docs/queue.md`.

pub mod report;
mod server;
mod source;
mod stored;

use std::time::Duration;

pub use server::{Server, ServerError};
pub use source::{QueueError, QueueSource, Seat};

/// Where a build's queue lives and which build this is.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    /// `redis://`, `rediss://` (TLS), with `user:password@` or `:password@` for AUTH.
    pub url: String,
    pub build: String,
    /// How long a node's lease on a unit lasts without being renewed.
    pub lease: Duration,
    /// How long the build's keys live after their last use.
    pub ttl: Duration,
    /// The build's retries in all, as a share of its tests (ci-queue's `requeue_tolerance`).
    pub requeue_tolerance: f64,
}

impl QueueSpec {
    /// The build's `testrun_uid`, the same on every node: from the build id.
    pub fn testrunuid(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("shoal build {}", self.build).as_bytes());
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The lease a node holds on a unit, unless `--lease-timeout` says otherwise. Leases are
/// renewed every third of it, so a node must stall for this long to lose its units.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Eight hours: long enough for a build's slowest job and its report.
pub const DEFAULT_TTL: Duration = Duration::from_secs(8 * 3600);
/// A twentieth of the build's tests may be retried on other nodes.
pub const DEFAULT_REQUEUE_TOLERANCE: f64 = 0.05;

/// `--queue` and the options that go with it, as given.
#[derive(Debug, Clone, Default)]
pub struct QueueArgs {
    /// `--queue URL`; without it, `SHOAL_QUEUE`.
    pub url: Option<String>,
    /// `--build ID`; without it, [`BUILD_VARIABLES`].
    pub build: Option<String>,
    pub lease_timeout: Option<Duration>,
    pub ttl: Option<Duration>,
    pub requeue_tolerance: Option<f64>,
}

impl QueueArgs {
    /// The queue this run takes part in, if any; `var` reads the environment.
    pub fn spec(
        &self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<QueueSpec>, QueueSpecError> {
        let Some(url) = self
            .url
            .clone()
            .or_else(|| var("SHOAL_QUEUE"))
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        Ok(Some(QueueSpec {
            url,
            build: build_id(self.build.as_deref(), var)?,
            lease: self.lease_timeout.unwrap_or(DEFAULT_LEASE),
            ttl: self.ttl.unwrap_or(DEFAULT_TTL),
            requeue_tolerance: self.requeue_tolerance.unwrap_or(DEFAULT_REQUEUE_TOLERANCE),
        }))
    }
}

/// The CI variables that name a build, in the order they are looked at: the same on every
/// job of one pipeline or workflow run, new on every run (GitHub's re-run attempt included).
pub const BUILD_VARIABLES: &[(&str, &str)] = &[
    ("SHOAL_BUILD", "shoal"),
    ("GITHUB_RUN_ID", "GitHub Actions, with GITHUB_RUN_ATTEMPT"),
    ("CI_PIPELINE_ID", "GitLab"),
    ("BUILDKITE_BUILD_ID", "Buildkite"),
    ("CIRCLE_WORKFLOW_ID", "CircleCI"),
    ("BUILD_BUILDID", "Azure Pipelines"),
    ("TRAVIS_BUILD_ID", "Travis CI"),
    ("BUILD_TAG", "Jenkins"),
];

/// Why `--queue` cannot start.
#[derive(Debug, thiserror::Error)]
pub enum QueueSpecError {
    #[error(
        "name the build for --queue: give --build ID, or set SHOAL_BUILD or one of {}",
        list_variables()
    )]
    NoBuild,
    #[error("use --queue with --dist {0}: it runs every test on every worker, which no shared queue can split")]
    Dist(&'static str),
    #[error("use --queue with --shard: a queue already spreads the build over every node")]
    Shard,
    #[error("use --queue with --triage: a queue build's failures are spread over its nodes' records; run `shoal bisect NODEID` on the node where a test failed")]
    Triage,
}

fn list_variables() -> String {
    BUILD_VARIABLES[1..]
        .iter()
        .map(|(name, ci)| format!("{name} ({ci})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The build id: `--build`, else the first CI variable of [`BUILD_VARIABLES`] that is set.
pub fn build_id(
    explicit: Option<&str>,
    var: impl Fn(&str) -> Option<String>,
) -> Result<String, QueueSpecError> {
    if let Some(build) = explicit.filter(|b| !b.is_empty()) {
        return Ok(build.to_owned());
    }
    for (name, _) in BUILD_VARIABLES {
        let Some(value) = var(name).filter(|v| !v.is_empty()) else {
            continue;
        };
        // A re-run of a GitHub workflow keeps its run id: its attempt makes it a new build.
        if *name == "GITHUB_RUN_ID" {
            if let Some(attempt) = var("GITHUB_RUN_ATTEMPT").filter(|a| !a.is_empty()) {
                return Ok(format!("{value}-{attempt}"));
            }
        }
        return Ok(value);
    }
    Err(QueueSpecError::NoBuild)
}

/// The URL as it may be printed: any password replaced by `***`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        assert_eq!(
            redacted("redis://:s3cret@ci-redis:6379/0"),
            "redis://:***@ci-redis:6379/0"
        );
        assert_eq!(
            redacted("rediss://ci:s3cret@host/1"),
            "rediss://ci:***@host/1"
        );
        assert_eq!(redacted("redis://token@host"), "redis://***@host");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redacted("not a url"), "not a url");
    }

    #[test]
    fn the_build_comes_from_the_option_then_the_ci() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(
            build_id(Some("b1"), env(&[("CI_PIPELINE_ID", "9")])).unwrap(),
            "b1"
        );
        assert_eq!(
            build_id(None, env(&[("CI_PIPELINE_ID", "9")])).unwrap(),
            "9"
        );
        assert_eq!(
            build_id(
                None,
                env(&[("GITHUB_RUN_ID", "77"), ("GITHUB_RUN_ATTEMPT", "2")])
            )
            .unwrap(),
            "77-2"
        );
        assert_eq!(
            build_id(None, env(&[("SHOAL_BUILD", "x"), ("GITHUB_RUN_ID", "77")])).unwrap(),
            "x"
        );
        let err = build_id(None, env(&[])).unwrap_err().to_string();
        assert!(err.contains("CI_PIPELINE_ID (GitLab)"), "{err}");
    }
}
