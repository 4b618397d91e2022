//! Filesystem views (`fs_mount`, `private_tmp`): every path operation under a mount, with the
//! same operation shown to fail where there is no mount (or to land only where the view says),
//! escapes that must stay refused, two sandboxes sharing a mount point, and the race that a view
//! must survive (a thread flipping a path between a virtual and a real one).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use sandlock_core::{Command, Policy, Sandbox};

use super::support::*;

/// The system preset, `host` mounted at `/mnt/data`, and nothing else writable.
fn mounted(host: &Path) -> Policy {
    let mut p = Policy {
        presets: vec![sandlock_core::Preset::System],
        ..Policy::default()
    };
    p.fs_mount
        .insert("/mnt/data".into(), host.display().to_string());
    p
}

/// Python that defines `t(f)` (prints `ok` or the errno's name) and `v(x)` (prints `x`), then
/// runs `body`.
fn probe(body: &str) -> String {
    format!(
        "import os, errno, sys, stat\n\
         def t(f):\n    try:\n        f(); print('ok')\n    except OSError as e:\n        print(errno.errorcode[e.errno])\n\
         def v(x):\n    print(x)\n\
         {body}"
    )
}

fn lines(o: &sandlock_core::Outcome) -> Vec<String> {
    out(o).lines().map(str::to_string).collect()
}

#[test]
fn files_under_a_mount_are_the_host_directory_s() {
    let host = Ws::new();
    std::fs::write(host.join("in.txt"), "from the host\n").unwrap();
    let code = probe(
        "v(open('/mnt/data/in.txt').read().strip())\n\
         open('/mnt/data/out.txt', 'w').write('from the sandbox')\n\
         t(lambda: os.open('/mnt/data/out.txt', os.O_CREAT | os.O_EXCL | os.O_WRONLY))\n\
         fd = os.open('/mnt/data/append', os.O_CREAT | os.O_APPEND | os.O_WRONLY | os.O_CLOEXEC, 0o640)\n\
         os.write(fd, b'a'); os.write(fd, b'b'); os.close(fd)\n\
         v(oct(os.stat('/mnt/data/append').st_mode & 0o777))\n\
         t(lambda: open('/mnt/data/missing'))\n\
         t(lambda: open('/mnt/data/in.txt/'))\n\
         t(lambda: os.open('/mnt/data/newdir/', os.O_CREAT | os.O_WRONLY))\n\
         v(sorted(os.listdir('/mnt/data')))",
    );
    let o = py(&mounted(host.path()), &code);
    ok(&o);
    assert_eq!(
        lines(&o),
        [
            "from the host",
            "EEXIST",
            "0o640",
            "ENOENT",
            "ENOTDIR",
            "EISDIR",
            "['append', 'in.txt', 'out.txt']"
        ],
        "{}",
        err(&o)
    );
    assert_eq!(
        std::fs::read_to_string(host.join("out.txt")).unwrap(),
        "from the sandbox"
    );
    assert_eq!(std::fs::read_to_string(host.join("append")).unwrap(), "ab");
    // Control: without the mount the same path is nowhere.
    let plain = Policy {
        fs_mount: Default::default(),
        ..mounted(host.path())
    };
    let o = py(&plain, &probe("t(lambda: open('/mnt/data/in.txt'))"));
    ok(&o);
    assert_ne!(out(&o), "ok");
}

