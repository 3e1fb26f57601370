//! `switchboard bench`: a load generator to point at any deployment. `echo` measures round
//! trips against a WebSocket echo endpoint; `fanout` measures deliveries from one publisher
//! to N subscribers of one room over the native protocol. Progress every second on stderr,
//! a summary table on stdout; `--compare URL` runs the same load against a second
//! deployment and adds its column and the ratio.

mod echo;
mod fanout;
mod stats;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stats::{ms, rate, Recorder};

/// `switchboard bench` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    load: Load,
}

#[derive(clap::Subcommand, Debug)]
enum Load {
    /// Round trips: each connection sends a message and waits for its echo (`serve --echo`
    /// serves one at /echo).
    Echo(echo::EchoArgs),
    /// One publisher and N subscribers in one room (the native protocol at /ws).
    Fanout(fanout::FanoutArgs),
}

/// What every load takes.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Common {
    /// The WebSocket URL to load.
    #[arg(long, value_name = "URL")]
    url: String,
    /// A second URL: the same load runs against it too, for a side-by-side table.
    #[arg(long, value_name = "URL")]
    compare: Option<String>,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measurement starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

/// One run's figures.
pub(crate) struct Outcome {
    /// What the rate counts ("round trips/s", "deliveries/s").
    unit: &'static str,
    per_second: f64,
    p50: Option<Duration>,
    p99: Option<Duration>,
    p999: Option<Duration>,
    errors: u64,
    setup: Duration,
}

/// A run in progress: the recorder the connections feed, and whether the measured window
/// is open.
pub(crate) struct Run {
    pub(crate) recorder: Recorder,
    pub(crate) measuring: AtomicBool,
    pub(crate) stop: AtomicBool,
}

impl Run {
    fn new() -> Arc<Run> {
        Arc::new(Run {
            recorder: Recorder::default(),
            measuring: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        })
    }

    /// Record a completed message if the window is open.
    pub(crate) fn record(&self, latency: Duration) {
        if self.measuring.load(Ordering::Relaxed) {
            self.recorder.record(latency);
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

pub(crate) async fn run(args: BenchArgs) -> Result<(), String> {
    let common = match &args.load {
        Load::Echo(a) => a.common.clone(),
        Load::Fanout(a) => a.common.clone(),
    };
    let mut columns = vec![(
        common.url.clone(),
        measure(&args.load, &common.url, &common).await?,
    )];
    if let Some(other) = &common.compare {
        columns.push((other.clone(), measure(&args.load, other, &common).await?));
    }
    print_table(&columns);
    Ok(())
}

async fn measure(load: &Load, url: &str, common: &Common) -> Result<Outcome, String> {
    eprintln!("{url}: connecting");
    let run = Run::new();
    let started = Instant::now();
    let (unit, task) = match load {
        Load::Echo(a) => ("round trips/s", echo::start(url, a, run.clone()).await?),
        Load::Fanout(a) => ("deliveries/s", fanout::start(url, a, run.clone()).await?),
    };
    let setup = started.elapsed();
    eprintln!(
        "{url}: connected in {:.1} s, warming up",
        setup.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs_f64(common.warmup.max(0.0))).await;
    run.measuring.store(true, Ordering::Relaxed);
    let window = Instant::now();
    let total = Duration::from_secs_f64(common.duration.max(0.1));
    let mut last = (0u64, Instant::now());
    while window.elapsed() < total {
        tokio::time::sleep(Duration::from_secs(1).min(total.saturating_sub(window.elapsed())))
            .await;
        let count = run.recorder.count();
        let now = Instant::now();
        let per_second = (count - last.0) as f64 / now.duration_since(last.1).as_secs_f64();
        let p = run.recorder.percentiles(&[0.5, 0.99]);
        eprintln!(
            "[{:>4.1} s] {} {unit}, p50 {}, p99 {}, errors {}",
            window.elapsed().as_secs_f64(),
            rate(per_second),
            ms(p[0]),
            ms(p[1]),
            run.recorder.errors.load(Ordering::Relaxed)
        );
        last = (count, now);
    }
    run.measuring.store(false, Ordering::Relaxed);
    let elapsed = window.elapsed().as_secs_f64();
    run.stop.store(true, Ordering::Relaxed);
    task.abort();
    let p = run.recorder.percentiles(&[0.5, 0.99, 0.999]);
    Ok(Outcome {
        unit,
        per_second: run.recorder.count() as f64 / elapsed,
        p50: p[0],
        p99: p[1],
        p999: p[2],
        errors: run.recorder.errors.load(Ordering::Relaxed),
        setup,
    })
}

fn print_table(columns: &[(String, Outcome)]) {
    let Some((_, first)) = columns.first() else {
        return;
    };
    let mut header = "| |".to_string();
    let mut rule = "|---|".to_string();
    for (url, _) in columns {
        header.push_str(&format!(" {url} |"));
        rule.push_str("---:|");
    }
    if columns.len() == 2 {
        header.push_str(" second / first |");
        rule.push_str("---:|");
    }
    println!("{header}\n{rule}");
    let ratio = |a: f64, b: f64| {
        if a > 0.0 {
            format!(" {:.2}× |", b / a)
        } else {
            " - |".into()
        }
    };
    let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
    type Row<'a> = (
        &'a str,
        &'a dyn Fn(&Outcome) -> String,
        &'a dyn Fn(&Outcome) -> f64,
    );
    let rows: [Row<'_>; 6] = [
        (first.unit, &|o| rate(o.per_second), &|o| o.per_second),
        ("latency p50", &|o| ms(o.p50), &|o| secs(o.p50)),
        ("latency p99", &|o| ms(o.p99), &|o| secs(o.p99)),
        ("latency p99.9", &|o| ms(o.p999), &|o| secs(o.p999)),
        ("errors", &|o| o.errors.to_string(), &|o| o.errors as f64),
        (
            "setup",
            &|o| format!("{:.1} s", o.setup.as_secs_f64()),
            &|o| o.setup.as_secs_f64(),
        ),
    ];
    for (name, show, value) in rows {
        let mut line = format!("| {name} |");
        for (_, o) in columns {
            line.push_str(&format!(" {} |", show(o)));
        }
        if let [(_, a), (_, b)] = columns {
            line.push_str(&ratio(value(a), value(b)));
        }
        println!("{line}");
    }
}
