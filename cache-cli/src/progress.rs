//! Progress of a fill on stderr: a one-line bar on a terminal, plain lines
//! otherwise (at most one a second, or every 5 %).
//!
//! The bar is drawn by hand, not by a progress-bar crate, because it must
//! never wrap: every frame is fitted to the terminal's width at that moment
//! (the bar shrinks first, then the least useful fields go), and written as
//! carriage return + erase line + text. On Ctrl-C, [`interrupted`] erases
//! it and says what was kept.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cache_core::{FillState, Object, Progress};
use tokio::task::JoinHandle;

use crate::size::human;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Lines,
    Quiet,
}

impl Mode {
    /// A bar on a terminal, lines otherwise; nothing with `-q`.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

/// What the running reporter shows, for the Ctrl-C summary.
struct Current {
    object: Object,
    bar_drawn: bool,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);
/// Set on Ctrl-C: no frame may be drawn after the summary.
static SILENCED: AtomicBool = AtomicBool::new(false);

/// A running progress display; [`Reporter::finish`] draws the last state.
pub struct Reporter {
    task: Option<JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// What the fill is doing, in words (`follower`: the pid of the process
/// whose download this one follows; `took_over`: it followed one before).
fn state_words(p: &Progress, follower: Option<u32>, took_over: bool) -> String {
    match (&p.state, follower) {
        (FillState::Following, Some(pid)) => format!("following pid {pid}"),
        (FillState::Following, None) => "following another process".into(),
        (FillState::Idle, Some(pid)) => format!("following pid {pid}"),
        (FillState::Filling, _) if took_over => "downloading (took over)".into(),
        (FillState::Filling, _) => "downloading".into(),
        (FillState::Complete, _) => "complete".into(),
        (FillState::Idle, None) => "waiting".into(),
        (FillState::Failed(_), _) => "failed".into(),
    }
}

/// Width of the terminal on stderr (80 when unknown).
pub fn term_width() -> usize {
    // SAFETY: TIOCGWINSZ fills the winsize struct it is given; fd 2 is
    // stderr (an invalid fd just fails the call).
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

fn pct_of(p: &Progress) -> u64 {
    if p.len == 0 {
        100
    } else {
        (u128::from(p.bytes_done) * 100 / u128::from(p.len)) as u64
    }
}

fn eta(remaining: u64, rate: f64) -> String {
    if rate <= 0.0 {
        return "ETA -".into();
    }
    let s = (remaining as f64 / rate).ceil() as u64;
    if s >= 3600 {
        format!("ETA {}h{:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("ETA {}m{:02}s", s / 60, s % 60)
    } else {
        format!("ETA {s}s")
    }
}

/// One frame of the bar, at most `width - 1` characters (the last column
/// is left free: some terminals wrap when it is written).
pub fn bar_line(label: &str, p: &Progress, rate: f64, words: &str, width: usize) -> String {
    let max = width.saturating_sub(1).max(10);
    let pct = pct_of(p);
    // Fields from most to least important; dropped from the end to fit.
    // A plain "downloading" is the least important; who is followed is not.
    let mut fields = vec![
        format!("{pct:>3}%"),
        format!("{}/{}", human(p.bytes_done), human(p.len)),
        format!("{}/s", human(rate as u64)),
        eta(p.len.saturating_sub(p.bytes_done), rate),
    ];
    if words == "downloading" {
        fields.push(words.to_owned());
    } else {
        fields.insert(2, words.to_owned());
    }
    let label: String = if label.chars().count() > 20 {
        label.chars().take(19).chain(['…']).collect()
    } else {
        label.to_owned()
    };
    for keep in (1..=fields.len()).rev() {
        let right = fields[..keep].join(" ");
        let fixed = label.chars().count() + 1 + right.chars().count();
        // "[" + bar + "] "
        if fixed + 3 + 8 <= max {
            let bar_w = (max - fixed - 3).min(40);
            let filled = (bar_w as u64 * pct / 100) as usize;
            let bar: String = "=".repeat(filled) + &" ".repeat(bar_w - filled);
            return format!("{label} [{bar}] {right}");
        }
        if fixed <= max {
            return format!("{label} {right}");
        }
    }
    let line = format!("{label} {}", fields[0]);
    line.chars().take(max).collect()
}

fn clear_line() {
    let _ = write!(std::io::stderr(), "\r\x1b[2K");
}

impl Reporter {
    /// Starts showing the progress of `object`, labelled `label`.
    pub fn start(object: &Object, label: String, mode: Mode) -> Reporter {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        if mode == Mode::Quiet {
            return Reporter { task: None, stop };
        }
        if let Ok(mut c) = CURRENT.lock() {
            *c = Some(Current {
                object: object.clone(),
                bar_drawn: false,
            });
        }
        let mut rx = object.watch_progress();
        let object = object.clone();
        let task = tokio::spawn(async move {
            let first = rx.borrow().clone();
            let mut sample = (Instant::now(), first.bytes_done);
            let mut rate = 0.0f64;
            let mut last_line = Instant::now() - Duration::from_secs(10);
            let mut last_pct: i64 = -100;
            let mut was_following = false;
            // Whose fill this follows: a file read, so not at every change
            // (a follower's progress changes at each of the filler's commits).
            let mut follower: (Option<u32>, Option<FillState>, Instant) =
                (None, None, Instant::now());
            let mut ticker = tokio::time::interval(Duration::from_millis(125));
            loop {
                let p = rx.borrow_and_update().clone();
                let done = matches!(p.state, FillState::Complete | FillState::Failed(_));
                let elapsed = sample.0.elapsed();
                if elapsed >= Duration::from_millis(500) {
                    let r = p.bytes_done.saturating_sub(sample.1) as f64 / elapsed.as_secs_f64();
                    rate = if rate == 0.0 { r } else { 0.7 * rate + 0.3 * r };
                    sample = (Instant::now(), p.bytes_done);
                }
                if follower.1.as_ref() != Some(&p.state)
                    || follower.2.elapsed() >= Duration::from_millis(500)
                {
                    follower = (object.filler_pid(), Some(p.state.clone()), Instant::now());
                }
                let follower = follower.0;
                was_following |= matches!(p.state, FillState::Following) || follower.is_some();
                let words = state_words(&p, follower, was_following);
                if mode == Mode::Bar {
                    let line = bar_line(&label, &p, rate, &words, term_width());
                    // Drawn under the lock Ctrl-C's summary takes, so no
                    // frame lands after it.
                    let Ok(mut current) = CURRENT.lock() else {
                        break;
                    };
                    if SILENCED.load(Ordering::Acquire) {
                        return;
                    }
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K{line}");
                    let _ = err.flush();
                    if let Some(c) = current.as_mut() {
                        c.bar_drawn = true;
                    }
                } else {
                    let pct = pct_of(&p) as i64;
                    if done || last_line.elapsed() >= Duration::from_secs(1) || pct >= last_pct + 5
                    {
                        let _ = writeln!(
                            std::io::stderr(),
                            "{label}: {pct}% {} of {}, chunks {}/{}, {}/s, {words}",
                            human(p.bytes_done),
                            human(p.len),
                            p.chunks_done,
                            p.chunks_total,
                            human(rate as u64),
                        );
                        last_line = Instant::now();
                        last_pct = pct;
                    }
                }
                if done || *stopped.borrow() {
                    break;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { break },
                    _ = stopped.changed() => {}
                    _ = ticker.tick() => {}
                }
            }
            if mode == Mode::Bar && !SILENCED.load(Ordering::Acquire) {
                // Leave the last frame on its own line.
                let _ = writeln!(std::io::stderr());
            }
            if let Ok(mut c) = CURRENT.lock() {
                *c = None;
            }
        });
        Reporter {
            task: Some(task),
            stop,
        }
    }

    /// Draws the final state and stops.
    pub async fn finish(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Ctrl-C: erases the bar and returns the one-line summary ("interrupted
/// at 41 %, 212 MiB kept; run the same command to resume").
pub fn interrupted() -> String {
    let current = CURRENT.lock().ok().and_then(|mut c| {
        SILENCED.store(true, Ordering::Release);
        c.take()
    });
    match current {
        Some(c) => {
            if c.bar_drawn {
                clear_line();
            }
            let p = c.object.progress();
            format!(
                "interrupted at {} %, {} kept; run the same command to resume",
                pct_of(&p),
                human(p.bytes_done)
            )
        }
        None => {
            "interrupted; what was downloaded is kept: run the same command again to resume".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(done: u64, len: u64) -> Progress {
        Progress {
            len,
            chunk_size: 1 << 20,
            chunks_done: done >> 20,
            chunks_total: len.div_ceil(1 << 20),
            bytes_done: done,
            state: FillState::Filling,
        }
    }

    #[test]
    fn bar_fits_every_width() {
        let p = progress(212 << 20, 45 << 30);
        for width in [20, 40, 60, 80, 100, 200] {
            let words = "following pid 123456";
            let line = bar_line("a-rather-long-image-name.qcow2", &p, 1.6e8, words, width);
            assert!(line.chars().count() < width, "{width}: {line:?}");
        }
        let line = bar_line("disk.raw", &p, 1.6e8, "downloading", 80);
        assert!(line.contains('[') && line.contains("downloading"), "{line}");
    }
}