#[test]
fn the_stat_family_access_and_readlink_describe_the_host_files() {
    let host = Ws::new();
    std::fs::write(host.join("f"), "12345").unwrap();
    std::fs::set_permissions(host.join("f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("f", host.join("link")).unwrap();
    std::os::unix::fs::symlink("nowhere", host.join("dangling")).unwrap();
    let ino = std::fs::metadata(host.join("f")).unwrap().ino();
    let code = probe(
        "v(os.stat('/mnt/data/f').st_size)\n\
         v(os.stat('/mnt/data/link').st_ino)\n\
         v(stat.S_ISLNK(os.lstat('/mnt/data/link').st_mode))\n\
         v(os.stat('/mnt/data/f', dir_fd=None, follow_symlinks=False).st_ino)\n\
         fd = os.open('/mnt/data', os.O_RDONLY)\n\
         v(os.stat('f', dir_fd=fd).st_size)\n\
         v(os.path.isdir('/mnt/data') and os.path.isdir('/mnt'))\n\
         t(lambda: os.stat('/mnt/data/f/'))\n\
         t(lambda: os.stat('/mnt/data/dangling'))\n\
         v(os.readlink('/mnt/data/link'))\n\
         t(lambda: os.readlink('/mnt/data/f'))\n\
         v((os.access('/mnt/data/f', os.R_OK), os.access('/mnt/data/f', os.X_OK)))\n\
         v(os.access('/mnt/data/missing', os.F_OK))\n\
         v(os.statvfs('/mnt/data').f_bsize > 0)",
    );
    let o = py(&mounted(host.path()), &code);
    ok(&o);
    assert_eq!(
        lines(&o),
        [
            "5".to_string(),
            ino.to_string(),
            "True".into(),
            ino.to_string(),
            "5".into(),
            "True".into(),
            "ENOTDIR".into(),
            "ENOENT".into(),
            "f".into(),
            "EINVAL".into(),
            "(True, False)".into(),
            "False".into(),
            "True".into()
        ],
        "{}",
        err(&o)
    );
    // statx, as coreutils' stat uses it.
    let o = run(
        &mounted(host.path()),
        &["stat", "-c", "%s %a %F", "/mnt/data/f", "/mnt/data/link"],
    );
    ok(&o);
    assert_eq!(out(&o), "5 640 regular file\n1 777 symbolic link");
}

#[test]
fn directories_are_made_removed_and_listed_under_a_mount() {
    let host = Ws::new();
    std::fs::create_dir(host.join("full")).unwrap();
    std::fs::write(host.join("full/f"), "").unwrap();
    let code = probe(
        "os.makedirs('/mnt/data/a/b/c')\n\
         t(lambda: os.mkdir('/mnt/data/a'))\n\
         t(lambda: os.rmdir('/mnt/data/full'))\n\
         t(lambda: os.rmdir('/mnt/data/a/b/c'))\n\
         t(lambda: os.rmdir('/mnt/data'))\n\
         t(lambda: os.mkdir('/mnt/data'))\n\
         t(lambda: os.mkdir('/mnt/other'))\n\
         os.makedirs('/mnt/data/x', exist_ok=True)\n\
         d = os.open('/mnt/data/full', os.O_PATH | os.O_DIRECTORY)\n\
         v(os.stat('f', dir_fd=d).st_size)\n\
         t(lambda: os.open('/mnt/data/none', os.O_PATH))\n\
         v(sorted(os.listdir('/mnt')))\n\
         v(sorted(os.listdir('/mnt/data')))",
    );
    let o = py(&mounted(host.path()), &code);
    ok(&o);
    assert_eq!(
        lines(&o),
        [
            "EEXIST",
            "ENOTEMPTY",
            "ok",
            "EBUSY",
            "EEXIST",
            "EROFS",
            "0",
            "ENOENT",
            "['data']",
            "['a', 'full', 'x']"
        ],
        "{}",
        err(&o)
    );
    assert!(host.join("a/b").is_dir() && !host.join("a/b/c").exists());
    // `mkdir -p` through the missing /mnt works too.
    let o = sh(
        &mounted(host.path()),
        "mkdir -p /mnt/data/p/q && ls /mnt/data/p",
    );
    ok(&o);
    assert_eq!(out(&o), "q");
}

#[test]
fn unlink_rename_and_links_stay_inside_their_mount() {
    let (host, other, ws) = (Ws::new(), Ws::new(), Ws::new());
    for f in ["f", "g", "h"] {
        std::fs::write(host.join(f), f).unwrap();
    }
    std::fs::create_dir(host.join("d")).unwrap();
    let mut p = mounted(host.path());
    p.fs_mount
        .insert("/mnt/other".into(), other.path().display().to_string());
    p.fs_writable.push(ws.path().to_path_buf());
    let code = probe(&format!(
        "t(lambda: os.unlink('/mnt/data/f'))\n\
         t(lambda: os.unlink('/mnt/data/d'))\n\
         t(lambda: os.unlink('/mnt/data'))\n\
         t(lambda: os.rename('/mnt/data/g', '/mnt/data/d/g2'))\n\
         t(lambda: os.rename('/mnt/data/h', '/mnt/other/h'))\n\
         t(lambda: os.rename('/mnt/data/h', {ws:?}))\n\
         t(lambda: os.rename('/mnt/data', '/mnt/data/moved'))\n\
         t(lambda: os.link('/mnt/data/h', '/mnt/data/h2'))\n\
         t(lambda: os.link('/mnt/data/h', '/mnt/other/h3'))\n\
         t(lambda: os.link('/etc/passwd', '/mnt/data/passwd'))\n\
         t(lambda: os.symlink('../h', '/mnt/data/d/up'))\n\
         v(open('/mnt/data/d/up').read())\n\
         t(lambda: os.replace('/mnt/data/d/g2', '/mnt/data/h'))",
        ws = ws.s("h"),
    ));
    let o = py(&p, &code);
    ok(&o);
    assert_eq!(
        lines(&o),
        [
            "ok", "EISDIR", "EISDIR", "ok", "EXDEV", "EXDEV", "EBUSY", "ok", "EXDEV", "EXDEV",
            "ok", "h", "ok"
        ],
        "{}",
        err(&o)
    );
    assert!(!host.join("f").exists());
    assert_eq!(std::fs::read_to_string(host.join("h")).unwrap(), "g");
    // h2 was linked to the old h, which `replace` then unlinked.
    assert_eq!(std::fs::read_to_string(host.join("h2")).unwrap(), "h");
    assert_eq!(
        std::fs::read_link(host.join("d/up")).unwrap(),
        Path::new("../h")
    );
    // Control: mv across mounts falls back to copying, as across real mounts.
    let o = sh(
        &p,
        "echo moved > /mnt/data/m && mv /mnt/data/m /mnt/other/m && cat /mnt/other/m",
    );
    ok(&o);
    assert_eq!(out(&o), "moved");
    assert!(other.join("m").exists() && !host.join("m").exists());
}

#[test]
fn modes_owners_times_and_sizes_change_on_the_host_file() {
    let host = Ws::new();
    std::fs::write(host.join("f"), "0123456789").unwrap();
    std::fs::create_dir(host.join("d")).unwrap();
    std::os::unix::fs::symlink("f", host.join("link")).unwrap();
    let code = probe(
        "t(lambda: os.chmod('/mnt/data/link', 0o600))\n\
         t(lambda: os.truncate('/mnt/data/f', 4))\n\
         os.utime('/mnt/data/f', (1000000000, 1000000000))\n\
         t(lambda: os.truncate('/mnt/data/d', 0))\n\
         t(lambda: os.chown('/mnt/data/f', os.getuid(), os.getgid()))\n\
         t(lambda: os.chown('/mnt/data/f', os.getuid() + 1, -1))\n\
         t(lambda: os.lchown('/mnt/data/link', os.getuid(), -1))\n\
         t(lambda: os.mkfifo('/mnt/data/fifo'))\n\
         v(stat.S_ISFIFO(os.stat('/mnt/data/fifo').st_mode))",
    );
    let o = py(&mounted(host.path()), &code);
    ok(&o);
    assert_eq!(
        lines(&o),
        ["ok", "ok", "EISDIR", "ok", "EPERM", "ok", "ok", "True"],
        "{}",
        err(&o)
    );
    let m = std::fs::metadata(host.join("f")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    assert_eq!(m.mtime(), 1_000_000_000);
    assert_eq!(m.len(), 4);
    // touch(1) uses utimensat with a path.
    let o = sh(&mounted(host.path()), "touch -d @2000000000 /mnt/data/f");
    ok(&o);
    assert_eq!(
        std::fs::metadata(host.join("f")).unwrap().mtime(),
        2_000_000_000
    );
}

#[test]
fn extended_attributes_work_under_a_mount() {
    let host = Ws::new();
    std::fs::write(host.join("f"), "x").unwrap();
    let code = probe(
        "try:\n    os.setxattr('/mnt/data/f', 'user.k', b'v')\nexcept OSError as e:\n    print('noxattr', errno.errorcode[e.errno]); sys.exit(0)\n\
         v(os.getxattr('/mnt/data/f', 'user.k'))\n\
         v(os.listxattr('/mnt/data/f'))\n\
         import shutil\n\
         shutil.copy2('/mnt/data/f', '/mnt/data/g')\n\
         v(os.getxattr('/mnt/data/g', 'user.k'))\n\
         os.removexattr('/mnt/data/f', 'user.k')\n\
         t(lambda: os.getxattr('/mnt/data/f', 'user.k'))",
    );
    let o = py(&mounted(host.path()), &code);
    ok(&o);
    if out(&o).starts_with("noxattr") {
        skip(
            "extended attributes",
            &format!(
                "the host's temporary filesystem takes no user xattrs ({})",
                out(&o)
            ),
        );
        return;
    }
    assert_eq!(
        lines(&o),
        ["b'v'", "['user.k']", "b'v'", "ENODATA"],
        "{}",
        err(&o)
    );
}

#[test]
fn chdir_into_a_mount_shows_the_virtual_directory_and_relative_paths_follow() {
    let host = Ws::new();
    std::fs::create_dir(host.join("sub")).unwrap();
    std::fs::write(host.join("sub/f"), "in sub").unwrap();
    let code = probe(
        "os.chdir('/mnt/data/sub')\n\
         v(os.getcwd())\n\
         v(os.readlink('/proc/self/cwd'))\n\
         v(open('f').read())\n\
         open('new', 'w').write('rel')\n\
         os.chdir('..')\n\
         v(os.getcwd())\n\
         v(sorted(os.listdir('.')))\n\
         os.chdir('..')\n\
         v((os.getcwd(), os.listdir('.')))\n\
         t(lambda: os.chdir('/mnt/data/sub/f'))\n\
         t(lambda: os.chdir('/mnt/data/none'))\n\
         os.chdir('/mnt/data')\n\
         v(open('sub/../sub/new').read())",
    );
    let o = py(&mounted(host.path()), &code);
    ok(&o);
    assert_eq!(
        lines(&o),
        [
            "/mnt/data/sub",
            "/mnt/data/sub",
            "in sub",
            "/mnt/data",
            "['sub']",
            "('/mnt', ['data'])",
            "ENOTDIR",
            "ENOENT",
            "rel"
        ],
        "{}",
        err(&o)
    );
    assert_eq!(
        std::fs::read_to_string(host.join("sub/new")).unwrap(),
        "rel"
    );
    // The shell's own cd and pwd, and a working directory given by the policy.
    let mut p = mounted(host.path());
    p.cwd = Some("/mnt/data/sub".into());
    let o = sh(&p, "pwd; cat f; echo; cd .. && pwd -P && ls");
    ok(&o);
    assert_eq!(out(&o), "/mnt/data/sub\nin sub\n/mnt/data\nsub");
}

#[test]
fn programs_and_scripts_under_a_mount_run() {
    let host = Ws::new();
    std::fs::create_dir(host.join("bin")).unwrap();
    std::fs::copy("/usr/bin/env", host.join("bin/myenv")).unwrap();
    let script = host.join("bin/hello.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"sh $0 $*\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A script whose interpreter lies in the mount too (a symlink to python3 there).
    std::os::unix::fs::symlink(
        std::fs::canonicalize("/usr/bin/python3").unwrap(),
        host.join("bin/py"),
    )
    .unwrap();
    let pyscript = host.join("bin/hi.py");
    std::fs::write(
        &pyscript,
        "#!/mnt/data/bin/py -u\nimport sys\nprint('py', sys.argv)\n",
    )
    .unwrap();
    std::fs::set_permissions(&pyscript, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(host.join("bin/noexec.sh"), "#!/bin/sh\necho no\n").unwrap();
    let o = sh(
        &mounted(host.path()),
        "/mnt/data/bin/myenv echo via-env; /mnt/data/bin/hello.sh a b; \
         cd /mnt/data/bin && ./hello.sh c; PATH=/mnt/data/bin:$PATH; hello.sh d; \
         /mnt/data/bin/hi.py x; /mnt/data/bin/noexec.sh; echo $?",
    );
    ok(&o);
    assert_eq!(
        lines(&o),
        [
            "via-env",
            "sh /mnt/data/bin/hello.sh a b",
            "sh ./hello.sh c",
            "sh /mnt/data/bin/hello.sh d",
            "py ['/mnt/data/bin/hi.py', 'x']",
            "126"
        ],
        "{}",
        err(&o)
    );
    // The first program itself may lie in the mount.
    let o = run(&mounted(host.path()), &["/mnt/data/bin/hello.sh", "first"]);
    ok(&o);
    assert_eq!(out(&o), "sh /mnt/data/bin/hello.sh first");
}

#[test]
fn a_unix_socket_bound_under_a_mount_serves_and_is_a_host_file() {
    let host = Ws::new();
    let code = "import socket, os, threading\n\
                s = socket.socket(socket.AF_UNIX); s.bind('/mnt/data/s.sock'); s.listen()\n\
                def serve():\n    c, _ = s.accept(); c.sendall(b'served'); c.close()\n\
                th = threading.Thread(target=serve); th.start()\n\
                c = socket.socket(socket.AF_UNIX); c.connect('/mnt/data/s.sock')\n\
                print(c.recv(10).decode()); th.join()\n\
                os.chdir('/mnt/data'); c2 = socket.socket(socket.AF_UNIX)\n\
                try:\n    c2.connect('s.sock'); print('connected')\nexcept OSError as e:\n    print(e.errno)";
    let o = py(&mounted(host.path()), code);
    ok(&o);
    assert_eq!(lines(&o)[0], "served", "{}", err(&o));
    assert!(
        std::fs::symlink_metadata(host.join("s.sock"))
            .unwrap()
            .file_type()
            .is_socket(),
        "the socket file is in the host directory"
    );
}

#[test]
fn a_read_only_mount_refuses_every_write_with_erofs() {
    let host = Ws::new();
    std::fs::write(host.join("f"), "keep").unwrap();
    let mut p = mounted(host.path());
    p.fs_mount
        .insert("/mnt/data".into(), format!("{}:ro", host.path().display()));
    let code = probe(
        "v(open('/mnt/data/f').read())\n\
         t(lambda: open('/mnt/data/f', 'w'))\n\
         t(lambda: open('/mnt/data/new', 'w'))\n\
         t(lambda: os.unlink('/mnt/data/f'))\n\
         t(lambda: os.mkdir('/mnt/data/d'))\n\
         t(lambda: os.chmod('/mnt/data/f', 0o777))\n\
         t(lambda: os.truncate('/mnt/data/f', 0))\n\
         v(os.access('/mnt/data/f', os.W_OK))\n\
         t(lambda: os.close(os.open('/mnt/data/f', os.O_RDONLY | os.O_CREAT)))",
    );
    let o = py(&p, &code);
    ok(&o);
    assert_eq!(
        lines(&o),
        [
            "keep", "EROFS", "EROFS", "EROFS", "EROFS", "EROFS", "EROFS", "False", "ok"
        ],
        "{}",
        err(&o)
    );
    assert_eq!(std::fs::read_to_string(host.join("f")).unwrap(), "keep");
}

#[test]
fn escapes_from_a_mount_are_refused() {
    let (host, outside) = (Ws::new(), Ws::new());
    std::fs::write(outside.join("secret"), "host secret").unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), host.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../../../../../..", host.join("up")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", host.join("shadow")).unwrap();
    let parent = host.path().parent().unwrap().display().to_string();
    let code = probe(&format!(
        "t(lambda: open('/mnt/data/abs').read())\n\
         t(lambda: open('/mnt/data/shadow').read())\n\
         v(os.path.realpath('/mnt/data/up'))\n\
         t(lambda: open('/mnt/data/up' + {secret:?}).read())\n\
         t(lambda: open('/mnt/data/../../' + {secret:?}).read())\n\
         v(os.listdir('/mnt/data/..'))\n\
         t(lambda: os.listdir({parent:?}))\n\
         t(lambda: open('/proc/self/root' + {secret:?}).read())\n\
         t(lambda: os.link({secret:?}, '/mnt/data/hard'))\n\
         t(lambda: os.symlink({secret:?}, '/mnt/data/made') or open('/mnt/data/made').read())",
        secret = outside.s("secret"),
    ));
    let o = py(&mounted(host.path()), &code);
    ok(&o);
    assert_eq!(
        lines(&o),
        [
            "EACCES", "EACCES", "/", "EACCES", "EACCES", "['data']", "EACCES", "EACCES", "EXDEV",
            "EACCES"
        ],
        "{}",
        err(&o)
    );
    assert!(!host.join("hard").exists());
    // Control: the host's own file is there and readable outside the sandbox.
    assert_eq!(
        std::fs::read_to_string(host.join("abs")).unwrap(),
        "host secret"
    );
}

#[test]
fn python_and_sh_do_real_work_in_a_private_tmp_that_is_removed_after() {
    let ws = Ws::new();
    let marker = format!("sandlock-private-{}", std::process::id());
    let mut p = policy(&ws);
    p.private_tmp = true;
    let code = format!(
        "import tempfile, sqlite3, os, subprocess\n\
         d = tempfile.mkdtemp(); print(d.startswith('/tmp/'))\n\
         db = sqlite3.connect(os.path.join(d, 'x.db')); db.execute('create table t(a)');\n\
         db.executemany('insert into t values (?)', [(i,) for i in range(100)]); db.commit()\n\
         print(db.execute('select sum(a) from t').fetchone()[0])\n\
         open('/tmp/{marker}', 'w').write('mine')\n\
         open('/var/tmp/{marker}', 'w').write('mine too')\n\
         print(subprocess.run(['sh', '-c', 'f=$(mktemp) && echo b > $f && echo a >> $f && sort $f | tr -d \"\\\\n\"; cat /tmp/{marker}'], capture_output=True, text=True).stdout)\n\
         print(os.environ['TMPDIR'], sorted(os.listdir('/tmp'))[:1] != [])"
    );
    let o = py(&p, &code);
    ok(&o);
    assert_eq!(
        lines(&o),
        ["True", "4950", "abmine", "/tmp True"],
        "{}",
        err(&o)
    );
    // Nothing reached the host's /tmp or /var/tmp, and the private directory is gone.
    assert!(!Path::new("/tmp").join(&marker).exists());
    assert!(!Path::new("/var/tmp").join(&marker).exists());
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name().to_string_lossy().starts_with("sandlock-tmp-")
                && e.metadata()
                    .is_ok_and(|m| m.uid() == unsafe { libc::geteuid() })
                && std::fs::read_dir(e.path().join("tmp"))
                    .map(|d| {
                        d.flatten()
                            .any(|f| f.file_name().to_string_lossy() == marker)
                    })
                    .unwrap_or(false)
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn the_hosts_tmp_is_out_of_reach_with_a_private_tmp() {
    let ws = Ws::new();
    let secret = tempfile::Builder::new()
        .prefix("sandlock-host-secret-")
        .tempfile_in("/tmp")
        .unwrap();
    std::fs::write(secret.path(), "host tmp secret").unwrap();
    let name = secret.path().display().to_string();
    let mut p = policy(&ws);
    p.private_tmp = true;
    let code = probe(&format!(
        "t(lambda: open({name:?}).read())\n\
         t(lambda: os.stat({name:?}))\n\
         t(lambda: open('/proc/self/root' + {name:?}).read())\n\
         t(lambda: open('/tmp/../tmp/' + os.path.basename({name:?})).read())\n\
         v(os.listdir('/tmp'))"
    ));
    let o = py(&p, &code);
    ok(&o);
    // The private /tmp holds only the way to the workspace, which is shown at its own path.
    let listed = match ws.path().strip_prefix("/tmp") {
        Ok(rest) => format!("['{}']", rest.iter().next().unwrap().to_string_lossy()),
        Err(_) => "[]".to_string(),
    };
    assert_eq!(
        lines(&o),
        ["ENOENT", "ENOENT", "EACCES", "ENOENT", listed.as_str()],
        "{}",
        err(&o)
    );
    // Control: without the private /tmp, the name is the host's file (Landlock still refuses it).
    p.private_tmp = false;
    let o = py(&p, &probe(&format!("t(lambda: os.stat({name:?}))")));
    ok(&o);
    assert_eq!(out(&o), "ok");
}

#[test]
fn a_workspace_under_tmp_stays_itself_beside_a_private_tmp() {
    let ws = Ws::new();
    std::fs::write(ws.join("keep"), "workspace").unwrap();
    let mut p = policy(&ws);
    p.private_tmp = true;
    p.cwd = Some(ws.path().to_path_buf());
    let code = probe(&format!(
        "v(open('keep').read())\n\
         open('made', 'w').write('here')\n\
         v(os.getcwd() == {ws:?})\n\
         v(os.listdir('/tmp'))\n\
         os.chdir('/tmp'); os.chdir({ws:?}); v(os.getcwd() == {ws:?})",
        ws = ws.path().display().to_string(),
    ));
    let o = py(&p, &code);
    ok(&o);
    let shown: Vec<String> = ws
        .path()
        .strip_prefix("/tmp")
        .map(|r| vec![r.iter().next().unwrap().to_string_lossy().into_owned()])
        .unwrap_or_default();
    assert_eq!(
        lines(&o),
        [
            "workspace".to_string(),
            "True".into(),
            format!("{shown:?}").replace('"', "'"),
            "True".into()
        ],
        "{}",
        err(&o)
    );
    assert_eq!(std::fs::read_to_string(ws.join("made")).unwrap(), "here");
}

#[test]
fn two_sandboxes_with_the_same_mount_point_see_only_their_own_files() {
    let (a, b) = (Ws::new(), Ws::new());
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = [(a.path().to_path_buf(), "A"), (b.path().to_path_buf(), "B")]
        .into_iter()
        .map(|(host, tag)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut p = mounted(&host);
                p.private_tmp = true;
                let sb = Sandbox::new(p).unwrap();
                let code = format!(
                    "import time, os\n\
                     open('/mnt/data/report.csv', 'w').write('{tag}')\n\
                     open('/tmp/x.py', 'w').write('{tag}')\n\
                     while not os.path.exists('/mnt/data/go'):\n    time.sleep(0.01)\n\
                     print(open('/mnt/data/report.csv').read(), open('/tmp/x.py').read(), sorted(os.listdir('/tmp')))"
                );
                let mut run = sb.spawn(Command::new(["python3", "-c", &code])).unwrap();
                while !host.join("report.csv").exists() {
                    run.step(Some(std::time::Duration::from_millis(10))).unwrap();
                }
                barrier.wait();
                std::fs::write(host.join("go"), "").unwrap();
                (tag, run.wait().unwrap())
            })
        })
        .collect();
    for h in handles {
        let (tag, o) = h.join().unwrap();
        ok(&o);
        assert_eq!(out(&o), format!("{tag} {tag} ['x.py']"), "{}", err(&o));
    }
    assert_eq!(std::fs::read_to_string(a.join("report.csv")).unwrap(), "A");
    assert_eq!(std::fs::read_to_string(b.join("report.csv")).unwrap(), "B");
}

#[test]
fn a_path_flipped_between_real_and_virtual_only_reaches_what_the_policy_allows() {
    let ws = Ws::new();
    let Some(exe) = build_c(ws.path(), "standin_races") else {
        return;
    };
    let marker = format!("hidden-{}", std::process::id());
    let secret = tempfile::Builder::new()
        .prefix("sandlock-race-secret-")
        .tempfile_in("/tmp")
        .unwrap();
    std::fs::write(secret.path(), &marker).unwrap();
    let name = secret.path().display().to_string();
    let host = Ws::new();
    std::fs::write(host.join("ok"), "fine").unwrap();
    std::fs::write(ws.join("ok"), "fine").unwrap();
    let mut p = mounted(host.path());
    p.fs_writable.push(ws.path().to_path_buf());
    p.private_tmp = true;
    // Partners the kernel is left to resolve (a real path, a workspace shown at its own path),
    // and one the supervisor carries out itself (in a mount).
    for partner in ["/etc/passwd".to_string(), ws.s("ok"), "/mnt/data/ok".into()] {
        let o = run(
            &p,
            &[
                exe.to_str().unwrap(),
                "view",
                &partner,
                &name,
                &marker,
                &race_rounds(20000),
            ],
        );
        assert!(
            out(&o).starts_with("held"),
            "{partner}: {} {}",
            out(&o),
            err(&o)
        );
        assert!(!out(&o).contains("(0 opens)"), "{partner}: {}", out(&o));
    }
    // Control: unconfined, the flipped buffer opens the secret within a few tries.
    let c = std::process::Command::new(&exe)
        .args(["view", "/etc/passwd", &name, &marker, &race_rounds(20000)])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&c.stdout).starts_with("escaped"));
}

