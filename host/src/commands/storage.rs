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

/// A size on the command line, as in agent.toml (`2GiB`, `512MiB`, bytes; binary units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    crate::config::parse_size(text)
        .ok_or_else(|| format!("`{text}` is not a size: 2GiB, 512MiB, 1TiB or bytes"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(super::parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(super::parse_size("512M"), Ok(512 << 20));
        assert_eq!(super::parse_size("1000"), Ok(1000));
        // GB is binary here as in agent.toml: one size syntax for the agent.
        assert_eq!(super::parse_size("2GB"), Ok(2 << 30));
        assert!(super::parse_size("lots").unwrap_err().contains("not a size"));
        assert!(super::parse_size("99999999999TiB").unwrap_err().contains("not a size"));
    }
}
