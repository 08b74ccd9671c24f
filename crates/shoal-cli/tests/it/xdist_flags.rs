//! pytest-xdist's remaining flags parse as under xdist (from the command line or addopts);
//! those for remote or rsync'd workers and looponfail are refused with one line, exit 4.
//! loadscope/loadfile hand out the largest units first unless `--no-loadscope-reorder`.

use std::fs;

use crate::common::Project;

/// ran.txt as (worker, node id, testrun_uid, worker count), in the order the tests finished.
fn ran(project: &Project) -> Vec<(String, String, String, String)> {
    let text = fs::read_to_string(project.path.join("ran.txt")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut parts = l.split(' ').map(str::to_owned);
            let mut next = || parts.next().unwrap_or_default();
            (next(), next(), next(), next())
        })
        .collect()
}

#[test]
fn xdist_flags_in_addopts_parse_and_take_effect() {
    let project = Project::new("xdist_flags");
    project.write(
        "pytest.ini",
        "[pytest]\naddopts = -d --tx 1*popen --tx 2*popen --maxschedchunk 2 \
         --testrunuid abc123 --loadscope-reorder\n",
    );
    let out = project.shoal(["-q", "--dist", "loadgroup"]).run();
    out.assert_code(0);
    let ran = ran(&project);
    assert_eq!(ran.len(), 6, "{}", out.context());
    // Which workers get a test is the scheduler's race; how many there are is not.
    assert!(
        ran.iter().all(|r| r.3 == "3"),
        "--tx 1*popen --tx 2*popen: 3 workers\n{}",
        out.context()
    );
    assert!(ran.iter().all(|r| r.2 == "abc123"), "--testrunuid: {ran:?}");
    // xdist_group("beta") + xdist_group("alpha") is the group "alpha_beta".
    let worker_of = |name: &str| &ran.iter().find(|r| r.1.ends_with(name)).unwrap().0;
    assert_eq!(
        worker_of("test_two_marks"),
        worker_of("test_joined_name"),
        "{ran:?}"
    );
}

#[test]
fn remote_gateways_rsync_and_looponfail_are_refused_in_one_line() {
    let project = Project::new("xdist_flags");
    for args in [
        &["--tx", "ssh=me@host"][..],
        &["--tx", "socket=1.2.3.4:8888"],
        &["-f"],
        &["--looponfail"],
        &["--rsyncdir", "."],
    ] {
        let out = project.shoal(args).run();
        out.assert_code(4);
        let all = out.all_output();
        let errors: Vec<&str> = all.lines().filter(|l| l.starts_with("ERROR: ")).collect();
        assert_eq!(errors.len(), 1, "{args:?}\n{}", out.context());
        assert!(
            !out.all_output().contains("Traceback"),
            "{args:?}\n{}",
            out.context()
        );
    }
}

#[test]
fn loadfile_hands_out_the_largest_file_first_unless_told_not_to() {
    let project = Project::new("xdist_flags");
    for (reorder, first) in [
        (None, "test_large.py"),
        (Some("--no-loadscope-reorder"), "test_a_small.py"),
    ] {
        let _ = fs::remove_file(project.path.join("ran.txt"));
        let mut args = vec!["-n", "1", "--dist", "loadfile", "-q"];
        args.extend(reorder);
        let out = project.shoal(args.clone()).run();
        out.assert_code(0);
        let ran = ran(&project);
        assert!(ran[0].1.starts_with(first), "{reorder:?}: {ran:?}");
    }
}
