//! Live progress of a run: one line per resource that redraws on a terminal (indicatif),
//! plain structured log lines every few seconds elsewhere (CI logs get no bars).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http_core::Client;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use source_errors::LiveStats;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Redrawn lines on the terminal.
    Bars,
    /// A log line per resource every `LOG_EVERY`.
    Lines,
}

impl Mode {
    /// Bars when stderr is a terminal and logs are for people; lines otherwise.
    pub(crate) fn detect(json_logs: bool) -> Mode {
        if !json_logs && std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

const LOG_EVERY: Duration = Duration::from_secs(10);
const REDRAW_EVERY: Duration = Duration::from_millis(150);

/// A running display; `finish` stops it.
pub(crate) struct Display {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Display {
    /// Starts showing the counters of `live` and the client's, once `http` has it.
    pub(crate) fn start(mode: Mode, live: LiveStats, http: Arc<OnceLock<Client>>) -> Display {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut view = View::new(mode);
            loop {
                let every = match mode {
                    Mode::Bars => REDRAW_EVERY,
                    Mode::Lines => LOG_EVERY,
                };
                tokio::select! {
                    _ = tokio::time::sleep(every) => view.show(&live, http.get(), false),
                    _ = stopped.changed() => {
                        view.show(&live, http.get(), true);
                        return;
                    }
                }
            }
        });
        Display { stop, task }
    }

    /// Shows the final counters and stops.
    pub(crate) async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Per resource: the rows seen at the last redraw, for the current rate.
struct View {
    mode: Mode,
    multi: MultiProgress,
    header: Option<ProgressBar>,
    bars: BTreeMap<String, ProgressBar>,
    last: BTreeMap<String, (u64, Instant)>,
    rates: BTreeMap<String, f64>,
    started: Instant,
}

impl View {
    fn new(mode: Mode) -> View {
        View {
            mode,
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)),
            header: None,
            bars: BTreeMap::new(),
            last: BTreeMap::new(),
            rates: BTreeMap::new(),
            started: Instant::now(),
        }
    }

    fn show(&mut self, live: &LiveStats, client: Option<&Client>, last: bool) {
        let snapshot: Vec<(String, u64, u64, u64, u64)> = live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, s)| (name.clone(), s.partitions, s.pages, s.records, s.retries))
            .collect();
        let now = Instant::now();
        for (name, _, _, records, _) in &snapshot {
            let (before, at) = self.last.get(name).copied().unwrap_or((0, self.started));
            let seconds = now.duration_since(at).as_secs_f64();
            if seconds >= 1.0 || last {
                let rate = if last {
                    *records as f64 / now.duration_since(self.started).as_secs_f64().max(1e-3)
                } else {
                    (records - before) as f64 / seconds
                };
                self.rates.insert(name.clone(), rate);
                self.last.insert(name.clone(), (*records, now));
            }
        }
        let http = client.map(|c| (c.stats(), c.rate_limit_wait()));
        let http_line = match &http {
            Some((stats, wait)) => {
                let statuses: Vec<String> = stats
                    .by_status
                    .iter()
                    .map(|(code, n)| format!("{code}: {n}"))
                    .collect();
                let waiting = if wait.is_zero() {
                    String::new()
                } else {
                    format!(
                        " · waiting {:.1} s for the API's rate limit",
                        wait.as_secs_f64()
                    )
                };
                format!(
                    "requests {} ({}) · retries {}{waiting}",
                    stats.requests,
                    statuses.join(", "),
                    stats.retries
                )
            }
            None => "requests 0".to_owned(),
        };
        match self.mode {
            Mode::Bars => {
                let header = self.header.get_or_insert_with(|| {
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar
                });
                header.set_message(http_line);
                header.tick();
                for (name, partitions, pages, records, retries) in &snapshot {
                    let bar = self.bars.entry(name.clone()).or_insert_with(|| {
                        let bar = self.multi.add(ProgressBar::new_spinner());
                        bar.set_style(
                            ProgressStyle::with_template("  {msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        bar
                    });
                    bar.set_message(format!(
                        "{name:<16} {partitions:>5} partitions {pages:>7} pages {records:>9} rows {retries:>4} retries {:>9.0} rows/s",
                        self.rates.get(name).copied().unwrap_or(0.0)
                    ));
                }
                if last {
                    if let Some(h) = &self.header {
                        h.finish();
                    }
                    for bar in self.bars.values() {
                        bar.finish();
                    }
                }
            }
            Mode::Lines => {
                tracing::info!(target: "progress", "{http_line}");
                for (name, partitions, pages, records, retries) in &snapshot {
                    tracing::info!(
                        target: "progress",
                        resource = %name,
                        partitions,
                        pages,
                        rows = records,
                        retries,
                        rows_per_s = self.rates.get(name).copied().unwrap_or(0.0).round(),
                        "progress"
                    );
                }
            }
        }
    }
}
