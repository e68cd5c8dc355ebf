//! The live display of a lifecycle operation on a terminal.
//!
//! A deployment has 20 to 60 workers and a terminal often 30 lines: one
//! line per unit would push everything past the window. So the display is
//! one block, redrawn in place: a header that is always there (operation,
//! ready/total, failed, in flight, elapsed; in rolling mode the batch and
//! the lowest ready count per kind), then every unit when they fit, or only
//! what is worth looking at when they do not: units in flight with their
//! elapsed time, then failures. The block is cleared at the end, so the
//! result is printed once, by the summary.
//!
//! [`Board`] and [`render`] are pure (unit-tested); [`Live`] owns the
//! terminal: an indicatif bar whose message is the block, redrawn on every
//! event and on a ticker, at the terminal's current size.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::lifecycle::{Event, Observer, Phase};

/// What the display knows before the first event.
#[derive(Debug, Clone, Default)]
pub struct Title {
    /// `start`, `stop`, `restart`, `resume`, `stop-for-maintenance`.
    pub op: String,
    /// The operation leaves its units stopped (stop, stop-for-maintenance):
    /// the header counts `stopped`, not `ready`. Said by the caller from
    /// `Op::leaves_stopped`, not guessed from the verb's spelling.
    pub leaves_stopped: bool,
    /// Workers per batch in a rolling restart.
    pub rolling: Option<usize>,
    /// Worker kind of each unit that is a worker.
    pub kinds: HashMap<String, String>,
}

#[derive(Debug, Clone)]
struct Line {
    unit: String,
    phase: Phase,
    detail: Option<String>,
    since: Instant,
}

/// Every unit's phase, in the order units were queued.
#[derive(Debug)]
pub struct Board {
    title: Title,
    start: Instant,
    lines: Vec<Line>,
    index: HashMap<String, usize>,
    /// Workers that have been touched (rolling: to tell the batch).
    touched: usize,
    /// Lowest number of ready workers seen per kind (rolling).
    lowest: BTreeMap<String, usize>,
}

impl Phase {
    fn in_flight(self) -> bool {
        matches!(
            self,
            Phase::Stopping | Phase::Starting | Phase::Probing | Phase::Watching
        )
    }
    fn failed(self) -> bool {
        matches!(self, Phase::Failed | Phase::Timeout)
    }
}

impl Board {
    pub fn new(title: Title, start: Instant) -> Board {
        Board {
            title,
            start,
            lines: Vec::new(),
            index: HashMap::new(),
            touched: 0,
            lowest: BTreeMap::new(),
        }
    }

    pub fn apply(&mut self, e: &Event, now: Instant) {
        let i = *self.index.entry(e.unit.clone()).or_insert_with(|| {
            self.lines.push(Line {
                unit: e.unit.clone(),
                phase: Phase::Queued,
                detail: None,
                since: now,
            });
            self.lines.len() - 1
        });
        let line = &mut self.lines[i];
        if line.phase == Phase::Queued
            && e.phase != Phase::Queued
            && self.title.kinds.contains_key(&e.unit)
        {
            self.touched += 1;
        }
        if line.phase != e.phase {
            line.since = now;
        }
        line.phase = e.phase;
        line.detail = e.detail.clone();
        self.note_ready_per_kind();
    }

    /// A worker is down while it is in flight, failed or stopped; queued
    /// ones and ones not seen yet still run, and a watched one (a canary in
    /// its hold, a batch settling) is ready and serving. Counted against every worker of
    /// the kind from the start (units get their display lines one at a
    /// time, so counting only the lines seen would start every kind at 1).
    fn note_ready_per_kind(&mut self) {
        let mut ready: BTreeMap<&str, usize> = BTreeMap::new();
        for kind in self.title.kinds.values() {
            *ready.entry(kind).or_default() += 1;
        }
        for l in &self.lines {
            if let Some(kind) = self.title.kinds.get(&l.unit) {
                let down = (l.phase.in_flight() && l.phase != Phase::Watching)
                    || l.phase.failed()
                    || l.phase == Phase::Stopped;
                if down {
                    *ready.entry(kind).or_default() -= 1;
                }
            }
        }
        for (kind, n) in ready {
            let low = self.lowest.entry(kind.to_string()).or_insert(n);
            *low = (*low).min(n);
        }
    }

