//! stasis-guest: run commands inside a QEMU (TCG) guest booting Debian's **stock** kernel.
//!
//! The guest sees the host's root file system read-only over virtio-9p with a tmpfs
//! overlay on top (chrooted into), so host-built binaries, python3, bash and criu run
//! inside. A second, read-write 9p share of a per-run host directory carries the command
//! script in and the exit status, output and dmesg back. See tests/guest/README.md.
//!
//! ```no_run
//! use stasis_guest::GuestRun;
//! let out = GuestRun::new().mem("4G").insmod("kmod/stasis.ko").run(&["uname", "-r"])?;
//! assert_eq!(out.status, 0);
//! assert!(out.dmesg_problems().is_empty());
//! # Ok::<(), stasis_guest::GuestError>(())
//! ```

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The guest's /init, a busybox shell script.
pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// The guest kernel's modprobe helper (in the initramfs): runs the host's modprobe in
/// the chroot, where /lib/modules/RELEASE holds the extracted package's modules.
pub const MODPROBE_WRAPPER: &str =
    "#!/bin/busybox sh\nexec /bin/busybox chroot /newroot /sbin/modprobe \"$@\"\n";

/// The modules the 9p root and the overlay need (their dependencies come from the
/// kernel's modules.dep, so the list holds for every kernel: 5.10 has no
/// virtio_pci_*_dev, 6.12 no fscache module, 7.x builds virtio in). Those built into
/// the kernel are not in modules.dep and are skipped.
pub const BOOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// Where the guest sees the per-run share (the host directory [`GuestOpts::share_dir`]).
pub const GUEST_SHARE: &str = "/run/stasis-guest";

const MARK: &str = "STASIS-GUEST: ";
const SETUP_HINT: &str = "run tests/guest/setup.sh";

/// Everything that can go wrong running a guest.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// A host prerequisite is missing (QEMU, busybox-static, the extracted kernel).
    #[error("guest harness not set up: {what} ({SETUP_HINT})")]
    NotSetUp { what: String },
    /// A host-side I/O error.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// A bad option (e.g. an --insmod path that does not exist).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The guest never reached the command: QEMU failed, the kernel panicked, a boot
    /// module failed to load, a share could not be mounted, or the boot timed out.
    #[error("guest boot failed: {reason}\n--- console (last lines) ---\n{}", tail(console, 40))]
    BootFailed { reason: String, console: String },
    /// One of the requested modules failed to insmod; the command was not run.
    #[error("insmod {module} failed in the guest: {log}\n--- dmesg (last lines) ---\n{}", tail(dmesg, 30))]
    Insmod {
        module: String,
        log: String,
        dmesg: String,
    },
    /// The hard timeout expired while the command ran; QEMU was killed.
    #[error("guest command timed out after {after:?} (QEMU killed)")]
    Timeout {
        after: Duration,
        /// The command's output so far.
        output: String,
        console: String,
    },
    /// QEMU stopped after the command started but before its status was written
    /// (kernel panic, oops in init, guest reset).
    #[error("guest died while the command ran\n--- console (last lines) ---\n{}", tail(console, 60))]
    Crashed { output: String, console: String },
}

