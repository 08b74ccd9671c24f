//! Database isolation on a real PostgreSQL server.
//!
//! Each test starts a server of its own: `initdb` into a temp directory, then `postgres` on a
//! free port of 127.0.0.1 with trust authentication and no Unix socket, as `nobody` when the
//! tests run as root (PostgreSQL refuses to run as root). A guard stops it when the test ends,
//! passing or failing. The server binaries come from `$SHOAL_PG_BIN`, else `initdb` on `PATH`,
//! else `/usr/lib/postgresql/<version>/bin` (Debian's `postgresql` package); without them the
//! tests fail and say so (CI installs them: see `.ci/run`).
//!
//! What is checked:
//! - `examples/postgres` (three isolation patterns: a database per worker, a rolled-back
//!   transaction per test, unique data in a shared database) passes under `shoal -n 4` and
//!   `shoal -n 0`; a plugin of the tests' own (`tests/fixtures/pg_record`) records each test's
//!   `PYTEST_XDIST_WORKER` and `current_database()`: every worker used `test_db_<worker>`,
//!   no database was used by two workers, and none is left on the server afterwards;
//! - the negative control (`tests/fixtures/pg_counting`): tests that empty a table, insert N
//!   rows and count N pass alone, but fail under `shoal -n 2` on one shared database, since
//!   barriers make tests on the two workers overlap for certain; the same tests pass with a
//!   database per worker.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::TcpListener,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{copy_tree, field, Output, Project};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// A PostgreSQL server of the test's own.

