//! Where a measured run's time went on the server's side: the CPU time its
//! processes spent per request, in user space and in the kernel, and how busy
//! they kept the cores they were given.
//!
//! A ratio says how far keyward is from its anchor; this says why. User time
//! is the server's own code; system time is mostly the kernel's network
//! stack, which keyward and nginx pay alike for one request and one response;
//! cores left idle mean the server was not the limit (the generators were, or
//! it waited). Read from `/proc/<pid>/stat`, whose `utime` and `stime` count
//! clock ticks (USER_HZ, 100 per second on Linux), for a process and every
//! process whose parent it is (nginx's workers). The ticks are sampled, so a
//! figure over a few seconds of one core is good to a few percent.

use std::{fmt, time::Instant};

/// USER_HZ: the unit of `/proc/<pid>/stat`'s times, 100 on every Linux
/// architecture keyward builds for.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
struct Ticks {
    user: u64,
    system: u64,
}

/// The fields of `/proc/<pid>/stat` from field 4 (the parent) on. Before
/// them come the pid, the command name in parentheses (which may itself hold
/// spaces and parentheses) and the state, a letter.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(')')?;
    Some(
        after
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// The parent of `pid` and its CPU time (`stat` fields 4, 14 and 15).
fn parent_and_ticks(pid: u32) -> Option<(u64, Ticks)> {
    let fields = stat_fields(pid)?;
    let at = |field: usize| fields.get(field - 4).copied();
    Some((
        at(4)?,
        Ticks {
            user: at(14)?,
            system: at(15)?,
        },
    ))
}

/// A server's processes: `root` and its children, given `cores` cores.
#[derive(Debug, Clone, Copy)]
pub struct Watched {
    root: u32,
    cores: usize,
}

/// The watched processes' CPU time at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    ticks: Ticks,
    at: Instant,
}

/// What the server spent on a run.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    /// User CPU time per request, µs.
    pub user_us: f64,
    /// Kernel CPU time per request, µs.
    pub system_us: f64,
    /// The share of the given cores' time the server used, 0 to 1.
    pub busy: f64,
}

impl Watched {
    pub fn new(root: u32, cores: usize) -> Self {
        Self { root, cores }
    }

    /// Now: the CPU time of the root and of every process it started.
    pub fn sample(&self) -> Sample {
        let mut ticks = parent_and_ticks(self.root).map_or_else(Ticks::default, |(_, t)| t);
        let processes = std::fs::read_dir("/proc").into_iter().flatten().flatten();
        for entry in processes {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some((parent, child)) = parent_and_ticks(pid)
                && parent == u64::from(self.root)
            {
                ticks.user += child.user;
                ticks.system += child.system;
            }
        }
        Sample {
            ticks,
            at: Instant::now(),
        }
    }

    /// What the server spent since `start`, over `requests` requests.
    pub fn since(&self, start: Sample, requests: f64) -> Cpu {
        let end = self.sample();
        let seconds = |ticks: u64, from: u64| ticks.saturating_sub(from) as f64 / TICKS_PER_SECOND;
        let user = seconds(end.ticks.user, start.ticks.user);
        let system = seconds(end.ticks.system, start.ticks.system);
        let wall = end.at.duration_since(start.at).as_secs_f64();
        let per_request = |s: f64| s * 1e6 / requests.max(1.0);
        Cpu {
            user_us: per_request(user),
            system_us: per_request(system),
            busy: (user + system) / (wall * self.cores as f64).max(f64::MIN_POSITIVE),
        }
    }
}

impl Cpu {
    /// The mean of `runs`, if any.
    pub fn mean(runs: impl IntoIterator<Item = Self>) -> Option<Self> {
        let runs: Vec<Self> = runs.into_iter().collect();
        let n = runs.len() as f64;
        let of = |f: fn(&Self) -> f64| runs.iter().map(f).sum::<f64>() / n;
        (!runs.is_empty()).then(|| Self {
            user_us: of(|c| c.user_us),
            system_us: of(|c| c.system_us),
            busy: of(|c| c.busy),
        })
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu {:.1} us/req (user {:.1}, kernel {:.1}), cores {:.0}% busy",
            self.user_us + self.system_us,
            self.user_us,
            self.system_us,
            self.busy * 100.0
        )
    }
}
