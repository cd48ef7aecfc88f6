//! The Debian package, built by `scripts/package-deb.sh` from the binary these tests
//! run (the debug build; a release is packaged the same way), unpacked into a
//! scratch root and run from there: `--version`, `check` on the config it installs,
//! the systemd unit through `systemd-analyze verify`, the man pages and completions.
//! A tool it needs that is missing fails the test with the command that installs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The tools the test runs, how to ask each for its version, and how to install it.
const TOOLS: &[(&str, &[&str], &str)] = &[
    (
        "cargo",
        &["deb", "--version"],
        "cargo install cargo-deb --locked",
    ),
    ("dpkg-deb", &["--version"], "apt-get install dpkg"),
    ("systemd-analyze", &["--version"], "apt-get install systemd"),
    ("bash", &["--version"], "apt-get install bash"),
];

fn require_tools() {
    for (tool, args, install) in TOOLS {
        let found = Command::new(tool)
            .args(*args)
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "`{tool} {}` does not run: install it with `{install}`",
            args.join(" ")
        );
    }
}

fn ok(what: &str, out: std::io::Result<Output>) -> String {
    let out = out.unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The target directory the tested binary was built in (`.../target/debug/ringway`).
fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_ringway"));
    bin.parent()
        .and_then(Path::parent)
        .expect("the binary sits in TARGET/PROFILE/")
        .to_owned()
}

/// Builds the package into `out`; returns the .deb's path.
fn package(out: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package-deb.sh");
    let stdout = ok(
        "scripts/package-deb.sh",
        Command::new(&script)
            .env("PROFILE", "dev")
            .env("NO_BUILD", "1")
            .env("OUT", out)
            .env("CARGO_TARGET_DIR", target_dir())
            .output(),
    );
    let deb = PathBuf::from(stdout.lines().last().expect("the .deb's path").trim());
    assert!(deb.is_file(), "no package at {}", deb.display());
    deb
}

#[test]
fn the_debian_package_installs_a_working_binary_config_unit_and_docs() {
    require_tools();
    let scratch = tempfile::tempdir().unwrap();
    let deb = package(&scratch.path().join("out"));

    let fields = ok(
        "dpkg-deb --field",
        Command::new("dpkg-deb")
            .arg("--field")
            .arg(&deb)
            .args(["Package", "Version", "Depends"])
            .output(),
    );
    assert!(fields.contains("Package: ringway\n"), "{fields}");
    let version = format!("Version: {}-1\n", env!("CARGO_PKG_VERSION"));
    assert!(fields.contains(&version), "{fields}");
    assert!(fields.contains("libc6"), "{fields}");

    // The control files: the config is a conffile, and the maintainer scripts tell
    // systemd about the unit.
    let control = scratch.path().join("control");
    ok(
        "dpkg-deb -e",
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(&deb)
            .arg(&control)
            .output(),
    );
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/ringway/ringway.yaml");
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("daemon-reload"), "{postinst}");

    let root = scratch.path().join("root");
    ok(
        "dpkg-deb -x",
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&root)
            .output(),
    );
    let bin = root.join("usr/bin/ringway");
    let config = root.join("etc/ringway/ringway.yaml");
    let said = ok(
        "ringway --version",
        Command::new(&bin).arg("--version").output(),
    );
    assert_eq!(
        said.trim(),
        format!("ringway {}", env!("CARGO_PKG_VERSION"))
    );
    let said = ok(
        "ringway check",
        Command::new(&bin)
            .arg("check")
            .arg("-c")
            .arg(&config)
            .output(),
    );
    assert!(said.contains(": valid"), "{said}");
    let installed = std::fs::read_to_string(&config).unwrap();
    assert!(
        installed.contains("data_dir: /var/lib/ringway"),
        "{installed}"
    );

    unit_verifies(&root, &bin, scratch.path());
    docs_installed(&root);
}

/// The unit has what a daemon's unit needs, and `systemd-analyze verify` finds no
/// fault in it: the same file, with `/usr/bin/ringway` pointing into the scratch root
/// since the package is not installed on this machine.
fn unit_verifies(root: &Path, bin: &Path, scratch: &Path) {
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/ringway.service"))
        .or_else(|_| std::fs::read_to_string(root.join("lib/systemd/system/ringway.service")))
        .expect("the unit is installed under /usr/lib/systemd/system or /lib/systemd/system");
    for line in [
        "ExecStartPre=/usr/bin/ringway check -c /etc/ringway/ringway.yaml",
        "ExecStart=/usr/bin/ringway run -c /etc/ringway/ringway.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=ringway",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "LimitNOFILE=",
        "Restart=on-failure",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "the unit lacks {line:?}"
        );
    }
    let dir = scratch.join("unit");
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("ringway.service");
    let bin = bin.to_str().expect("a UTF-8 scratch path");
    std::fs::write(&copy, unit.replace("/usr/bin/ringway", bin)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    // Warnings (an unknown key, a key in the wrong section) exit 0: none is allowed.
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");
}

fn docs_installed(root: &Path) {
    let man = root.join("usr/share/man/man1");
    for page in [
        "ringway.1.gz",
        "ringway-run.1.gz",
        "ringway-cluster-status.1.gz",
    ] {
        let text = ok(
            "gzip -dc",
            Command::new("gzip").arg("-dc").arg(man.join(page)).output(),
        );
        assert!(text.contains(".TH ringway"), "{page}: {text}");
    }
    let bash = root.join("usr/share/bash-completion/completions/ringway");
    let registered = ok(
        "bash completion",
        Command::new("bash")
            .arg("-c")
            .arg(format!("source {} && complete -p ringway", bash.display()))
            .output(),
    );
    assert!(registered.contains("ringway"), "{registered}");
    for file in [
        "usr/share/zsh/vendor-completions/_ringway",
        "usr/share/fish/vendor_completions.d/ringway.fish",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(text.contains("cluster"), "{file}");
    }
}
