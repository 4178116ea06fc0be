//! Prometheus text exposition (format 0.0.4), written by hand: families with `# HELP` and
//! `# TYPE`, label values escaped.

use std::fmt::Write;

/// A metrics page being written.
#[derive(Debug, Default)]
pub struct PromText {
    out: String,
}

/// One sample: label pairs and a value.
pub type Sample<'a> = (&'a [(&'a str, &'a str)], f64);

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(out: &mut String, l: &[(&str, &str)], extra: Option<(&str, &str)>) {
    if l.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in l.iter().copied().chain(extra) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape(v));
    }
    out.push('}');
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl PromText {
    /// An empty page.
    pub fn new() -> PromText {
        PromText::default()
    }

    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", help.replace('\n', " "));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, l: &[(&str, &str)], extra: Option<(&str, &str)>, v: f64) {
        self.out.push_str(name);
        labels(&mut self.out, l, extra);
        let _ = writeln!(self.out, " {}", number(v));
    }

    /// A counter family.
    pub fn counter(&mut self, name: &str, help: &str, samples: &[Sample<'_>]) {
        self.family(name, help, "counter");
        for (l, v) in samples {
            self.sample(name, l, None, *v);
        }
    }

    /// A gauge family.
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[Sample<'_>]) {
        self.family(name, help, "gauge");
        for (l, v) in samples {
            self.sample(name, l, None, *v);
        }
    }

    /// A histogram: `buckets` are (upper bound, cumulative count), ascending; `+Inf` is added.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        l: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        self.family(name, help, "histogram");
        self.histogram_series(name, l, buckets, sum, count);
    }

    /// Another series of a histogram family already started with [`Self::histogram`].
    pub fn histogram_series(
        &mut self,
        name: &str,
        l: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        let bucket = format!("{name}_bucket");
        for (le, c) in buckets {
            let le = number(*le);
            self.sample(&bucket, l, Some(("le", &le)), *c as f64);
        }
        self.sample(&bucket, l, Some(("le", "+Inf")), count as f64);
        self.sample(&format!("{name}_sum"), l, None, sum);
        self.sample(&format!("{name}_count"), l, None, count as f64);
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Why a Prometheus text page does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// A sample line without a value.
    #[error("line {line}: no value")]
    NoValue {
        /// The line number (from 1).
        line: usize,
    },
    /// A value that is not a number.
    #[error("line {line}: {source}")]
    BadValue {
        /// The line number (from 1).
        line: usize,
        /// The number parser's error.
        source: std::num::ParseFloatError,
    },
}

/// For callers that report errors as text.
impl From<ParseError> for String {
    fn from(e: ParseError) -> String {
        e.to_string()
    }
}

/// Parses a Prometheus text page into (name with labels, value) pairs, skipping comments: for
/// tests and tools that scrape the admin API.
pub fn parse(text: &str) -> Result<Vec<(String, f64)>, ParseError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .rsplit_once(' ')
            .ok_or(ParseError::NoValue { line: n + 1 })?;
        let v = match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|source| ParseError::BadValue {
                line: n + 1,
                source,
            })?,
        };
        out.push((k.to_string(), v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_back() {
        let mut p = PromText::new();
        p.counter(
            "mixplane_packets_dropped_total",
            "Dropped packets.",
            &[(&[("worker", "0"), ("reason", "bad_mac")], 3.0)],
        );
        p.gauge("mixplane_wheel_packets", "Held.", &[(&[], 12.0)]);
        p.histogram(
            "mixplane_lat_seconds",
            "Latency.",
            &[("worker", "1")],
            &[(0.001, 2), (0.01, 5)],
            0.02,
            6,
        );
        let text = p.finish();
        assert!(text.contains("# TYPE mixplane_packets_dropped_total counter"));
        assert!(text.contains("mixplane_packets_dropped_total{worker=\"0\",reason=\"bad_mac\"} 3"));
        assert!(text.contains("mixplane_lat_seconds_bucket{worker=\"1\",le=\"+Inf\"} 6"));
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.len(), 1 + 1 + 3 + 2);
        assert!(parsed.contains(&("mixplane_wheel_packets".to_string(), 12.0)));
        assert!(matches!(
            parse("x{a=\"b\"} nope"),
            Err(ParseError::BadValue { line: 1, .. })
        ));
        assert_eq!(parse("\nnovalue"), Err(ParseError::NoValue { line: 2 }));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut p = PromText::new();
        p.gauge("g", "h", &[(&[("k", "a\"b\\c\nd")], 1.0)]);
        assert!(p.finish().contains(r#"g{k="a\"b\\c\nd"} 1"#));
    }
}