/// How long the server may take to accept connections, and to shut down.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The directory holding `initdb` and `postgres`; panics with instructions when there is none.
fn pg_bin_dir() -> PathBuf {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("SHOAL_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            has_server(&dir),
            "SHOAL_PG_BIN={} holds no initdb and postgres",
            dir.display()
        );
        return dir;
    }
    // initdb on PATH, possibly a link into the real bin directory, next to postgres.
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if let Ok(initdb) = fs::canonicalize(dir.join("initdb")) {
            if let Some(real) = initdb.parent().filter(|d| has_server(d)) {
                return real.to_path_buf();
            }
        }
    }
    // Debian and Ubuntu keep the server out of PATH; take the newest version installed.
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_server(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries (initdb, postgres) not found on PATH nor in \
             /usr/lib/postgresql/*/bin: these tests start a real server. Install them \
             (Debian/Ubuntu: apt-get install postgresql; .ci/run does) or set SHOAL_PG_BIN to \
             the directory that holds them"
        )
    })
}

/// The (uid, gid) to run the server as: `nobody` when we are root (PostgreSQL refuses root),
/// else ourselves (None).
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    // SAFETY: a NUL-terminated name; the returned record is read at once, before any other
    // getpw* call could overwrite it.
    let pw = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root, and there is no user 'nobody' to run PostgreSQL as"
    );
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Some((uid, gid))
}

/// Where the server's temp dir goes: the usual temp dir, unless the server runs as `nobody`
/// and could not reach it (a `$TMPDIR` under root's home, say): then `/tmp`.
fn server_parent_dir(as_nobody: bool) -> PathBuf {
    let temp = std::env::temp_dir();
    let reachable = temp
        .ancestors()
        .all(|dir| fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if as_nobody && !reachable {
        PathBuf::from("/tmp")
    } else {
        temp
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port on 127.0.0.1")
        .port()
}

/// The Python the tests use must have what the example needs.
fn require_python_packages() {
    let out = Command::new(crate::common::python())
        .args(["-c", "import sqlalchemy, psycopg"])
        .output()
        .expect("run the test Python");
    assert!(
        out.status.success(),
        "{} lacks sqlalchemy or psycopg ({}): scripts/setup installs requirements-test.txt \
         into .venv",
        crate::common::python().display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

struct PgServer {
    /// The data directory and logs; removed after the server stops (fields drop after
    /// `Drop::drop`).
    _dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl PgServer {
    /// initdb into a fresh temp directory, start `postgres` and wait until it accepts
    /// connections.
    fn start() -> Self {
        require_python_packages();
        let bin = pg_bin_dir();
        let user = server_user();
        let dir = tempfile::Builder::new()
            .prefix("shoal-pg-")
            .tempdir_in(server_parent_dir(user.is_some()))
            .expect("create the server's temp dir");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("give the server's temp dir to nobody");
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        }
        let data = dir.path().join("data");
        let initdb_log = dir.path().join("initdb.log");
        let status = server_command(&bin.join("initdb"), dir.path(), user, &initdb_log, false)
            .arg("--pgdata")
            .arg(&data)
            .args([
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .status()
            .unwrap_or_else(|e| panic!("start {}/initdb: {e}", bin.display()));
        assert!(
            status.success(),
            "initdb failed ({status}):\n{}",
            fs::read_to_string(&initdb_log).unwrap_or_default()
        );

        let log = dir.path().join("postgres.log");
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let mut child = server_command(&bin.join("postgres"), dir.path(), user, &log, true)
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "unix_socket_directories="])
                .args(["-c", "max_connections=60"])
                .args(["-c", "shared_buffers=32MB"])
                .args(["-c", "fsync=off"])
                .args(["-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"])
                .spawn()
                .unwrap_or_else(|e| panic!("start {}/postgres: {e}", bin.display()));
            match wait_ready(&mut child, &data, &log) {
                Ok(()) => {
                    return Self {
                        _dir: dir,
                        child: Some(child),
                        port,
                        log,
                    }
                }
                Err(text) => {
                    stop_server(&mut child);
                    last_log = text;
                    // The port may have been taken between our probe and the server's bind.
                    if !last_log.contains("could not bind") {
                        break;
                    }
                }
            }
        }
        panic!("PostgreSQL did not start:\n{last_log}");
    }

    /// `postgresql://postgres@127.0.0.1:<port>/<database>`
    fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs one SQL statement (autocommit) through psycopg; the rows, as JSON arrays.
    fn query(&self, database: &str, sql: &str) -> Vec<Vec<Value>> {
        const SCRIPT: &str = "import json, sys, psycopg\n\
            with psycopg.connect(sys.argv[1], autocommit=True, connect_timeout=10) as c:\n\
            \x20   cur = c.execute(sys.argv[2])\n\
            \x20   rows = cur.fetchall() if cur.description else []\n\
            print(json.dumps(rows, default=str))\n";
        let out = Command::new(crate::common::python())
            .args(["-c", SCRIPT, &self.url(database), sql])
            .output()
            .expect("run the test Python");
        assert!(
            out.status.success(),
            "query {sql:?} on {database} failed:\n{}\n--- server log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(&self.log).unwrap_or_default()
        );
        serde_json::from_slice(&out.stdout).expect("the query script prints JSON")
    }

    fn create_database(&self, name: &str) {
        self.query("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// Every database on the server.
    fn databases(&self) -> BTreeSet<String> {
        self.query("postgres", "SELECT datname FROM pg_database")
            .into_iter()
            .map(|row| row[0].as_str().expect("datname is text").to_owned())
            .collect()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_server(&mut child);
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until postmaster.pid says "ready"; Err(the log) when the server exits first or takes
/// too long.
fn wait_ready(child: &mut Child, data: &Path, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + SERVER_START_TIMEOUT;
    loop {
        let pid_file = fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
        if pid_file.lines().nth(7).map(str::trim) == Some("ready") {
            return Ok(());
        }
        let problem = match child.try_wait() {
            Ok(Some(status)) => format!("postgres exited ({status})"),
            _ if Instant::now() > deadline => {
                format!("postgres was not ready after {SERVER_START_TIMEOUT:?}")
            }
            _ => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        return Err(format!(
            "{problem}:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        ));
    }
}

/// Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL; never panics.
fn stop_server(child: &mut Child) {
    for signal in [libc::SIGINT, libc::SIGQUIT, libc::SIGKILL] {
        if let Ok(Some(_)) | Err(_) = child.try_wait() {
            return;
        }
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + SERVER_STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) | Err(_) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("postgres (pid {}) outlived signal {signal}", child.id());
    }
}

/// `program` run as the server's user in `dir`, with a clean environment and its output in
/// `log`. `server`: dies with SIGQUIT (PostgreSQL's immediate shutdown) should the test
/// process die without stopping it.
fn server_command(
    program: &Path,
    dir: &Path,
    user: Option<(u32, u32)>,
    log: &Path,
    server: bool,
) -> Command {
    let log = fs::File::create(log).expect("create a server log file");
    let mut command = Command::new(program);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    if server {
        // SAFETY: prctl is async-signal-safe; this runs after the uid change, which would
        // otherwise clear the setting.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                Ok(())
            });
        }
    }
    command
}

// ---------------------------------------------------------------------------------------------
// Projects.

/// `examples/postgres` in a temp project, with the recording plugin beside it (`plugins/`,
/// loaded with `-p pg_record`).
fn example_project() -> Project {
    let project = Project::empty();
    let root = crate::common::repo_root();
    copy_tree(&root.join("examples/postgres"), &project.path);
    copy_tree(
        &root.join("tests/fixtures/pg_record"),
        &project.root().join("plugins"),
    );
    project
}

fn example_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(["-p", "pg_record", "-p", "no:cacheprovider", "-rA"].map(String::from));
    args
}

/// The example's tests, as serial pytest collects them.
fn example_tests(project: &Project, pg: &PgServer) -> BTreeSet<String> {
    let out = project
        .pytest(["-p", "no:cacheprovider", "--collect-only", "-q"])
        .env("DATABASE_URL", pg.url("shop"))
        .run();
    out.assert_code(0);
    let ids: BTreeSet<String> = out
        .stdout
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    assert!(
        ids.len() >= 20,
        "too few tests collected\n{}",
        out.context()
    );
    ids
}

/// Which tests use which pattern, by file.
fn uses_worker_database(nodeid: &str) -> bool {
    nodeid.starts_with("tests/test_per_worker_db.py::")
        || nodeid.starts_with("tests/test_rollback.py::")
}

/// Checks the example's records: one per test, every test on the database its pattern says.
/// Returns database -> the workers that used it, for the per-worker databases.
#[track_caller]
fn check_example_records(
    out: &Output,
    records: &[Value],
    tests: &BTreeSet<String>,
    shared_db: &str,
    distributed: bool,
) -> BTreeMap<String, BTreeSet<String>> {
    let ctx = || format!("records: {records:#?}\n{}", out.context());
    assert!(
        !records
            .iter()
            .any(|r| r.get("rendezvous_timeout").is_some()),
        "a worker waited in vain for the others to run a test\n{}",
        ctx()
    );
    let recorded: Vec<&str> = records.iter().map(|r| field(r, "nodeid")).collect();
    let recorded_set: BTreeSet<String> = recorded.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        recorded.len(),
        tests.len(),
        "one record per test\n{}",
        ctx()
    );
    assert_eq!(&recorded_set, tests, "every test recorded once\n{}", ctx());

    let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in records {
        let nodeid = field(r, "nodeid");
        let worker = match (&r["worker"], distributed) {
            (Value::String(w), true) if w.starts_with("gw") => w.clone(),
            (Value::Null, false) => "master".to_owned(),
            (other, _) => panic!(
                "{nodeid}: PYTEST_XDIST_WORKER is {other} in a {} run\n{}",
                if distributed { "distributed" } else { "-n 0" },
                ctx()
            ),
        };
        let databases: Vec<&str> = r["databases"]
            .as_array()
            .unwrap_or_else(|| panic!("no databases in {r}"))
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        let expected = if uses_worker_database(nodeid) {
            format!("test_db_{worker}")
        } else {
            shared_db.to_owned()
        };
        assert_eq!(
            databases,
            [expected.as_str()],
            "{nodeid} on {worker} used the wrong database\n{}",
            ctx()
        );
        if uses_worker_database(nodeid) {
            users.entry(expected).or_default().insert(worker);
        }
    }
    for (database, workers) in &users {
        assert_eq!(
            workers.len(),
            1,
            "{database} was used by several workers: {workers:?}\n{}",
            ctx()
        );
    }
    users
}

#[track_caller]
fn assert_no_test_databases(pg: &PgServer, prefix: &str) {
    let left: Vec<String> = pg
        .databases()
        .into_iter()
        .filter(|d| d.starts_with(prefix))
        .collect();
    assert!(
        left.is_empty(),
        "databases left behind on the server: {left:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The example: three isolation patterns.

#[test]
fn example_uses_one_database_per_worker_under_n4() {
    let pg = PgServer::start();
    pg.create_database("shop");
    let project = example_project();
    let tests = example_tests(&project, &pg);

    let out = project
        .shoal(example_args(&["-n", "4"]))
        .env("DATABASE_URL", pg.url("shop"))
        .env("PYTHONPATH", project.root().join("plugins"))
        .env("PG_RECORD_RENDEZVOUS_WORKERS", "4")
        .run();
    out.assert_code(0);
    let stats = out.stats();
    assert_eq!(
        stats,
        BTreeMap::from([("passed".to_owned(), tests.len())]),
        "every test passes\n{}",
        out.context()
    );
    let records = project.take_records();
    let users = check_example_records(&out, &records, &tests, "shop", true);
    let workers: BTreeSet<&str> = records.iter().map(|r| field(r, "worker")).collect();
    assert_eq!(
        workers.len(),
        4,
        "all four workers ran tests: {workers:?}\n{}",
        out.context()
    );
    assert!(
        users.len() >= 2,
        "several workers made a database of their own: {users:?}\n{}",
        out.context()
    );
    assert_no_test_databases(&pg, "test_db_");
    // The shared database kept what pattern (c) wrote, as it should.
    let customers = pg.query(
        "shop",
        "SELECT count(*) FROM users WHERE email LIKE 'customer-%'",
    );
    assert!(customers[0][0].as_i64().unwrap() >= 6, "{customers:?}");
}

#[test]
fn example_passes_undistributed_under_n0() {
    let pg = PgServer::start();
    pg.create_database("shop");
    let project = example_project();
    let tests = example_tests(&project, &pg);

    // This time the server comes from libpq's variables, not DATABASE_URL.
    let out = project
        .shoal(example_args(&["-n", "0"]))
        .env("DATABASE_URL", "")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg.port.to_string())
        .env("PGUSER", "postgres")
        .env("PGPASSWORD", "")
        .env("PGDATABASE", "shop")
        .env("PYTHONPATH", project.root().join("plugins"))
        .run();
    out.assert_code(0);
    assert_eq!(
        out.stats(),
        BTreeMap::from([("passed".to_owned(), tests.len())]),
        "every test passes\n{}",
        out.context()
    );
    let records = project.take_records();
    let users = check_example_records(&out, &records, &tests, "shop", false);
    assert_eq!(
        users.keys().collect::<Vec<_>>(),
        ["test_db_master"],
        "{}",
        out.context()
    );
    assert_no_test_databases(&pg, "test_db_");
}

// ---------------------------------------------------------------------------------------------
// The negative control: the same kind of tests without isolation must fail in parallel.

const COUNTING_ROWS: i64 = 5;

/// The pg_counting fixture against `pg`'s database `counting`, in `isolation` mode.
fn counting_run<'p>(
    project: &'p Project,
    pg: &PgServer,
    isolation: &str,
    run: crate::common::Run<'p>,
) -> crate::common::Run<'p> {
    let barrier = project.root().join(format!(
        "barrier-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    run.env("DATABASE_URL", pg.url("counting"))
        .env("PG_COUNTING_ISOLATION", isolation)
        .env("PG_COUNTING_BARRIER", barrier)
}

/// (nodeid, worker, database, count) of each counting record.
fn counting_records(project: &Project) -> Vec<(String, String, String, i64)> {
    project
        .take_records()
        .iter()
        .map(|r| {
            (
                field(r, "nodeid").to_owned(),
                r["worker"].as_str().unwrap_or("master").to_owned(),
                field(r, "database").to_owned(),
                r["count"].as_i64().expect("count"),
            )
        })
        .collect()
}

#[test]
fn shared_database_without_isolation_fails_under_two_workers() {
    let pg = PgServer::start();
    pg.create_database("counting");
    let project = Project::new("pg_counting");
    const TESTS: usize = 4;

    // Alone, the tests are right.
    let serial = counting_run(
        &project,
        &pg,
        "shared",
        project.pytest(["-p", "no:cacheprovider", "-p", "no:xdist", "-rA"]),
    )
    .run();
    serial.assert_code(0);
    let records = counting_records(&project);
    assert_eq!(records.len(), TESTS, "{}", serial.context());
    assert!(
        records.iter().all(|r| r.3 == COUNTING_ROWS),
        "{records:?}\n{}",
        serial.context()
    );

    // Two workers on one database: each test counts the other's rows too.
    let out = counting_run(
        &project,
        &pg,
        "shared",
        project.shoal(["-n", "2", "-p", "no:cacheprovider", "-rA"]),
    )
    .run();
    out.assert_code(1);
    assert_eq!(
        out.stats(),
        BTreeMap::from([("failed".to_owned(), TESTS)]),
        "every test fails\n{}",
        out.context()
    );
    let overlap = format!("assert {} == {COUNTING_ROWS}", 2 * COUNTING_ROWS);
    assert_eq!(
        out.stdout.matches(&overlap).count(),
        TESTS * 2, // in each failure's traceback and its short summary line
        "each test counted both workers' rows ({overlap:?})\n{}",
        out.context()
    );
    let records = counting_records(&project);
    let workers: BTreeSet<&str> = records.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        workers,
        BTreeSet::from(["gw0", "gw1"]),
        "{records:?}\n{}",
        out.context()
    );
    assert!(
        records
            .iter()
            .all(|r| r.2 == "counting" && r.3 == 2 * COUNTING_ROWS),
        "{records:?}\n{}",
        out.context()
    );

    // pytest-xdist agrees: the control detects concurrency, whoever runs the workers.
    let xdist = counting_run(
        &project,
        &pg,
        "shared",
        project.pytest(["-n", "2", "-p", "no:cacheprovider", "-rA"]),
    )
    .run();
    xdist.assert_code(1);
    assert_eq!(
        xdist.stats(),
        BTreeMap::from([("failed".to_owned(), TESTS)]),
        "{}",
        xdist.context()
    );
    let _ = project.take_records();
}

#[test]
fn database_per_worker_makes_the_same_tests_pass_under_two_workers() {
    let pg = PgServer::start();
    pg.create_database("counting");
    let project = Project::new("pg_counting");

    let out = counting_run(
        &project,
        &pg,
        "per_worker",
        project.shoal(["-n", "2", "-p", "no:cacheprovider", "-rA"]),
    )
    .run();
    out.assert_code(0);
    assert_eq!(
        out.stats(),
        BTreeMap::from([("passed".to_owned(), 4)]),
        "{}",
        out.context()
    );
    let records = counting_records(&project);
    assert_eq!(records.len(), 4, "{}", out.context());
    for (nodeid, worker, database, count) in &records {
        assert!(
            worker.starts_with("gw") && database == &format!("count_db_{worker}"),
            "{nodeid}: {worker} used {database}\n{}",
            out.context()
        );
        assert_eq!(*count, COUNTING_ROWS, "{nodeid}\n{}", out.context());
    }
    let workers: BTreeSet<&str> = records.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(workers.len(), 2, "{records:?}\n{}", out.context());
    assert_no_test_databases(&pg, "count_db_");
}

/// With as many tests as workers, pytest-xdist gives each worker one (round robin when fewer
/// than two tests per worker are pending), so two tests under `-n 2` run at the same time and
/// the control fails on the counts. shoal hands both to gw0 (it tops each worker up to two
/// tests in hand, first come first served) and leaves gw1 idle, so the tests run one after
/// the other: the barrier times out instead.
#[test]
fn two_tests_on_two_workers_run_at_the_same_time() {
    let pg = PgServer::start();
    pg.create_database("counting");
    let project = Project::new("pg_counting");
    let args = [
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        "-rA",
        "test_counting.py::test_count_what_i_inserted[a]",
        "test_counting.py::test_count_what_i_inserted[b]",
    ];

    let xdist = counting_run(&project, &pg, "shared", project.pytest(args))
        .env("PG_COUNTING_BARRIER_SECONDS", "10")
        .run();
    xdist.assert_code(1);
    xdist.assert_stdout_contains(&format!("assert {} == {COUNTING_ROWS}", 2 * COUNTING_ROWS));
    let _ = project.take_records();

    let out = counting_run(&project, &pg, "shared", project.shoal(args))
        .env("PG_COUNTING_BARRIER_SECONDS", "10")
        .run();
    out.assert_code(1);
    assert!(
        !out.stdout.contains("no test on another worker"),
        "the two tests did not run at the same time\n{}",
        out.context()
    );
    out.assert_stdout_contains(&format!("assert {} == {COUNTING_ROWS}", 2 * COUNTING_ROWS));
}

// ---------------------------------------------------------------------------------------------
// A connection made while collecting: forked workers must not share it.

#[test]
fn module_level_connection_makes_shoal_spawn_and_passes() {
    let pg = PgServer::start();
    let project = Project::new("fork_state");
    for workers in ["2", "0"] {
        let out = project
            .shoal(["-n", workers, "-v", "-p", "no:cacheprovider"])
            .env("FORK_STATE", "postgres")
            .env("DATABASE_URL", pg.url("postgres"))
            .run();
        out.assert_code(0);
        assert_eq!(
            out.stats(),
            BTreeMap::from([("passed".to_owned(), 4)]),
            "every test passes, as under pytest-xdist\n{}",
            out.context()
        );
        let created = out
            .stdout
            .lines()
            .find(|l| l.starts_with("created: "))
            .unwrap_or_default();
        assert!(
            created.contains("(spawn: test_state.CONN (a psycopg.Connection)"),
            "-v names the connection and its module: {created:?}\n{}",
            out.context()
        );
    }
}
