//! Crash safety of the G3 disk tier, with real processes: a child writes and prints what was
//! acknowledged, and is killed with SIGKILL at random moments; a child under a file-size limit
//! fills its "disk"; and bytes are flipped in a data file.
//!
//! The children are this test binary re-executed (`current_exe()`) with one test selected and
//! `KVTIER_DISK_CHILD` set; without that variable the child tests return at once.

mod disk_support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use disk_support::{Rng, block, hash, version_of};
use kvtier_storage::disk::{BlockRead, DiskConfig, DiskError, DiskTier};

const CHILD_ENV: &str = "KVTIER_DISK_CHILD";

/// The crash tests' tier; the eviction test runs with redb's quick repair, the other without.
fn crash_config(capacity: u64) -> DiskConfig {
    DiskConfig::new("crash-test/xxh3/raw", 4096, capacity)
        .with_slots_per_file(256)
        .with_quick_repair(capacity < 1000)
}

/// Child: opens the tier in `$KVTIER_DISK_DIR` and writes blocks `START..` forever in batches
/// of 1..=8 (one version each), printing `ACK first count` after each acknowledged batch.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap().parse::<u64>().unwrap();
    let (mut next, capacity) = (var("KVTIER_DISK_START"), var("KVTIER_DISK_CAPACITY"));
    let tier = DiskTier::open(&dir, crash_config(capacity)).unwrap();
    let mut rng = Rng(next | 1);
    let mut out = std::io::stdout().lock();
    loop {
        let count = 1 + rng.below(8);
        let blocks: Vec<Vec<u8>> = (next..next + count).map(|i| block(i, 0, 4096)).collect();
        let batch: Vec<_> = (next..next + count)
            .zip(&blocks)
            .map(|(i, b)| (hash(i), b.as_slice()))
            .collect();
        tier.put_batch(&batch).unwrap();
        writeln!(out, "ACK {next} {count}").unwrap();
        out.flush().unwrap();
        next += count;
    }
}

/// Runs one child writer on `dir`, waits for `min_acks` acknowledged batches, then for `after`,
/// kills it with SIGKILL, and returns the blocks it acknowledged (and the first it had not).
fn run_and_kill(
    dir: &Path,
    start: u64,
    capacity: u64,
    min_acks: usize,
    after: Duration,
) -> (Vec<u64>, u64) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env("KVTIER_DISK_START", start.to_string())
        .env("KVTIER_DISK_CAPACITY", capacity.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (send, acks) = std::sync::mpsc::channel::<(u64, u64)>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut words = line.split_whitespace().skip_while(|w| *w != "ACK").skip(1);
            if let (Some(first), Some(count)) = (words.next(), words.next()) {
                let _ = send.send((first.parse().unwrap(), count.parse().unwrap()));
            }
        }
    });
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for _ in 0..min_acks {
        let left = deadline.saturating_duration_since(Instant::now());
        let (first, count) = acks
            .recv_timeout(left)
            .expect("the child acknowledged nothing");
        acked.extend(first..first + count);
    }
    std::thread::sleep(after);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    for (first, count) in acks.try_iter() {
        acked.extend(first..first + count);
    }
    let next = acked.last().map_or(start, |last| last + 1);
    (acked, next)
}

/// Reads blocks `range` back: a block that reads must be exactly version 0 of itself.
/// Returns the blocks that were served.
fn served(tier: &DiskTier, range: std::ops::Range<u64>) -> Vec<u64> {
    let mut buf = vec![0u8; 4096];
    let mut served = Vec::new();
    for i in range {
        match tier.get(hash(i), &mut buf) {
            Ok(true) => {
                assert_eq!(version_of(i, &buf), Some(0), "block {i} served torn bytes");
                served.push(i);
            }
            Ok(false) | Err(DiskError::Corrupt { .. }) => {}
            Err(e) => panic!("block {i}: {e}"),
        }
    }
    served
}