#[test]
fn a_directory_swapped_for_a_symlink_inside_a_mount_never_leads_out() {
    let (host, outside, ws) = (Ws::new(), Ws::new(), Ws::new());
    let Some(exe) = build_c(ws.path(), "standin_races") else {
        return;
    };
    std::fs::create_dir(host.join("inner")).unwrap();
    std::fs::write(host.join("inner/f"), "x").unwrap();
    std::fs::write(outside.join("f"), "keep me\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), host.join("link")).unwrap();
    let mut p = mounted(host.path());
    p.fs_readable.push(ws.path().to_path_buf());
    let o = run(
        &p,
        &[
            exe.to_str().unwrap(),
            "nested",
            "/mnt/data",
            &outside.s(""),
            &race_rounds(20000),
        ],
    );
    assert!(out(&o).starts_with("held"), "{} {}", out(&o), err(&o));
    assert_eq!(
        std::fs::read_to_string(outside.join("f")).unwrap(),
        "keep me\n"
    );
    // Control: unconfined, on the host directory, the exchange lets the truncation out.
    let c = std::process::Command::new(&exe)
        .args(["nested", &host.s(""), &outside.s(""), &race_rounds(20000)])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&c.stdout).starts_with("escaped"));
}

#[test]
fn policies_that_would_grant_a_hidden_path_are_refused() {
    let ws = Ws::new();
    let cases: Vec<(Policy, &str, &str)> = vec![
        (
            Policy {
                fs_writable: vec!["/tmp".into()],
                private_tmp: true,
                ..Policy::default()
            },
            "fs_writable[0]",
            "/tmp",
        ),
        (
            Policy {
                fs_readable: vec!["/".into()],
                fs_mount: [("/mnt/data".into(), ws.s(""))].into(),
                ..Policy::default()
            },
            "fs_readable[0]",
            "/",
        ),
        (
            Policy {
                fs_mount: [("mnt/data".into(), ws.s(""))].into(),
                ..Policy::default()
            },
            "fs_mount.mnt/data",
            "mnt/data",
        ),
        (
            Policy {
                fs_mount: [("/mnt/data".into(), "/no/such/dir".into())].into(),
                ..Policy::default()
            },
            "fs_mount./mnt/data",
            "/no/such/dir",
        ),
        (
            Policy {
                presets: vec![sandlock_core::Preset::System],
                fs_mount: [("/usr/local/data".into(), ws.s(""))].into(),
                ..Policy::default()
            },
            "presets",
            "/usr",
        ),
        (
            Policy {
                fs_mount: [("/tmp".into(), ws.s(""))].into(),
                private_tmp: true,
                ..Policy::default()
            },
            "fs_mount./tmp",
            "",
        ),
    ];
    for (p, field, value) in cases {
        let e = match Sandbox::new(p) {
            Err(sandlock_core::Error::Policy(e)) => e,
            other => panic!("{field}: expected a policy error, got {:?}", other.err()),
        };
        assert_eq!(e.field, field, "{e}");
        assert!(e.value.starts_with(value), "{e}");
    }
    // Control: a path beside the mount point is fine.
    let mut p = policy(&ws);
    p.fs_mount.insert("/mnt/data".into(), ws.s(""));
    assert!(Sandbox::new(p).is_ok());
}

