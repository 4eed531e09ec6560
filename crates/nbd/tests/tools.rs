//! The server against the real clients: nbdinfo, qemu-io, qemu-img, nbdcopy, fio (libnbd
//! engine), over a Unix socket and loopback TCP. The tools are required: a missing one
//! fails the test.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{pattern, run_ok, tool, write_file, TestServer};
use nbd::{BlockSize, ExportConfig, ListenAddr, ListenError, MemExport, Server, ServerOptions};

fn field<'a>(info: &'a str, key: &str) -> &'a str {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("nbdinfo shows no {key}:\n{info}"))
}

/// `qemu-io` on the raw image at `uri`, running `commands` (each a `-c`) in order.
fn qemu_io(uri: &str, commands: &[&str]) -> Command {
    let mut c = tool("qemu-io");
    c.args(["-f", "raw", uri]);
    for command in commands {
        c.args(["-c", command]);
    }
    c
}

/// `qemu-img convert -n`: writes the raw file `input` onto the export at `uri`.
fn qemu_img_write(input: &Path, uri: &str) {
    run_ok(
        tool("qemu-img")
            .args(["convert", "-n", "-f", "raw", "-O", "raw"])
            .arg(input)
            .arg(uri),
    );
}

/// fio's libnbd engine on `uri`: random 4 KiB reads and writes, 32 in flight, over `size`
/// bytes, every block verified (crc32c) and the first mismatch fatal.
fn fio_randrw_verified(uri: &str, size: &str) -> Command {
    let mut c = tool("fio");
    c.args([
        "--name=randrw",
        "--ioengine=nbd",
        &format!("--uri={uri}"),
        "--rw=randrw",
        "--bs=4k",
        "--iodepth=32",
        &format!("--size={size}"),
        "--verify=crc32c",
        "--verify_fatal=1",
        "--verify_state_save=0",
        "--do_verify=1",
    ]);
    c
}

