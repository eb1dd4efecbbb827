//! `keyward keys timeline`: one bar per key on a shared time axis, so an
//! operator sees when each key starts and stops signing and how long it
//! stays published. Plain ASCII, so it reads the same in a terminal, a pipe
//! or a ticket; `--output json` gives the spans.

use serde::Serialize;

use crate::{
    domain::{
        cron::Schedule,
        model::format_time,
        rotation::{Cadence, Policy},
    },
    transport::grpc::pb,
};

/// Columns of the bar area.
const WIDTH: usize = 64;
/// At most this many future rotations are listed.
const MAX_ROTATIONS: usize = 64;

/// What a key does during a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Published, not yet signing.
    Pending,
    /// Signing (and published).
    Active,
    /// Published, no longer signing.
    Retired,
}

impl Phase {
    fn mark(self) -> char {
        match self {
            Self::Pending => '-',
            Self::Active => '#',
            Self::Retired => '=',
        }
    }
}

/// One stretch of a key's life; `to: None` is open-ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    /// What the key does.
    pub phase: Phase,
    /// From (Unix seconds).
    pub from: i64,
    /// Until (Unix seconds); `None`: no end planned.
    pub to: Option<i64>,
}

/// A key on the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct KeyLine {
    /// Its kid.
    pub kid: String,
    /// Its state now.
    pub state: &'static str,
    /// Its spans, in order (planned ones included).
    pub spans: Vec<Span>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// A key set's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    /// The key set.
    pub keyset: String,
    /// Now.
    pub now: i64,
    /// The axis' start.
    pub from: i64,
    /// The axis' end.
    pub to: i64,
    /// Every key that was published within the axis, oldest first.
    pub keys: Vec<KeyLine>,
    /// Scheduled rotations within the axis.
    pub rotations: Vec<i64>,
}

/// A proto3 time: 0 means unset.
fn time_of(v: i64) -> Option<i64> {
    (v > 0).then_some(v)
}

/// A key's spans: pending from creation until it activates, active until it
/// retires, retired until it expires; a revocation ends everything.
pub fn spans(key: &pb::Key) -> Vec<Span> {
    let revoked = time_of(key.revoked_at);
    let end = |t: Option<i64>| match (t, revoked) {
        (Some(t), Some(r)) => Some(t.min(r)),
        (None, r) => r,
        (t, None) => t,
    };
    let mut out = Vec::new();
    let activates = time_of(key.activates_at);
    let retires = time_of(key.retires_at);
    let expires = time_of(key.expires_at);
    // Imported keys activate at their creation: no pending span.
    let pending_to = end(activates);
    if pending_to.is_none_or(|t| t > key.created_at) {
        out.push(Span {
            phase: Phase::Pending,
            from: key.created_at,
            to: pending_to,
        });
    }
    if let Some(a) = activates.filter(|a| revoked.is_none_or(|r| r > *a)) {
        out.push(Span {
            phase: Phase::Active,
            from: a,
            to: end(retires),
        });
        if let Some(r) = retires.filter(|r| revoked.is_none_or(|v| v > *r)) {
            out.push(Span {
                phase: Phase::Retired,
                from: r,
                to: end(expires),
            });
        }
    }
    out
}

/// The next scheduled rotations of `set` up to `to`, each running on time:
/// stepped by the key set's own policy ([`Policy::due_times`]).
pub fn rotations(set: &pb::KeySet, to: i64) -> Vec<i64> {
    let first = set.next_rotation_at;
    if first <= 0 {
        return Vec::new();
    }
    let cadence = if set.schedule.is_empty() {
        (set.rotate_every_seconds > 0).then_some(Cadence::Every(set.rotate_every_seconds))
    } else {
        Schedule::parse(&set.schedule).ok().map(Cadence::Cron)
    };
    match cadence {
        Some(cadence) => Policy {
            cadence,
            ..Policy::default()
        }
        .due_times(first, to, MAX_ROTATIONS),
        // A schedule this CLI cannot read: only the next rotation is known.
        None => (first <= to).then_some(first).into_iter().collect(),
    }
}