#[test]
fn chdir_fails_with_eperm_when_the_thread_cannot_be_traced() {
    if is_root() {
        skip(
            "untraceable chdir",
            "as root the supervisor holds CAP_SYS_PTRACE, which traces even a non-dumpable process",
        );
        return;
    }
    let host = Ws::new();
    let code = probe(
        "import ctypes\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         libc.prctl(4, 0, 0, 0, 0)\n\
         t(lambda: os.chdir('/mnt/data'))\n\
         v(os.getcwd() != '/mnt/data')\n\
         libc.prctl(4, 1, 0, 0, 0)\n\
         t(lambda: os.chdir('/mnt/data'))",
    );
    let o = py(&mounted(host.path()), &code);
    ok(&o);
    // Control in the same run: dumpable again, the same chdir works.
    assert_eq!(lines(&o), ["EPERM", "True", "ok"], "{}", err(&o));
}

#[test]
fn truncate_keeps_the_stand_in_s_rules_outside_the_view() {
    for (name, k) in kernels(3) {
        let (ws, host, ro) = (Ws::new(), Ws::new(), Ws::new());
        std::fs::write(ws.join("w"), "abcdef").unwrap();
        std::fs::write(host.join("m"), "abcdef").unwrap();
        std::fs::write(ro.join("r"), "keep").unwrap();
        let mut p = mounted(host.path());
        p.fs_writable.push(ws.path().to_path_buf());
        p.fs_readable.push(ro.path().to_path_buf());
        let code = probe(&format!(
            "t(lambda: os.truncate({w:?}, 1))\n\
             t(lambda: os.truncate('/mnt/data/m', 2))\n\
             t(lambda: os.truncate({r:?}, 0))",
            w = ws.s("w"),
            r = ro.s("r"),
        ));
        let o = py_on(k, &p, &code);
        ok(&o);
        assert_eq!(lines(&o), ["ok", "ok", "EACCES"], "{name}: {}", err(&o));
        assert_eq!(std::fs::read_to_string(ws.join("w")).unwrap(), "a");
        assert_eq!(std::fs::read_to_string(host.join("m")).unwrap(), "ab");
        assert_eq!(std::fs::read_to_string(ro.join("r")).unwrap(), "keep");
    }
}
