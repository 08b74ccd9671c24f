//! Finding the user's Python and starting shoal's plugin inside it.
//!
//! The plugin's source is compiled into the binary and written into the run's private
//! directory, so a user needs nothing but pytest in their environment.

use std::{
    env,
    ffi::OsString,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use shoal_protocol::{Role, WorkerIdentity};

/// The worker-side pytest plugin, carried inside the binary.
pub const PLUGIN_SOURCE: &str = include_str!("../python/shoal_plugin.py");

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

/// Loads the plugin from the file named in `argv[1]` and hands it the rest of the arguments.
///
/// The file runs as the user, so it is read only if nobody else can have written it: it must
/// be a regular file owned by this user and writable by no one else, in a directory that is
/// this user's alone (the run directory, 0700). The source is read from the descriptor that
/// was checked. Otherwise the bootstrap says why and exits with status 87.
const BOOTSTRAP: &str = "\
import os, stat, sys
def _private_source(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        return None, e.strerror
    with os.fdopen(fd, 'rb') as file:
        checks = [('its directory', os.stat(os.path.dirname(path)), 0o077), ('it', os.fstat(fd), 0o022)]
        for what, st, others in checks:
            if st.st_uid != os.geteuid():
                return None, f'{what} belongs to uid {st.st_uid}, not to uid {os.geteuid()}'
            if st.st_mode & others:
                return None, f'{what} has mode {stat.S_IMODE(st.st_mode):o}, open to other users'
        if not stat.S_ISREG(checks[1][1].st_mode):
            return None, 'it is not a regular file'
        return file.read(), None
source, problem = _private_source(sys.argv[1])
if problem:
    print(f'shoal: refusing to load the plugin {sys.argv[1]}: {problem}', file=sys.stderr)
    sys.exit(87)
try:
    import pytest
except ImportError:
    sys.exit(86)
import importlib.util
spec = importlib.util.spec_from_loader('_shoal_plugin', loader=None, origin=sys.argv[1])
module = importlib.util.module_from_spec(spec)
module.__file__ = sys.argv[1]
sys.modules['_shoal_plugin'] = module
exec(compile(source, sys.argv[1], 'exec'), module.__dict__)
sys.exit(module.main(sys.argv[2:]))
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
    #[error("find a Python interpreter: neither python3 nor python is on PATH (use --python)")]
    NotOnPath,
}

/// The interpreter the run uses.
#[derive(Debug, Clone)]
pub struct Interpreter {
    pub path: PathBuf,
}

impl Interpreter {
    /// `--python`, else the active virtualenv, else `python3` or `python` on PATH.
    pub fn discover(explicit: Option<&Path>) -> Result<Self, PythonError> {
        if let Some(path) = explicit {
            if path.components().count() == 1 {
                return which(path.as_os_str())
                    .map(|path| Self { path })
                    .ok_or_else(|| PythonError::NotFound {
                        path: path.to_path_buf(),
                    });
            }
            return Self::at(path);
        }
        if let Some(venv) = env::var_os("VIRTUAL_ENV") {
            let path = PathBuf::from(venv).join("bin").join("python");
            if path.exists() {
                return Ok(Self { path });
            }
        }
        ["python3", "python"]
            .iter()
            .find_map(|name| which(name.as_ref()))
            .map(|path| Self { path })
            .ok_or(PythonError::NotOnPath)
    }

    /// The interpreter at `path`, checked the way exec(2) would, so that the error says why
    /// it cannot run rather than what starting it reports (`ENOENT` for a file that exists).
    fn at(path: &Path) -> Result<Self, PythonError> {
        let path = path.to_path_buf();
        match std::fs::metadata(&path) {
            Ok(meta) if !meta.is_file() => Err(PythonError::NotAFile { path }),
            Ok(meta) if !executable(&meta) => Err(PythonError::NotExecutable { path }),
            Ok(_) => Ok(Self { path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(PythonError::NotFound { path })
            }
            Err(source) => Err(PythonError::Inaccessible { path, source }),
        }
    }

    /// A command that runs the plugin in `role`, connected to `socket`, with pytest's `args`.
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

fn which(name: &std::ffi::OsStr) -> Option<PathBuf> {
    let path: OsString = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| std::fs::metadata(candidate).is_ok_and(|m| executable(&m)))
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

    /// Runs the bootstrap on a plugin whose `main` returns 42, written with `file_mode` into a
    /// directory with `dir_mode` (after `prepare` had its say): its exit code and stderr.
    fn bootstrap(dir_mode: u32, file_mode: u32, prepare: impl FnOnce(&Path)) -> (i32, String) {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("shoal_plugin.py");
        fs::write(&plugin, "def main(argv):\n    return 42\n").unwrap();
        fs::set_permissions(&plugin, fs::Permissions::from_mode(file_mode)).unwrap();
        prepare(&plugin);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(dir_mode)).unwrap();
        let out = interpreter()
            .plugin_command(&plugin, &dir.path().join("s"), Role::Collector, None, &[])
            .output()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code().expect("the bootstrap exited"), stderr)
    }

    #[track_caller]
    fn assert_refused((code, stderr): (i32, String), why: &str) {
        assert_eq!(code, PLUGIN_UNTRUSTED_EXIT, "{stderr}");
        assert!(
            stderr.contains("shoal: refusing to load the plugin") && stderr.contains(why),
            "{stderr}"
        );
    }

    #[test]
    fn the_bootstrap_loads_a_private_plugin() {
        let (code, stderr) = bootstrap(0o700, 0o600, |_| {});
        assert!(!stderr.contains("refusing"), "{stderr}");
        assert!(matches!(code, 42 | PYTEST_MISSING_EXIT), "{code}: {stderr}");
    }

    #[test]
    fn the_bootstrap_refuses_a_plugin_others_may_write() {
        assert_refused(bootstrap(0o700, 0o620, |_| {}), "it has mode 620");
        assert_refused(bootstrap(0o700, 0o602, |_| {}), "it has mode 602");
    }

    #[test]
    fn the_bootstrap_refuses_a_directory_open_to_others() {
        assert_refused(
            bootstrap(0o755, 0o600, |_| {}),
            "its directory has mode 755",
        );
        assert_refused(
            bootstrap(0o1777, 0o600, |_| {}),
            "its directory has mode 1777",
        );
    }

    #[test]
    fn the_bootstrap_refuses_a_symlink() {
        assert_refused(
            bootstrap(0o700, 0o600, |plugin| {
                let real = plugin.with_extension("real");
                fs::rename(plugin, &real).unwrap();
                std::os::unix::fs::symlink(&real, plugin).unwrap();
            }),
            "Too many levels of symbolic links",
        );
    }

    #[test]
    fn the_bootstrap_refuses_a_plugin_of_another_user() {
        if !rustix::process::geteuid().is_root() {
            println!("skipped: only root can give a file to another user");
            return;
        }
        let give_away =
            |plugin: &Path| std::os::unix::fs::chown(plugin, Some(65534), None).unwrap();
        assert_refused(
            bootstrap(0o700, 0o600, give_away),
            "it belongs to uid 65534, not to uid 0",
        );
    }
}