#[test]
fn nbdinfo_shows_export_and_block_sizes() {
    let e = Arc::new(MemExport::new(64 << 20, 4096));
    let s = TestServer::start(vec![(
        ExportConfig::new("vol0")
            .description("test volume")
            .default_export(),
        e,
    )]);
    let info = run_ok(tool("nbdinfo").arg(s.uri()));
    assert_eq!(field(&info, "export-size"), "67108864 (64M)");
    assert_eq!(field(&info, "block_size_minimum"), "4096");
    assert_eq!(field(&info, "block_size_preferred"), "4096");
    assert_eq!(field(&info, "block_size_maximum"), "33554432");
    assert_eq!(field(&info, "description"), "test volume");
    assert_eq!(field(&info, "is_read_only"), "false");
    assert_eq!(field(&info, "can_multi_conn"), "true");
    assert_eq!(field(&info, "can_flush"), "true");
    assert_eq!(field(&info, "can_fua"), "true");
    assert_eq!(field(&info, "can_zero"), "true");
    assert_eq!(field(&info, "can_trim"), "false");
    assert!(info.contains("newstyle-fixed"), "{info}");

    // The same export by name, and an unknown name refused.
    let info = run_ok(tool("nbdinfo").arg(s.uri_of("vol0")));
    assert_eq!(field(&info, "export-size"), "67108864 (64M)");
    let out = tool("nbdinfo").arg(s.uri_of("nope")).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn nbdinfo_lists_exports_read_only_and_trim() {
    let a = Arc::new(MemExport::new(1 << 20, 512).read_only());
    let b = Arc::new(MemExport::new(2 << 20, 512).with_trim());
    let s = TestServer::start(vec![
        (ExportConfig::new("ro").description("read-only one"), a),
        (ExportConfig::new("trim"), b),
    ]);
    let list = run_ok(tool("nbdinfo").arg("--list").arg(s.uri()));
    assert!(list.contains("export=\"ro\""), "{list}");
    assert!(list.contains("export=\"trim\""), "{list}");
    assert!(list.contains("read-only one"), "{list}");
    let ro = run_ok(tool("nbdinfo").arg(s.uri_of("ro")));
    assert_eq!(field(&ro, "is_read_only"), "true");
    assert_eq!(field(&ro, "block_size_minimum"), "512");
    let t = run_ok(tool("nbdinfo").arg(s.uri_of("trim")));
    assert_eq!(field(&t, "can_trim"), "true");
    assert_eq!(field(&t, "export-size"), "2097152 (2M)");
    // Two exports and no default: the empty name selects nothing.
    let out = tool("nbdinfo").arg(s.uri()).output().unwrap();
    assert!(!out.status.success());
    // Writing to the read-only export fails cleanly.
    let out = qemu_io(&s.uri_of("ro"), &["write -P 1 0 4k"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() || text.contains("failed"), "{text}");
}

#[test]
fn qemu_io_aligned_and_unaligned() {
    let (s, e) = TestServer::mem(16 << 20, 512);
    let out = run_ok(&mut qemu_io(
        &s.uri(),
        &[
            "write -P 0xab 0 1M",
            "read -P 0xab 0 1M",
            // Unaligned: qemu's block layer does the read-modify-write around our 512-byte
            // minimum block size.
            "write -P 0xcd 1000 3000",
            "read -P 0xcd 1000 3000",
            "read -P 0xab 0 1000",
            "read -P 0xab 4000 1044480",
            "write -z 65536 65536",
            "read -P 0 65536 65536",
            "flush",
            "aio_write -P 0x11 2M 512k",
            "aio_write -P 0x22 3M 512k",
            "aio_flush",
            "read -P 0x11 2M 512k",
            "read -P 0x22 3M 512k",
        ],
    ));
    assert!(!out.contains("Pattern verification failed"), "{out}");
    assert!(!out.contains("failed"), "{out}");
    let c = e.contents();
    assert!(c[..1000].iter().all(|&b| b == 0xab));
    assert!(c[1000..4000].iter().all(|&b| b == 0xcd));
    assert!(c[4000..65536].iter().all(|&b| b == 0xab));
    assert!(c[65536..131072].iter().all(|&b| b == 0));
    assert!(c[(2 << 20)..(2 << 20) + (512 << 10)]
        .iter()
        .all(|&b| b == 0x11));
}

#[test]
fn qemu_img_convert_both_ways() {
    let size = 8 << 20;
    let (s, e) = TestServer::mem(size, 512);
    let data = pattern(size, 1);
    e.fill(0, &data);
    let out = s.dir.path().join("out.raw");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw", &s.uri()])
            .arg(&out),
    );
    assert!(
        std::fs::read(&out).unwrap() == data,
        "qemu-img read back other bytes"
    );

    let input = s.dir.path().join("in.raw");
    let data2 = pattern(size, 2);
    write_file(&input, &data2);
    qemu_img_write(&input, &s.uri());
    assert!(e.contents() == data2, "qemu-img wrote other bytes");
}

#[test]
fn nbdcopy_64mib_both_ways() {
    let size = 64 << 20;
    let (s, e) = TestServer::mem(size, 4096);
    let input = s.dir.path().join("in.raw");
    let data = pattern(size, 3);
    write_file(&input, &data);
    // nbdcopy uses several connections at once (we advertise multi-conn) and many requests
    // in flight on each.
    run_ok(tool("nbdcopy").arg(&input).arg(s.uri()));
    assert!(e.contents() == data, "nbdcopy wrote other bytes");
    let out = s.dir.path().join("out.raw");
    run_ok(tool("nbdcopy").arg(s.uri()).arg(&out));
    assert!(
        std::fs::read(&out).unwrap() == data,
        "nbdcopy read other bytes"
    );
    // And one connection, one request at a time, 1 MiB requests.
    let out1 = s.dir.path().join("out1.raw");
    run_ok(
        tool("nbdcopy")
            .args(["--connections=1", "--requests=1", "--request-size=1048576"])
            .arg(s.uri())
            .arg(&out1),
    );
    assert!(std::fs::read(&out1).unwrap() == data);
}

#[test]
fn fio_randrw_depth_32_verifies() {
    let (s, _e) = TestServer::mem(64 << 20, 512);
    let out = run_ok(&mut fio_randrw_verified(&s.uri(), "64M"));
    // fio exits non-zero on a verify mismatch (verify_fatal); check it also said so.
    assert!(out.contains("err= 0"), "{out}");
    assert!(
        !out.contains("bad magic") && !out.contains("verify failed"),
        "{out}"
    );
    assert!(out.contains("iodepth=32"), "{out}");
}

#[test]
fn tcp_loopback_and_non_loopback_refused() {
    let e = Arc::new(MemExport::new(4 << 20, 512));
    let s = TestServer::start_with(
        vec![(ExportConfig::new("tcp").default_export(), e.clone())],
        ServerOptions::default(),
        &[ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())],
    );
    let uri = format!("nbd://127.0.0.1:{}/tcp", s.tcp_port());
    let info = run_ok(tool("nbdinfo").arg(&uri));
    assert_eq!(field(&info, "export-size"), "4194304 (4M)");
    run_ok(&mut qemu_io(
        &uri,
        &["write -P 0x5a 512 64k", "read -P 0x5a 512 64k"],
    ));
    assert!(e.contents()[512..512 + 65536].iter().all(|&b| b == 0x5a));

    for bad in ["0.0.0.0:0", "[::]:0", "192.0.2.1:10809"] {
        let addr: SocketAddr = bad.parse().unwrap();
        let err = Server::bind(&[ListenAddr::Tcp(addr)], ServerOptions::default()).unwrap_err();
        assert!(
            matches!(err, ListenError::NotLoopback(a) if a == addr),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains("not a loopback address"), "{err}");
    }
}

#[test]
fn export_with_small_maximum_is_honoured() {
    // An export asking for 64 KiB requests: qemu-img splits its I/O accordingly.
    let e = Arc::new(MemExport::new(4 << 20, 512).with_block_size(BlockSize {
        minimum: 512,
        preferred: 4096,
        maximum: 64 << 10,
    }));
    let s = TestServer::start(vec![(
        ExportConfig::new("small").default_export(),
        e.clone(),
    )]);
    let info = run_ok(tool("nbdinfo").arg(s.uri()));
    assert_eq!(field(&info, "block_size_maximum"), "65536");
    let data = pattern(4 << 20, 9);
    let input = s.dir.path().join("in.raw");
    write_file(&input, &data);
    qemu_img_write(&input, &s.uri());
    assert!(e.contents() == data);
}

/// Flips one bit of every read: the negative control showing the fio test can fail.
struct Corrupting(MemExport);

impl nbd::BlockExport for Corrupting {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn block_size(&self) -> BlockSize {
        self.0.block_size()
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, buf)?;
        if let Some(b) = buf.last_mut() {
            *b ^= 1;
        }
        Ok(())
    }
    fn write(&self, offset: u64, buf: &[u8], fua: bool) -> std::io::Result<()> {
        self.0.write(offset, buf, fua)
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn fio_verify_catches_corruption() {
    let e = Arc::new(Corrupting(MemExport::new(8 << 20, 512)));
    let s = TestServer::start(vec![(ExportConfig::new("bad").default_export(), e)]);
    let out = fio_randrw_verified(&s.uri(), "8M").output().unwrap();
    assert!(
        !out.status.success(),
        "fio did not notice: {}",
        common::describe(&out)
    );
}
