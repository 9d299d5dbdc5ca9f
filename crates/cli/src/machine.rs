//! The machine a figure was measured on, as the bench reports it.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub os: String,
    pub kernel: String,
    /// The 1-minute load average when the bench started.
    pub load_at_start: f64,
}

impl Machine {
    pub fn describe() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = field(&cpuinfo, "model name", ':')
            .unwrap_or("unknown")
            .to_owned();
        let meminfo = read("/proc/meminfo");
        let memory_kib: f64 = field(&meminfo, "MemTotal", ':')
            .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let os_release = read("/etc/os-release");
        let os = field(&os_release, "PRETTY_NAME", '=')
            .unwrap_or("unknown")
            .trim_matches('"')
            .to_owned();
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            os,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            load_at_start: read("/proc/loadavg")
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
        }
    }

    /// One line for people: `2 cores (AMD EPYC ...), 24.0 GiB, Debian ..., load 0.3`.
    pub fn line(&self) -> String {
        format!(
            "{} cores ({}), {} GiB, {}, Linux {}, load {:.2} at the start",
            self.cores, self.cpu, self.memory_gib, self.os, self.kernel, self.load_at_start
        )
    }
}

/// The value of the first `key<sep>value` line.
fn field<'a>(text: &'a str, key: &str, separator: char) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(separator)?;
        (k.trim() == key).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_proc_style_text() {
        let text = "processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\n";
        assert_eq!(field(text, "model name", ':'), Some("Some CPU @ 2.0GHz"));
        assert_eq!(
            field("PRETTY_NAME=\"Debian\"\n", "PRETTY_NAME", '='),
            Some("\"Debian\"")
        );
        assert_eq!(field(text, "absent", ':'), None);
    }
}
