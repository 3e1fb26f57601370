//! What a bench run measured: a count and latency samples, read out as rates and
//! percentiles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// At most this many latency samples are kept (every later one replaces a random earlier
/// one: a uniform sample of the whole run, in bounded memory).
const MAX_SAMPLES: usize = 1 << 20;

/// Shared by every connection of a run.
#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) count: AtomicU64,
    pub(crate) errors: AtomicU64,
    samples: Mutex<Samples>,
}

#[derive(Default)]
struct Samples {
    micros: Vec<u32>,
    seen: u64,
    rng: u64,
}

impl Recorder {
    /// One message done, `latency` after it was sent.
    pub(crate) fn record(&self, latency: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.seen += 1;
        if s.micros.len() < MAX_SAMPLES {
            s.micros.push(us);
        } else {
            // Reservoir sampling (Vitter's algorithm R) with a xorshift generator.
            s.rng = if s.rng == 0 {
                0x9e37_79b9_7f4a_7c15
            } else {
                s.rng
            };
            s.rng ^= s.rng << 13;
            s.rng ^= s.rng >> 7;
            s.rng ^= s.rng << 17;
            let slot = s.rng % s.seen;
            if let Ok(slot) = usize::try_from(slot) {
                if slot < MAX_SAMPLES {
                    s.micros[slot] = us;
                }
            }
        }
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The count so far.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Percentiles (0.5, 0.99, …) of the latencies so far.
    pub(crate) fn percentiles(&self, ps: &[f64]) -> Vec<Option<Duration>> {
        let mut micros = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .micros
            .clone();
        micros.sort_unstable();
        ps.iter()
            .map(|p| {
                let last = micros.len().checked_sub(1)?;
                let i = ((last as f64) * p).round() as usize;
                micros
                    .get(i.min(last))
                    .map(|us| Duration::from_micros(u64::from(*us)))
            })
            .collect()
    }
}

/// `d` as milliseconds with a sensible precision.
pub(crate) fn ms(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) => {
            let ms = d.as_secs_f64() * 1000.0;
            if ms < 10.0 {
                format!("{ms:.2} ms")
            } else {
                format!("{ms:.0} ms")
            }
        }
    }
}

/// A rate with thousands separated.
pub(crate) fn rate(per_second: f64) -> String {
    let n = per_second.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_formats() {
        let r = Recorder::default();
        for us in 1..=100u64 {
            r.record(Duration::from_micros(us * 10));
        }
        let p = r.percentiles(&[0.5, 0.99]);
        assert_eq!(p[0], Some(Duration::from_micros(510)));
        assert_eq!(p[1], Some(Duration::from_micros(990)));
        assert_eq!(r.count(), 100);
        assert_eq!(Recorder::default().percentiles(&[0.5]), vec![None]);
        assert_eq!(rate(1234567.4), "1 234 567");
        assert_eq!(rate(999.0), "999");
        assert_eq!(ms(Some(Duration::from_micros(1234))), "1.23 ms");
        assert_eq!(ms(Some(Duration::from_millis(123))), "123 ms");
    }
}
