//! `agent storage grow MOUNT_POINT`: grows a mounted filesystem online to fill its device, once
//! the volume under it grew — by hand, or as the agent's storage step runs it.

use super::Exit;
use crate::storage::grow::{grow, human, Request};

/// Runs the steps; prints each with what it ran and saw (or the report as JSON). Exit 0 when
/// the filesystem fills its device now, 1 with what to run by hand.
pub fn storage_grow(request: Request, json: bool) -> anyhow::Result<Exit> {
    let report = grow(&request);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", request.mount_point.display());
        for step in &report.steps {
            let ran = step.ran.as_ref().map(|r| format!("ran `{r}`: ")).unwrap_or_default();
            let mark = if step.ok { " " } else { "!" };
            println!("{mark} {:<12} {ran}{}", step.step, step.saw.replace('\n', "; "));
        }
        match (&report.error, report.before_bytes, report.after_bytes) {
            (Some(e), ..) => eprintln!("not grown: {e}"),
            (None, Some(b), Some(a)) if a > b => println!("grown: {} → {}", human(b), human(a)),
            (None, ..) => println!("nothing to grow: the filesystem already fills its device"),
        }
    }
    Ok(if report.error.is_none() { Exit::Success } else { Exit::SomeFailed })
}

/// `2147483648`, `2GiB`, `512MiB`, `2G` (binary units: volumes are sized in GiB).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("`{text}` is not a size: 2GiB, 512MiB or bytes"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        other => return Err(format!("`{other}` is not a unit: B, KiB, MiB, GiB or TiB")),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(super::parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(super::parse_size("512M"), Ok(512 << 20));
        assert_eq!(super::parse_size("1000"), Ok(1000));
        assert!(super::parse_size("2GB").unwrap_err().contains("not a unit"));
        assert!(super::parse_size("lots").unwrap_err().contains("not a size"));
        assert!(super::parse_size("99999999999TiB").unwrap_err().contains("too large"));
    }
}