    /// The header, and in rolling mode the lowest ready per kind apart:
    /// on a narrow terminal it goes on a line of its own.
    fn header_parts(&self, now: Instant) -> (String, Option<String>) {
        let done_word = if self.title.leaves_stopped {
            "stopped"
        } else {
            "ready"
        };
        let count = |f: fn(Phase) -> bool| self.lines.iter().filter(|l| f(l.phase)).count();
        let done = count(|p| matches!(p, Phase::Ready | Phase::Stopped | Phase::Skipped));
        let mut h = format!(
            "[+] {} {done}/{} {done_word}",
            self.title.op,
            self.lines.len()
        );
        let failed = count(Phase::failed);
        if failed > 0 {
            h.push_str(&format!(" · {failed} failed"));
        }
        h.push_str(&format!(" · {} in flight", count(Phase::in_flight)));
        if let Some(batch) = self.title.rolling {
            let batches = self.title.kinds.len().div_ceil(batch.max(1));
            let current = self
                .touched
                .div_ceil(batch.max(1))
                .max(1)
                .min(batches.max(1));
            h.push_str(&format!(" · batch {current}/{batches}"));
            let lows: Vec<String> = self
                .lowest
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            h.push_str(&format!(" · {}", secs(now - self.start)));
            let lowest = (!lows.is_empty()).then(|| format!("lowest ready: {}", lows.join(", ")));
            return (h, lowest);
        }
        h.push_str(&format!(" · {}", secs(now - self.start)));
        (h, None)
    }

