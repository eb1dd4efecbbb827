//! Five-field cron expressions (minute hour day-of-month month day-of-week),
//! evaluated in UTC. Pure: [`Schedule::next_after`] takes the time.
//!
//! Fields take `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists
//! `a,b`, month names `JAN`–`DEC` and day names `SUN`–`SAT` (0 and 7 are
//! Sunday). As in Vixie cron, when both day fields are restricted a day
//! matches if either does.

use std::fmt;

/// A parsed schedule.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    source: String,
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    dom_restricted: bool,
    dow_restricted: bool,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.source)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn parse_value(
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(name_base + u32::try_from(i).unwrap_or(0));
    }
    let v: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if v < min || v > max {
        return Err(format!("{v} is outside {min}-{max}"));
    }
    Ok(v)
}

/// Parses one field into a bit set over `min..=max`; returns (bits, restricted).
fn parse_field(
    field: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut restricted = true;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("step {s:?} is not a number"))?;
                if step == 0 {
                    return Err("a step of 0 never fires".into());
                }
                if step > max - min {
                    return Err(format!(
                        "step {step} is out of range: at most {} for this field",
                        max - min
                    ));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            if step == 1 && field == "*" {
                restricted = false;
            }
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let lo = parse_value(a, min, max, names, name_base)?;
            let hi = parse_value(b, min, max, names, name_base)?;
            if lo > hi {
                return Err(format!("range {range:?} runs backwards"));
            }
            (lo, hi)
        } else {
            let v = parse_value(range, min, max, names, name_base)?;
            // `5/15` means from 5 to the end in steps of 15.
            (v, if step > 1 { max } else { v })
        };
        for v in (lo..=hi).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok((bits, restricted))
}

