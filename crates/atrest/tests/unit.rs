//! The systemd unit (`contrib/atrest.service`) and its drop-ins, read by systemd's own
//! tools: `systemd-analyze verify` must accept every line (a misspelt hardening setting is
//! silently ignored by systemd, so an empty report is the assertion), and `systemd-analyze
//! security --offline` must find the hardening issue 13 asks for in effect. No systemd
//! runs on the test machines (not PID 1), so the unit is checked as systemd would load it,
//! not started.

use std::path::{Path, PathBuf};
use std::process::Command;

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib")
}

/// The unit copied into `dir`, its ExecStart pointing at the built binary (verify checks
/// that the program exists), with the FUSE drop-in beside it when `fuse`.
fn install(dir: &Path, fuse: bool) -> PathBuf {
    install_with(dir, if fuse { &["fuse-exports.conf"] } else { &[] })
}

/// The unit with the named drop-ins of `contrib/atrest.service.d/`.
fn install_with(dir: &Path, drop_ins: &[&str]) -> PathBuf {
    let text = std::fs::read_to_string(contrib().join("atrest.service")).unwrap();
    assert!(
        text.contains("ExecStart=/usr/local/bin/atrest serve"),
        "{text}"
    );
    let unit = dir.join("atrest.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/atrest", env!("CARGO_BIN_EXE_atrest")),
    )
    .unwrap();
    if !drop_ins.is_empty() {
        let d = dir.join("atrest.service.d");
        std::fs::create_dir(&d).unwrap();
        for name in drop_ins {
            std::fs::copy(contrib().join("atrest.service.d").join(name), d.join(name)).unwrap();
        }
    }
    unit
}

fn analyze(args: &[&str], unit: &Path) -> String {
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/setup-peers.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze {args:?}: {text}");
    text
}

/// The lines of `security`'s table that start with `✓ SETTING` or `✗ SETTING`.
fn passes(report: &str, setting: &str) -> bool {
    let line = report
        .lines()
        .find(|l| l[l.find(' ').map_or(0, |i| i + 1)..].starts_with(setting))
        .unwrap_or_else(|| panic!("{setting} is not in the report:\n{report}"));
    line.starts_with('✓')
}

fn exposure(report: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level:\n{report}"));
    line.split(": ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Settings the unit needs whichever exports are used.
const ALWAYS: [&str; 7] = [
    "NoNewPrivileges=",
    "MemoryDenyWriteExecute=",
    "LockPersonality=",
    "RestrictSUIDSGID=",
    "RestrictNamespaces=~mnt",
    "SystemCallArchitectures=",
    "ProtectClock=",
];

#[test]
fn the_unit_is_valid_and_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let unit = install(dir.path(), false);
    let verify = analyze(&["verify"], &unit);
    assert!(verify.trim().is_empty(), "systemd-analyze verify: {verify}");
    let report = analyze(&["security", "--offline=yes", "--no-pager"], &unit);
    for s in ALWAYS.iter().chain(&[
        "ProtectSystem=",
        "ProtectHome=",
        "PrivateTmp=",
        "ProtectKernelModules=",
    ]) {
        assert!(passes(&report, s), "{s} not in effect:\n{report}");
    }
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in ["ProtectSystem=strict", "LimitCORE=0", "Type=notify"] {
        assert!(text.lines().any(|l| l == line), "{line} missing");
    }
    let e = exposure(&report);
    assert!(e <= 4.0, "exposure {e}:\n{report}");
}

#[test]
fn the_fuse_drop_in_lifts_only_the_mount_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let unit = install(dir.path(), true);
    let verify = analyze(&["verify"], &unit);
    assert!(verify.trim().is_empty(), "systemd-analyze verify: {verify}");
    let report = analyze(&["security", "--offline=yes", "--no-pager"], &unit);
    // The drop-in is read (the mount namespace is gone) ...
    assert!(!passes(&report, "ProtectSystem="), "{report}");
    assert!(!passes(&report, "PrivateTmp="), "{report}");
    // ... and nothing else is given up.
    for s in ALWAYS {
        assert!(
            passes(&report, s),
            "{s} not in effect with the drop-in:\n{report}"
        );
    }
    let e = exposure(&report);
    assert!(e <= 5.0, "exposure {e}:\n{report}");
}

/// The web page's drop-in opens the configuration's folder for writing (the page saves
/// settings and its certificate there) and gives up nothing else.
#[test]
fn the_web_page_drop_in_opens_only_the_configuration_folder() {
    let dir = tempfile::tempdir().unwrap();
    let unit = install_with(dir.path(), &["web-page.conf"]);
    let verify = analyze(&["verify"], &unit);
    assert!(verify.trim().is_empty(), "systemd-analyze verify: {verify}");
    let text = std::fs::read_to_string(dir.path().join("atrest.service.d/web-page.conf")).unwrap();
    let settings: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(settings, ["[Service]", "ReadWritePaths=/etc/atrest"]);
    let report = analyze(&["security", "--offline=yes", "--no-pager"], &unit);
    for s in ALWAYS
        .iter()
        .chain(&["ProtectSystem=", "ProtectHome=", "PrivateTmp="])
    {
        assert!(
            passes(&report, s),
            "{s} not in effect with the drop-in:\n{report}"
        );
    }
    let e = exposure(&report);
    assert!(e <= 4.0, "exposure {e}:\n{report}");
}
