//! Copy-on-write work directories (`workdir`, `commit`): the changes a dry run lists are the ones
//! a commit then makes, a failed command's changes are discarded, a commit that fails midway
//! loses nothing, and a race that defeats the view cannot write the work directory.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sandlock_core::{ChangeKind, CommitMode, Outcome, Policy, Sandbox};

use super::support::*;

/// Every entry beneath `root`: its relative path, and its content (files), target (symlinks),
/// or `None` (directories), with the mode.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Option<Vec<u8>>, u32)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (Option<Vec<u8>>, u32)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let mode = m.permissions().mode() & 0o7777;
            if m.is_dir() {
                out.insert(rel, (None, mode));
                walk(root, &p, out);
            } else if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes();
                out.insert(rel, (Some(t), 0));
            } else {
                out.insert(rel, (Some(std::fs::read(&p).unwrap()), mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The changes between two snapshots, as `A`/`M`/`D` lines (a directory with a trailing `/`),
/// with the same rules as the dry run: a type change is a deletion then an addition, and the
/// contents of a deleted directory are not listed one by one.
fn diff(
    before: &BTreeMap<PathBuf, (Option<Vec<u8>>, u32)>,
    after: &BTreeMap<PathBuf, (Option<Vec<u8>>, u32)>,
) -> Vec<String> {
    let line =
        |k: &str, p: &Path, dir: bool| format!("{k} {}{}", p.display(), if dir { "/" } else { "" });
    let mut out = Vec::new();
    for (p, (c, _)) in before {
        let gone_parent = p.ancestors().skip(1).any(|a| {
            before.get(a).is_some_and(|(c, _)| c.is_none())
                && !after.get(a).is_some_and(|(c, _)| c.is_none())
        });
        match after.get(p) {
            None if !gone_parent => out.push(line("D", p, c.is_none())),
            Some((c2, _)) if c.is_none() != c2.is_none() => out.push(line("D", p, c.is_none())),
            _ => {}
        }
    }
    for (p, (c, mode)) in after {
        match before.get(p) {
            None => out.push(line("A", p, c.is_none())),
            Some((c0, _)) if c0.is_none() != c.is_none() => out.push(line("A", p, c.is_none())),
            Some((c0, m0)) if c0 != c || m0 != mode => out.push(line("M", p, c.is_none())),
            _ => {}
        }
    }
    out.sort_by(|a, b| {
        a[2..]
            .trim_end_matches('/')
            .cmp(b[2..].trim_end_matches('/'))
            .then(b.starts_with('D').cmp(&a.starts_with('D')))
    });
    out
}

/// The dry run's listing, relative to the work directory.
fn listing(o: &Outcome, dir: &Path) -> Vec<String> {
    o.changes
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                c.kind.letter(),
                c.path.strip_prefix(dir).unwrap().display(),
                if c.dir { "/" } else { "" }
            )
        })
        .collect()
}

fn work(dir: &Path, commit: CommitMode) -> Policy {
    Policy {
        presets: vec![sandlock_core::Preset::System],
        workdir: Some(dir.to_path_buf()),
        cwd: Some(dir.to_path_buf()),
        commit,
        ..Policy::default()
    }
}

/// A work directory with files, a subdirectory, a symlink and an empty directory.
fn populated() -> Ws {
    let w = Ws::new();
    std::fs::write(w.join("edit.txt"), "one\n").unwrap();
    std::fs::write(w.join("gone.txt"), "bye\n").unwrap();
    std::fs::write(w.join("moved.txt"), "moving\n").unwrap();
    std::fs::write(w.join("same.txt"), "read only\n").unwrap();
    std::fs::create_dir(w.join("sub")).unwrap();
    std::fs::write(w.join("sub/inner"), "inner\n").unwrap();
    std::fs::create_dir(w.join("empty")).unwrap();
    std::fs::create_dir(w.join("tree")).unwrap();
    std::fs::write(w.join("tree/leaf"), "leaf\n").unwrap();
    std::os::unix::fs::symlink("edit.txt", w.join("link")).unwrap();
    w
}

/// Creates, modifies, deletes, renames, makes and removes directories, changes a mode, replaces
/// a directory by a file, and only reads one file.
const SCRIPT: &str = "echo two >> edit.txt && rm gone.txt && mv moved.txt sub/moved.txt && \
    echo new > new.txt && mkdir -p made/deep && echo x > made/deep/f && rmdir empty && \
    chmod 600 sub/inner && cat same.txt > /dev/null && ln -sf new.txt link && \
    rm -r tree && echo file > tree && ls sub made > /dev/null";