impl Schedule {
    /// Parses a five-field expression.
    pub fn parse(text: &str) -> Result<Self, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields.as_slice() else {
            return Err(format!(
                "{text:?} has {} fields; a schedule has 5: minute hour day-of-month month day-of-week",
                fields.len()
            ));
        };
        let named = |what: &str, r: Result<(u64, bool), String>| {
            r.map_err(|e| format!("{what} field: {e}"))
        };
        let (minutes, _) = named("minute", parse_field(minute, 0, 59, &[], 0))?;
        let (hours, _) = named("hour", parse_field(hour, 0, 23, &[], 0))?;
        let (days_of_month, dom_restricted) =
            named("day-of-month", parse_field(dom, 1, 31, &[], 0))?;
        let (months, _) = named("month", parse_field(month, 1, 12, &MONTHS, 1))?;
        let (mut days_of_week, dow_restricted) =
            named("day-of-week", parse_field(dow, 0, 7, &DAYS, 0))?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week |= 1;
        }
        let schedule = Self {
            source: fields.join(" "),
            minutes,
            hours: u32::try_from(hours).unwrap_or(0),
            days_of_month: u32::try_from(days_of_month).unwrap_or(0),
            months: u16::try_from(months).unwrap_or(0),
            days_of_week: u8::try_from(days_of_week & 0x7f).unwrap_or(0),
            dom_restricted,
            dow_restricted,
        };
        // 30 2 31 2 * never fires: refuse it rather than never rotating.
        if schedule.next_after(0).is_none() {
            return Err(format!("{text:?} never fires"));
        }
        Ok(schedule)
    }

    fn day_matches(&self, day: i64) -> bool {
        let (_, month, dom) = civil_from_days(day);
        if self.months & (1 << month) == 0 {
            return false;
        }
        // 1970-01-01 was a Thursday (4).
        let dow = (day + 4).rem_euclid(7);
        let dom_ok = self.days_of_month & (1 << dom) != 0;
        let dow_ok = self.days_of_week & (1 << dow) != 0;
        match (self.dom_restricted, self.dow_restricted) {
            (true, true) => dom_ok || dow_ok,
            (true, false) => dom_ok,
            (false, true) => dow_ok,
            (false, false) => true,
        }
    }

    /// The first firing time strictly after `after` (Unix seconds), within the
    /// next eight years; `None` if it never fires in that span.
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let start = after.div_euclid(60) + 1; // next whole minute
        let first_day = start.div_euclid(1440);
        for day in first_day..first_day + 366 * 8 {
            if !self.day_matches(day) {
                continue;
            }
            let from = if day == first_day {
                start.rem_euclid(1440)
            } else {
                0
            };
            for m in from..1440 {
                let (h, min) = (m / 60, m % 60);
                if self.hours & (1 << h) != 0 && self.minutes & (1 << min) != 0 {
                    return Some((day * 1440 + m) * 60);
                }
            }
        }
        None
    }

    /// The shortest gap between consecutive firings over the next `span`
    /// seconds from `from`, or `None` if it fires fewer than twice.
    pub fn shortest_gap(&self, from: i64, span: i64) -> Option<i64> {
        let mut prev = self.next_after(from)?;
        let mut shortest: Option<i64> = None;
        while let Some(next) = self.next_after(prev) {
            if next > from + span {
                break;
            }
            shortest = Some(shortest.map_or(next - prev, |s| s.min(next - prev)));
            prev = next;
        }
        shortest
    }
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-28T17:05:00Z, a Saturday.
    const T: i64 = 1_795_885_500;

    fn next(expr: &str, after: i64) -> String {
        let t = Schedule::parse(expr).unwrap().next_after(after).unwrap();
        crate::domain::model::format_time(t)
    }

    #[test]
    fn next_firings() {
        assert_eq!(next("* * * * *", T), "2026-11-28T17:06:00Z");
        assert_eq!(next("*/15 * * * *", T), "2026-11-28T17:15:00Z");
        assert_eq!(next("0 3 * * *", T), "2026-11-29T03:00:00Z");
        assert_eq!(next("0 3 1 * *", T), "2026-12-01T03:00:00Z");
        assert_eq!(next("0 0 1 1 *", T), "2027-01-01T00:00:00Z");
        assert_eq!(next("30 4 * * MON", T), "2026-11-30T04:30:00Z");
        assert_eq!(next("30 4 * * 0", T), "2026-11-29T04:30:00Z");
        assert_eq!(next("30 4 * * 7", T), "2026-11-29T04:30:00Z");
        assert_eq!(next("0 12 29 2 *", T), "2028-02-29T12:00:00Z");
        assert_eq!(next("0 9-17/4 * * mon-fri", T), "2026-11-30T09:00:00Z");
        // Both day fields restricted: either matches (the 1st, or a Sunday).
        assert_eq!(next("0 0 1 * SUN", T), "2026-11-29T00:00:00Z");
        assert_eq!(next("5/20 * * * *", T), "2026-11-28T17:25:00Z");
    }

    #[test]
    fn strictly_after() {
        let s = Schedule::parse("0 * * * *").unwrap();
        let on_the_hour = 1_795_885_200; // 17:00:00
        assert_eq!(s.next_after(on_the_hour), Some(on_the_hour + 3600));
        assert_eq!(s.next_after(on_the_hour - 1), Some(on_the_hour));
    }

    #[test]
    fn gaps() {
        let s = Schedule::parse("0 3 1 * *").unwrap();
        assert_eq!(s.shortest_gap(T, 400 * 86_400), Some(28 * 86_400));
        let s = Schedule::parse("0 0,12 * * *").unwrap();
        assert_eq!(s.shortest_gap(T, 10 * 86_400), Some(12 * 3600));
    }

    #[test]
    fn large_steps_within_range_fire_once() {
        let s = Schedule::parse("0 5/23 * * *").unwrap();
        assert_eq!(s.shortest_gap(T, 10 * 86_400), Some(86_400));
        assert_eq!(s.next_after(T).unwrap() % 86_400, 5 * 3600);
    }

    #[test]
    fn rejects_bad_expressions() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "*/0 * * * *",
            "5-1 * * * *",
            "a * * * *",
            "0 0 30 2 *",
            // Steps beyond the field's range once overflowed into "fires at 0".
            "0 5/4294967295 * * *",
            "*/4294967295 * * * *",
            "*/60 * * * *",
            "0 5/24 * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::Schedule;

        proptest! {
            #[test]
            fn schedules_never_panic_and_print_what_parses_back(
                text in ".{0,40}",
                fields in proptest::collection::vec("[0-9*/,-]{1,6}", 5),
            ) {
                let _ = Schedule::parse(&text);
                if let Ok(schedule) = Schedule::parse(&fields.join(" ")) {
                    let printed = schedule.to_string();
                    prop_assert_eq!(Schedule::parse(&printed).unwrap(), schedule);
                }
            }
        }
    }
}
