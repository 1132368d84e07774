//! Calls pjdfstest does not cover: renameat2 flags, extended attributes, and what
//! `allow_other` changes for other users.

use crate::harness::{sh, Mount};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    let (f, t) = (cpath(from), cpath(to));
    // SAFETY: two NUL-terminated paths that outlive the call; AT_FDCWD directories.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn rename_noreplace_and_exchange() {
    let mut m = Mount::new();
    let (a, b) = (m.path("a"), m.path("b"));
    fs::write(&a, b"content of a").unwrap();
    fs::write(&b, b"content of b").unwrap();

    let err =
        renameat2(&a, &b, libc::RENAME_NOREPLACE).expect_err("NOREPLACE onto an existing name");
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
    assert_eq!(
        fs::read(&b).unwrap(),
        b"content of b",
        "NOREPLACE must not touch the target"
    );

    renameat2(&a, &b, libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(&a).unwrap(), b"content of b");
    assert_eq!(fs::read(&b).unwrap(), b"content of a");

    // Exchange a file with a directory, across directories.
    let d = m.path("dir");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("inside"), b"x").unwrap();
    let sub = m.path("sub");
    fs::create_dir(&sub).unwrap();
    let f = sub.join("file");
    fs::write(&f, b"file").unwrap();
    renameat2(&d, &f, libc::RENAME_EXCHANGE).unwrap();
    assert!(m.path("sub/file").is_dir() && m.path("sub/file/inside").exists());
    assert_eq!(fs::read(m.path("dir")).unwrap(), b"file");
    // `..` of the moved directory now points at its new parent.
    assert_eq!(
        fs::metadata(m.path("sub/file/..")).unwrap().ino(),
        fs::metadata(&sub).unwrap().ino()
    );

    renameat2(&m.path("new"), &m.path("other"), libc::RENAME_NOREPLACE)
        .expect_err("missing source");
    renameat2(&m.path("dir"), &m.path("fresh"), libc::RENAME_NOREPLACE).unwrap();

    m.stop();
    m.start();
    assert_eq!(fs::read(m.path("a")).unwrap(), b"content of b");
    assert_eq!(fs::read(m.path("b")).unwrap(), b"content of a");
    assert_eq!(fs::read(m.path("fresh")).unwrap(), b"file");
    assert!(m.path("sub/file/inside").exists());
    assert!(!m.path("dir").exists());
}

