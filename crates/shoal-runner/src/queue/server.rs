//! The Redis side of the queue: one connection, the build's keys, and the Lua scripts that
//! make each step atomic (`scripts/*.lua`, each prefixed with `prelude.lua`).
//!
//! Every call is synchronous, from the dispatcher's loop, and bounded: a connection that
//! fails is reopened with backoff for at most `patience` (a lease, after which the node's units
//! are the other nodes' anyway), then the call fails with [`ServerError::Lost`].

use std::{
    collections::HashMap,
    thread,
    time::{Duration, Instant},
};

use redis::{Client, Connection, RedisError, Script};

use super::{redacted, QueueSpec};

/// How long one command may take on the wire before the connection counts as lost. The claim
/// of a large suite (one script pushing every unit) takes well under a second.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for Redis to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the queue's server did not answer as needed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("connect to the queue at {url}")]
    Connect { url: String, source: RedisError },
    #[error("{what} on the queue at {url}: Redis did not answer for {seconds:.0}s")]
    Lost {
        url: String,
        what: &'static str,
        seconds: f64,
        source: RedisError,
    },
    #[error("{what} on the queue at {url}")]
    Refused {
        url: String,
        what: &'static str,
        source: RedisError,
    },
    #[error("read the queue at {url}: {problem}")]
    Corrupt { url: String, problem: String },
}

/// What claiming the build found.
#[derive(Debug)]
pub struct Claim {
    /// This node pushed the work.
    pub leader: bool,
    pub fingerprint: String,
    /// The leader's description of the build (JSON, see `stored::BuildInfo`).
    pub info: String,
}

/// One answer to [`Server::exchange`].
#[derive(Debug, Default)]
pub struct Exchange {
    /// Units leased to this node: id, test indices (`i,j,k`), the node it was taken over
    /// from (empty when it came from the queue).
    pub units: Vec<(String, String, String)>,
    /// Results that arrived after their lease had passed to another node.
    pub duplicates: usize,
    /// Units waiting in the queue.
    pub queued: usize,
    /// Units leased by some node and not acknowledged.
    pub running: usize,
    /// Nodes alive (renewing their leases), this one included.
    pub nodes: usize,
}

impl Exchange {
    /// Every unit is acknowledged: the build is over.
    pub fn build_done(&self) -> bool {
        self.queued == 0 && self.running == 0
    }
}

/// The build's state as `shoal report` reads it.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub queued: Vec<String>,
    /// Leased and not acknowledged: unit id and the node holding it.
    pub running: Vec<(String, String)>,
    /// Each unit's tests (`i,j,k`).
    pub units: HashMap<String, String>,
    /// Test index -> its result (JSON).
    pub results: HashMap<String, String>,
    /// Test indices in the order their results were acknowledged.
    pub order: Vec<String>,
    /// Failed attempts that were retried (JSON).
    pub attempts: Vec<String>,
    /// Results of leases that had passed to another node (JSON).
    pub duplicates: Vec<String>,
    pub takeovers: usize,
}

/// The connection to one build's keys.
pub struct Server {
    client: Client,
    connection: Option<Connection>,
    /// The URL without its password.
    url: String,
    prefix: String,
    ttl_ms: u64,
    lease_ms: u64,
    /// How long a failing call keeps trying.
    patience: Duration,
    scripts: Scripts,
    /// Commands (scripts, pipelines) answered so far.
    round_trips: usize,
}

struct Scripts {
    claim: Script,
    exchange: Script,
    requeue: Script,
    release: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Self {
            claim: with_prelude(include_str!("scripts/claim.lua")),
            exchange: with_prelude(include_str!("scripts/exchange.lua")),
            requeue: with_prelude(include_str!("scripts/requeue.lua")),
            release: with_prelude(include_str!("scripts/release.lua")),
        }
    }
}

const PRELUDE: &str = include_str!("scripts/prelude.lua");

impl Server {
    /// Connects to `spec`'s Redis (AUTH and TLS as its URL says) and checks it answers.
    pub fn connect(spec: &QueueSpec) -> Result<Self, ServerError> {
        let url = redacted(&spec.url);
        let connect_error = |source| ServerError::Connect {
            url: url.clone(),
            source,
        };
        let client = Client::open(spec.url.as_str()).map_err(connect_error)?;
        let mut connection = open(&client).map_err(connect_error)?;
        redis::cmd("PING")
            .query::<String>(&mut connection)
            .map_err(connect_error)?;
        Ok(Self {
            client,
            connection: Some(connection),
            url,
            // The braces make every key of a build one hash slot.
            prefix: format!("shoal:{{{}}}:", spec.build),
            ttl_ms: millis(spec.ttl),
            lease_ms: millis(spec.lease),
            patience: spec.lease,
            scripts: Scripts::new(),
            round_trips: 0,
        })
    }