#[test]
fn a_dry_run_lists_the_changes_a_commit_then_makes() {
    let w = populated();
    let before = snapshot(w.path());
    let dry = sh(&work(w.path(), CommitMode::Never), SCRIPT);
    ok(&dry);
    let listed = listing(&dry, w.path());
    assert_eq!(
        listed,
        [
            "M edit.txt",
            "D empty/",
            "D gone.txt",
            "M link",
            "A made/",
            "A made/deep/",
            "A made/deep/f",
            "D moved.txt",
            "A new.txt",
            "M sub/inner",
            "A sub/moved.txt",
            "D tree/",
            "A tree"
        ],
        "{}",
        err(&dry)
    );
    // The dry run changed nothing, and said it applied nothing.
    assert_eq!(snapshot(w.path()), before);
    let report = dry.commit.as_ref().unwrap();
    assert!(!report.attempted && report.applied.is_empty());
    assert_eq!(report.not_applied, dry.changes);
    // The same command committed: what changed on the host is what the dry run listed.
    let real = sh(&work(w.path(), CommitMode::OnSuccess), SCRIPT);
    ok(&real);
    let after = snapshot(w.path());
    assert_eq!(diff(&before, &after), listed);
    assert_eq!(listing(&real, w.path()), listed);
    let report = real.commit.as_ref().unwrap();
    assert!(report.attempted && report.error.is_none() && report.not_applied.is_empty());
    assert_eq!(
        std::fs::read_to_string(w.join("edit.txt")).unwrap(),
        "one\ntwo\n"
    );
    assert_eq!(
        std::fs::read_link(w.join("link")).unwrap(),
        Path::new("new.txt")
    );
}

#[test]
fn inside_the_sandbox_the_work_directory_reads_as_changed() {
    let w = populated();
    let code = "import os\n\
        open('edit.txt', 'a').write('two\\n')\n\
        os.remove('gone.txt'); os.rename('moved.txt', 'sub/m')\n\
        os.makedirs('n/m'); open('n/m/f', 'w').write('f')\n\
        os.chdir('sub'); print(sorted(os.listdir('.')), os.getcwd())\n\
        os.chdir('..'); print(sorted(os.listdir('.')))\n\
        print(open('edit.txt').read().split(), os.path.exists('gone.txt'), os.stat('n/m/f').st_size)\n\
        import shutil; shutil.rmtree('sub'); os.mkdir('sub'); print(os.listdir('sub'))";
    let o = py(&work(w.path(), CommitMode::Never), code);
    ok(&o);
    let dir = w.path().display().to_string();
    assert_eq!(
        out(&o),
        format!(
            "['inner', 'm'] {dir}/sub\n\
             ['edit.txt', 'empty', 'link', 'n', 'same.txt', 'sub', 'tree']\n\
             ['one', 'two'] False 1\n[]"
        ),
        "{}",
        err(&o)
    );
    // Control: the host's directory is as it was.
    assert!(w.join("gone.txt").exists() && w.join("sub/inner").exists() && !w.join("n").exists());
}

#[test]
fn changes_are_committed_on_success_and_discarded_on_failure() {
    let w = populated();
    let before = snapshot(w.path());
    let failed = sh(
        &work(w.path(), CommitMode::OnSuccess),
        "echo lost > new.txt; rm edit.txt; exit 3",
    );
    assert_eq!(failed.exit_code, Some(3));
    assert_eq!(snapshot(w.path()), before);
    let report = failed.commit.as_ref().unwrap();
    assert!(!report.attempted);
    assert_eq!(report.not_applied.len(), 2);
    // `always` applies them whatever the command's status.
    let always = sh(
        &work(w.path(), CommitMode::Always),
        "echo kept > new.txt; exit 3",
    );
    assert_eq!(always.exit_code, Some(3));
    assert_eq!(
        std::fs::read_to_string(w.join("new.txt")).unwrap(),
        "kept\n"
    );
    // Control: success commits.
    let good = sh(&work(w.path(), CommitMode::OnSuccess), "rm new.txt");
    ok(&good);
    assert!(!w.join("new.txt").exists());
}