impl GuestError {
    /// The CLI exit code for this error: 124 on timeout, 125 when the guest did not
    /// boot (or the harness is not set up), 126 when an insmod failed, 127 on a crash.
    pub fn exit_code(&self) -> i32 {
        match self {
            GuestError::Timeout { .. } => 124,
            GuestError::Insmod { .. } => 126,
            GuestError::Crashed { .. } => 127,
            _ => 125,
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> GuestError {
    let context = context.into();
    move |source| GuestError::Io { context, source }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Options of one guest run. `Default` gives 2 vCPUs, 2 GiB, no modules, 300 s.
#[derive(Debug, Clone)]
pub struct GuestOpts {
    /// Guest memory as QEMU's -m understands it ("2G", "4096M").
    pub mem: String,
    /// vCPUs.
    pub smp: u32,
    /// QEMU -cpu model. "max" gives the TCG guest AVX2 etc.
    pub cpu: String,
    /// Host paths of .ko files insmod'ed (in order) before the command runs.
    pub insmod: Vec<PathBuf>,
    /// Boot with slub_debug=FZPU.
    pub slub_debug: bool,
    /// Boot the compressed bzImage through SeaBIOS (with KASLR) instead of the
    /// decompressed vmlinux through its PVH entry (the default: the same kernel, about
    /// 3 s faster to boot under TCG because the decompressor does not run; no KASLR).
    pub bzimage: bool,
    /// Extra kernel command line words.
    pub kernel_args: Vec<String>,
    /// Hard limit for the whole run (boot + command); QEMU is killed after it.
    pub timeout: Duration,
    /// Limit for boot alone (QEMU start to the command starting).
    pub boot_timeout: Duration,
    /// The command's working directory in the guest (default: the host's cwd). If it is
    /// missing in the guest (the overlay shows the host's root, /tmp included, but not
    /// what the guest's own mounts cover, such as /run), the command runs in the
    /// read-only /run/hostroot/CWD; if that does not exist either, in /.
    pub cwd: Option<PathBuf>,
    /// Extra environment for the command (on top of PATH, HOME=/root, TERM=dumb, ...).
    pub env: Vec<(String, String)>,
    /// Use this host directory as the read-write share (guest: /run/stasis-guest) and
    /// keep it afterwards. Default: a fresh temp directory, removed after the run.
    pub share_dir: Option<PathBuf>,
    /// Cache directory (kernel, initramfs). Default: $STASIS_GUEST_CACHE, else
    /// tests/guest/cache.
    pub cache_dir: Option<PathBuf>,
    /// Boot this kernel release (extracted in the cache by scripts/fetch-kernels.sh)
    /// instead of the one tests/guest/setup.sh extracted (the cache's kernel/release).
    pub kernel_release: Option<String>,
    /// Copy the serial console to stderr as it arrives.
    pub echo_console: bool,
    /// Also write the serial console to this file.
    pub console_log: Option<PathBuf>,
}

impl Default for GuestOpts {
    fn default() -> Self {
        GuestOpts {
            mem: "2G".into(),
            smp: 2,
            cpu: "max".into(),
            insmod: Vec::new(),
            slub_debug: false,
            bzimage: false,
            kernel_args: Vec::new(),
            timeout: Duration::from_secs(300),
            boot_timeout: Duration::from_secs(120),
            cwd: None,
            env: Vec::new(),
            share_dir: None,
            cache_dir: None,
            kernel_release: None,
            echo_console: false,
            console_log: None,
        }
    }
}

/// The result of a guest run whose command ran to completion.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    /// The command's exit status (128+N when killed by signal N).
    pub status: i32,
    /// The command's stdout and stderr, interleaved.
    pub output: String,
    /// The guest kernel log, read by dmesg after the command ended.
    pub dmesg: String,
    /// The serial console (kernel messages at loglevel <= warning, init's markers).
    pub console: String,
    /// Host wall clock from QEMU start to the guest printing that the command starts.
    pub boot_to_command: Duration,
    /// The guest's /proc/uptime when the command started.
    pub guest_uptime_at_command: Option<Duration>,
    /// Host wall clock of the whole run, QEMU start to QEMU exit.
    pub total: Duration,
}

impl GuestOutput {
    /// True when the command exited 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// Kernel log lines that show a kernel problem: WARN, BUG, Oops, general protection
    /// faults, KASAN/UBSAN reports, slub_debug reports, lockups, panics. Tests assert it
    /// is empty.
    pub fn dmesg_problems(&self) -> Vec<String> {
        let src = if self.dmesg.trim().is_empty() {
            &self.console
        } else {
            &self.dmesg
        };
        dmesg_problems(src)
    }
}

/// The problem lines of a kernel log (see [`GuestOutput::dmesg_problems`]).
pub fn dmesg_problems(log: &str) -> Vec<String> {
    const PATTERNS: &[&str] = &[
        "WARNING:",
        "cut here",
        "BUG:",
        "BUG ",
        "Oops",
        "general protection",
        "KASAN",
        "UBSAN",
        "Kernel panic",
        "Call Trace:",
        "invalid opcode",
        "soft lockup",
        "hard LOCKUP",
        "blocked for more than",
        "rcu_sched detected stall",
        "rcu_preempt detected stall",
        "detected stalls",
        "Redzone",
        "Poison overwritten",
        "Padding overwritten",
        "Object already free",
        "Freepointer",
        "Freechain",
        "slab corruption",
        "Slab corruption",
        "list_add corruption",
        "list_del corruption",
        "refcount_t:",
        "double free",
        "use-after-free",
        "stack-protector",
        "stack guard page",
        "Unable to handle kernel",
        "unable to handle page fault",
        "Bad page",
        "bad page state",
    ];
    log.lines()
        .filter(|l| {
            let l = l.trim_end_matches('\r');
            (PATTERNS.iter().any(|p| l.contains(p))
                || l.contains("slub")
                    && (l.contains("error") || l.contains("corrupt") || l.contains("overwritten")))
                && !l.contains("SLUB: HWalign")
        })
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect()
}

/// Builder around [`GuestOpts`] and [`run`].
#[derive(Debug, Clone, Default)]
pub struct GuestRun {
    opts: GuestOpts,
}

impl GuestRun {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn from_opts(opts: GuestOpts) -> Self {
        GuestRun { opts }
    }
    pub fn mem(mut self, mem: impl Into<String>) -> Self {
        self.opts.mem = mem.into();
        self
    }
    pub fn smp(mut self, n: u32) -> Self {
        self.opts.smp = n;
        self
    }
    pub fn cpu(mut self, model: impl Into<String>) -> Self {
        self.opts.cpu = model.into();
        self
    }
    pub fn insmod(mut self, ko: impl Into<PathBuf>) -> Self {
        self.opts.insmod.push(ko.into());
        self
    }
    pub fn slub_debug(mut self, on: bool) -> Self {
        self.opts.slub_debug = on;
        self
    }
    pub fn bzimage(mut self, on: bool) -> Self {
        self.opts.bzimage = on;
        self
    }
    pub fn kernel_arg(mut self, arg: impl Into<String>) -> Self {
        self.opts.kernel_args.push(arg.into());
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.opts.timeout = t;
        self
    }
    pub fn boot_timeout(mut self, t: Duration) -> Self {
        self.opts.boot_timeout = t;
        self
    }
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.opts.cwd = Some(dir.into());
        self
    }
    pub fn env(mut self, key: impl Into<String>, val: impl Into<String>) -> Self {
        self.opts.env.push((key.into(), val.into()));
        self
    }
    pub fn share_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.opts.share_dir = Some(dir.into());
        self
    }
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.opts.cache_dir = Some(dir.into());
        self
    }
    pub fn echo_console(mut self, on: bool) -> Self {
        self.opts.echo_console = on;
        self
    }
    pub fn console_log(mut self, file: impl Into<PathBuf>) -> Self {
        self.opts.console_log = Some(file.into());
        self
    }
    pub fn opts(&self) -> &GuestOpts {
        &self.opts
    }
    /// Run `argv` (no shell) in the guest.
    pub fn run(&self, argv: &[&str]) -> Result<GuestOutput, GuestError> {
        run(&self.opts, argv)
    }
    /// Run a bash script in the guest (batch many commands into one boot this way).
    pub fn run_script(&self, script: &str) -> Result<GuestOutput, GuestError> {
        run_script(&self.opts, script)
    }
}

