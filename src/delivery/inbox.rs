//! The replay inbox: `<spool_dir>/inbox/<uuid v7>.jsonl`, one
//! [`Delivery`] as JSON per line. `tagproxy deadletter replay` drops files
//! here; the delivery engine imports them (on start and every second), takes
//! their deliveries into its durable queue and then deletes the file.
//!
//! A file appears under its final name only once it is complete and on disk
//! (written as `<name>.tmp`, `sync_data`, renamed, directory fsynced), so an
//! importer never sees half a file. UUIDv7 names sort by creation time.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use super::deadletter::sync_dir;
use crate::tools::Delivery;

/// The inbox folder's name under `spool_dir`.
pub const DIR_NAME: &str = "inbox";

/// `<spool_dir>/inbox`.
pub fn dir(spool_dir: &Path) -> PathBuf {
    spool_dir.join(DIR_NAME)
}

/// Writes deliveries atomically as `<spool_dir>/inbox/<uuid v7>.jsonl` (one
/// Delivery JSON per line): write tmp name (`.tmp` suffix), sync_data,
/// rename, fsync the dir.
pub fn write(spool_dir: &Path, deliveries: &[Delivery]) -> io::Result<PathBuf> {
    let mut buf = Vec::new();
    for d in deliveries {
        serde_json::to_writer(&mut buf, d)?;
        buf.push(b'\n');
    }
    let inbox = dir(spool_dir);
    let existed = inbox.is_dir();
    fs::create_dir_all(&inbox)?;
    if !existed {
        // A new folder's own entry must survive a crash too.
        sync_dir(spool_dir)?;
    }
    let name = format!("{}.jsonl", uuid::Uuid::now_v7());
    let path = inbox.join(&name);
    let tmp = inbox.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(&buf)?;
    file.sync_data()?;
    drop(file);
    fs::rename(&tmp, &path)?;
    sync_dir(&inbox)?;
    Ok(path)
}

/// The inbox files ready to import, oldest first (skips `.tmp`); each with
/// its parsed deliveries (unparseable lines are logged with tracing::warn
/// and skipped). A missing inbox is empty; a file that cannot be read is
/// logged and left out (and so left on disk).
pub fn pending(spool_dir: &Path) -> io::Result<Vec<(PathBuf, Vec<Delivery>)>> {
    let entries = match fs::read_dir(dir(spool_dir)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry?;
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && entry.file_name().to_string_lossy().ends_with(".jsonl") {
            paths.push(entry.path());
        }
    }
    // UUIDv7 names: name order is creation order.
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            // Imported and deleted by someone else meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read replay inbox file");
                continue;
            }
        };
        let mut deliveries = Vec::new();
        for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Delivery>(line) {
                Ok(d) => deliveries.push(d),
                Err(e) => {
                    tracing::warn!(file = %path.display(), line = n + 1, error = %e, "unreadable line in replay inbox file skipped");
                }
            }
        }
        out.push((path, deliveries));
    }
    Ok(out)
}

/// Called once a file's deliveries are stored: deletes it — unless some of
/// its lines could not be read, then it is kept as `<name>.unreadable` (and
/// no longer imported), so nothing vanishes unseen.
pub fn settle(path: &Path) -> io::Result<()> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let unreadable = bytes
        .split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .filter(|line| serde_json::from_slice::<Delivery>(line).is_err())
        .count();
    if unreadable == 0 {
        return fs::remove_file(path);
    }
    let kept = path.with_extension("jsonl.unreadable");
    tracing::warn!(file = %kept.display(), unreadable, "replay file had unreadable lines; kept for inspection");
    fs::rename(path, kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::{HttpRequest, Payload};

    fn delivery(tool: &str, event_id: &str) -> Delivery {
        Delivery {
            tool: tool.into(),
            event_id: event_id.into(),
            payload: Payload::Http(HttpRequest {
                method: "GET".into(),
                url: format!("https://collect.example/g?e={event_id}"),
                headers: vec![],
                body: None,
            }),
            source: None,
            secrets: Vec::new(),
        }
    }

    #[test]
    fn write_then_pending_round_trip_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("data/spool");
        assert!(pending(&spool).unwrap().is_empty(), "missing inbox");
        let first = vec![delivery("ga4", "e1"), delivery("meta", "e2")];
        let second = vec![
            delivery("console", "e3"),
            Delivery {
                tool: "console".into(),
                event_id: "e4".into(),
                payload: Payload::Stdout("line".into()),
                source: None,
                secrets: Vec::new(),
            },
        ];
        let p1 = write(&spool, &first).unwrap();
        let p2 = write(&spool, &second).unwrap();
        assert_eq!(p1.parent().unwrap(), spool.join("inbox"));
        assert!(p1.to_string_lossy().ends_with(".jsonl"));
        let text = fs::read_to_string(&p1).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert_eq!(
            serde_json::from_str::<Delivery>(text.lines().next().unwrap()).unwrap(),
            first[0]
        );
        let got = pending(&spool).unwrap();
        assert_eq!(got, vec![(p1, first), (p2, second)]);
        // Nothing but the two files is left in the folder.
        assert_eq!(fs::read_dir(spool.join("inbox")).unwrap().count(), 2);
    }

    #[test]
    fn tmp_files_are_ignored_and_bad_lines_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        let inbox = spool.join("inbox");
        fs::create_dir_all(&inbox).unwrap();
        let d = delivery("ga4", "e1");
        let line = serde_json::to_string(&d).unwrap();
        // A write interrupted before its rename.
        fs::write(inbox.join("0000.jsonl.tmp"), format!("{line}\n")).unwrap();
        fs::write(inbox.join("notes.txt"), "x").unwrap();
        fs::create_dir(inbox.join("sub.jsonl")).unwrap();
        fs::write(
            inbox.join("0001.jsonl"),
            format!("garbage\n{line}\n\n{{\"tool\":"),
        )
        .unwrap();
        let got = pending(spool).unwrap();
        assert_eq!(got, vec![(inbox.join("0001.jsonl"), vec![d])]);
    }

    #[test]
    fn empty_write_is_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), &[]).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"");
        assert_eq!(pending(dir.path()).unwrap(), vec![(p, vec![])]);
    }

    #[test]
    fn settled_files_go_unless_a_line_was_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(dir.path(), &[delivery("ga4", "e1")]).unwrap();
        settle(&good).unwrap();
        assert!(!good.exists());
        assert!(
            !good.with_extension("jsonl.unreadable").exists(),
            "blank lines are not unreadable ones"
        );
        let bad = write(dir.path(), &[delivery("ga4", "e2")]).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(&bad)
            .unwrap()
            .write_all(b"{not json\n")
            .unwrap();
        settle(&bad).unwrap();
        assert!(!bad.exists());
        assert!(bad.with_extension("jsonl.unreadable").exists());
        assert!(
            pending(dir.path()).unwrap().is_empty(),
            "not imported again"
        );
    }

    /// A missing inbox is empty, but one that cannot be read is an error
    /// (the engine logs it and looks again), never "nothing to import".
    #[test]
    fn an_inbox_that_cannot_be_read_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(DIR_NAME), b"a file, not a folder").unwrap();
        assert!(pending(dir.path()).is_err());
        assert!(write(dir.path(), &[delivery("ga4", "e1")]).is_err());
    }

    /// A file another instance already imported and removed is settled.
    #[test]
    fn settling_a_file_already_gone_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        assert!(settle(&dir.path().join("gone.jsonl")).is_ok());
        assert!(settle(dir.path()).is_err(), "a folder cannot be read");
    }
}
