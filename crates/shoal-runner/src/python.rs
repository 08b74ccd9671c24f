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

/// The exit status the version check uses when Python or pytest is older than shoal supports.
pub const VERSIONS_UNSUPPORTED_EXIT: i32 = 87;

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
const BOOTSTRAP: &str = "\
import sys
try:
    import pytest
except ImportError:
    sys.exit(86)
import importlib.util
spec = importlib.util.spec_from_file_location('_shoal_plugin', sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules['_shoal_plugin'] = module
spec.loader.exec_module(module)
sys.exit(module.main(sys.argv[2:]))
";

/// No usable Python interpreter could be found.
#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error("find Python at {path}: no such file")]
    NotFound { path: PathBuf },
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
            let found = if path.components().count() == 1 {
                which(path.as_os_str())
            } else {
                Some(path.to_path_buf()).filter(|p| p.exists())
            };
            return found
                .map(|path| Self { path })
                .ok_or_else(|| PythonError::NotFound {
                    path: path.to_path_buf(),
                });
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
        let mut command = Command::new(&self.path);
        command
            .arg("-c")
            .arg(version_check() + BOOTSTRAP)
            .arg(plugin)
            .arg(socket)
            .arg(role)
            .arg(identity)
            .args(args)
            .stdin(Stdio::null())
            // A group of its own: terminal signals reach only the controller, which decides.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; it makes the child die with the controller, so a
        // killed shoal leaves no Python behind.
        unsafe {
            command.pre_exec(|| {
                #[cfg(target_os = "linux")]
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
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
        .find(|candidate| candidate.is_file())
}
