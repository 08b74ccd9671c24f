//! `--queue` and `shoal report`: several nodes (shoal processes, each in a checkout of its own,
//! as on CI machines) share one real Redis, started on 127.0.0.1 by each test and stopped when
//! it ends. The report of a build is serial pytest's run, node by node, whatever happens to a
//! node: killed, interrupted, refused; and a queue that is lost ends every node with an error.
//!
//! `redis-server` and `redis-cli` come from `$SHOAL_REDIS_BIN`, else `PATH` (Debian's
//! `redis-server` package; `.ci/run` installs it).

use std::{
    collections::BTreeMap,
    fs,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    common::{field, survivors, Output, Project, Running},
    replay::{processes, ran_by_process, sub},
    reports::assert_same_junit_files,
};

// ---------------------------------------------------------------------------------------------
// A Redis server of the test's own.

fn redis_tool(name: &str) -> PathBuf {
    let dirs = std::env::var_os("SHOAL_REDIS_BIN")
        .map(|d| vec![PathBuf::from(d)])
        .unwrap_or_else(|| std::env::split_paths(&std::env::var_os("PATH").unwrap()).collect());
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH: these tests start a real Redis. Install it \
                 (Debian/Ubuntu: apt-get install redis-server; .ci/run does) or set \
                 SHOAL_REDIS_BIN to the directory that holds redis-server and redis-cli"
            )
        })
}

struct Redis {
    child: Option<Child>,
    port: u16,
    /// `--requirepass`, for redis-cli.
    password: Option<String>,
    /// A TLS server's CA certificate, for redis-cli and the nodes.
    ca: Option<PathBuf>,
    /// The server's directory (and its certificates).
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Self {
        Self::launch(tempfile::tempdir().unwrap(), &[], None, None)
    }

    fn start_with(args: &[&str], password: Option<&str>) -> Self {
        Self::launch(tempfile::tempdir().unwrap(), args, password, None)
    }