    /// The header on one line.
    #[cfg(test)]
    fn header(&self, now: Instant) -> String {
        match self.header_parts(now) {
            (h, Some(low)) => format!("{h} · {low}"),
            (h, None) => h,
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

fn unit_line(l: &Line, now: Instant, tick: usize) -> String {
    let mark = if l.phase.in_flight() || l.phase == Phase::Queued {
        SPINNER[tick % SPINNER.len()]
    } else if l.phase.failed() {
        '✗'
    } else {
        '✓'
    };
    let what = match &l.detail {
        Some(d) => format!("{} ({d})", l.phase.as_str()),
        None => l.phase.as_str().to_string(),
    };
    let elapsed = if l.phase.in_flight() {
        format!(" [{}]", secs(now - l.since))
    } else {
        String::new()
    };
    format!("{mark} {:<50} {what}{elapsed}", l.unit)
}

/// The block for a terminal of `rows` × `cols`: never more than `rows - 1`
/// lines (the cursor's line stays free), none wider than `cols - 1`.
pub fn render(board: &Board, rows: usize, cols: usize, now: Instant) -> String {
    let tick = (now - board.start).as_millis() as usize / 120;
    let width = cols.saturating_sub(1).max(10);
    let mut out = match board.header_parts(now) {
        (h, Some(low)) if h.chars().count() + low.chars().count() + 3 <= width => {
            vec![format!("{h} · {low}")]
        }
        (h, Some(low)) => vec![h, format!("    {low}")],
        (h, None) => vec![h],
    };
    let room = rows.saturating_sub(1 + out.len()).max(1);
    if board.lines.len() <= room {
        out.extend(board.lines.iter().map(|l| unit_line(l, now, tick)));
    } else {
        // Only what is worth looking at: the longest in flight first, then failures.
        let mut flying: Vec<&Line> = board.lines.iter().filter(|l| l.phase.in_flight()).collect();
        flying.sort_by_key(|l| l.since);
        let failed = board.lines.iter().filter(|l| l.phase.failed());
        let picked: Vec<&Line> = flying.into_iter().chain(failed).collect();
        if picked.len() <= room {
            out.extend(picked.iter().map(|l| unit_line(l, now, tick)));
        } else {
            out.extend(picked[..room - 1].iter().map(|l| unit_line(l, now, tick)));
            out.push(format!("  … and {} more", picked.len() - (room - 1)));
        }
    }
    out.iter()
        .map(|l| l.chars().take(width).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The bar on screen while a live display runs: a line printed to stderr
/// then (a maintenance step, a warning) goes above the block instead of
/// through it, which would leave a stale copy of the block behind.
static CURRENT: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Writes `line` to stderr, above the live display if one is on screen.
pub fn eprintln_above(line: &str) {
    let bar = CURRENT.lock().unwrap().clone();
    match bar {
        Some(bar) => bar.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

/// stderr for the log (`tracing`): a warning during a live display is
/// written above it, as [`eprintln_above`] does.
pub struct StderrAbove;

impl std::io::Write for StderrAbove {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = CURRENT.lock().unwrap().clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The terminal observer: one block redrawn in place, cleared by `finish`.
pub struct Live {
    board: Arc<Mutex<Board>>,
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

impl Live {
    pub fn new(title: Title) -> Live {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template("{msg}").expect("valid template"));
        *CURRENT.lock().unwrap() = Some(bar.clone());
        let board = Arc::new(Mutex::new(Board::new(title, Instant::now())));
        let stop = Arc::new(AtomicBool::new(false));
        // Elapsed times and the spinner move between events too.
        let ticker = {
            let (board, bar, stop) = (board.clone(), bar.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    draw(&board, &bar);
                    std::thread::sleep(Duration::from_millis(120));
                }
            })
        };
        Live {
            board,
            bar,
            stop,
            ticker: Mutex::new(Some(ticker)),
        }
    }
}

fn draw(board: &Mutex<Board>, bar: &ProgressBar) {
    let board = board.lock().unwrap();
    // Nothing queued yet (resume unmasking first): no `0/0` header.
    if board.lines.is_empty() {
        return;
    }
    // Read each time: the window may have been resized.
    let (rows, cols) = console::Term::stderr().size();
    let text = render(&board, rows as usize, cols as usize, Instant::now());
    bar.set_message(text);
}

impl Observer for Live {
    fn event(&self, e: &Event) {
        self.board.lock().unwrap().apply(e, Instant::now());
        draw(&self.board, &self.bar);
    }

    fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.lock().unwrap().take() {
            let _ = t.join();
        }
        *CURRENT.lock().unwrap() = None;
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(unit: &str, phase: Phase) -> Event {
        Event {
            unit: unit.into(),
            host: "local".into(),
            phase,
            stage: None,
            elapsed_ms: 0,
            detail: None,
        }
    }

    fn board(n: usize, rolling: Option<usize>) -> (Board, Instant) {
        let t0 = Instant::now();
        let kinds = (0..n)
            .map(|i| {
                let kind = if i % 2 == 0 { "generic" } else { "pusher" };
                (format!("w{i}.service"), kind.to_string())
            })
            .collect();
        let mut b = Board::new(
            Title {
                op: "restart".into(),
                leaves_stopped: false,
                rolling,
                kinds,
            },
            t0,
        );
        b.apply(&ev("m.service", Phase::Queued), t0);
        for i in 0..n {
            b.apply(&ev(&format!("w{i}.service"), Phase::Queued), t0);
        }
        (b, t0)
    }

    /// stop-for-maintenance is not an `Op` and its title does not start
    /// with `stop` for every caller: the word follows the caller's flag.
    #[test]
    fn an_operation_that_leaves_units_stopped_counts_stopped() {
        let t0 = Instant::now();
        let title = |leaves_stopped| Title {
            op: "stop-for-maintenance".into(),
            leaves_stopped,
            rolling: None,
            kinds: HashMap::new(),
        };
        for (leaves_stopped, word) in [(true, "1/1 stopped"), (false, "1/1 ready")] {
            let mut b = Board::new(title(leaves_stopped), t0);
            b.apply(&ev("m.service", Phase::Queued), t0);
            b.apply(&ev("m.service", Phase::Stopped), t0);
            let text = render(&b, 30, 140, t0);
            assert!(text.lines().next().unwrap().contains(word), "{text}");
        }
    }

    #[test]
    fn everything_fits_one_line_per_unit_under_the_header() {
        let (mut b, t0) = board(4, None);
        b.apply(&ev("m.service", Phase::Ready), t0);
        b.apply(&ev("w0.service", Phase::Probing), t0);
        let text = render(&b, 30, 140, t0 + Duration::from_secs(2));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(
            lines[0].starts_with("[+] restart 1/5 ready · 1 in flight · 2.0s"),
            "{text}"
        );
        assert!(
            lines[2].contains("w0.service") && lines[2].contains("probing [2.0s]"),
            "{text}"
        );
    }

    #[test]
    fn too_many_units_show_only_in_flight_then_failures_within_the_height() {
        let (mut b, t0) = board(60, None);
        for i in 0..60 {
            let phase = match i {
                0..=39 => Phase::Ready,
                40..=41 => Phase::Failed,
                _ => Phase::Starting,
            };
            b.apply(
                &ev(&format!("w{i}.service"), phase),
                t0 + Duration::from_millis(i),
            );
        }
        let text = render(&b, 30, 140, t0 + Duration::from_secs(5));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            21,
            "the header, 18 in flight, 2 failed:\n{text}"
        );
        assert!(
            lines[0].contains("40/61 ready · 2 failed · 18 in flight"),
            "{text}"
        );
        // Oldest in flight first, the failures after every unit in flight.
        assert!(lines[1].contains("w42.service"), "{text}");
        assert!(
            lines[19].contains("w40.service") && lines[19].contains("failed"),
            "{text}"
        );
        assert!(
            !text.contains("w0.service "),
            "finished units collapse: {text}"
        );
        let small = render(&b, 10, 140, t0);
        assert_eq!(small.lines().count(), 9, "{small}");
        assert!(
            small.lines().last().unwrap().contains("… and 13 more"),
            "{small}"
        );
    }

    #[test]
    fn lines_never_exceed_the_width() {
        let (b, t0) = board(3, None);
        assert!(render(&b, 30, 20, t0)
            .lines()
            .all(|l| l.chars().count() <= 19));
    }

    #[test]
    fn rolling_header_tells_the_batch_and_lowest_ready_per_kind() {
        let (mut b, t0) = board(4, Some(2));
        b.apply(&ev("m.service", Phase::Ready), t0);
        b.apply(&ev("w0.service", Phase::Stopping), t0);
        b.apply(&ev("w1.service", Phase::Stopping), t0);
        let h = b.header(t0);
        assert!(h.contains("batch 1/2"), "{h}");
        assert!(h.contains("lowest ready: generic 1, pusher 1"), "{h}");
        b.apply(&ev("w0.service", Phase::Ready), t0);
        b.apply(&ev("w1.service", Phase::Ready), t0);
        b.apply(&ev("w2.service", Phase::Stopping), t0);
        let h = b.header(t0);
        assert!(h.contains("batch 2/2"), "{h}");
        assert!(h.contains("generic 1, pusher 1"), "the lowest is kept: {h}");
    }

    #[test]
    fn lowest_ready_counts_every_worker_of_a_kind_from_the_start() {
        // Units get their lines one at a time, as in a real run: the first
        // event must not make a kind look like it has one worker.
        let t0 = Instant::now();
        let kinds = (0..8)
            .map(|i| {
                let kind = if i < 6 { "generic" } else { "pusher" };
                (format!("w{i}.service"), kind.to_string())
            })
            .collect();
        let title = Title {
            op: "restart".into(),
            leaves_stopped: false,
            rolling: Some(2),
            kinds,
        };
        let mut b = Board::new(title, t0);
        b.apply(&ev("w0.service", Phase::Queued), t0);
        let h = b.header(t0);
        assert!(h.contains("lowest ready: generic 6, pusher 2"), "{h}");
        b.apply(&ev("w0.service", Phase::Stopping), t0);
        b.apply(&ev("w1.service", Phase::Stopping), t0);
        let h = b.header(t0);
        assert!(h.contains("lowest ready: generic 4, pusher 2"), "{h}");
        for w in ["w0", "w1"] {
            b.apply(&ev(&format!("{w}.service"), Phase::Ready), t0);
        }
        b.apply(&ev("w6.service", Phase::Stopping), t0);
        let h = b.header(t0);
        assert!(h.contains("lowest ready: generic 4, pusher 1"), "{h}");
    }

    #[test]
    fn a_watched_worker_counts_ready() {
        let (mut b, t0) = board(4, Some(1));
        b.apply(&ev("w0.service", Phase::Ready), t0);
        b.apply(&ev("w0.service", Phase::Watching), t0);
        let h = b.header(t0);
        assert!(h.contains("lowest ready: generic 2, pusher 2"), "{h}");
    }
}