#[test]
fn a_commit_that_meets_a_conflict_midway_says_what_was_and_was_not_applied_and_loses_nothing() {
    let w = populated();
    std::fs::write(w.join("m_mid"), "before\n").unwrap();
    let sb = Sandbox::new(work(w.path(), CommitMode::OnSuccess)).unwrap();
    let mut run = sb
        .spawn(sandlock_core::Command::new([
            "sh",
            "-c",
            "rm gone.txt; echo a > a_first; echo run >> m_mid; echo z > z_last; touch ready; \
             while [ ! -e go ]; do sleep 0.01; done; rm ready",
        ]))
        .unwrap();
    // Once the command has changed `m_mid`, the host changes it too: applying the run's version
    // would lose the host's, so the commit stops there. Deletions went first; files are put in
    // place only once all of them are written, so none of them was.
    let t0 = std::time::Instant::now();
    let ready = w.join("ready");
    while !sandbox_sees(&mut run, &ready) {
        assert!(t0.elapsed().as_secs() < 30, "never ready");
    }
    std::fs::write(w.join("m_mid"), "the host's\n").unwrap();
    std::fs::write(w.join("go"), "").unwrap();
    let o = run.wait().unwrap();
    ok(&o);
    let r = o.commit.as_ref().unwrap();
    assert!(r.attempted);
    let names = |l: &[sandlock_core::Change]| -> Vec<String> {
        l.iter()
            .map(|c| c.path.strip_prefix(w.path()).unwrap().display().to_string())
            .collect()
    };
    assert_eq!(names(&r.applied), ["gone.txt"], "{r:?}");
    assert_eq!(
        names(&r.not_applied),
        ["a_first", "m_mid", "z_last"],
        "{r:?}"
    );
    let e = r.error.as_deref().unwrap();
    assert!(e.contains("m_mid") && e.contains("conflict"), "{r:?}");
    assert!(!w.join("gone.txt").exists() && !w.join("a_first").exists());
    assert_eq!(
        std::fs::read_to_string(w.join("m_mid")).unwrap(),
        "the host's\n"
    );
    assert!(!w.join("z_last").exists());
    // No temporary file is left behind in the work directory.
    let left: Vec<_> = std::fs::read_dir(w.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".sandlock-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // What was not applied is kept on the host, where the report says.
    let kept = r.kept.as_ref().unwrap();
    assert_eq!(
        std::fs::read_to_string(kept.join("a_first")).unwrap(),
        "a\n"
    );
    assert_eq!(
        std::fs::read_to_string(kept.join("m_mid")).unwrap(),
        "before\nrun\n"
    );
    assert_eq!(std::fs::read_to_string(kept.join("z_last")).unwrap(), "z\n");
    std::fs::remove_dir_all(kept.parent().unwrap()).unwrap();
    // Control: the same run with no change on the host meanwhile commits everything.
    let o = sh(
        &work(w.path(), CommitMode::OnSuccess),
        "echo run >> m_mid; echo z > z_last",
    );
    ok(&o);
    assert!(o.commit.as_ref().unwrap().error.is_none());
    assert_eq!(
        std::fs::read_to_string(w.join("m_mid")).unwrap(),
        "the host's\nrun\n"
    );
}

/// Steps `run` until `path` exists in its work directory (its upper layer, seen through the run's
/// own view: the host's directory does not have it yet).
fn sandbox_sees(run: &mut sandlock_core::Running, path: &Path) -> bool {
    run.step(Some(std::time::Duration::from_millis(10)))
        .unwrap();
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("sandlock-cow-"))
        .any(|e| {
            e.path()
                .join("upper")
                .join(path.file_name().unwrap())
                .exists()
        })
}

#[test]
fn a_file_heavy_command_in_a_work_directory() {
    let w = Ws::new();
    for i in 0..200 {
        std::fs::write(w.join(&format!("old{i}")), format!("{i}")).unwrap();
    }
    let code = "import os\n\
        for i in range(500): open('new%d' % i, 'w').write('x' * i)\n\
        for i in range(0, 200, 2): open('old%d' % i, 'a').write('+')\n\
        for i in range(1, 200, 4): os.remove('old%d' % i)\n\
        print(len(os.listdir('.')))";
    let o = py(&work(w.path(), CommitMode::OnSuccess), code);
    ok(&o);
    assert_eq!(out(&o), "650");
    let count = |k: ChangeKind| o.changes.iter().filter(|c| c.kind == k).count();
    assert_eq!(
        (
            count(ChangeKind::Added),
            count(ChangeKind::Modified),
            count(ChangeKind::Deleted)
        ),
        (500, 100, 50)
    );
    assert_eq!(std::fs::read_dir(w.path()).unwrap().count(), 650);
    assert_eq!(std::fs::read_to_string(w.join("old2")).unwrap(), "2+");
    assert_eq!(std::fs::read_to_string(w.join("new3")).unwrap(), "xxx");
}