fn seed() -> u64 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    seed
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed());
    let capacity = 1 << 14;
    let (mut acked_all, mut start, mut kills_after_acks) = (Vec::new(), 0, 0);
    let began = Instant::now();
    for trial in 0..24 {
        // Odd trials die at any moment (opening, creating files, ...), even ones mid-stream.
        let (min_acks, after) = if trial % 2 == 1 {
            (0, Duration::from_millis(rng.below(150)))
        } else {
            (
                1 + rng.below(4) as usize,
                Duration::from_millis(rng.below(40)),
            )
        };
        let (acked, next) = run_and_kill(dir.path(), start, capacity, min_acks, after);
        kills_after_acks += u64::from(!acked.is_empty());
        acked_all.extend(acked);
        let tier = DiskTier::open(dir.path(), crash_config(capacity)).unwrap();
        // Every acknowledged block is back, exactly; the unacknowledged batch in flight when
        // the child died (at most 8 blocks) is either whole or absent.
        let got = served(&tier, 0..next + 8);
        for i in &acked_all {
            assert!(
                got.binary_search(i).is_ok(),
                "trial {trial}: acknowledged block {i} lost"
            );
        }
        assert_eq!(
            tier.stats().corrupt,
            0,
            "trial {trial}: nothing was evicted"
        );
        assert!(tier.len() >= acked_all.len());
        // Blocks the child wrote but never acknowledged are not reused as ids: start past them.
        start = next + 8;
    }
    assert!(
        kills_after_acks >= 12,
        "too few trials got far enough to acknowledge a write"
    );
    eprintln!(
        "{} blocks acknowledged over 24 kills in {:?}",
        acked_all.len(),
        began.elapsed()
    );
}

#[test]
fn kill_9_while_evicting_serves_only_whole_blocks_and_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed());
    let capacity = 48;
    let mut start = 0;
    for trial in 0..10 {
        let after = Duration::from_millis(rng.below(60));
        let (acked, next) = run_and_kill(dir.path(), start, capacity, 6, after);
        let tier = DiskTier::open(dir.path(), crash_config(capacity)).unwrap();
        let got = served(&tier, 0..next + 8);
        // FIFO: the newest acknowledged blocks are all there, except those the batch in flight
        // (at most 8 blocks) may have evicted.
        let keep = acked.len().min(capacity as usize - 8);
        for i in &acked[acked.len() - keep..] {
            assert!(
                got.binary_search(i).is_ok(),
                "trial {trial}: recent block {i} lost"
            );
        }
        assert!(tier.len() <= capacity as usize);
        start = next + 8;
    }
}

/// Child: under a file-size limit set by its shell, writes blocks one at a time until a write
/// fails, then reads every block back. Prints `OK i`, `ERR i message`, `READ n`.
#[test]
fn child_filler() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let tier = DiskTier::open(&dir, fill_config()).unwrap();
    let mut out = std::io::stdout().lock();
    // libtest's "test child_filler ... " has no newline: start ours on a fresh line.
    writeln!(out).unwrap();
    let mut ok = (0..8).collect::<Vec<u64>>();
    let mut failures = 0;
    for i in 8..64u64 {
        match tier.put(hash(i), &block(i, 0, FILL_BLOCK)) {
            Ok(()) => {
                ok.push(i);
                writeln!(out, "OK {i}").unwrap();
            }
            Err(e) => {
                failures += 1;
                writeln!(out, "ERR {i} {e}").unwrap();
                if failures == 3 {
                    break;
                }
            }
        }
    }
    let mut buf = vec![0u8; FILL_BLOCK];
    let read = ok
        .iter()
        .filter(|&&i| tier.get(hash(i), &mut buf).unwrap() && version_of(i, &buf) == Some(0))
        .count();
    writeln!(out, "READ {read} {}", ok.len()).unwrap();
    writeln!(out, "ERRORS {}", tier.stats().errors).unwrap();
}

/// Blocks of the fill test: 256 KiB, so a data file (64 slots, 16 MiB) outgrows the limit
/// while the index (a few MiB: redb preallocates) does not.
const FILL_BLOCK: usize = 256 * 1024;

fn fill_config() -> DiskConfig {
    DiskConfig::new("fill-test/xxh3/raw", FILL_BLOCK, 256).with_slots_per_file(64)
}

