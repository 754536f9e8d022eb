//! Test helper: checkpoint one process into a file.
//!
//! `dump_one PID OUT [--after leave|kill|stop] [--hold-ms N] [--slow-ms N]`
//! --hold-ms keeps the target frozen that long after the image is written;
//! --slow-ms sleeps in every progress step (to widen the window in which a
//! test kills the checkpointer).
use std::time::Duration;

struct Slow(u64);
impl stasis_user::Progress for Slow {
    fn set_total(&self, _bytes: u64) {
        std::thread::sleep(Duration::from_millis(self.0));
    }
    fn advance(&self, _bytes: u64) {
        std::thread::sleep(Duration::from_millis(self.0));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: dump_one PID OUT [--after leave|kill|stop] [--hold-ms N] [--slow-ms N]");
        std::process::exit(2);
    }
    let pid: i32 = args[1].parse().expect("pid");
    let out = std::fs::File::create(&args[2]).expect("create output");
    let mut after = stasis_user::After::LeaveRunning;
    let mut hold = 0u64;
    let mut slow = 0u64;
    let mut i = 3;
    while i + 1 < args.len() {
        match args[i].as_str() {
            "--after" => {
                after = match args[i + 1].as_str() {
                    "kill" => stasis_user::After::Kill,
                    "stop" => stasis_user::After::Stop,
                    _ => stasis_user::After::LeaveRunning,
                }
            }
            "--hold-ms" => hold = args[i + 1].parse().expect("hold"),
            "--slow-ms" => slow = args[i + 1].parse().expect("slow"),
            _ => {}
        }
        i += 2;
    }
    let s = Slow(slow);
    let progress: Option<&dyn stasis_user::Progress> = if slow > 0 { Some(&s) } else { None };
    match stasis_user::checkpoint(pid, out, progress) {
        Ok((frozen, _out, stats)) => {
            println!(
                "ok threads={} vmas={} page_bytes={} image_bytes={} frozen_us={}",
                stats.threads,
                stats.vmas,
                stats.page_bytes,
                stats.image_bytes,
                stats.frozen.as_micros()
            );
            std::thread::sleep(Duration::from_millis(hold));
            if let Err(e) = frozen.release(after) {
                eprintln!("release: {e}");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
