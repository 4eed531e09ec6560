//! Serves a raw file over NBD: the benchmark peer of `qemu-nbd -f raw` (see
//! `bench/nbd-raw.sh`), and a quick way to poke at the server by hand.
//!
//! ```text
//! cargo run --release -p nbd --example serve_file -- FILE (--socket PATH | --tcp 127.0.0.1:PORT)
//!     [--name NAME] [--sector 512|4096] [--workers N] [--read-only] [--trim]
//! ```
//!
//! Reads and writes are `pread`/`pwrite` through the page cache, flush is `fdatasync`, a
//! FUA write is a write then `fdatasync`; write-zeroes is the trait's default (zero
//! buffers). Set `NBD_LOG=info` (or `debug`) for a log on stderr.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use nbd::{BlockExport, BlockSize, ExportConfig, ListenAddr, Server, ServerOptions};

struct FileExport {
    file: File,
    size: u64,
    sector: u32,
    read_only: bool,
    trim: bool,
}

impl BlockExport for FileExport {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_size(&self) -> BlockSize {
        BlockSize::for_sector(self.sector)
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write(&self, offset: u64, buf: &[u8], fua: bool) -> io::Result<()> {
        self.file.write_all_at(buf, offset)?;
        if fua {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn can_trim(&self) -> bool {
        self.trim
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        // A hint only: zeroing keeps the example portable (no hole punching).
        self.write_zeroes(offset, len, false)
    }
}

struct StderrLog(log::LevelFilter);

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.0
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("[{} {}] {}", r.level(), r.target(), r.args());
        }
    }

    fn flush(&self) {}
}

fn usage() -> ! {
    eprintln!(
        "usage: serve_file FILE (--socket PATH | --tcp 127.0.0.1:PORT) [--name NAME] \
         [--sector 512|4096] [--workers N] [--read-only] [--trim]"
    );
    std::process::exit(2)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(level) = std::env::var("NBD_LOG") {
        let level = level.parse().unwrap_or(log::LevelFilter::Info);
        let _ = log::set_logger(Box::leak(Box::new(StderrLog(level))));
        log::set_max_level(level);
    }
    let mut args = std::env::args().skip(1);
    let mut file: Option<PathBuf> = None;
    let mut addrs = Vec::new();
    let mut name = "file".to_owned();
    let mut sector = 512u32;
    let mut read_only = false;
    let mut trim = false;
    let mut options = ServerOptions::default();
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--socket" => addrs.push(ListenAddr::Unix(value().into())),
            "--tcp" => addrs.push(ListenAddr::Tcp(value().parse()?)),
            "--name" => name = value(),
            "--sector" => sector = value().parse()?,
            "--workers" => options.workers_per_connection = value().parse()?,
            "--read-only" => read_only = true,
            "--trim" => trim = true,
            _ if a.starts_with('-') || file.is_some() => usage(),
            _ => file = Some(a.into()),
        }
    }
    let Some(path) = file else { usage() };
    if addrs.is_empty() {
        usage();
    }
    let f = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(&path)?;
    let size = f.metadata()?.len();
    let export = FileExport {
        file: f,
        size,
        sector,
        read_only,
        trim,
    };
    let server = Server::bind(&addrs, options)?;
    server.add_export(
        ExportConfig::new(name)
            .description(path.display().to_string())
            .default_export(),
        Arc::new(export),
    )?;
    for a in server.local_addrs() {
        eprintln!("serving {} ({size} bytes) on {a}", path.display());
    }
    server.run()?;
    Ok(())
}