fn setxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> std::io::Result<()> {
    let (p, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid C strings and a value slice that outlive the call.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn getxattr(p: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let (p, n) = (cpath(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C strings; the buffer is writable for its whole length.
    let rc = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(rc as usize);
    Ok(buf)
}

fn listxattr(p: &Path) -> Vec<String> {
    let p = cpath(p);
    let mut buf = vec![0u8; 65536];
    // SAFETY: a valid C string; the buffer is writable for its whole length.
    let rc = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(rc >= 0, "listxattr: {}", std::io::Error::last_os_error());
    buf.truncate(rc as usize);
    let mut names: Vec<String> = buf
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    names
}

fn removexattr(p: &Path, name: &str) -> std::io::Result<()> {
    let (p, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid C strings that outlive the call.
    let rc = unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn xattrs_set_get_list_remove_and_persist() {
    let mut m = Mount::new();
    let f = m.path("f");
    fs::write(&f, b"data").unwrap();
    let big = vec![0xABu8; 4000];
    setxattr(&f, "user.model", b"SmolLM2-135M", 0).unwrap();
    setxattr(&f, "user.empty", b"", 0).unwrap();
    setxattr(&f, "user.big", &big, 0).unwrap();
    assert_eq!(getxattr(&f, "user.model").unwrap(), b"SmolLM2-135M");
    assert_eq!(getxattr(&f, "user.empty").unwrap(), b"");
    assert_eq!(listxattr(&f), ["user.big", "user.empty", "user.model"]);

    let err =
        setxattr(&f, "user.model", b"x", libc::XATTR_CREATE).expect_err("XATTR_CREATE on existing");
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
    let err =
        setxattr(&f, "user.none", b"x", libc::XATTR_REPLACE).expect_err("XATTR_REPLACE on missing");
    assert_eq!(err.raw_os_error(), Some(libc::ENODATA), "{err}");
    let err = getxattr(&f, "user.none").expect_err("missing xattr");
    assert_eq!(err.raw_os_error(), Some(libc::ENODATA), "{err}");
    setxattr(&f, "user.model", b"Gemma-3-270M", libc::XATTR_REPLACE).unwrap();
    removexattr(&f, "user.empty").unwrap();
    let err = removexattr(&f, "user.empty").expect_err("remove twice");
    assert_eq!(err.raw_os_error(), Some(libc::ENODATA), "{err}");

    // On a directory too, and surviving a rename.
    let d = m.path("d");
    fs::create_dir(&d).unwrap();
    setxattr(&d, "user.kind", b"archive", 0).unwrap();
    fs::rename(&f, m.path("g")).unwrap();

    m.stop();
    m.start();
    let g = m.path("g");
    assert_eq!(getxattr(&g, "user.model").unwrap(), b"Gemma-3-270M");
    assert_eq!(getxattr(&g, "user.big").unwrap(), big);
    assert_eq!(listxattr(&g), ["user.big", "user.model"]);
    assert_eq!(getxattr(&d, "user.kind").unwrap(), b"archive");
    fs::remove_file(&g).unwrap();
    assert!(!g.exists());
}

/// `sh -c cmd` as nobody (uid and gid 65534, no supplementary groups).
fn as_nobody(cmd: &str) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            cmd,
        ])
        .output()
        .unwrap()
}

/// Without allow_other only the mounting user (root here) may use the mount; with it,
/// others may, within the file modes.
#[test]
fn allow_other_lets_other_users_in() {
    let m = Mount::new();
    fs::write(m.path("public"), b"hello").unwrap();
    sh(&format!("chmod 644 {}", m.path("public").display()));
    let out = as_nobody(&format!("cat {}", m.path("public").display()));
    assert!(
        !out.status.success(),
        "without allow_other, nobody must not read the mount"
    );
    drop(m);

    let m = Mount::with_options(&["allow_other", "default_permissions"]);
    fs::write(m.path("public"), b"hello").unwrap();
    fs::write(m.path("private"), b"secret").unwrap();
    sh(&format!(
        "chmod 644 {}; chmod 600 {}",
        m.path("public").display(),
        m.path("private").display()
    ));
    let out = as_nobody(&format!("cat {}", m.path("public").display()));
    assert!(
        out.status.success(),
        "nobody reads a 644 file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello");
    let out = as_nobody(&format!("cat {}", m.path("private").display()));
    assert!(
        !out.status.success(),
        "nobody must not read a 600 file of root's"
    );
    let out = as_nobody(&format!("touch {}/by-nobody", m.mnt.display()));
    assert!(
        !out.status.success(),
        "nobody must not create in root's 755 directory"
    );
}

/// The daemon tells the kernel it drops set-id bits and capabilities itself
/// (FUSE_HANDLE_KILLPRIV_V2), which spares a getxattr round trip per write: what the
/// kernel's own check did must still happen, also on a file the kernel has seen written
/// before (and so marked as having nothing to drop) when a chmod or a capability comes.
#[test]
fn writes_truncates_and_chowns_drop_setid_bits_and_capabilities() {
    let m = Mount::with_options(&["allow_other", "default_permissions"]);
    // A version-2 capability set (CAP_NET_BIND_SERVICE permitted), as setcap writes it.
    let cap: &[u8] = &[
        1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let name = "security.capability";
    for op in ["write", "truncate", "chown"] {
        let f = m.path(&format!("cap-{op}"));
        fs::write(&f, b"first").unwrap();
        sh(&format!("echo again >> {}", f.display()));
        setxattr(&f, name, cap, 0).unwrap();
        assert_eq!(getxattr(&f, name).unwrap(), cap);
        match op {
            "write" => sh(&format!("echo more >> {}", f.display())),
            "truncate" => sh(&format!("truncate -s 2 {}", f.display())),
            _ => sh(&format!("chown 1000 {}", f.display())),
        };
        let err = getxattr(&f, name).expect_err("the capability must be gone");
        assert_eq!(err.raw_os_error(), Some(libc::ENODATA), "{op}: {err}");
    }

    let as_nobody = |cmd: &str| {
        let out = as_nobody(cmd);
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
    for op in [
        "write",
        "truncate",
        "same-size truncate",
        "chown to nobody",
        "chown -1 -1",
    ] {
        let f = m.path(&format!("setid-{}", op.replace(' ', "-")));
        fs::write(&f, b"data").unwrap();
        sh(&format!("chmod 0777 {}", f.display()));
        as_nobody(&format!("echo by-nobody >> {}", f.display()));
        sh(&format!("chown 65534:65534 {}", f.display()));
        as_nobody(&format!("chmod 06777 {}", f.display()));
        assert_eq!(mode(&f), 0o6777);
        // Root keeps the bits (CAP_FSETID); anyone else's write or truncate drops both
        // (set-group-ID with the group's execute bit, as the kernel does), and so does
        // a chown, even one that names no new owner (as ext4 does).
        sh(&format!("echo by-root >> {}", f.display()));
        assert_eq!(mode(&f), 0o6777, "root's write");
        let size = fs::metadata(&f).unwrap().len();
        let p = f.display();
        as_nobody(&match op {
            "write" => format!("echo by-nobody >> {p}"),
            "truncate" => format!("truncate -s 1 {p}"),
            "same-size truncate" => format!("truncate -s {size} {p}"),
            "chown to nobody" => format!("chown nobody {p}"),
            _ => format!("perl -e 'chown(-1, -1, $ARGV[0]) or die \"$!\"' {p}"),
        });
        assert_eq!(mode(&f), 0o777, "{op} by nobody");
    }
}