    /// A server that speaks TLS only, with a certificate for 127.0.0.1 from a CA of the
    /// test's own (made with `openssl`).
    fn start_tls() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl (apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let key = ["-newkey", "rsa:2048", "-nodes", "-days", "2"];
        openssl(
            &[
                &["req", "-x509", "-keyout", "ca.key", "-out", "ca.pem"][..],
                &key,
                &["-subj", "/CN=shoal-test-ca"],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req", "-keyout", "server.key", "-out", "server.csr"][..],
                &key,
                &["-subj", "/CN=127.0.0.1"],
            ]
            .concat(),
        );
        fs::write(dir.path().join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        let file = |name: &str| dir.path().join(name).display().to_string();
        let (cert, key, ca) = (file("server.pem"), file("server.key"), file("ca.pem"));
        let args = [
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ];
        Self::launch(dir, &args, None, Some(PathBuf::from(&ca)))
    }

    /// Starts `redis-server` with `args` on a free port (its TLS port when `ca` is given),
    /// and waits until it answers.
    fn launch(
        mut dir: tempfile::TempDir,
        args: &[&str],
        password: Option<&str>,
        ca: Option<PathBuf>,
    ) -> Self {
        for _attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port()
                .to_string();
            let ports = match ca {
                Some(_) => ["--port", "0", "--tls-port", &port],
                None => ["--port", &port, "--tls-port", "0"],
            };
            let child = Command::new(redis_tool("redis-server"))
                .args(ports)
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            let mut redis = Self {
                child: Some(child),
                port: port.parse().unwrap(),
                password: password.map(str::to_owned),
                ca: ca.clone(),
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if redis.cli(&["PING"]).trim() == "PONG" {
                    return redis;
                }
                if let Some(Some(_)) = redis.child.as_mut().map(|c| c.try_wait().unwrap()) {
                    break; // the port was taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            redis.kill();
            dir = std::mem::replace(&mut redis._dir, tempfile::tempdir().unwrap());
        }
        panic!("redis-server did not start");
    }

    fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `redis-cli` on the server, its answer as text.
    fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new(redis_tool("redis-cli"));
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(password) = &self.password {
            command.args(["--no-auth-warning", "-a", password]);
        }
        if let Some(ca) = &self.ca {
            command.arg("--tls").arg("--cacert").arg(ca);
        }
        let out = command.args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes and the report.

/// The fixture's tests, and what serial pytest makes of them.
const TESTS: usize = 42;

/// A node of `build` in `project`: `shoal -n <workers> --queue <url> --build <build>`, each
/// test taking `QUEUE_TEST_SECONDS`, its JUnit file `node.xml`.
fn node<'p>(
    project: &'p Project,
    url: &str,
    build: &str,
    workers: &str,
    args: &[&str],
) -> Running<'p> {
    let mut all = vec![
        "-n",
        workers,
        "-p",
        "no:cacheprovider",
        "--junitxml=node.xml",
        "--queue",
        url,
        "--build",
        build,
    ];
    all.extend_from_slice(args);
    project
        .shoal(&all)
        .env("QUEUE_TEST_SECONDS", "0.02")
        .timeout(Duration::from_secs(120))
        .start()
}

/// `shoal report` of `build`, writing `all.xml`.
fn report(project: &Project, url: &str, build: &str, args: &[&str]) -> Output {
    let mut all = vec![
        "report",
        "--queue",
        url,
        "--build",
        build,
        "--junitxml=all.xml",
    ];
    if !args.contains(&"--timeout") {
        all.extend(["--timeout", "60"]);
    }
    all.extend_from_slice(args);
    project.shoal_raw(&all).run()
}

/// Serial pytest on the fixture, writing `serial.xml` in `project`.
fn serial(project: &Project) -> Output {
    let out = project
        .pytest(["-p", "no:cacheprovider", "--junitxml=serial.xml"])
        .run();
    out.assert_code(1);
    project.take_records();
    out
}

/// `n` checkouts of the queue fixture.
fn checkouts(n: usize) -> Vec<Project> {
    (0..n).map(|_| Project::new("queue")).collect()
}

/// How often each test ran, over every checkout's record (taken: the files are emptied).
fn runs(projects: &[Project]) -> BTreeMap<String, usize> {
    let mut runs = BTreeMap::new();
    for project in projects {
        for record in project.take_records() {
            *runs.entry(field(&record, "nodeid").to_owned()).or_default() += 1;
        }
    }
    runs
}

/// Waits until `project`'s record has `count` tests.
fn wait_for_tests(project: &Project, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = fs::read_to_string(&project.record)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the node never ran {count} tests"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGKILL to a node: its workers and collector die with it (PR_SET_PDEATHSIG) within a few
/// seconds, and nothing of it is left.
fn kill(node: Running, project: &Project) {
    node.signal(libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !survivors(project.root()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = node.wait();
    assert_eq!(out.signal, Some(libc::SIGKILL), "{}", out.context());
}

/// The report is the whole build: serial pytest's JUnit file, node by node, and its counts.
fn assert_report_is_serial(project: &Project, serial: &Output, report: &Output) {
    report.assert_code(1);
    assert_same_junit_files(project, ("serial.xml", serial), ("all.xml", report));
    assert_eq!(report.stats(), serial.stats(), "{}", report.context());
    report.assert_stdout_contains("one is not two");
}

fn takeovers(report: &Output) -> usize {
    let re = regex::Regex::new(r"(\d+) units taken over").unwrap();
    re.captures(&report.stdout)
        .unwrap_or_else(|| panic!("no takeover count\n{}", report.context()))[1]
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn three_nodes_add_up_to_serial_pytest_node_by_node() {
    let redis = Redis::start();
    let projects = checkouts(3);
    let serial = serial(&projects[0]);
    let nodes: Vec<Running> = projects
        .iter()
        .zip(["2", "1", "1"])
        .map(|(p, workers)| node(p, &redis.url(), "b1", workers, &[]))
        .collect();
    let outs: Vec<Output> = nodes.into_iter().map(Running::wait).collect();
    // The failing test ran on one node: it exits 1, the others 0.
    let mut codes: Vec<i32> = outs.iter().map(Output::code).collect();
    codes.sort();
    assert_eq!(
        codes,
        [0, 0, 1],
        "{}",
        outs.iter().map(Output::context).collect::<String>()
    );
    let runs = runs(&projects);
    assert_eq!(runs.len(), TESTS, "{runs:?}");
    assert!(runs.values().all(|&n| n == 1), "a test ran twice: {runs:?}");
    let report = report(&projects[0], &redis.url(), "b1", &[]);
    assert_report_is_serial(&projects[0], &serial, &report);
}

#[test]
fn the_nodes_of_a_build_share_its_testrun_uid() {
    let redis = Redis::start();
    let projects = checkouts(2);
    let nodes: Vec<Running> = projects
        .iter()
        .map(|p| node(p, &redis.url(), "uid", "1", &[]))
        .collect();
    for out in nodes.into_iter().map(Running::wait) {
        assert!(out.code() <= 1, "{}", out.context());
    }
    let uids: std::collections::BTreeSet<String> = projects
        .iter()
        .flat_map(|p| p.take_records())
        .map(|r| field(&r, "build").to_owned())
        .collect();
    assert_eq!(uids.len(), 1, "{uids:?}");
}

#[test]
fn a_node_killed_mid_run_loses_nothing() {
    // Seeded moments: after the killed node's first, fifth and twentieth test.
    for moment in [1, 5, 20] {
        let redis = Redis::start();
        let projects = checkouts(3);
        let serial = serial(&projects[0]);
        let args = ["--lease-timeout", "2"];
        let doomed = node(&projects[1], &redis.url(), "kill", "1", &args);
        wait_for_tests(&projects[1], moment);
        let others: Vec<Running> = [&projects[0], &projects[2]]
            .into_iter()
            .map(|p| node(p, &redis.url(), "kill", "1", &args))
            .collect();
        kill(doomed, &projects[1]);
        for out in others.into_iter().map(Running::wait) {
            assert!(out.code() <= 1, "{}", out.context());
        }
        let report = report(&projects[0], &redis.url(), "kill", &[]);
        assert_report_is_serial(&projects[0], &serial, &report);
        assert!(
            takeovers(&report) >= 1,
            "moment {moment}\n{}",
            report.context()
        );
    }
}

#[test]
fn a_late_result_from_a_lost_lease_is_a_duplicate_not_a_second_outcome() {
    let redis = Redis::start();
    let projects = checkouts(2);
    let serial = serial(&projects[0]);
    let args = ["--lease-timeout", "1"];
    let stalled = node(&projects[1], &redis.url(), "late", "1", &args);
    wait_for_tests(&projects[1], 3);
    // Its controller stops renewing (its worker goes on); the other node takes its tests
    // over when the leases expire and finishes the build.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(stalled.pid(), libc::SIGSTOP) };
    let other = node(&projects[0], &redis.url(), "late", "1", &args).wait();
    // SAFETY: as above.
    unsafe { libc::kill(stalled.pid(), libc::SIGCONT) };
    let stalled = stalled.wait();
    for out in [&other, &stalled] {
        assert!(out.code() <= 1, "{}", out.context());
    }
    let report = report(&projects[0], &redis.url(), "late", &[]);
    assert_report_is_serial(&projects[0], &serial, &report);
    assert!(takeovers(&report) >= 1, "{}", report.context());
    let late = regex::Regex::new(r"(\d+) late results set aside").unwrap();
    let late: usize = late.captures(&report.stdout).unwrap()[1].parse().unwrap();
    assert!(late >= 1, "{}", report.context());
}

#[test]
fn loadfile_keeps_each_file_on_one_worker_of_one_node() {
    let redis = Redis::start();
    let projects = checkouts(2);
    let nodes: Vec<Running> = projects
        .iter()
        .map(|p| node(p, &redis.url(), "files", "2", &["--dist", "loadfile"]))
        .collect();
    for out in nodes.into_iter().map(Running::wait) {
        assert!(out.code() <= 1, "{}", out.context());
    }
    let mut placed: BTreeMap<String, std::collections::BTreeSet<(usize, String)>> = BTreeMap::new();
    let mut count = 0;
    for (n, project) in projects.iter().enumerate() {
        for record in project.take_records() {
            let file = field(&record, "nodeid").split("::").next().unwrap();
            placed
                .entry(file.to_owned())
                .or_default()
                .insert((n, field(&record, "worker").to_owned()));
            count += 1;
        }
    }
    assert_eq!(count, TESTS);
    assert_eq!(placed.len(), 4);
    for (file, places) in &placed {
        assert_eq!(places.len(), 1, "{file} ran on {places:?}");
    }
    report(&projects[0], &redis.url(), "files", &[]).assert_code(1);
}

#[test]
fn ctrl_c_on_a_node_gives_its_tests_back_at_once() {
    let redis = Redis::start();
    let projects = checkouts(2);
    let serial = serial(&projects[0]);
    // A lease far longer than the run may take: the tests must come back without expiring.
    let args = ["--lease-timeout", "600"];
    let interrupted = node(&projects[1], &redis.url(), "int", "1", &args);
    wait_for_tests(&projects[1], 3);
    interrupted.signal(libc::SIGINT);
    let out = interrupted.wait();
    out.assert_code(2);
    let rest = node(&projects[0], &redis.url(), "int", "2", &args).wait();
    assert!(rest.code() <= 1, "{}", rest.context());
    let report = report(&projects[0], &redis.url(), "int", &[]);
    assert_report_is_serial(&projects[0], &serial, &report);
    assert_eq!(takeovers(&report), 0, "{}", report.context());
}

#[test]
fn a_node_with_another_collection_is_refused_and_runs_nothing() {
    let redis = Redis::start();
    let projects = checkouts(2);
    node(&projects[0], &redis.url(), "b", "2", &[])
        .wait()
        .assert_code(1);
    let other = node(&projects[1], &redis.url(), "b", "1", &["-k", "not test_d"]).wait();
    other.assert_code(3);
    assert!(
        other
            .stderr
            .contains("collected other tests than the node that started it")
            && other.stderr.contains("\n  + test_d.py::test_d[0]")
            && !other.stderr.contains("\n  - "),
        "{}",
        other.context()
    );
    assert!(
        projects[1].take_records().is_empty(),
        "the refused node ran tests"
    );
}

#[test]
fn a_lost_redis_ends_every_node_with_an_error() {
    let mut redis = Redis::start();
    let projects = checkouts(2);
    let url = redis.url();
    let args = ["--lease-timeout", "2"];
    let first = node(&projects[0], &url, "lost", "1", &args);
    wait_for_tests(&projects[0], 2);
    let second = node(&projects[1], &url, "lost", "1", &args);
    wait_for_tests(&projects[0], 4);
    redis.kill();
    for out in [first.wait(), second.wait()] {
        out.assert_code(3);
        assert!(
            out.stderr.contains(&format!("on the queue at {url}"))
                || out
                    .stderr
                    .contains(&format!("connect to the queue at {url}")),
            "{}",
            out.context()
        );
    }
}

#[test]
fn an_unreachable_queue_is_an_error_that_hides_the_password() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let project = Project::new("queue");
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let out = project
        .shoal(["-n", "1", "--queue", &url, "--build", "x"])
        .run();
    out.assert_code(3);
    assert!(
        out.stderr
            .contains(&format!("redis://:***@127.0.0.1:{port}"))
            && !out.all_output().contains("hunter2"),
        "{}",
        out.context()
    );
}

#[test]
fn auth_is_required_and_acl_users_work() {
    let redis = Redis::start_with(&["--requirepass", "s3cret"], Some("s3cret"));
    let project = Project::new("queue");
    let base = format!("127.0.0.1:{}", redis.port);
    let none = node(&project, &format!("redis://{base}"), "auth", "1", &[]).wait();
    none.assert_code(3);
    assert!(
        none.stderr.contains("NOAUTH") || none.stderr.contains("uthentication"),
        "{}",
        none.context()
    );
    let wrong = node(
        &project,
        &format!("redis://:wrong-pw@{base}"),
        "auth",
        "1",
        &[],
    )
    .wait();
    wrong.assert_code(3);
    assert!(
        wrong.stderr.contains(&format!("redis://:***@{base}"))
            && !wrong.all_output().contains("wrong-pw"),
        "{}",
        wrong.context()
    );
    assert!(project.take_records().is_empty());
    redis.cli(&["ACL", "SETUSER", "ci", "on", ">pw", "~*", "&*", "+@all"]);
    let user = format!("redis://ci:pw@{base}");
    node(&project, &user, "auth", "2", &[])
        .wait()
        .assert_code(1);
    let out = report(&project, &user, "auth", &[]);
    out.assert_code(1);
    assert_eq!(out.stats()["passed"], TESTS - 2, "{}", out.context());
}

#[test]
fn rediss_speaks_tls_and_checks_the_server_s_certificate() {
    let redis = Redis::start_tls();
    let project = Project::new("queue");
    let ca = redis.ca.clone().unwrap();
    let untrusted = node(&project, &redis.url(), "tls", "1", &[]).wait();
    untrusted.assert_code(3);
    assert!(
        untrusted.stderr.contains("certificate"),
        "{}",
        untrusted.context()
    );
    let args = ["--queue", &redis.url(), "--build", "tls", "-n", "2"];
    project
        .shoal(args)
        .env("SSL_CERT_FILE", &ca)
        .run()
        .assert_code(1);
    let out = project
        .shoal_raw(["report", "--queue", &redis.url(), "--build", "tls"])
        .env("SSL_CERT_FILE", &ca)
        .run();
    out.assert_code(1);
    assert_eq!(out.stats()["passed"], TESTS - 2, "{}", out.context());
}

#[test]
fn every_key_of_a_build_expires_and_builds_do_not_mix() {
    let redis = Redis::start();
    let project = Project::new("queue");
    node(&project, &redis.url(), "one", "2", &["--queue-ttl", "600"])
        .wait()
        .assert_code(1);
    node(&project, &redis.url(), "two", "2", &["-k", "test_b"])
        .wait()
        .assert_code(0);
    let one = report(&project, &redis.url(), "one", &[]);
    one.assert_code(1);
    assert_eq!(one.stats()["passed"], TESTS - 2, "{}", one.context());
    let two = report(&project, &redis.url(), "two", &[]);
    two.assert_code(0);
    let stats = BTreeMap::from([("passed".to_owned(), 10), ("deselected".to_owned(), 32)]);
    assert_eq!(two.stats(), stats, "{}", two.context());
    let keys = assert_keys_expire_within(&redis, "one", 600_000);
    assert!(keys.len() >= 5, "{keys:?}");
    for key in redis.cli(&["--scan", "--pattern", "shoal:*"]).lines() {
        let ttl: i64 = redis.cli(&["PTTL", key]).trim().parse().unwrap();
        assert!(ttl > 0, "{key} never expires ({ttl})");
    }
}

/// Every key of `build` expires within `ms` milliseconds; returns the keys.
#[track_caller]
fn assert_keys_expire_within(redis: &Redis, build: &str, ms: i64) -> Vec<String> {
    let keys = redis.cli(&["--scan", "--pattern", &format!("shoal:{{{build}}}:*")]);
    for key in keys.lines() {
        let ttl: i64 = redis.cli(&["PTTL", key]).trim().parse().unwrap();
        assert!(0 < ttl && ttl <= ms, "{key} has PTTL {ttl}");
    }
    keys.lines().map(str::to_owned).collect()
}

#[test]
fn the_report_saves_each_node_s_record_and_a_failure_on_one_node_replays_here() {
    let redis = Redis::start();
    let url = redis.url();
    // Two checkouts of the pollution fixture, each file one unit on one worker of one node:
    // the polluter runs before its victim there, and the victim fails on that node only.
    let projects: Vec<Project> = (0..2).map(|_| Project::new("pollution")).collect();
    let args = [
        "-n",
        "2",
        "--dist",
        "loadfile",
        "--queue",
        &url,
        "--build",
        "rec",
        "--queue-ttl",
        "600",
    ];
    let nodes: Vec<Running> = projects
        .iter()
        .map(|p| p.shoal(args).timeout(Duration::from_secs(120)).start())
        .collect();
    for out in nodes.into_iter().map(Running::wait) {
        assert!(out.code() <= 1, "{}", out.context());
    }
    let dir = projects[0].root().join("records");
    let dir_arg = dir.to_str().unwrap();
    let out = report(&projects[0], &url, "rec", &["--save-records", dir_arg]);
    out.assert_code(1);
    let keys = assert_keys_expire_within(&redis, "rec", 600_000);
    assert!(keys.contains(&"shoal:{rec}:records".to_owned()), "{keys:?}");

    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{}", out.context());
    // Each saved record is the one its node wrote to its own cache.
    let json = |path: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
    };
    let mut local: Vec<serde_json::Value> = projects
        .iter()
        .flat_map(|p| fs::read_dir(p.path.join(".pytest_cache/shoal/runs")).unwrap())
        .map(|e| json(&e.unwrap().path()))
        .collect();
    let victim = "test_env.py::test_env_victim";
    let mut with_victim = Vec::new();
    for file in &files {
        out.assert_stdout_contains(&format!("record: {}", file.display()));
        let record = json(file);
        let at = local.iter().position(|l| *l == record);
        local.remove(at.unwrap_or_else(|| panic!("{} is no node's own record", file.display())));
        for (worker, sequence) in processes(&record) {
            if let Some(at) = sequence.iter().position(|id| id == victim) {
                with_victim.push((file.clone(), worker, sequence[..=at].to_vec()));
            }
        }
    }
    let [(file, worker, upto)] = &with_victim[..] else {
        panic!(
            "the victim ran once in all: {with_victim:?}\n{}",
            out.context()
        );
    };
    // The summary names the record that replays the build's first failure.
    let hint = regex::Regex::new(r"shoal replay --record (\S+) --test (\S+)").unwrap();
    let hint = hint.captures(&out.stdout).expect("a replay command");
    let ran = processes(&json(std::path::Path::new(&hint[1])))
        .into_iter()
        .flat_map(|(_, ids)| ids);
    assert!(ran.into_iter().any(|id| id == hint[2]), "{}", out.context());
    projects[0].take_records();
    let replay = sub(
        &projects[0],
        "replay",
        &["--record", file.to_str().unwrap(), "--test", victim],
    );
    replay.assert_code(1);
    replay.assert_stderr_contains(&format!("{victim} failed again: REPRODUCED"));
    // Here, in one process with that node's worker id, the node's sequence up to the victim.
    assert_eq!(
        ran_by_process(&projects[0].take_records()),
        [(worker.clone(), upto.clone())],
        "{}",
        replay.context()
    );
}

#[test]
fn a_record_redis_refuses_is_a_warning_and_the_build_s_verdict_stands() {
    let redis = Redis::start();
    // A user that may write every key of the build but `records`.
    redis.cli(&[
        "ACL",
        "SETUSER",
        "ci",
        "on",
        ">pw",
        "~shoal:{acl}:[^r]*",
        "~shoal:{acl}:ru*",
        "~shoal:{acl}:re[^c]*",
        "&*",
        "+@all",
    ]);
    let user = format!("redis://ci:pw@127.0.0.1:{}", redis.port);
    let project = Project::new("queue");
    let args = [
        "-n",
        "2",
        "--queue",
        &user,
        "--build",
        "acl",
        "--lease-timeout",
        "2",
    ];
    let out = project.shoal(args).timeout(Duration::from_secs(120)).run();
    out.assert_code(1);
    assert_eq!(out.stats()["passed"], TESTS - 2, "{}", out.context());
    out.assert_stderr_contains(
        "shoal: warning: failed to keep the node's record on the queue at redis://ci:***@",
    );
    // The node's own record is written all the same.
    assert_eq!(
        fs::read_dir(project.path.join(".pytest_cache/shoal/runs"))
            .unwrap()
            .count(),
        1
    );
    // The report waits for the node no longer than its lease, and saves nothing.
    let dir = project.root().join("records");
    let report = report(
        &project,
        &redis.url(),
        "acl",
        &["--save-records", dir.to_str().unwrap()],
    );
    report.assert_code(1);
    assert!(!dir.exists(), "{}", report.context());
    assert!(
        !report.stdout.contains("shoal replay"),
        "{}",
        report.context()
    );
}

/// `test_flaky.py`: fails the first time it runs in any checkout (it leaves `marker`), then
/// passes.
fn write_flaky_test(project: &Project, marker: &std::path::Path) {
    let marker = marker.display().to_string();
    project.write(
        "test_flaky.py",
        &format!(
            "import os\n\ndef test_flaky():\n    if not os.path.exists({marker:?}):\n        open({marker:?}, 'w').close()\n        assert False, 'first attempt'\n"
        ),
    );
}

#[test]
fn a_retry_runs_on_another_node_and_the_report_says_flaky() {
    let redis = Redis::start();
    let projects = checkouts(2);
    let marker = projects[0].root().join("failed-once");
    for project in &projects {
        write_flaky_test(project, &marker);
    }
    let args = ["--retries", "1", "-k", "test_flaky or test_b"];
    let nodes: Vec<Running> = projects
        .iter()
        .map(|p| node(p, &redis.url(), "retry", "1", &args))
        .collect();
    for out in nodes.into_iter().map(Running::wait) {
        assert!(out.code() <= 1, "{}", out.context());
    }
    let ran: Vec<(usize, String)> = projects
        .iter()
        .enumerate()
        .flat_map(|(n, p)| {
            p.take_records()
                .into_iter()
                .map(move |r| (n, field(&r, "nodeid").to_owned()))
        })
        .filter(|(_, id)| id.ends_with("test_flaky"))
        .collect();
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert_ne!(ran[0].0, ran[1].0, "both attempts ran on one node: {ran:?}");
    let out = report(&projects[0], &redis.url(), "retry", &[]);
    out.assert_code(0);
    out.assert_stdout_contains("FLAKY test_flaky.py::test_flaky");
}

#[test]
fn on_a_single_node_a_retry_runs_in_another_worker_process() {
    let redis = Redis::start();
    let project = Project::new("queue");
    write_flaky_test(&project, &project.root().join("failed-once"));
    let args = ["--retries", "1", "-k", "test_flaky or test_b"];
    node(&project, &redis.url(), "one", "2", &args)
        .wait()
        .assert_code(0);
    // The other worker, or a fresh process in a slot whose worker had finished: never the
    // process the test failed in.
    let pids: Vec<i64> = project
        .take_records()
        .iter()
        .filter(|r| field(r, "nodeid").ends_with("test_flaky"))
        .map(|r| r["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert_ne!(pids[0], pids[1], "both attempts ran in one process");
}

#[test]
fn the_retry_budget_stops_a_broken_build_from_retrying() {
    let redis = Redis::start();
    let project = Project::new("queue");
    let args = ["--retries", "3", "--requeue-tolerance", "0"];
    node(&project, &redis.url(), "budget", "1", &args)
        .wait()
        .assert_code(1);
    let fails = project
        .take_records()
        .iter()
        .filter(|r| field(r, "nodeid").ends_with("test_fails"))
        .count();
    assert_eq!(fails, 1, "the failing test was retried");
}

#[test]
fn the_report_lists_what_never_ran_and_fails() {
    let redis = Redis::start();
    let project = Project::new("queue");
    let doomed = node(
        &project,
        &redis.url(),
        "gone",
        "1",
        &["--lease-timeout", "600"],
    );
    wait_for_tests(&project, 2);
    kill(doomed, &project);
    let out = report(&project, &redis.url(), "gone", &["--timeout", "1"]);
    out.assert_code(3);
    assert!(
        out.stderr.contains("not every test was run within 1s")
            && out.stderr.contains("never acknowledged")
            && out.stderr.contains("never leased"),
        "{}",
        out.context()
    );
    assert!(
        !project.path.join("all.xml").exists(),
        "a partial report was written"
    );
}

#[test]
fn lf_after_a_queue_build_reruns_its_failures_and_its_durations_are_kept() {
    let redis = Redis::start();
    let project = Project::new("queue");
    node(&project, &redis.url(), "lf", "2", &[])
        .wait()
        .assert_code(1);
    report(&project, &redis.url(), "lf", &["--durations"]).assert_code(1);
    let store = project.path.join(".pytest_cache/shoal/durations.json");
    let store = fs::read_to_string(&store).expect("the report writes the durations store");
    assert!(store.contains("test_d.py::test_d[9]"), "{store}");
    project.take_records();
    let out = project.shoal(["-n", "1", "--lf"]).run();
    out.assert_code(1);
    let ran: Vec<String> = project
        .take_records()
        .iter()
        .map(|r| field(r, "nodeid").to_owned())
        .collect();
    assert_eq!(ran, ["test_a.py::test_fails"], "{}", out.context());
}

#[test]
fn bad_queue_options_are_usage_errors() {
    let project = Project::new("queue");
    let no_build = project
        .shoal(["--queue", "redis://127.0.0.1:1"])
        .env_remove("SHOAL_BUILD")
        .env_remove("GITHUB_RUN_ID")
        .env_remove("CI_PIPELINE_ID")
        .env_remove("BUILDKITE_BUILD_ID")
        .env_remove("CIRCLE_WORKFLOW_ID")
        .env_remove("BUILD_BUILDID")
        .env_remove("TRAVIS_BUILD_ID")
        .env_remove("BUILD_TAG")
        .run();
    no_build.assert_code(4);
    assert!(
        no_build.stderr.contains("give --build ID"),
        "{}",
        no_build.context()
    );
    for args in [
        &[
            "--queue",
            "redis://127.0.0.1:1",
            "--build",
            "b",
            "--dist",
            "each",
        ][..],
        &[
            "--queue",
            "redis://127.0.0.1:1",
            "--build",
            "b",
            "--shard",
            "1/2",
        ],
        &[
            "--queue",
            "redis://127.0.0.1:1",
            "--build",
            "b",
            "--lease-timeout",
            "0",
        ],
        &[
            "--queue",
            "redis://127.0.0.1:1",
            "--build",
            "b",
            "--requeue-tolerance",
            "2",
        ],
    ] {
        let out = project.shoal(args).run();
        out.assert_code(4);
        assert!(out.stderr.contains("error"), "{}", out.context());
    }
    let out = project
        .shoal_raw(["report", "--build", "b"])
        .env_remove("SHOAL_QUEUE")
        .run();
    out.assert_code(4);
    assert!(out.stderr.contains("give --queue URL"), "{}", out.context());
}