    /// The URL as it may be printed.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many commands Redis has answered on this connection.
    pub fn round_trips(&self) -> usize {
        self.round_trips
    }

    /// Claims the build for `node` with `units` (id, tests), unless another node did first.
    pub fn claim(
        &mut self,
        node: &str,
        fingerprint: &str,
        info: &str,
        units: &[(String, String)],
    ) -> Result<Claim, ServerError> {
        let units = serde_json::to_string(units).expect("strings serialise");
        let (leader, fingerprint, info): (i64, String, String) = self.script(
            "claim the build",
            node,
            &[],
            |s| &s.claim,
            |invocation| {
                invocation.arg(fingerprint).arg(info).arg(&units);
            },
        )?;
        Ok(Claim {
            leader: leader == 1,
            fingerprint,
            info,
        })
    }

    /// Renews `node`'s leases on `held`, acknowledges `acks` (unit id, its tests' results),
    /// and leases up to `want` more units.
    pub fn exchange(
        &mut self,
        node: &str,
        held: &[String],
        acks: &[(String, Vec<(usize, String)>)],
        want: usize,
    ) -> Result<Exchange, ServerError> {
        type Answer = (Vec<(String, String, String)>, usize, usize, usize, usize);
        let (units, duplicates, queued, running, nodes): Answer = self.script(
            "lease tests",
            node,
            held,
            |s| &s.exchange,
            |invocation| {
                invocation.arg(want);
                for (id, results) in acks {
                    invocation.arg(id).arg(results.len());
                    for (index, result) in results {
                        invocation.arg(index).arg(result);
                    }
                }
            },
        )?;
        Ok(Exchange {
            units,
            duplicates,
            queued,
            running,
            nodes,
        })
    }

    /// Puts test `index` back at the queue's head for its attempt number `attempt`, unless
    /// the build's `budget` of retries is spent; `record` is the failed attempt, for the
    /// report.
    pub fn requeue(
        &mut self,
        node: &str,
        held: &[String],
        index: usize,
        attempt: usize,
        record: &str,
        budget: usize,
    ) -> Result<bool, ServerError> {
        let requeued: i64 = self.script(
            "retry a test",
            node,
            held,
            |s| &s.requeue,
            |invocation| {
                invocation.arg(index).arg(attempt).arg(record).arg(budget);
            },
        )?;
        Ok(requeued == 1)
    }

    /// Gives every unit `node` holds back to the queue and leaves the build.
    pub fn release(&mut self, node: &str) -> Result<usize, ServerError> {
        self.script("release the leases", node, &[], |s| &s.release, |_| {})
    }

    /// Reads everything the build holds, in one atomic step.
    pub fn snapshot(&mut self) -> Result<Snapshot, ServerError> {
        let key = |name: &str| format!("{}{name}", self.prefix);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .lrange(key("queue"), 0, -1)
            .hgetall(key("owner"))
            .hgetall(key("units"))
            .hgetall(key("results"))
            .lrange(key("order"), 0, -1)
            .lrange(key("attempts"), 0, -1)
            .lrange(key("duplicates"), 0, -1)
            .hvals(key("takeovers"));
        type Answer = (
            Vec<String>,
            HashMap<String, String>,
            HashMap<String, String>,
            HashMap<String, String>,
            Vec<String>,
            Vec<String>,
            Vec<String>,
            Vec<usize>,
        );
        let (queued, owners, units, results, order, attempts, duplicates, takeovers): Answer =
            self.call("read the build", |c| pipe.query(c))?;
        let mut running: Vec<(String, String)> = owners.into_iter().collect();
        running.sort();
        Ok(Snapshot {
            queued,
            running,
            units,
            results,
            order,
            attempts,
            duplicates,
            takeovers: takeovers.iter().sum(),
        })
    }

    /// How far the build is: units queued and units leased, not acknowledged.
    pub fn progress(&mut self) -> Result<(usize, usize), ServerError> {
        let (queue, running) = (
            format!("{}queue", self.prefix),
            format!("{}running", self.prefix),
        );
        self.call("read the build", |c| {
            redis::pipe().atomic().llen(&queue).zcard(&running).query(c)
        })
    }

    /// When the build was claimed and when a unit was last acknowledged (milliseconds of the
    /// server's clock).
    pub fn times(&mut self) -> Result<(Option<u64>, Option<u64>), ServerError> {
        let key = format!("{}meta", self.prefix);
        self.call("read the build", |c| {
            redis::cmd("HMGET")
                .arg(&key)
                .arg("created")
                .arg("acknowledged")
                .query(c)
        })
    }

