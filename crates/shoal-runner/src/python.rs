//! Finding the user's Python and starting shoal's plugin inside it.
//!
//! The plugin's sources (the `_shoal` package in `python/`) are compiled into the binary and
//! written into the run's private directory, so a user needs nothing but pytest in their
//! environment.

use std::{
    env,
    ffi::{OsStr, OsString},
    fmt,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use shoal_protocol::{Role, WorkerIdentity};

/// The name of the plugin's package (`python/_shoal`), and of the directory the run writes it
/// to: one no suite's own module is likely to have.
pub const PLUGIN_PACKAGE: &str = "_shoal";

macro_rules! plugin_file {
    ($path:literal) => {
        ($path, include_str!(concat!("../python/", $path)))
    };
}

/// The plugin package's files, carried inside the binary: each one's path below the run
/// directory and its source.
pub const PLUGIN_FILES: &[(&str, &str)] = &[
    plugin_file!("_shoal/__init__.py"),
    plugin_file!("_shoal/channel.py"),
    plugin_file!("_shoal/collector.py"),
    plugin_file!("_shoal/compat/__init__.py"),
    plugin_file!("_shoal/compat/benchmark.py"),
    plugin_file!("_shoal/compat/cov.py"),
    plugin_file!("_shoal/compat/hypothesis.py"),
    plugin_file!("_shoal/compat/junitxml.py"),
    plugin_file!("_shoal/compat/randomly.py"),
    plugin_file!("_shoal/compat/rerunfailures.py"),
    plugin_file!("_shoal/compat/sugar.py"),
    plugin_file!("_shoal/compat/syrupy.py"),
    plugin_file!("_shoal/debug.py"),
    plugin_file!("_shoal/forking.py"),
    plugin_file!("_shoal/keeper.py"),
    plugin_file!("_shoal/leaks.py"),
    plugin_file!("_shoal/main.py"),
    plugin_file!("_shoal/options.py"),
    plugin_file!("_shoal/plugins.py"),
    plugin_file!("_shoal/report.py"),
    plugin_file!("_shoal/run_once.py"),
    plugin_file!("_shoal/terminal.py"),
    plugin_file!("_shoal/wire.py"),
    plugin_file!("_shoal/worker.py"),
    plugin_file!("_shoal/xdist_compat.py"),
];

/// The exit status the bootstrap uses when `import pytest` fails.
pub const PYTEST_MISSING_EXIT: i32 = 86;

/// The exit status the bootstrap uses when it refuses the plugin file (see [`BOOTSTRAP`]).
pub const PLUGIN_UNTRUSTED_EXIT: i32 = 87;

/// The exit status the version check uses when Python or pytest is older than shoal supports.
pub const VERSIONS_UNSUPPORTED_EXIT: i32 = 88;

/// The oldest Python and pytest the plugin works with (stated in the README;
/// `requirements-oldest.txt` pins that pytest for the tests).
pub const MIN_PYTHON: (u32, u32) = (3, 9);
pub const MIN_PYTEST: (u32, u32) = (8, 0);

/// Runs before the bootstrap: below [`MIN_PYTHON`] or [`MIN_PYTEST`] it says which versions it
/// found and exits with [`VERSIONS_UNSUPPORTED_EXIT`]. Kept to syntax any Python 3 reads; with
/// no pytest at all it leaves the bootstrap to say so.
fn version_check() -> String {
    let ((py_major, py_minor), (pt_major, pt_minor)) = (MIN_PYTHON, MIN_PYTEST);
    format!(
        "\
import re, sys
try:
    import pytest
except ImportError:
    pytest = None
found = getattr(pytest, '__version__', '0')
if sys.version_info[:2] < ({py_major}, {py_minor}) or pytest is not None and \\
        tuple(int(n) for n in re.findall(r'\\d+', found)[:2]) < ({pt_major}, {pt_minor}):
    sys.stderr.write('shoal: %s has Python %s and pytest %s\\n'
                     % (sys.executable, sys.version.split()[0], found if pytest else 'none'))
    sys.exit({VERSIONS_UNSUPPORTED_EXIT})
"
    )
}

/// Loads the plugin package from the directory named in `argv[1]` and hands its `main` the
/// rest of the arguments.
///
/// The files run as the user, so they are read only if nobody else can have written them: the
/// package directory's parent (the run directory) and every directory in the package must be
/// this user's alone (0700), and every file in it a regular file owned by this user and
/// writable by no one else, opened without following a symlink. Every file is checked, and
/// read from the descriptor that was checked, before anything is imported; otherwise the
/// bootstrap says which file and why, and exits with status 87. The package is then imported
/// from those sources (a finder on `sys.meta_path` that knows only its modules), not from
/// `sys.path`, so nothing is read twice and no bytecode is written; tracebacks name the
/// files where they were written.
const BOOTSTRAP: &str = "\
import os, stat, sys
def _refuse(path, problem):
    print(f'shoal: refusing to load the plugin {path}: {problem}', file=sys.stderr)
    sys.exit(87)
def _check(path, checks):
    for what, st, others in checks:
        if st.st_uid != os.geteuid():
            _refuse(path, f'{what} belongs to uid {st.st_uid}, not to uid {os.geteuid()}')
        if st.st_mode & others:
            _refuse(path, f'{what} has mode {stat.S_IMODE(st.st_mode):o}, open to other users')
def _private_source(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        _refuse(path, e.strerror)
    with os.fdopen(fd, 'rb') as file:
        st = os.fstat(fd)
        _check(path, [('its directory', os.stat(os.path.dirname(path)), 0o077), ('it', st, 0o022)])
        if not stat.S_ISREG(st.st_mode):
            _refuse(path, 'it is not a regular file')
        return file.read()
def _private_package(root):
    modules = {}
    try:
        st = os.lstat(root)
    except OSError as e:
        _refuse(root, e.strerror)
    if not stat.S_ISDIR(st.st_mode):
        _refuse(root, 'it is not a directory')
    _check(root, [('its directory', os.stat(os.path.dirname(root)), 0o077), ('it', st, 0o077)])
    def walk(directory, package):
        for entry in sorted(os.scandir(directory), key=lambda entry: entry.name):
            if entry.is_dir(follow_symlinks=False):
                walk(entry.path, f'{package}.{entry.name}')
                continue
            source = _private_source(entry.path)
            if entry.name.endswith('.py'):
                init = entry.name == '__init__.py'
                name = package if init else f'{package}.{entry.name[:-3]}'
                modules[name] = (entry.path, source, init)
    walk(root, os.path.basename(root))
    return modules
_root = os.path.abspath(sys.argv[1])
_modules = _private_package(_root)
try:
    import pytest
except ImportError:
    sys.exit(86)
import importlib, importlib.abc, importlib.machinery, importlib.util
class _CheckedSources(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    def find_spec(self, name, path=None, target=None):
        if name not in _modules:
            return None
        filename, _, package = _modules[name]
        spec = importlib.machinery.ModuleSpec(name, self, origin=filename, is_package=package)
        spec.has_location = True
        if package:
            spec.submodule_search_locations = [os.path.dirname(filename)]
        return spec
    def get_source(self, name):
        return importlib.util.decode_source(_modules[name][1])
    def get_code(self, name):
        filename, source, _ = _modules[name]
        return compile(source, filename, 'exec', dont_inherit=True)
    def is_package(self, name):
        return _modules[name][2]
sys.meta_path.insert(0, _CheckedSources())
_main = importlib.import_module(os.path.basename(_root) + '.main')
sys.exit(_main.main(sys.argv[2:]))
";

/// No usable Python interpreter could be found.
#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error("find Python at {path}: no such file")]
    NotFound { path: PathBuf },
    /// The path exists but cannot be looked at (a directory on the way denies access).
    #[error("find Python at {path}")]
    Inaccessible {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("use {path} as Python: it is not a file")]
    NotAFile { path: PathBuf },
    #[error("use {path} as Python: it is not executable (no execute permission)")]
    NotExecutable { path: PathBuf },
    #[error("find a Python interpreter: neither python3 nor python is on PATH{passed_over} (use --python)")]
    NotOnPath { passed_over: PassedOver },
}

/// Why the run uses the interpreter it uses, in the order [`Interpreter::discover`] looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--python`, or `python` in `[tool.shoal]`: the user's word, taken as it is.
    Chosen,
    /// `$VIRTUAL_ENV`: the virtualenv activated in the shell.
    ActiveVenv,
    /// The virtualenv the shoal executable is installed in, which `venv/bin/shoal` means as
    /// `venv/bin/pytest` means its own, activated or not.
    OwnVenv { venv: PathBuf },
    /// `.venv` in the project root, where uv, Poetry and PDM put a project's environment.
    ProjectVenv { root: PathBuf },
    /// `python3` or `python`, the first found on `PATH`.
    OnPath { name: &'static str },
}

impl Source {
    /// Where the interpreter was found, to print after its path (`-v`, errors).
    pub fn describe(&self) -> String {
        match self {
            Self::Chosen => "given by --python or [tool.shoal] python".to_owned(),
            Self::ActiveVenv => "the active virtualenv, $VIRTUAL_ENV".to_owned(),
            Self::OwnVenv { venv } => {
                format!("the virtualenv shoal is installed in, {}", venv.display())
            }
            Self::ProjectVenv { root } => {
                format!("the .venv in the project root {}", root.display())
            }
            Self::OnPath { name } => format!("{name} on PATH"),
        }
    }
}

/// The interpreters discovery looked at and did not take, each with where it was found and
/// why not; shown as `; passed over PATH (WHERE): WHY` for each.
#[derive(Debug, Clone, Default)]
pub struct PassedOver(Vec<(PathBuf, Source, &'static str)>);

impl fmt::Display for PassedOver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (path, source, why) in &self.0 {
            write!(
                f,
                "; passed over {} ({}): {why}",
                path.display(),
                source.describe()
            )?;
        }
        Ok(())
    }
}

/// What discovery looks at besides `--python`, gathered from the process
/// ([`Surroundings::of_this_process`]) so that tests can lay out their own.
#[derive(Debug, Default)]
struct Surroundings {
    virtual_env: Option<PathBuf>,
    /// The shoal executable, its symlinks resolved (a pipx shim leads to pipx's venv).
    exe: Option<PathBuf>,
    cwd: Option<PathBuf>,
    path: Option<OsString>,
}

impl Surroundings {
    fn of_this_process() -> Self {
        Self {
            virtual_env: env::var_os("VIRTUAL_ENV").map(PathBuf::from),
            exe: env::current_exe().ok(),
            cwd: env::current_dir().ok(),
            path: env::var_os("PATH"),
        }
    }

    /// `name` in the first directory on `PATH` where it is executable; like a shell's PATH
    /// search, a file nobody may execute is passed over.
    fn which(&self, name: impl AsRef<OsStr>) -> Option<PathBuf> {
        env::split_paths(self.path.as_ref()?)
            .map(|dir| dir.join(name.as_ref()))
            .find(|candidate| std::fs::metadata(candidate).is_ok_and(|m| executable(&m)))
    }

    /// The interpreter to use where the user named none: the active virtualenv's; else the
    /// virtualenv shoal is installed in, then the project root's `.venv`, where pytest is
    /// installed; else `python3` or `python` on `PATH`. What it looked at and did not take
    /// goes into `passed_over`.
    fn unchosen(&self, passed_over: &mut PassedOver) -> Option<(PathBuf, Source)> {
        if let Some(venv) = &self.virtual_env {
            let path = venv.join("bin/python");
            if path.exists() {
                return Some((path, Source::ActiveVenv));
            }
            passed_over
                .0
                .push((path, Source::ActiveVenv, "no such file"));
        }
        let unactivated = [
            self.own_venv()
                .map(|(venv, python)| (python, Source::OwnVenv { venv })),
            self.cwd.as_deref().map(|cwd| {
                let root = crate::options::project_root(cwd).to_path_buf();
                (root.join(".venv/bin/python"), Source::ProjectVenv { root })
            }),
        ];
        for (path, source) in unactivated.into_iter().flatten() {
            // shoal installed in the project's .venv is looked at once.
            if !path.is_file() || passed_over.0.iter().any(|(seen, ..)| *seen == path) {
                continue;
            }
            if has_pytest(&path) {
                return Some((path, source));
            }
            passed_over
                .0
                .push((path, source, "pytest is not installed there"));
        }
        ["python3", "python"]
            .into_iter()
            .find_map(|name| Some((self.which(name)?, Source::OnPath { name })))
    }

    /// The virtualenv the shoal executable lies in (`VENV/bin/shoal` with `VENV/pyvenv.cfg`)
    /// and its Python.
    fn own_venv(&self) -> Option<(PathBuf, PathBuf)> {
        let bin = self.exe.as_deref()?.parent()?;
        let venv = bin.parent()?;
        if !venv.join("pyvenv.cfg").is_file() {
            return None;
        }
        let python = ["python", "python3"]
            .iter()
            .map(|name| bin.join(name))
            .find(|p| p.is_file())?;
        Some((venv.to_path_buf(), python))
    }
}

/// The interpreter a run with `options` would use and why, or why none would do, for
/// `--show-config`.
pub fn describe_choice(options: &crate::RunOptions) -> String {
    match Interpreter::discover(options.python.as_deref()) {
        Ok(interpreter) => format!(
            "{} ({})",
            interpreter.path.display(),
            interpreter.describe()
        ),
        Err(err) => format!("none: {}", crate::error_chain(&err)),
    }
}

/// The interpreter the run uses.
#[derive(Debug, Clone)]
pub struct Interpreter {
    pub path: PathBuf,
    pub source: Source,
    /// What discovery looked at before, and why it did not take it.
    pub passed_over: PassedOver,
}

impl Interpreter {
    /// The first of: `explicit` (`--python`); the active virtualenv; the virtualenv shoal is
    /// installed in; the project root's `.venv`; `python3` or `python` on `PATH`. The two
    /// virtualenvs nobody activated count only where pytest is installed: shoal installed
    /// with pipx or `uv tool` lives in a virtualenv of its own, without the project's pytest.
    pub fn discover(explicit: Option<&Path>) -> Result<Self, PythonError> {
        Self::discover_in(explicit, &Surroundings::of_this_process())
    }

    fn discover_in(explicit: Option<&Path>, around: &Surroundings) -> Result<Self, PythonError> {
        let mut passed_over = PassedOver::default();
        let (path, source) = match explicit {
            Some(path) if path.components().count() == 1 => {
                let found = around.which(path).ok_or_else(|| PythonError::NotFound {
                    path: path.to_path_buf(),
                })?;
                (found, Source::Chosen)
            }
            Some(path) => (runnable(path)?, Source::Chosen),
            None => match around.unchosen(&mut passed_over) {
                Some(found) => found,
                None => return Err(PythonError::NotOnPath { passed_over }),
            },
        };
        Ok(Self {
            path,
            source,
            passed_over,
        })
    }

    /// Where the interpreter was found, and what was passed over before it.
    pub fn describe(&self) -> String {
        format!("{}{}", self.source.describe(), self.passed_over)
    }

    /// A command that runs the plugin (the package directory `plugin`, see [`BOOTSTRAP`]) in
    /// `role`, connected to `socket`, with pytest's `args`.
    pub fn plugin_command(
        &self,
        plugin: &Path,
        socket: &Path,
        role: Role,
        identity: Option<&WorkerIdentity>,
        args: &[String],
    ) -> Command {
        let role = match role {
            Role::Collector => "collector",
            Role::Worker | Role::Output => "worker",
        };
        let identity = serde_json::to_string(&identity).expect("identity serializes");
        let mut command = self.bootstrap(plugin, socket, role, &identity, args);
        command
            .stdin(Stdio::null())
            // A group of its own: terminal signals reach only the controller, which decides.
            // (A spawned worker's keeper hands the group to the worker and leaves it.)
            .process_group(0);
        command
    }

    /// A command that runs pytest with `args` on the controller's terminal (the plugin's
    /// `debug` role), limited to `nodeids` unless `None`: for `--pdb` and `--trace`, whose pdb
    /// reads commands from the terminal. It keeps the controller's stdin, stdout, stderr and
    /// process group, so it can read the terminal and Ctrl-C reaches pdb.
    pub fn foreground_command(
        &self,
        plugin: &Path,
        socket: &Path,
        nodeids: Option<&[String]>,
        args: &[String],
    ) -> Command {
        let nodeids = serde_json::to_string(&nodeids).expect("node ids serialize");
        self.bootstrap(plugin, socket, "debug", &nodeids, args)
    }

    fn bootstrap(
        &self,
        plugin: &Path,
        socket: &Path,
        role: &str,
        identity: &str,
        args: &[String],
    ) -> Command {
        let mut command = Command::new(&self.path);
        command
            .arg("-c")
            .arg(version_check() + BOOTSTRAP)
            .arg(plugin)
            .arg(socket)
            .arg(role)
            .arg(identity)
            .args(args);
        // SAFETY: between fork and exec only async-signal-safe calls: prctl and getppid, raw
        // system calls, and an error that allocates nothing. They make the child die with the
        // controller, so a killed shoal leaves no Python behind, also when it ends between the
        // fork and the prctl (the kernel would then never send the signal).
        let controller = rustix::process::getpid();
        unsafe {
            command.pre_exec(move || {
                #[cfg(target_os = "linux")]
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                if rustix::process::getppid() != Some(controller) {
                    return Err(rustix::io::Errno::SRCH.into()); // no allocation here
                }
                Ok(())
            });
        }
        command
    }
}

/// `path`, checked the way exec(2) would, so that the error says why it cannot run rather
/// than what starting it reports (`ENOENT` for a file that exists).
fn runnable(path: &Path) -> Result<PathBuf, PythonError> {
    let path = path.to_path_buf();
    match std::fs::metadata(&path) {
        Ok(meta) if !meta.is_file() => Err(PythonError::NotAFile { path }),
        Ok(meta) if !executable(&meta) => Err(PythonError::NotExecutable { path }),
        Ok(_) => Ok(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(PythonError::NotFound { path }),
        Err(source) => Err(PythonError::Inaccessible { path, source }),
    }
}

/// Whether `python` finds pytest on its `sys.path`, as the bootstrap's `import pytest` would
/// (the same `-c`, so the same working directory first): looked up, not imported, which would
/// take a tenth of a second of every run. A Python that cannot tell has none.
fn has_pytest(python: &Path) -> bool {
    Command::new(python)
        .args([
            "-c",
            "import importlib.util, sys; sys.exit(importlib.util.find_spec('pytest') is None)",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A file someone may execute; like a shell's PATH search, others are passed over.
fn executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt};

    use super::*;

    /// The integration tests' Python, else `python3` on PATH.
    fn interpreter() -> Interpreter {
        let python = env::var_os("SHOAL_TEST_PYTHON").map(PathBuf::from);
        Interpreter::discover(Some(python.as_deref().unwrap_or(Path::new("python3"))))
            .expect("a Python to run the bootstrap with")
    }

    /// Runs the bootstrap on a private plugin package laid out as shoal's (`_shoal/main.py`,
    /// whose `main` returns 42, and a `compat` subpackage) after `prepare` had its say with
    /// the package directory: its exit code and stderr.
    fn bootstrap(prepare: impl FnOnce(&Path)) -> (i32, String) {
        let run_dir = tempfile::tempdir().unwrap();
        let package = run_dir.path().join(PLUGIN_PACKAGE);
        let files = [
            ("__init__.py", ""),
            (
                "main.py",
                "from .compat import shim\ndef main(argv):\n    return shim.ANSWER\n",
            ),
            ("compat/__init__.py", ""),
            ("compat/shim.py", "ANSWER = 42\n"),
        ];
        for (path, source) in files {
            let path = package.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, source).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        for dir in [run_dir.path(), &package, &package.join("compat")] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
        }
        prepare(&package);
        let out = interpreter()
            .plugin_command(
                &package,
                &run_dir.path().join("s"),
                Role::Collector,
                None,
                &[],
            )
            .output()
            .unwrap();
        fs::set_permissions(run_dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code().expect("the bootstrap exited"), stderr)
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[track_caller]
    fn assert_refused((code, stderr): (i32, String), file: &str, why: &str) {
        assert_eq!(code, PLUGIN_UNTRUSTED_EXIT, "{stderr}");
        let refusal = "shoal: refusing to load the plugin ";
        let line = stderr.lines().find(|line| line.starts_with(refusal));
        let line = line.unwrap_or_else(|| panic!("no refusal in {stderr}"));
        assert!(line.contains(file) && line.ends_with(why), "{stderr}");
    }

    /// A directory tree for discovery to look at, with fake interpreters: links to `true`
    /// (pytest is installed: the probe succeeds) or to `false` (it is not). Links, not
    /// scripts, because a script just written can fail to start (`ETXTBSY`) while another
    /// test forks.
    struct Layout {
        dir: tempfile::TempDir,
    }

    impl Layout {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn path(&self, relative: &str) -> PathBuf {
            self.dir.path().join(relative)
        }

        /// A Python at `relative` that has pytest or not.
        fn python(&self, relative: &str, pytest: bool) -> PathBuf {
            let path = self.path(relative);
            let program = if pytest { "true" } else { "false" };
            let program = Surroundings::of_this_process()
                .which(program)
                .expect("true and false on PATH");
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(program, &path).unwrap();
            path
        }

        /// A virtualenv at `relative` with shoal installed in it: the executable's path.
        fn venv_with_shoal(&self, relative: &str, pytest: bool) -> PathBuf {
            self.python(&format!("{relative}/bin/python"), pytest);
            fs::write(self.path(&format!("{relative}/pyvenv.cfg")), "").unwrap();
            self.path(&format!("{relative}/bin/shoal"))
        }

        /// Surroundings with only `python3` in a directory of `PATH`, and `cwd`.
        fn surroundings(&self, cwd: &str) -> Surroundings {
            self.python("path/python3", true);
            fs::create_dir_all(self.path(cwd)).unwrap();
            Surroundings {
                cwd: Some(self.path(cwd)),
                path: Some(self.path("path").into()),
                ..Surroundings::default()
            }
        }
    }

    fn discover(around: &Surroundings) -> Interpreter {
        Interpreter::discover_in(None, around).unwrap()
    }

    #[test]
    fn python_named_by_the_user_wins() {
        let layout = Layout::new();
        let around = Surroundings {
            virtual_env: Some(layout.path("active")),
            ..layout.surroundings("project")
        };
        layout.python("active/bin/python", true);
        let chosen = layout.python("mine/python", false);
        let found = Interpreter::discover_in(Some(&chosen), &around).unwrap();
        assert_eq!((found.path, found.source), (chosen, Source::Chosen));
        let found = Interpreter::discover_in(Some(Path::new("python3")), &around).unwrap();
        assert_eq!(
            found.path,
            layout.path("path/python3"),
            "a bare name is on PATH"
        );
    }

    #[test]
    fn the_active_virtualenv_comes_before_the_others_with_or_without_pytest() {
        let layout = Layout::new();
        let around = Surroundings {
            virtual_env: Some(layout.path("active")),
            exe: Some(layout.venv_with_shoal("own", true)),
            ..layout.surroundings("project")
        };
        let active = layout.python("active/bin/python", false);
        let found = discover(&around);
        assert_eq!((found.path, found.source), (active, Source::ActiveVenv));
    }

    #[test]
    fn an_active_virtualenv_without_python_is_passed_over() {
        let layout = Layout::new();
        let around = Surroundings {
            virtual_env: Some(layout.path("gone")),
            ..layout.surroundings("project")
        };
        let found = discover(&around);
        assert_eq!(found.source, Source::OnPath { name: "python3" });
        let gone = layout.path("gone/bin/python");
        assert_eq!(
            found.describe(),
            format!(
                "python3 on PATH; passed over {} (the active virtualenv, $VIRTUAL_ENV): no such file",
                gone.display()
            )
        );
    }

    #[test]
    fn the_virtualenv_shoal_is_installed_in_counts_where_pytest_is() {
        let layout = Layout::new();
        let around = Surroundings {
            exe: Some(layout.venv_with_shoal("own", true)),
            ..layout.surroundings("project")
        };
        layout.python("project/.venv/bin/python", true);
        let found = discover(&around);
        assert_eq!(found.path, layout.path("own/bin/python"));
        assert_eq!(
            found.source,
            Source::OwnVenv {
                venv: layout.path("own")
            }
        );
    }

    #[test]
    fn a_bin_directory_outside_a_virtualenv_is_no_virtualenv() {
        let layout = Layout::new();
        layout.python("local/bin/python", true);
        let around = Surroundings {
            exe: Some(layout.path("local/bin/shoal")),
            ..layout.surroundings("project")
        };
        assert_eq!(discover(&around).source, Source::OnPath { name: "python3" });
    }

    #[test]
    fn a_virtualenv_of_shoal_alone_is_passed_over_for_the_projects() {
        // pipx and `uv tool` install shoal in a virtualenv of its own, without pytest.
        let layout = Layout::new();
        let around = Surroundings {
            exe: Some(layout.venv_with_shoal("pipx/venvs/shoal", false)),
            ..layout.surroundings("project/tests")
        };
        fs::write(layout.path("project/pyproject.toml"), "").unwrap();
        let project_venv = layout.python("project/.venv/bin/python", true);
        let found = discover(&around);
        assert_eq!(found.path, project_venv);
        assert_eq!(
            found.describe(),
            format!(
                "the .venv in the project root {}; passed over {} (the virtualenv shoal is \
                 installed in, {}): pytest is not installed there",
                layout.path("project").display(),
                layout.path("pipx/venvs/shoal/bin/python").display(),
                layout.path("pipx/venvs/shoal").display(),
            )
        );
    }

    #[test]
    fn a_project_venv_without_pytest_is_passed_over_for_path() {
        let layout = Layout::new();
        let around = layout.surroundings("project");
        let project_venv = layout.python("project/.venv/bin/python", false);
        let found = discover(&around);
        assert_eq!(found.path, layout.path("path/python3"));
        assert!(
            found.describe().contains(&format!(
                "passed over {} (the .venv in the project root",
                project_venv.display()
            )),
            "{}",
            found.describe()
        );
    }

    #[test]
    fn shoal_installed_in_the_project_venv_is_looked_at_once() {
        let layout = Layout::new();
        let around = Surroundings {
            exe: Some(layout.venv_with_shoal("project/.venv", false)),
            ..layout.surroundings("project")
        };
        assert_eq!(discover(&around).passed_over.0.len(), 1);
    }

    #[test]
    fn without_python_on_path_the_error_says_what_was_passed_over() {
        let layout = Layout::new();
        layout.python("project/.venv/bin/python", false);
        let around = Surroundings {
            cwd: Some(layout.path("project")),
            path: Some(layout.path("empty").into()),
            ..Surroundings::default()
        };
        let err = Interpreter::discover_in(None, &around).unwrap_err();
        assert!(matches!(err, PythonError::NotOnPath { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with(
                "find a Python interpreter: neither python3 nor python is on PATH; passed over "
            ) && message.ends_with("pytest is not installed there (use --python)"),
            "{message}"
        );
    }

    #[test]
    fn the_bootstrap_loads_a_private_plugin() {
        let (code, stderr) = bootstrap(|_| {});
        assert!(!stderr.contains("refusing"), "{stderr}");
        assert!(matches!(code, 42 | PYTEST_MISSING_EXIT), "{code}: {stderr}");
    }

    #[test]
    fn the_bootstrap_refuses_a_plugin_file_others_may_write() {
        let shim = "_shoal/compat/shim.py";
        assert_refused(
            bootstrap(|package| chmod(&package.join("compat/shim.py"), 0o620)),
            shim,
            "it has mode 620, open to other users",
        );
        assert_refused(
            bootstrap(|package| chmod(&package.join("main.py"), 0o602)),
            "_shoal/main.py",
            "it has mode 602, open to other users",
        );
        // Not only the modules it imports: every file in the package.
        assert_refused(
            bootstrap(|package| {
                let stray = package.join("compat/notes.txt");
                fs::write(&stray, "").unwrap();
                chmod(&stray, 0o666);
            }),
            "_shoal/compat/notes.txt",
            "it has mode 666, open to other users",
        );
    }

    #[test]
    fn the_bootstrap_refuses_a_directory_open_to_others() {
        assert_refused(
            bootstrap(|package| chmod(&package.join("compat"), 0o755)),
            "_shoal/compat/__init__.py",
            "its directory has mode 755, open to other users",
        );
        assert_refused(
            bootstrap(|package| chmod(package, 0o1777)),
            "_shoal",
            "it has mode 1777, open to other users",
        );
        assert_refused(
            bootstrap(|package| chmod(package.parent().unwrap(), 0o755)),
            "_shoal",
            "its directory has mode 755, open to other users",
        );
    }

    #[test]
    fn the_bootstrap_refuses_a_symlink() {
        assert_refused(
            bootstrap(|package| {
                let shim = package.join("compat/shim.py");
                let real = package.parent().unwrap().join("shim.py");
                fs::rename(&shim, &real).unwrap();
                std::os::unix::fs::symlink(&real, &shim).unwrap();
            }),
            "_shoal/compat/shim.py",
            "Too many levels of symbolic links",
        );
        assert_refused(
            bootstrap(|package| {
                let compat = package.join("compat");
                let real = package.parent().unwrap().join("compat");
                fs::rename(&compat, &real).unwrap();
                std::os::unix::fs::symlink(&real, &compat).unwrap();
            }),
            "_shoal/compat",
            "Too many levels of symbolic links",
        );
    }

    #[test]
    fn every_file_of_the_plugin_package_is_carried() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
        let mut on_disk = Vec::new();
        let mut pending = vec![dir.join(PLUGIN_PACKAGE)];
        while let Some(next) = pending.pop() {
            for entry in fs::read_dir(next).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|e| e == "py") {
                    let relative = path.strip_prefix(&dir).unwrap();
                    on_disk.push(relative.to_str().unwrap().to_owned());
                }
            }
        }
        on_disk.sort();
        let carried: Vec<&str> = PLUGIN_FILES.iter().map(|(path, _)| *path).collect();
        assert_eq!(
            carried, on_disk,
            "PLUGIN_FILES must list every module of the package"
        );
    }

    #[test]
    fn the_bootstrap_refuses_a_plugin_of_another_user() {
        if !rustix::process::geteuid().is_root() {
            println!("skipped: only root can give a file to another user");
            return;
        }
        let give_away = |package: &Path| {
            std::os::unix::fs::chown(package.join("compat/shim.py"), Some(65534), None).unwrap()
        };
        assert_refused(
            bootstrap(give_away),
            "_shoal/compat/shim.py",
            "it belongs to uid 65534, not to uid 0",
        );
    }
}
