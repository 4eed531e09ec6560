//! The one place that decides how results reach the operator: text on a terminal, a
//! progress bar, or JSON lines for scripts, the daemon and the web page.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde_json::json;
use service::ops::convert::ConvertReport;
use service::progress::{Event, Observer};
use volume::text::shown;

/// One JSON event on stdout. A reader that has gone away (a daemon restarting) must not
/// stop a conversion half-way, so a failed write is ignored.
pub fn event(v: serde_json::Value) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{v}");
}

/// Shows a conversion's progress: JSON lines, a bar on a terminal, or a line every few
/// seconds.
pub struct Reporter {
    json: bool,
    bar: Option<ProgressBar>,
    device: String,
    started: Instant,
    first: Option<u64>,
    last_line: Instant,
}

impl Reporter {
    pub fn new(json: bool, device: &Path) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b
        });
        Self {
            json,
            bar,
            device: device.display().to_string(),
            started: Instant::now(),
            first: None,
            last_line: Instant::now() - Duration::from_secs(60),
        }
    }

    fn rate(&self, done: u64) -> f64 {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        done.saturating_sub(self.first.unwrap_or(0)) as f64 / secs
    }

    fn progress(&mut self, kind: volume::convert::Kind, done: u64, total: u64) {
        let first = *self.first.get_or_insert(done);
        let rate = self.rate(done);
        let left = if rate > 0.0 {
            (total - done) as f64 / rate
        } else {
            f64::NAN
        };
        if self.json {
            event(
                json!({"event": "progress", "operation": kind.as_str(), "device": self.device,
                       "done": done, "total": total, "bytes_per_second": rate.round(),
                       "seconds_left": if left.is_finite() { Some(left.round()) } else { None }}),
            );
        } else if let Some(b) = &self.bar {
            b.set_message(kind.as_str());
            b.set_length(total);
            if done == first {
                b.reset_eta();
            }
            b.set_position(done);
        } else if self.last_line.elapsed() >= Duration::from_secs(5) || done == total {
            self.last_line = Instant::now();
            eprintln!(
                "{}: {} {} of {} ({:.0}%), {}/s{}",
                self.device,
                kind.as_str(),
                HumanBytes(done),
                HumanBytes(total),
                100.0 * done as f64 / total.max(1) as f64,
                HumanBytes(rate as u64),
                if left.is_finite() && done < total {
                    format!(", {left:.0} s left")
                } else {
                    String::new()
                }
            );
        }
    }

    /// Reports how the run ended: JSON events, or the sentence on stdout (stderr when it
    /// stopped). True when finished.
    pub fn finish(&mut self, r: &ConvertReport) -> bool {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let what = r.operation.as_str();
        match (self.json, r.stopped) {
            (true, None) => {
                event(
                    json!({"event": "finished", "operation": what, "device": self.device, "seconds": r.seconds}),
                );
                event(
                    json!({"event": "result", "device": r.device, "message": r.message, "status": r.status, "retired": r.retired}),
                );
            }
            (true, Some(s)) => event(
                json!({"event": "stopped", "operation": what, "device": self.device, "done": s.done, "total": s.total}),
            ),
            (false, None) => println!("{}: {}", r.device.display(), r.message),
            (false, Some(_)) => eprintln!("{}: {}", self.device, r.message),
        }
        r.stopped.is_none()
    }
}

impl Observer for Reporter {
    fn event(&mut self, e: &Event) {
        match e {
            Event::Progress { kind, done, total } => self.progress(*kind, *done, *total),
            Event::Resuming {
                kind,
                done,
                total,
                key_uid,
                new_key_uid,
            } => {
                if self.json {
                    event(
                        json!({"event": "resuming", "operation": kind.as_str(), "device": self.device,
                                 "done": done, "total": total, "key_uid": key_uid, "new_key_uid": new_key_uid}),
                    );
                } else {
                    eprintln!(
                        "{}: resuming an interrupted {} ({done} of {total} bytes done){}{}",
                        self.device,
                        kind.noun(),
                        if key_uid.is_empty() {
                            String::new()
                        } else {
                            format!(", key {}", shown(key_uid))
                        },
                        new_key_uid
                            .as_deref()
                            .map(|n| format!(" to key {}", shown(n)))
                            .unwrap_or_default()
                    );
                }
            }
        }
    }
}