    /// The leader's description of the build, or `None` when no node claimed it (yet).
    pub fn info(&mut self) -> Result<Option<(String, String)>, ServerError> {
        let key = format!("{}meta", self.prefix);
        let (fingerprint, info): (Option<String>, Option<String>) =
            self.call("read the build", |c| {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("fingerprint")
                    .arg("info")
                    .query(c)
            })?;
        Ok(fingerprint.zip(info))
    }

    /// Keeps `node`'s run record (JSON) for `shoal report --save-records`, with the build's
    /// time to live, and ends the node's being alive: the report waits for the record of
    /// every node that is.
    pub fn keep_record(&mut self, node: &str, record: &str) -> Result<(), ServerError> {
        let (records, alive) = (
            format!("{}records", self.prefix),
            format!("{}alive:{node}", self.prefix),
        );
        let ttl = self.ttl_ms;
        self.call("keep the node's record", |c| {
            redis::pipe()
                .atomic()
                .hset(&records, node, record)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&records)
                .arg(ttl)
                .ignore()
                .del(&alive)
                .ignore()
                .query(c)
        })
    }

    /// The nodes' records kept so far (node -> JSON), and the nodes still alive that have
    /// not kept one (they are finishing, or a lease from now they count as dead).
    pub fn records(&mut self) -> Result<(HashMap<String, String>, Vec<String>), ServerError> {
        let (records, nodes) = (
            format!("{}records", self.prefix),
            format!("{}nodes", self.prefix),
        );
        let (kept, nodes): (HashMap<String, String>, Vec<String>) =
            self.call("read the nodes' records", |c| {
                redis::pipe()
                    .atomic()
                    .hgetall(&records)
                    .hkeys(&nodes)
                    .query(c)
            })?;
        let mut pending = Vec::new();
        for node in nodes.into_iter().filter(|n| !kept.contains_key(n)) {
            let alive = format!("{}alive:{node}", self.prefix);
            let exists: bool = self.call("read the nodes' records", |c| {
                redis::cmd("EXISTS").arg(&alive).query(c)
            })?;
            if exists {
                pending.push(node);
            }
        }
        pending.sort();
        Ok((kept, pending))
    }

    /// The error for an answer that does not have the shape the scripts give.
    pub fn corrupt(&self, problem: String) -> ServerError {
        ServerError::Corrupt {
            url: self.url.clone(),
            problem,
        }
    }

    /// Runs one of the scripts for `node` with the common arguments, then `args`.
    fn script<T: redis::FromRedisValue>(
        &mut self,
        what: &'static str,
        node: &str,
        held: &[String],
        which: fn(&Scripts) -> &Script,
        args: impl Fn(&mut redis::ScriptInvocation<'_>),
    ) -> Result<T, ServerError> {
        let held = serde_json::to_string(held).expect("strings serialise");
        let (prefix, ttl, lease) = (self.prefix.clone(), self.ttl_ms, self.lease_ms);
        let script = which(&self.scripts).clone();
        self.call(what, |connection| {
            let mut invocation = script.prepare_invoke();
            invocation
                .arg(&prefix)
                .arg(ttl)
                .arg(node)
                .arg(lease)
                .arg(&held);
            args(&mut invocation);
            invocation.invoke(connection)
        })
    }

    /// Runs `step`, reconnecting with backoff while Redis is unreachable, for at most
    /// `patience`.
    fn call<T>(
        &mut self,
        what: &'static str,
        mut step: impl FnMut(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, ServerError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let result = match self.connection.as_mut() {
                Some(connection) => step(connection),
                None => open(&self.client).and_then(|mut connection| {
                    let result = step(&mut connection);
                    self.connection = Some(connection);
                    result
                }),
            };
            let error = match result {
                Ok(value) => {
                    self.round_trips += 1;
                    return Ok(value);
                }
                Err(error) => error,
            };
            let transient = error.is_io_error()
                || error.is_connection_dropped()
                || error.is_connection_refusal()
                || error.is_timeout();
            if !transient {
                return Err(ServerError::Refused {
                    url: self.url.clone(),
                    what,
                    source: error,
                });
            }
            self.connection = None;
            if started.elapsed() + pause > self.patience {
                return Err(ServerError::Lost {
                    url: self.url.clone(),
                    what,
                    seconds: started.elapsed().as_secs_f64(),
                    source: error,
                });
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

fn open(client: &Client) -> redis::RedisResult<Connection> {
    let connection = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    connection.set_read_timeout(Some(IO_TIMEOUT))?;
    connection.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(connection)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
