//! The CLI behind tests/guest/guest.sh.
//!
//! stasis-guest [--mem 4G] [--smp N] [--insmod X.ko]... [--slub-debug] [--timeout SECS]
//!              [--boot-timeout SECS] [--cwd DIR] [--env K=V]... [--share DIR]
//!              [--console-log FILE] [-v|--verbose] [--dmesg] [--check-dmesg]
//!              [-c SCRIPT | -- CMD ARGS...]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use stasis_guest::{GuestError, GuestOpts};

const USAGE: &str = "usage: guest.sh [options] -- CMD ARGS...   |   guest.sh [options] -c 'SCRIPT'
options:
  --mem SIZE          guest memory (default 2G)
  --smp N             vCPUs (default 2)
  --cpu MODEL         QEMU -cpu model (default max)
  --insmod FILE.ko    insmod this host module before the command (repeatable, in order)
  --kernel-release R  boot kernel R (fetched by scripts/fetch-kernels.sh) instead of
                      the one tests/guest/setup.sh extracted
  --slub-debug        boot with slub_debug=FZPU
  --bzimage           boot the compressed bzImage via SeaBIOS (KASLR on, ~3 s slower)
                      instead of the extracted vmlinux via its PVH entry
  --kernel-arg ARG    extra kernel command line word (repeatable)
  --timeout SECS      hard limit for boot + command (default 300); exit 124 when hit
  --boot-timeout SECS limit for boot alone (default 120)
  --cwd DIR           working directory in the guest (default: the current one)
  --env K=V           extra environment variable (repeatable)
  --share DIR         use DIR as the read-write share (guest: /run/stasis-guest), keep it
  --console-log FILE  write the serial console to FILE
  -v, --verbose       copy the serial console to stderr as it comes
  --dmesg             print the guest's dmesg to stderr after the command
  --check-dmesg       exit 1 if dmesg shows WARN/BUG/Oops/KASAN/slub problems
  -c SCRIPT           run SCRIPT with bash instead of CMD ARGS
exit: the command's status; 124 timeout; 125 boot failed / not set up / bad usage;
      126 an --insmod failed; 127 the guest died while the command ran";

fn secs(v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("bad number of seconds: {v}"))
}

struct Cli {
    opts: GuestOpts,
    script: Option<String>,
    argv: Vec<String>,
    print_dmesg: bool,
    check_dmesg: bool,
}

fn parse() -> Result<Cli, String> {
    let mut args = std::env::args().skip(1);
    let mut cli = Cli {
        opts: GuestOpts::default(),
        script: None,
        argv: Vec::new(),
        print_dmesg: false,
        check_dmesg: false,
    };
    let o = &mut cli.opts;
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--" => {
                cli.argv.extend(args.by_ref());
                break;
            }
            "-h" | "--help" => return Err(String::new()),
            "--mem" => o.mem = val("--mem")?,
            "--smp" => {
                let v = val("--smp")?;
                o.smp = v.parse().map_err(|_| format!("bad --smp {v}"))?;
            }
            "--cpu" => o.cpu = val("--cpu")?,
            "--kernel-release" => o.kernel_release = Some(val("--kernel-release")?),
            "--insmod" => o.insmod.push(PathBuf::from(val("--insmod")?)),
            "--slub-debug" => o.slub_debug = true,
            "--bzimage" => o.bzimage = true,
            "--kernel-arg" => o.kernel_args.push(val("--kernel-arg")?),
            "--timeout" => o.timeout = secs(&val("--timeout")?)?,
            "--boot-timeout" => o.boot_timeout = secs(&val("--boot-timeout")?)?,
            "--cwd" => o.cwd = Some(PathBuf::from(val("--cwd")?)),
            "--env" => {
                let v = val("--env")?;
                let (k, x) = v.split_once('=').ok_or_else(|| format!("--env {v}: want K=V"))?;
                o.env.push((k.to_string(), x.to_string()));
            }
            "--share" => o.share_dir = Some(PathBuf::from(val("--share")?)),
            "--console-log" => o.console_log = Some(PathBuf::from(val("--console-log")?)),
            "-v" | "--verbose" => o.echo_console = true,
            "--dmesg" => cli.print_dmesg = true,
            "--check-dmesg" => cli.check_dmesg = true,
            "-c" => cli.script = Some(val("-c")?),
            other => {
                // Allow "guest.sh CMD ARGS" without "--" when CMD is not an option.
                if other.starts_with('-') {
                    return Err(format!("unknown option {other}"));
                }
                cli.argv.push(other.to_string());
                cli.argv.extend(args.by_ref());
                break;
            }
        }
    }
    if cli.script.is_some() != cli.argv.is_empty() {
        return Err("give either -c SCRIPT or -- CMD ARGS...".into());
    }
    Ok(cli)
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(c) => c,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("guest.sh: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(if e.is_empty() { 0 } else { 125 });
        }
    };
    let res = match &cli.script {
        Some(s) => stasis_guest::run_script(&cli.opts, s),
        None => {
            let argv: Vec<&str> = cli.argv.iter().map(String::as_str).collect();
            stasis_guest::run(&cli.opts, &argv)
        }
    };
    let code = match res {
        Ok(out) => {
            let mut so = std::io::stdout();
            let _ = so.write_all(out.output.as_bytes());
            let _ = so.flush();
            if cli.print_dmesg {
                eprintln!("--- guest dmesg ---\n{}", out.dmesg.trim_end());
            }
            let up = out
                .guest_uptime_at_command
                .map(|d| format!("{:.2}s", d.as_secs_f64()))
                .unwrap_or_else(|| "?".into());
            eprintln!(
                "guest.sh: status {}; boot-to-command {:.2}s (guest uptime {}), total {:.2}s",
                out.status,
                out.boot_to_command.as_secs_f64(),
                up,
                out.total.as_secs_f64()
            );
            let problems = out.dmesg_problems();
            if !problems.is_empty() {
                eprintln!("guest.sh: dmesg shows kernel problems:");
                for p in &problems {
                    eprintln!("  {p}");
                }
                if cli.check_dmesg && out.status == 0 {
                    return ExitCode::from(1);
                }
            }
            out.status
        }
        Err(e) => {
            if let GuestError::Timeout { output, .. } | GuestError::Crashed { output, .. } = &e {
                let _ = std::io::stdout().write_all(output.as_bytes());
            }
            eprintln!("guest.sh: {e}");
            e.exit_code()
        }
    };
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(125))
}