/// The timeline of `set` and its `keys` over `days` days around `now`: two
/// thirds of the axis behind, one third ahead.
pub fn build(set: &pb::KeySet, keys: &[pb::Key], now: i64, days: u32) -> Timeline {
    let window = i64::from(days.max(1)) * 86_400;
    let from = now - window * 2 / 3;
    let to = from + window;
    let mut lines: Vec<KeyLine> = keys
        .iter()
        .map(|key| KeyLine {
            kid: key.kid.clone(),
            state: super::state_name(key.state),
            spans: spans(key),
            revoked_at: time_of(key.revoked_at),
        })
        .filter(|line| {
            line.spans
                .iter()
                .any(|s| s.from <= to && s.to.is_none_or(|t| t >= from))
                || line.revoked_at.is_some_and(|r| (from..=to).contains(&r))
        })
        .collect();
    // Oldest first; among keys made together, the one that signed first.
    lines.sort_by_key(|l| {
        let first = l.spans.first().map_or(i64::MAX, |s| s.from);
        let signed = l
            .spans
            .iter()
            .find(|s| s.phase == Phase::Active)
            .map_or(i64::MAX, |s| s.from);
        (first, signed, l.kid.clone())
    });
    Timeline {
        keyset: set.name.clone(),
        now,
        from,
        to,
        keys: lines,
        rotations: rotations(set, to)
            .into_iter()
            .filter(|t| *t >= from)
            .collect(),
    }
}

/// The column of time `t` on the axis, if it is on it.
fn column(t: i64, from: i64, to: i64) -> Option<usize> {
    if t < from || t > to {
        return None;
    }
    let span = (to - from).max(1);
    let col = (t - from) * i64::try_from(WIDTH - 1).unwrap_or(0) / span;
    usize::try_from(col).ok()
}

