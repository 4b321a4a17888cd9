//! The machine a run was measured on, and when: CPU, cores, kernel, memory, the data
//! directory's file system, load at the start, the UTC date and the git commit.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub memory_bytes: u64,
    /// `ext4 on /dev/vda`, or why it is not known.
    pub data_file_system: String,
    /// `/proc/loadavg`'s three averages when the run started.
    pub load_average_at_start: String,
}

impl Machine {
    pub fn read(data_dir: Option<&Path>) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|line| line.starts_with("model name"))
            .and_then(|line| line.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, model)| model.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: u64 = meminfo
            .lines()
            .find(|line| line.starts_with("MemTotal:"))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|field| field.parse().ok())
            .unwrap_or(0);
        let data_file_system = match data_dir {
            None => "not known (an existing node's)".to_owned(),
            Some(dir) => match crate::load::node::disk_file_system(dir) {
                Ok((device, fs_type)) => format!("{fs_type} on {device}"),
                Err(error) => format!("not known: {error}"),
            },
        };
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            memory_bytes: memory_kib * 1024,
            data_file_system,
            load_average_at_start: load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        }
    }
}

/// The commit of the git checkout in the working directory, `+ changes` when it has
/// uncommitted changes to tracked files, or why it is not known.
pub fn git_commit() -> String {
    let output = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output();
    let Ok(output) = output.as_ref().map(|output| (output.status.success(), &output.stdout)) else {
        return "unknown (git not found)".to_owned();
    };
    if !output.0 {
        return "unknown (not run inside a git checkout)".to_owned();
    }
    let commit = String::from_utf8_lossy(output.1).trim().to_owned();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .is_ok_and(|status| !status.stdout.is_empty());
    if dirty { format!("{commit} + uncommitted changes") } else { commit }
}

/// Now in UTC as `2026-12-02 07:59:03`, and as `2026-12-02-075903` for a directory name.
pub fn now_utc() -> (String, String) {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs());
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let of_day = seconds % 86_400;
    let (hour, minute, second) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    (
        format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}"),
        format!("{year:04}-{month:02}-{day:02}-{hour:02}{minute:02}{second:02}"),
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, written out here).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn day_counts_become_calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_424), (2025, 12, 2));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