#[test]
fn a_race_that_defeats_the_view_cannot_write_the_work_directory() {
    let (w, ws) = (populated(), Ws::new());
    let Some(exe) = build_c(ws.path(), "standin_races") else {
        return;
    };
    std::fs::write(ws.join("ok"), "writable").unwrap();
    let target = w.s("same.txt");
    let mut p = work(w.path(), CommitMode::Never);
    p.fs_writable.push(ws.path().to_path_buf());
    p.cwd = None;
    let o = run(
        &p,
        &[
            exe.to_str().unwrap(),
            "overwrite",
            &ws.s("ok"),
            &target,
            &race_rounds(3000),
        ],
    );
    assert!(out(&o).starts_with("done"), "{} {}", out(&o), err(&o));
    assert!(!out(&o).contains("(0 writes)"), "{}", out(&o));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "read only\n");
    // Control: unconfined, the flipped buffer overwrites the target.
    std::process::Command::new(&exe)
        .args(["overwrite", &ws.s("ok"), &target, &race_rounds(3000)])
        .output()
        .unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "overwritten");
}

#[test]
fn a_policy_that_grants_the_work_directory_is_refused() {
    let w = Ws::new();
    let mut p = work(w.path(), CommitMode::OnSuccess);
    p.fs_writable.push(w.path().to_path_buf());
    match Sandbox::new(p) {
        Err(sandlock_core::Error::Policy(e)) => assert_eq!(e.field, "fs_writable[0]", "{e}"),
        other => panic!("expected a policy error, got {:?}", other.err()),
    }
    let e = match Sandbox::new(work(Path::new("/no/such/dir"), CommitMode::Never)) {
        Err(sandlock_core::Error::Policy(e)) => e,
        other => panic!("expected a policy error, got {:?}", other.err()),
    };
    assert_eq!(e.field, "workdir");
    // Control: a workspace beside it is fine.
    let beside = Ws::new();
    let mut p = work(w.path(), CommitMode::OnSuccess);
    p.fs_writable.push(beside.path().to_path_buf());
    assert!(Sandbox::new(p).is_ok());
}

#[test]
fn a_read_only_directory_keeps_its_rules_while_its_files_are_copied_up() {
    let w = Ws::new();
    std::fs::create_dir(w.join("ro")).unwrap();
    std::fs::write(w.join("ro/open.txt"), "old\n").unwrap();
    std::fs::write(w.join("ro/other.txt"), "other\n").unwrap();
    std::fs::set_permissions(w.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
    let o = sh(
        &work(w.path(), CommitMode::OnSuccess),
        "stat -c %y ro && echo new > ro/open.txt && ls ro && stat -c '%a %y' ro && \
         if echo x > ro/made.txt; then echo made; else echo refused; fi; \
         if rm ro/other.txt; then echo removed; else echo kept; fi",
    );
    std::fs::set_permissions(w.join("ro"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Attempts: a new name and a removal in the read-only directory are refused, as they would
    // be outside (the sandbox has no capability that overrides a mode). Control: the writable
    // file in it is changed, which needs a copy-up in the upper copy of the directory, and the
    // directory still looks untouched (mode and time).
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text} {}", err(&o));
    assert_eq!(lines[1..3], ["open.txt", "other.txt"]);
    assert_eq!(lines[3], format!("555 {}", lines[0]));
    assert_eq!(lines[4..], ["refused", "kept"]);
    ok(&o);
    assert_eq!(listing(&o, w.path()), ["M ro/open.txt"]);
    assert_eq!(
        std::fs::read_to_string(w.join("ro/open.txt")).unwrap(),
        "new\n"
    );
    assert!(!w.join("ro/made.txt").exists() && w.join("ro/other.txt").exists());
}

#[test]
fn programs_and_directories_of_the_work_directory_run_and_are_entered() {
    let w = Ws::new();
    std::fs::copy("/bin/true", w.join("prog")).unwrap();
    std::fs::create_dir_all(w.join("sub/deep")).unwrap();
    std::fs::write(w.join("sub/deep/note"), "note\n").unwrap();
    let dir = w.path().display().to_string();
    // Untouched directories and programs of the work directory (only in the lower layer), by
    // absolute and relative paths, then the same after the run removed them.
    let script = format!(
        "./prog && echo ran; {dir}/prog && echo ran; cd {dir}/sub && pwd && cd deep && pwd && \
         cat note && ../../prog && echo ran; cd {dir}; rm prog; rm -r sub/deep; \
         ./prog; echo $?; cd sub/deep; echo $?"
    );
    let o = sh(&work(w.path(), CommitMode::Never), &script);
    assert_eq!(
        out(&o),
        format!("ran\nran\n{dir}/sub\n{dir}/sub/deep\nnote\nran\n127\n2"),
        "{}",
        err(&o)
    );
    assert_eq!(
        listing(&o, w.path()),
        ["D prog", "D sub/deep/"],
        "{}",
        err(&o)
    );
    // Control: the host's files are all there.
    assert!(w.join("prog").exists() && w.join("sub/deep/note").exists());
}
