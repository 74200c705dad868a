//! Throw-away certificates made with `openssl` for TLS tests: a CA and a
//! server certificate for chosen names, signed by it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run `openssl` in `dir`; panics with its stderr if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA: `<name>.pem` and `<name>.key` in `dir`.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let subj = format!("/CN={name}");
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &pem,
            "-days", "2", "-subj", &subj,
        ],
    );
    dir.join(pem)
}

/// A server certificate `<name>.pem` / `<name>.key` signed by CA `ca`
/// (made by [`make_ca`]), valid for `san` (e.g. `"IP:127.0.0.1"`).
pub fn make_server_cert(dir: &Path, ca: &str, name: &str, san: &str) -> (PathBuf, PathBuf) {
    make_cert(
        dir,
        ca,
        name,
        &format!("subjectAltName={san}\nextendedKeyUsage=serverAuth\n"),
    )
}

/// A client certificate `<name>.pem` / `<name>.key` signed by CA `ca`.
pub fn make_client_cert(dir: &Path, ca: &str, name: &str) -> (PathBuf, PathBuf) {
    make_cert(dir, ca, name, "extendedKeyUsage=clientAuth\n")
}

fn make_cert(dir: &Path, ca: &str, name: &str, extensions: &str) -> (PathBuf, PathBuf) {
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), extensions).expect("ext file");
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let subj = format!("/CN={name}");
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj,
        ],
    );
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    (dir.join(pem), dir.join(key))
}