#[test]
fn a_full_disk_fails_writes_with_an_error_and_reads_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    {
        let tier = DiskTier::open(dir.path(), fill_config()).unwrap();
        for i in 0..8 {
            tier.put(hash(i), &block(i, 0, FILL_BLOCK)).unwrap();
        }
    }
    // A 12 MiB file-size limit: slots 48.. of the first 16 MiB data file are past it. SIGXFSZ is
    // ignored (inherited through exec) so the limit shows as EFBIG errors, as a full disk does.
    let output = Command::new("bash")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 12288; exec \"$0\" --exact child_filler --nocapture --test-threads=1")
        .arg(std::env::current_exe().unwrap())
        .env(CHILD_ENV, dir.path())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "child failed: {:?}", output.status);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let oks = stdout.lines().filter(|l| l.starts_with("OK ")).count();
    let errs: Vec<&str> = stdout.lines().filter(|l| l.starts_with("ERR ")).collect();
    assert_eq!(errs.len(), 3, "{stdout}");
    assert!(oks >= 1, "no write fit under the limit: {stdout}");
    assert_eq!(oks, 40, "slots 8..48 fit under the limit: {stdout}");
    assert!(
        errs[0].contains("writing blocks") && errs[0].contains("os error 27"),
        "{stdout}"
    );
    let read_line = stdout.lines().find(|l| l.starts_with("READ ")).unwrap();
    let counts: Vec<&str> = read_line.split_whitespace().collect();
    assert_eq!(
        counts[1], counts[2],
        "every acknowledged block reads back: {stdout}"
    );
    assert!(stdout.contains("ERRORS 3"), "{stdout}");
    // Without the limit, everything acknowledged is there and writes work again.
    let tier = DiskTier::open(dir.path(), fill_config()).unwrap();
    assert_eq!(tier.len(), 8 + oks);
    let mut buf = vec![0u8; FILL_BLOCK];
    for i in 0..8 + oks as u64 {
        assert!(tier.get(hash(i), &mut buf).unwrap(), "block {i}");
        assert_eq!(version_of(i, &buf), Some(0));
    }
    tier.put(hash(1000), &block(1000, 0, FILL_BLOCK)).unwrap();
}

/// Flips one byte of block `i`'s bytes in the data files (found by content).
fn flip_byte_of(dir: &Path, i: u64, len: usize) {
    let wanted = block(i, 0, len);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("data-")
        {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.chunks(len).position(|c| c == wanted.as_slice()) {
            bytes[at * len + len / 2] ^= 0x40;
            std::fs::write(&path, bytes).unwrap();
            return;
        }
    }
    panic!("block {i} not found in the data files");
}

#[test]
fn flipped_bytes_are_reported_dropped_counted_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = crash_config(64);
    let blocks: Vec<Vec<u8>> = (0..10).map(|i| block(i, 0, 4096)).collect();
    {
        let tier = DiskTier::open(dir.path(), config.clone()).unwrap();
        let batch: Vec<_> = (0..10)
            .map(|i| (hash(i), blocks[i as usize].as_slice()))
            .collect();
        tier.put_batch(&batch).unwrap();
        // Corrupted under an open tier.
        flip_byte_of(dir.path(), 3, 4096);
        let mut buf = vec![0u8; 4096];
        let err = tier.get(hash(3), &mut buf).unwrap_err();
        assert!(
            matches!(err, DiskError::Corrupt { hash: h } if h == hash(3)),
            "{err}"
        );
        assert!(!tier.contains(hash(3)));
        assert!(
            !tier.get(hash(3), &mut buf).unwrap(),
            "dropped after the first report"
        );
        assert_eq!(tier.stats().corrupt, 1);
        assert_eq!(tier.len(), 9);
    }
    // Corrupted while closed; found by a batch read, neighbours unharmed.
    flip_byte_of(dir.path(), 6, 4096);
    let tier = DiskTier::open(dir.path(), config.clone()).unwrap();
    let ask: Vec<_> = [5, 6, 7, 3].iter().map(|&i| hash(i)).collect();
    let mut out = vec![0u8; 4 * 4096];
    let found = tier.get_batch(&ask, &mut out).unwrap();
    assert_eq!(found[0], BlockRead::Hit);
    assert_eq!(found[1], BlockRead::Corrupt);
    assert_eq!(found[2], BlockRead::Hit);
    assert_eq!(&out[2 * 4096..3 * 4096], &blocks[7][..]);
    // Block 3's removal was committed when the first handle closed: gone, not corrupt.
    assert_eq!(found[3], BlockRead::Miss);
    assert_eq!(tier.stats().corrupt, 1);
    tier.flush_removals().unwrap();
    drop(tier);
    let tier = DiskTier::open(dir.path(), config).unwrap();
    assert_eq!(tier.len(), 8);
    assert!(!tier.contains(hash(3)) && !tier.contains(hash(6)));
    assert_eq!(served(&tier, 0..10), vec![0, 1, 2, 4, 5, 7, 8, 9]);
}