/// True when STASIS_SKIP_GUEST=1: guest tests print that they are skipped and pass.
pub fn skip_requested() -> bool {
    std::env::var("STASIS_SKIP_GUEST").map(|v| v == "1").unwrap_or(false)
}

/// The host pieces a run needs, found by [`check_setup`].
#[derive(Debug, Clone)]
pub struct Setup {
    pub qemu: PathBuf,
    pub busybox: PathBuf,
    /// Kernel release, e.g. "6.1.0-56-amd64".
    pub release: String,
    pub vmlinuz: PathBuf,
    /// lib/modules/RELEASE of the extracted package.
    pub modules_dir: PathBuf,
    pub cache_dir: PathBuf,
}

/// The cache directory: $STASIS_GUEST_CACHE, else tests/guest/cache.
pub fn default_cache_dir() -> PathBuf {
    match std::env::var_os("STASIS_GUEST_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("cache"),
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Find QEMU, busybox-static and the extracted stock kernel, or say what is missing.
pub fn check_setup(opts: &GuestOpts) -> Result<Setup, GuestError> {
    let qemu = find_in_path("qemu-system-x86_64").ok_or_else(|| GuestError::NotSetUp {
        what: "qemu-system-x86_64 not found in PATH".into(),
    })?;
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| GuestError::NotSetUp {
            what: "busybox (busybox-static) not found".into(),
        })?;
    let cache_dir = opts.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let release = match &opts.kernel_release {
        Some(r) => r.clone(),
        None => {
            let rel_file = cache_dir.join("kernel/release");
            fs::read_to_string(&rel_file)
                .map_err(|_| GuestError::NotSetUp {
                    what: format!("no extracted kernel ({} missing)", rel_file.display()),
                })?
                .trim()
                .to_string()
        }
    };
    let kroot = cache_dir.join("kernel").join(&release);
    let vmlinuz = kroot.join("boot").join(format!("vmlinuz-{release}"));
    let modules_dir = kroot.join("lib/modules").join(&release);
    if !vmlinuz.is_file() || !modules_dir.is_dir() {
        return Err(GuestError::NotSetUp {
            what: format!("kernel {release} not extracted in {}", kroot.display()),
        });
    }
    if !modules_dir.join("modules.dep").is_file() {
        return Err(GuestError::NotSetUp {
            what: format!("no modules.dep in {} (depmod not run)", modules_dir.display()),
        });
    }
    Ok(Setup {
        qemu,
        busybox,
        release,
        vmlinuz,
        modules_dir,
        cache_dir,
    })
}

/// The kernel release the guest boots (for building modules against the matching
/// /usr/src/linux-headers-RELEASE).
pub fn kernel_release() -> Result<String, GuestError> {
    check_setup(&GuestOpts::default()).map(|s| s.release)
}

// ---------------------------------------------------------------------------------------
// initramfs

/// The boot modules that are not built in, with their paths, in load order (each
/// module's dependencies, from modules.dep, before it).
fn boot_modules(setup: &Setup) -> Result<Vec<(String, PathBuf)>, GuestError> {
    let dep_file = setup.modules_dir.join("modules.dep");
    let deps = fs::read_to_string(&dep_file).map_err(io_err(format!("read {}", dep_file.display())))?;
    // "kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko ..." keyed by module name
    // (modules.dep spells names with '-' or '_'; they are one name to the kernel).
    let name_of = |path: &str| -> String {
        let file = path.rsplit('/').next().unwrap_or(path);
        file.trim_end_matches(".ko").replace('-', "_")
    };
    let mut table: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in deps.lines() {
        if let Some((m, rest)) = line.split_once(':') {
            let ds = rest.split_whitespace().map(str::to_string).collect();
            table.insert(name_of(m), (m.to_string(), ds));
        }
    }
    fn visit(
        name: &str,
        table: &HashMap<String, (String, Vec<String>)>,
        name_of: &dyn Fn(&str) -> String,
        out: &mut Vec<(String, String)>,
    ) {
        if out.iter().any(|(n, _)| n == name) {
            return;
        }
        let Some((path, ds)) = table.get(name) else {
            return; // built in (or not in this kernel: the mount will say so)
        };
        // modules.dep lists dependencies so that the last is loaded first.
        for d in ds.iter().rev() {
            visit(&name_of(d), table, name_of, out);
        }
        out.push((name.to_string(), path.clone()));
    }
    let mut order = Vec::new();
    for m in BOOT_MODULES {
        visit(m, &table, &name_of, &mut order);
    }
    Ok(order
        .into_iter()
        .map(|(n, p)| (n, setup.modules_dir.join(p)))
        .collect())
}

struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn new() -> Self {
        Cpio {
            buf: Vec::new(),
            ino: 1,
        }
    }
    fn pad(&mut self) {
        while self.buf.len() & 3 != 0 {
            self.buf.push(0);
        }
    }
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let ino = self.ino;
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        let mut hdr = String::from("070701");
        for f in fields {
            let _ = write!(hdr, "{f:08x}");
        }
        self.buf.extend_from_slice(hdr.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }
    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, (0, 0), data);
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