/// The timeline as text.
pub fn render(t: &Timeline) -> String {
    let label_width = 14;
    let state_width = 8;
    let pad = label_width + state_width + 2;
    let day = |ts: i64| format_time(ts).chars().take(10).collect::<String>();
    let mut out = String::new();
    out.push_str(&format!(
        "key set {}: {} to {} (now {})\n",
        t.keyset,
        day(t.from),
        day(t.to),
        format_time(t.now)
    ));
    // Axis: dates at the start, the middle and the end, each beside its tick.
    let mut axis = vec![' '; WIDTH];
    let mut ticks = String::new();
    let middle = (t.from + t.to) / 2;
    for (at, end_aligned) in [(t.from, false), (middle, false), (t.to, true)] {
        let Some(c) = column(at, t.from, t.to) else {
            continue;
        };
        axis[c] = '|';
        let text = day(at);
        let start = if end_aligned {
            (c + 1).saturating_sub(text.len())
        } else {
            c
        };
        while ticks.chars().count() < start {
            ticks.push(' ');
        }
        ticks.push_str(&text);
    }
    out.push_str(&format!("{:pad$}{ticks}\n", ""));
    out.push_str(&format!("{:pad$}{}\n", "", axis.iter().collect::<String>()));
    let now_col = column(t.now, t.from, t.to);
    for line in &t.keys {
        let mut bar = vec![' '; WIDTH];
        for (col, cell) in bar.iter_mut().enumerate() {
            let at = t.from
                + (t.to - t.from) * i64::try_from(col).unwrap_or(0)
                    / i64::try_from(WIDTH - 1).unwrap_or(1);
            if let Some(span) = line
                .spans
                .iter()
                .find(|s| s.from <= at && s.to.is_none_or(|end| at < end))
            {
                *cell = span.phase.mark();
            }
        }
        if let Some(c) = line.revoked_at.and_then(|r| column(r, t.from, t.to)) {
            bar[c] = 'x';
        }
        if let Some(c) = now_col
            && bar[c] == ' '
        {
            bar[c] = ':';
        }
        let kid: String = if line.kid.chars().count() > label_width {
            line.kid
                .chars()
                .take(label_width - 1)
                .chain(['~'])
                .collect()
        } else {
            line.kid.clone()
        };
        out.push_str(&format!(
            "{kid:<label_width$}  {:<state_width$}{}\n",
            line.state,
            bar.iter().collect::<String>().trim_end()
        ));
    }
    let mut marks = vec![' '; WIDTH];
    for r in &t.rotations {
        if let Some(c) = column(*r, t.from, t.to) {
            marks[c] = '^';
        }
    }
    out.push_str(&format!(
        "{:<pad$}{}\n",
        "rotations",
        marks.iter().collect::<String>().trim_end()
    ));
    if let Some(c) = now_col {
        out.push_str(&format!("{:<pad$}{:>width$}\n", "now", "^", width = c + 1));
    }
    out.push_str("legend: - pending (published, not signing)  # active (signs)  = retired (published)  x revoked  ^ scheduled rotation\n");
    match t.rotations.first() {
        Some(next) => out.push_str(&format!("next rotation: {}\n", format_time(*next))),
        None => out.push_str("next rotation: none within the axis\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn span(phase: Phase, from: i64, to: Option<i64>) -> Span {
        Span { phase, from, to }
    }

    fn key(kid: &str, state: pb::KeyState, times: [i64; 5]) -> pb::Key {
        pb::Key {
            kid: kid.into(),
            state: state.into(),
            created_at: times[0],
            activates_at: times[1],
            retires_at: times[2],
            expires_at: times[3],
            revoked_at: times[4],
            ..Default::default()
        }
    }

    #[test]
    fn spans_follow_the_lifecycle_and_stop_at_a_revocation() {
        let k = key("a", pb::KeyState::Retired, [0, DAY, 31 * DAY, 32 * DAY, 0]);
        assert_eq!(
            spans(&k),
            [
                span(Phase::Pending, 0, Some(DAY)),
                span(Phase::Active, DAY, Some(31 * DAY)),
                span(Phase::Retired, 31 * DAY, Some(32 * DAY)),
            ]
        );
        let revoked = key(
            "b",
            pb::KeyState::Revoked,
            [0, DAY, 31 * DAY, 32 * DAY, 10 * DAY],
        );
        assert_eq!(
            spans(&revoked),
            [
                span(Phase::Pending, 0, Some(DAY)),
                span(Phase::Active, DAY, Some(10 * DAY)),
            ]
        );
        let pending = key("c", pb::KeyState::Pending, [5 * DAY, 0, 0, 0, 0]);
        assert_eq!(spans(&pending), [span(Phase::Pending, 5 * DAY, None)]);
    }

    #[test]
    fn a_month_of_rotations_draws_as_expected() {
        let now = 100 * DAY;
        let set = pb::KeySet {
            name: "om".into(),
            rotate_every_seconds: 30 * 86_400,
            next_rotation_at: now + 10 * DAY,
            ..Default::default()
        };
        let keys = [
            key(
                "old-key",
                pb::KeyState::Retired,
                [
                    now - 50 * DAY,
                    now - 49 * DAY,
                    now - 20 * DAY,
                    now - 19 * DAY,
                    0,
                ],
            ),
            key(
                "current-key",
                pb::KeyState::Active,
                [
                    now - 21 * DAY,
                    now - 20 * DAY,
                    now + 10 * DAY,
                    now + 11 * DAY,
                    0,
                ],
            ),
            key(
                "next-key",
                pb::KeyState::Pending,
                [now - 2 * DAY, now + 10 * DAY, 0, 0, 0],
            ),
        ];
        let t = build(&set, &keys, now, 60);
        assert_eq!(t.rotations, [now + 10 * DAY]);
        assert_eq!(
            t.keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            ["old-key", "current-key", "next-key"]
        );
        let text = render(&t);
        let row = |kid: &str| {
            text.lines()
                .find(|l| l.starts_with(kid))
                .unwrap()
                .to_string()
        };
        // The old key signed until 20 days ago, then stayed published a day.
        assert!(row("old-key").contains("#="), "{text}");
        // The current key signs now (the now marker sits inside its bar) and
        // retires at the next rotation.
        assert!(row("current-key").contains("#="), "{text}");
        assert!(row("next-key").contains("-#"), "{text}");
        let now_col = text
            .lines()
            .find(|l| l.starts_with("now"))
            .unwrap()
            .find('^')
            .unwrap();
        assert_eq!(&row("current-key")[now_col..=now_col], "#", "{text}");
        let rot_col = text
            .lines()
            .find(|l| l.starts_with("rotations"))
            .unwrap()
            .find('^')
            .unwrap();
        assert!(
            row("next-key")[rot_col..=rot_col + 1].contains('#'),
            "the pending key signs from the rotation:\n{text}"
        );
        assert!(text.contains("next rotation: "), "{text}");
        assert!(text.is_ascii());
    }
}
