//! Progress of a fill on stderr: a bar on a terminal, plain lines
//! otherwise (at most one a second, or every 5 %).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use cache_core::{FillState, Object, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
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

/// A running progress display; [`Reporter::finish`] draws the last state.
pub struct Reporter {
    task: Option<JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

fn state_word(p: &Progress) -> &'static str {
    match p.state {
        FillState::Following => "following another process",
        FillState::Filling => "downloading",
        FillState::Complete => "complete",
        FillState::Idle => "waiting",
        FillState::Failed(_) => "failed",
    }
}

impl Reporter {
    /// Starts showing the progress of `object`, labelled `label`.
    pub fn start(object: &Object, label: String, mode: Mode) -> Reporter {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        if mode == Mode::Quiet {
            return Reporter { task: None, stop };
        }
        let mut rx = object.watch_progress();
        let task = tokio::spawn(async move {
            let first = rx.borrow().clone();
            let start_bytes = first.bytes_done;
            let started = Instant::now();
            let bar = (mode == Mode::Bar).then(|| {
                let bar = ProgressBar::with_draw_target(
                    Some(first.len),
                    ProgressDrawTarget::stderr_with_hz(8),
                );
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(label.clone());
                bar.set_position(first.bytes_done);
                bar.reset_eta();
                bar
            });
            let mut last_line = Instant::now() - Duration::from_secs(10);
            let mut last_pct: i64 = -100;
            let mut ticker = tokio::time::interval(Duration::from_millis(250));
            loop {
                let p = rx.borrow_and_update().clone();
                let done = matches!(p.state, FillState::Complete | FillState::Failed(_));
                match &bar {
                    Some(bar) => {
                        bar.set_position(p.bytes_done);
                        bar.set_message(format!(
                            "chunks {}/{} {}",
                            p.chunks_done,
                            p.chunks_total,
                            state_word(&p)
                        ));
                    }
                    None => {
                        let pct = if p.len == 0 {
                            100
                        } else {
                            (p.bytes_done as u128 * 100 / p.len as u128) as i64
                        };
                        if done
                            || last_line.elapsed() >= Duration::from_secs(1)
                            || pct >= last_pct + 5
                        {
                            let secs = started.elapsed().as_secs_f64().max(0.001);
                            let rate = (p.bytes_done.saturating_sub(start_bytes)) as f64 / secs;
                            let _ = writeln!(
                                std::io::stderr(),
                                "{label}: {pct}% {} of {}, chunks {}/{}, {}/s, {}",
                                human(p.bytes_done),
                                human(p.len),
                                p.chunks_done,
                                p.chunks_total,
                                human(rate as u64),
                                state_word(&p)
                            );
                            last_line = Instant::now();
                            last_pct = pct;
                        }
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
            if let Some(bar) = bar {
                bar.finish();
                // Leave the finished bar on its own line.
                let _ = writeln!(std::io::stderr());
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