/// Build (or reuse from the cache) the initramfs; returns its path. It is rebuilt when
/// the init script, busybox, the kernel or its boot modules change.
pub fn initramfs(setup: &Setup) -> Result<PathBuf, GuestError> {
    let mods = boot_modules(setup)?;
    let mut h = DefaultHasher::new();
    INIT_SCRIPT.hash(&mut h);
    MODPROBE_WRAPPER.hash(&mut h);
    setup.release.hash(&mut h);
    let mut inputs: Vec<&Path> = vec![setup.busybox.as_path()];
    inputs.extend(mods.iter().map(|(_, p)| p.as_path()));
    for p in &inputs {
        let md = fs::metadata(p).map_err(io_err(format!("stat {}", p.display())))?;
        p.hash(&mut h);
        md.len().hash(&mut h);
        md.modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .hash(&mut h);
    }
    for (m, _) in &mods {
        m.hash(&mut h);
    }
    let dir = setup.cache_dir.join("initramfs");
    let path = dir.join(format!("{}-{:016x}.cpio", setup.release, h.finish()));
    if path.is_file() {
        return Ok(path);
    }
    fs::create_dir_all(&dir).map_err(io_err(format!("mkdir {}", dir.display())))?;
    let mut c = Cpio::new();
    for d in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "modules"] {
        c.dir(d);
    }
    c.entry("dev/console", 0o020600, (5, 1), &[]);
    c.entry("dev/null", 0o020666, (1, 3), &[]);
    let bb = fs::read(&setup.busybox).map_err(io_err(format!("read {}", setup.busybox.display())))?;
    c.file("bin/busybox", 0o755, &bb);
    c.file("init", 0o755, INIT_SCRIPT.as_bytes());
    c.file("sbin/stasis-modprobe", 0o755, MODPROBE_WRAPPER.as_bytes());
    let mut list = String::new();
    for (m, p) in &mods {
        let data = fs::read(p).map_err(io_err(format!("read {}", p.display())))?;
        c.file(&format!("modules/{m}.ko"), 0o644, &data);
        list.push_str(m);
        list.push('\n');
    }
    c.file("modules.list", 0o644, list.as_bytes());
    let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), unique()));
    fs::write(&tmp, c.finish()).map_err(io_err(format!("write {}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(io_err(format!("rename to {}", path.display())))?;
    // Drop stale images of the same kernel.
    if let Ok(rd) = fs::read_dir(&dir) {
        let prefix = format!("{}-", setup.release);
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&prefix) && e.path() != path {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(path)
}

/// The decompressed kernel (an ELF with a PVH entry note) extracted from the bzImage
/// into the cache (kernel/RELEASE/vmlinux), as scripts/extract-vmlinux does.
pub fn vmlinux(setup: &Setup) -> Result<PathBuf, GuestError> {
    let out = setup
        .cache_dir
        .join("kernel")
        .join(&setup.release)
        .join("vmlinux");
    if out.is_file() {
        return Ok(out);
    }
    let bz = fs::read(&setup.vmlinuz).map_err(io_err(format!("read {}", setup.vmlinuz.display())))?;
    let bad = |what: &str| GuestError::Io {
        context: format!("extracting vmlinux from {}", setup.vmlinuz.display()),
        source: io::Error::other(what.to_string()),
    };
    const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
    let pos = bz
        .windows(XZ_MAGIC.len())
        .position(|w| w == XZ_MAGIC)
        .ok_or_else(|| bad("no xz stream (only xz-compressed kernels are handled)"))?;
    let tmp = out.with_extension(format!("tmp-{}-{}", std::process::id(), unique()));
    let file = fs::File::create(&tmp).map_err(io_err(format!("create {}", tmp.display())))?;
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .map_err(io_err("running xz"))?;
    let tail = bz.get(pos..).map(<[u8]>::to_vec).unwrap_or_default();
    let stdin = child.stdin.take();
    let writer = thread::spawn(move || {
        if let Some(mut i) = stdin {
            // xz stops reading at the end of the stream: a broken pipe is expected.
            let _ = i.write_all(&tail);
        }
    });
    let st = child.wait().map_err(io_err("waiting for xz"))?;
    let _ = writer.join();
    let mut head = [0u8; 4];
    let ok = st.success()
        && fs::File::open(&tmp)
        .and_then(|mut f| f.read_exact(&mut head))
        .map(|_| &head == b"\x7fELF")
        .unwrap_or(false);
    if !ok {
        let _ = fs::remove_file(&tmp);
        return Err(bad("xz did not produce an ELF"));
    }
    fs::rename(&tmp, &out).map_err(io_err(format!("rename to {}", out.display())))?;
    Ok(out)
}

fn unique() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (N.fetch_add(1, Ordering::Relaxed) << 48)
}

// ---------------------------------------------------------------------------------------
// running

/// Quote a word for bash.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Run `argv` in the guest (exec'ed by bash, no shell interpretation).
pub fn run(opts: &GuestOpts, argv: &[&str]) -> Result<GuestOutput, GuestError> {
    if argv.is_empty() {
        return Err(GuestError::InvalidOption("empty command".into()));
    }
    let cmd: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    run_script(opts, &format!("exec {}\n", cmd.join(" ")))
}

struct ShareDir {
    path: PathBuf,
    remove: bool,
}

impl Drop for ShareDir {
    fn drop(&mut self) {
        if self.remove && std::env::var_os("STASIS_GUEST_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

enum Event {
    CommandStart(Instant, Option<Duration>),
    Eof,
}

fn parse_uptime(s: &str) -> Option<Duration> {
    let w = s.split_whitespace().next()?;
    w.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).map(Duration::from_secs_f64)
}

/// Run a bash script in the guest: chrooted into the overlay of the host's root, cwd as
/// in [`GuestOpts::cwd`], stdin /dev/null, stdout+stderr captured.
pub fn run_script(opts: &GuestOpts, script: &str) -> Result<GuestOutput, GuestError> {
    let setup = check_setup(opts)?;
    let initrd = initramfs(&setup)?;
    let kernel = if opts.bzimage {
        setup.vmlinuz.clone()
    } else {
        vmlinux(&setup).unwrap_or_else(|_| setup.vmlinuz.clone())
    };

    // The per-run share.
    let share = match &opts.share_dir {
        Some(d) => {
            fs::create_dir_all(d).map_err(io_err(format!("mkdir {}", d.display())))?;
            for f in ["status", "status.tmp", "output", "dmesg", "insmod.failed", "insmod.log"] {
                let _ = fs::remove_file(d.join(f));
            }
            ShareDir {
                path: d.clone(),
                remove: false,
            }
        }
        None => {
            let d = std::env::temp_dir().join(format!(
                "stasis-guest-{}-{:x}",
                std::process::id(),
                unique()
            ));
            fs::create_dir_all(&d).map_err(io_err(format!("mkdir {}", d.display())))?;
            ShareDir { path: d, remove: true }
        }
    };
    let sd = &share.path;

    // Modules to insmod, as absolute host paths (the guest sees the host root).
    let mut kos = String::new();
    for ko in &opts.insmod {
        let abs = fs::canonicalize(ko)
            .map_err(|e| GuestError::InvalidOption(format!("--insmod {}: {e}", ko.display())))?;
        let s = abs.to_str().ok_or_else(|| {
            GuestError::InvalidOption(format!("--insmod {}: not UTF-8", abs.display()))
        })?;
        if s.contains('\n') {
            return Err(GuestError::InvalidOption(format!("--insmod {s}: newline in path")));
        }
        kos.push_str(s);
        kos.push('\n');
    }
    if !kos.is_empty() {
        fs::write(sd.join("insmod.list"), &kos).map_err(io_err("write insmod.list"))?;
    }

    let kmoddir = fs::canonicalize(&setup.modules_dir).unwrap_or_else(|_| setup.modules_dir.clone());
    fs::write(
        sd.join("config.sh"),
        format!("KMODDIR={}\n", shell_quote(&kmoddir.to_string_lossy())),
    )
    .map_err(io_err("write config.sh"))?;

    let cwd = match &opts.cwd {
        Some(c) => c.clone(),
        None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
    };
    let cwd = cwd.to_string_lossy().into_owned();
    let mut run_sh = String::new();
    for (k, v) in &opts.env {
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(GuestError::InvalidOption(format!("bad environment name {k:?}")));
        }
        let _ = writeln!(run_sh, "export {k}={}", shell_quote(v));
    }
    let q = shell_quote(&cwd);
    let hq = shell_quote(&format!("/run/hostroot{cwd}"));
    let _ = writeln!(
        run_sh,
        "cd {q} 2>/dev/null || {{ cd {hq} 2>/dev/null && echo \"stasis-guest: cwd \"{q}\" is not visible in the guest; using the read-only \"{hq} >&2; }} || {{ echo \"stasis-guest: cwd \"{q}\" does not exist in the guest; using /\" >&2; cd /; }}"
    );
    fs::write(sd.join("cmd.sh"), script).map_err(io_err("write cmd.sh"))?;
    run_sh.push_str(". /run/stasis-guest/cmd.sh\n");
    fs::write(sd.join("run.sh"), run_sh).map_err(io_err("write run.sh"))?;

    // Kernel command line.
    let mut append = vec![
        "console=ttyS0,115200".to_string(),
        "rdinit=/init".into(),
        "panic=-1".into(),
        "quiet".into(),
        "loglevel=5".into(),
        "8250.nr_uarts=1".into(),
        "i8042.noaux".into(),
        "i8042.nokbd".into(),
        "i8042.nopnp".into(),
    ];
    if opts.slub_debug {
        append.push("slub_debug=FZPU".into());
    }
    append.extend(opts.kernel_args.iter().cloned());

    let hostroot = "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap";
    let sd_str = sd.to_str().ok_or_else(|| {
        GuestError::InvalidOption(format!("share dir {} is not UTF-8", sd.display()))
    })?;
    if sd_str.contains(',') {
        return Err(GuestError::InvalidOption(format!("share dir {sd_str} contains a comma")));
    }
    let hostrun = format!("local,path={sd_str},mount_tag=hostrun,security_model=none,multidevs=remap");

    let mut cmd = Command::new(&setup.qemu);
    cmd.arg("-accel")
        .arg("tcg")
        .arg("-cpu")
        .arg(&opts.cpu)
        .arg("-smp")
        .arg(opts.smp.to_string())
        .arg("-m")
        .arg(&opts.mem)
        .arg("-nic")
        .arg("none")
        .arg("-nographic")
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(append.join(" "))
        .arg("-virtfs")
        .arg(hostroot)
        .arg("-virtfs")
        .arg(hostrun)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let mut log_file = match &opts.console_log {
        Some(p) => Some(fs::File::create(p).map_err(io_err(format!("create {}", p.display())))?),
        None => None,
    };

    // QEMU dies with the thread that starts it (a killed test run leaves no guest).
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }

    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(io_err(format!("starting {}", setup.qemu.display())))?;

    let console = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel::<Event>();
    let stdout = child.stdout.take();
    let reader = {
        let console = Arc::clone(&console);
        let echo = opts.echo_console;
        thread::spawn(move || {
            if let Some(out) = stdout {
                let mut r = BufReader::new(out);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let now = Instant::now();
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if echo {
                        let t = now.saturating_duration_since(start).as_secs_f64();
                        let _ = writeln!(io::stderr(), "[host {t:6.2}] {line}");
                    }
                    if let Some(f) = log_file.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    if let Some(i) = line.find(MARK) {
                        if let Some(rest) = line[i + MARK.len()..].strip_prefix("command-start ") {
                            let _ = tx.send(Event::CommandStart(now, parse_uptime(rest)));
                        }
                    }
                    if let Ok(mut c) = console.lock() {
                        c.push_str(&line);
                        c.push('\n');
                    }
                }
            }
            let _ = tx.send(Event::Eof);
        })
    };
    let stderr_reader = child.stderr.take().map(|mut e| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            s
        })
    });

    // Wait for QEMU, enforcing the boot and overall deadlines.
    let mut started: Option<(Instant, Option<Duration>)> = None;
    let mut timed_out: Option<&'static str> = None;
    let mut eof = false;
    let exit = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Event::CommandStart(t, up)) => {
                if started.is_none() {
                    started = Some((t, up));
                }
            }
            Ok(Event::Eof) => eof = true,
            Err(_) => {}
        }
        if let Some(st) = child.try_wait().map_err(io_err("waiting for QEMU"))? {
            break Some(st);
        }
        let el = start.elapsed();
        if started.is_none() && el > opts.boot_timeout {
            timed_out = Some("boot");
        } else if el > opts.timeout {
            timed_out = Some("command");
        }
        if timed_out.is_some() {
            kill(&mut child);
            break None;
        }
    };
    let total = start.elapsed();
    let _ = reader.join();
    if !eof {
        // Drain the events the reader sent before it ended.
        while let Ok(ev) = rx.try_recv() {
            if let Event::CommandStart(t, up) = ev {
                started.get_or_insert((t, up));
            }
        }
    }
    let qemu_stderr = stderr_reader
        .and_then(|h| h.join().ok())
        .unwrap_or_default();
    let console = console.lock().map(|c| c.clone()).unwrap_or_default();
    let read = |f: &str| fs::read(sd.join(f)).map(|b| String::from_utf8_lossy(&b).into_owned());
    let output = read("output").unwrap_or_default();
    let dmesg = read("dmesg").unwrap_or_default();

    match timed_out {
        Some("boot") => {
            return Err(GuestError::BootFailed {
                reason: format!("no command start within the boot timeout {:?}", opts.boot_timeout),
                console,
            })
        }
        Some(_) => {
            return Err(GuestError::Timeout {
                after: opts.timeout,
                output,
                console,
            })
        }
        None => {}
    }

    if let Ok(ko) = read("insmod.failed") {
        return Err(GuestError::Insmod {
            module: ko.trim().to_string(),
            log: read("insmod.log").unwrap_or_default().trim().to_string(),
            dmesg,
        });
    }
    let status = read("status").ok().and_then(|s| s.trim().parse::<i32>().ok());
    let Some((t_cmd, uptime)) = started else {
        let reason = console
            .lines()
            .filter_map(|l| l.find(MARK).map(|i| &l[i + MARK.len()..]))
            .find_map(|l| l.strip_prefix("boot-failed: "))
            .map(str::to_string)
            .unwrap_or_else(|| {
                let mut r = format!("QEMU exited ({}) before the command started", exit_desc(exit));
                if !qemu_stderr.trim().is_empty() {
                    r.push_str(": ");
                    r.push_str(qemu_stderr.trim());
                }
                r
            });
        return Err(GuestError::BootFailed { reason, console });
    };
    let Some(status) = status else {
        return Err(GuestError::Crashed { output, console });
    };
    Ok(GuestOutput {
        status,
        output,
        dmesg,
        console,
        boot_to_command: t_cmd.saturating_duration_since(start),
        guest_uptime_at_command: uptime,
        total,
    })
}

fn exit_desc(st: Option<std::process::ExitStatus>) -> String {
    match st {
        Some(s) => s.to_string(),
        None => "killed".into(),
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("abc"), "abc");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn problems() {
        let log = "[    0.1] SLUB: HWalign=64, Order=0-3\n\
                   [    1.0] ok line\n\
                   [    2.0] WARNING: CPU: 1 PID: 5 at foo.c:1 bar+0x1/0x2\n\
                   [    3.0] BUG kmalloc-64 (Not tainted): Redzone overwritten\n\
                   [    4.0] general protection fault, probably for non-canonical address\n";
        let p = dmesg_problems(log);
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn cpio_is_aligned() {
        let mut c = Cpio::new();
        c.dir("d");
        c.file("d/f", 0o644, b"hello");
        let b = c.finish();
        assert_eq!(b.len() % 4, 0);
        assert!(b.starts_with(b"070701"));
    }
}
