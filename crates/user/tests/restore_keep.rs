//! The fallback without ptrace (STASIS_RESTORE_KEEP_RESTORER=1): every thread
//! calls rt_sigreturn itself from the restorer area, which stays mapped. Own
//! test binary: the environment variable is process wide.
use std::fs::File;
use std::io::BufWriter;
use std::time::Duration;

use stasis_user::{checkpoint, restart, After, RestartOpts, RestartOutcome};
use stasis_workloads::{request_stop, wait_verdict, Workload};

const T: Duration = Duration::from_secs(60);

/// Kill and reap the restarted child if the test fails before it ends.
struct Reaper(i32);
impl Drop for Reaper {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // SAFETY: kill + waitpid of our own child.
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
                libc::waitpid(self.0, std::ptr::null_mut(), 0);
            }
        }
    }
}

fn keep_restorer(name: &str) {
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let mut w = Workload::spawn(name, dir.path(), &[]).expect("spawn");
    w.wait_ready(T).expect("ready");
    let img = dir.path().join("image");
    let f = BufWriter::new(File::create(&img).expect("create"));
    let (frozen, f, _) = checkpoint(w.pid() as i32, f, None).expect("checkpoint");
    drop(f.into_inner().expect("flush"));
    frozen.release(After::Kill).expect("kill");
    let pid = w.pid();
    w.kill_and_reap().expect("reap");
    let maps_before = {
        let b = std::fs::read(&img).unwrap();
        let pi = stasis_image::ProcessImage::parse(&b, &stasis_image::ParseOptions::ALL).unwrap();
        pi.vmas.iter().map(|v| (v.rec.start, v.rec.end)).collect::<Vec<_>>()
    };

    let out = restart(&img, &RestartOpts { detach: true, ..Default::default() }).expect("restart");
    let _reaper = Reaper(pid as i32);
    assert_eq!(out, RestartOutcome::Detached { pid: pid as i32 });
    // The restorer area is the one mapping that is not in the image.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let extra: Vec<&str> = maps
        .lines()
        .filter(|l| {
            let (s, e) = l.split_whitespace().next().unwrap().split_once('-').unwrap();
            let (s, e) = (u64::from_str_radix(s, 16).unwrap(), u64::from_str_radix(e, 16).unwrap());
            !maps_before.iter().any(|&(vs, ve)| vs < e && s < ve)
        })
        .collect();
    assert!(!extra.is_empty(), "expected the restorer area to stay mapped:\n{maps}");
    request_stop(&w.paths().stop).expect("stop");
    assert_eq!(wait_verdict(&w.paths().verdict, T).expect("verdict").trim(), "ok", "{name}");
    let mut st = 0;
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(pid as i32, &mut st, 0) };
    assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "{name}: status {st:#x}");
}

#[test]
fn without_ptrace_the_threads_return_by_themselves() {
    std::env::set_var("STASIS_RESTORE_KEEP_RESTORER", "1");
    for name in ["counters", "signals", "fpu", "blocked"] {
        keep_restorer(name);
    }
}
