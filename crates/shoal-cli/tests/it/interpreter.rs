//! Which Python a run picks without `--python`: the active virtualenv's, else that of the
//! virtualenv shoal is installed in, else of the project root's `.venv` (those two only where
//! pytest is installed), else `python3` on `PATH`; `-v` says which and why.
//!
//! Every run here sets `PATH` to a directory of the test's own (or to none with a Python), so
//! nothing on the machine's `PATH` takes part; the helpers' runs never have `VIRTUAL_ENV`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::common::{shoal_bin, venv, Output, Project};

/// A project with one test, which passes.
fn project() -> Project {
    let project = Project::empty();
    project.write("test_one.py", "def test_one():\n    pass\n");
    project
}

/// A virtualenv with shoal installed in it, as `pip install shoal` leaves one: the shoal
/// executable linked into its `bin` (a hard link, not a symlink, which the executable's path
/// would resolve; not a copy, which another test's fork could hold open for writing while this
/// one starts it). It lies next to the built binary, on the same file system.
struct InstalledShoal {
    dir: tempfile::TempDir,
}

impl InstalledShoal {
    fn new(pytest: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("shoal-it-venv-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("create a temp dir next to the built binary");
        venv(&dir.path().join("venv"), pytest);
        fs::hard_link(shoal_bin(), dir.path().join("venv/bin/shoal"))
            .expect("link the built shoal into the venv");
        Self { dir }
    }

    fn venv(&self) -> PathBuf {
        self.dir.path().join("venv")
    }

    fn shoal(&self) -> PathBuf {
        self.venv().join("bin/shoal")
    }
}

/// `shoal -n 1 -v` (the program given) in `cwd`, with `path` as the whole of `PATH`.
fn run_v(project: &Project, shoal: &Path, cwd: &Path, path: &Path) -> Output {
    project
        .program(shoal, ["-n", "1", "-v", "-p", "no:cacheprovider"])
        .current_dir(cwd)
        .env("PATH", path)
        .run()
}

/// The `python: ...` line of `-v`, less its prefix.
#[track_caller]
fn python_line(out: &Output) -> &str {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("python: "))
        .unwrap_or_else(|| panic!("no 'python:' line with -v\n{}", out.context()))
}

/// pytest's own header names the interpreter that ran it (`platform ... -- PATH` with `-v`).
#[track_caller]
fn assert_ran_with(out: &Output, python: &Path) {
    let header = out.stdout.lines().find(|l| l.starts_with("platform "));
    let suffix = format!(" -- {}", python.display());
    assert!(
        header.is_some_and(|h| h.ends_with(&suffix)),
        "pytest did not run with {}\n{}",
        python.display(),
        out.context()
    );
}

#[test]
fn shoal_installed_in_a_virtualenv_runs_the_tests_with_its_python() {
    let project = project();
    let installed = InstalledShoal::new(true);
    let no_python = project.root().join("empty-path");
    fs::create_dir(&no_python).unwrap();
    let out = run_v(&project, &installed.shoal(), &project.path, &no_python);
    out.assert_code(0);
    let python = installed.venv().join("bin/python");
    assert_ran_with(&out, &python);
    assert_eq!(
        python_line(&out),
        format!(
            "{} (the virtualenv shoal is installed in, {})",
            python.display(),
            installed.venv().display()
        ),
        "{}",
        out.context()
    );
}

#[test]
fn a_virtualenv_of_shoal_without_pytest_gives_way_to_the_project_venv() {
    // As pipx or `uv tool` installs it: in a virtualenv of its own, without pytest.
    let project = project();
    project.write("pytest.ini", "[pytest]\n");
    let installed = InstalledShoal::new(false);
    let project_python = venv(&project.path.join(".venv"), true);
    project.write("sub/test_sub.py", "def test_sub():\n    pass\n");
    let subdir = project.path.join("sub");
    let no_python = project.root().join("empty-path");
    fs::create_dir(&no_python).unwrap();
    let out = run_v(&project, &installed.shoal(), &subdir, &no_python);
    out.assert_code(0);
    assert_ran_with(&out, &project_python);
    assert_eq!(
        python_line(&out),
        format!(
            "{} (the .venv in the project root {}; passed over {} (the virtualenv shoal is \
             installed in, {}): pytest is not installed there)",
            project_python.display(),
            project.path.display(),
            installed.venv().join("bin/python").display(),
            installed.venv().display()
        ),
        "{}",
        out.context()
    );
}

#[test]
fn the_project_venv_runs_the_tests_when_pythons_on_path_lack_pytest() {
    let project = project();
    let bare = venv(&project.root().join("bare"), false);
    let project_python = venv(&project.path.join(".venv"), true);
    let out = run_v(
        &project,
        &shoal_bin(),
        &project.path,
        bare.parent().unwrap(),
    );
    out.assert_code(0);
    assert_ran_with(&out, &project_python);
    assert_eq!(
        python_line(&out),
        format!(
            "{} (the .venv in the project root {})",
            project_python.display(),
            project.path.display()
        ),
        "{}",
        out.context()
    );
}

#[test]
fn a_project_venv_without_pytest_gives_way_to_python3_on_path() {
    let project = project();
    let on_path = venv(&project.root().join("on-path"), true);
    let project_python = venv(&project.path.join(".venv"), false);
    let path = on_path.parent().unwrap();
    let out = run_v(&project, &shoal_bin(), &project.path, path);
    out.assert_code(0);
    let python3 = path.join("python3");
    assert_ran_with(&out, &python3);
    assert_eq!(
        python_line(&out),
        format!(
            "{} (python3 on PATH; passed over {} (the .venv in the project root {}): pytest is \
             not installed there)",
            python3.display(),
            project_python.display(),
            project.path.display()
        ),
        "{}",
        out.context()
    );
}

#[test]
fn without_pytest_anywhere_the_error_says_what_was_tried() {
    let project = project();
    let installed = InstalledShoal::new(false);
    let bare = venv(&project.root().join("bare"), false);
    let project_python = venv(&project.path.join(".venv"), false);
    let out = run_v(
        &project,
        &installed.shoal(),
        &project.path,
        bare.parent().unwrap(),
    );
    out.assert_code(4);
    let expected = format!(
        "shoal: error: failed to import pytest with {python3} (python3 on PATH; passed over \
         {own} (the virtualenv shoal is installed in, {venv}): pytest is not installed there; \
         passed over {project_python} (the .venv in the project root {root}): pytest is not \
         installed there): install pytest there, or choose another interpreter with --python",
        python3 = bare.with_file_name("python3").display(),
        own = installed.venv().join("bin/python").display(),
        venv = installed.venv().display(),
        project_python = project_python.display(),
        root = project.path.display(),
    );
    assert_eq!(out.stderr.trim(), expected, "{}", out.context());
}

#[test]
fn the_active_virtualenv_comes_first() {
    let project = project();
    let installed = InstalledShoal::new(true);
    let active = venv(&project.root().join("active"), true);
    venv(&project.path.join(".venv"), true);
    let venv_dir = active.parent().unwrap().parent().unwrap();
    let out = project
        .program(
            installed.shoal(),
            ["-n", "1", "-v", "-p", "no:cacheprovider"],
        )
        .env("PATH", active.parent().unwrap())
        .env("VIRTUAL_ENV", venv_dir)
        .run();
    out.assert_code(0);
    assert_ran_with(&out, &active);
    assert_eq!(
        python_line(&out),
        format!("{} (the active virtualenv, $VIRTUAL_ENV)", active.display()),
        "{}",
        out.context()
    );
}
