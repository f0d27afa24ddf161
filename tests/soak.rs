//! Load: mixed slot requests, uploads and downloads at 64 connections through nginx (the
//! shipped configuration, run with a master process) in front of several FastCGI processes
//! sharing one listening socket and one SQLite database, the way mod_fcgid or `spawn-fcgi -F`
//! run them, with the shipped `fastcgi_keep_conn on` and upstream `keepalive`. Checks: zero
//! 5xx, every download equal to its upload, every stored file equal to what was sent (SHA-256),
//! quotas never exceeded although several processes decide at once, resident memory flat, and
//! no panic or error in the programs' logs (idle closes of kept connections are silent).
//!
//! `soak_20s` runs in the normal suite; `soak_5min` is the full run:
//! `cargo test --release --test soak -- --ignored --nocapture`. `XHU_SOAK_SECS` overrides the
//! duration of either. Figures are printed as `FIGURES soak ...`.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::web;
use sha2::{Digest, Sha256};
use web::{Flavour, SECRET, Stack, available};

const CONNECTIONS: usize = 64;
const PROCESSES: usize = 4;
const QUOTA_JID: &str = "quota@example.org";
const QUOTA_TOTAL: u64 = 4 * 1024 * 1024;
const QUOTA_UPLOADS: u64 = 40;

#[test]
fn soak_20s() {
    soak(20);
}

#[test]
#[ignore = "five minutes: run with --ignored"]
fn soak_5min() {
    soak(300);
}

fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z") {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} did not stop");
        thread::sleep(Duration::from_millis(50));
    }
}

fn rss(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// The stack, re-arranged for load: nginx with a master process and a plain-HTTP listener
/// beside the TLS one (so the load client needs no TLS), and `PROCESSES` programs on one
/// inherited socket with a quota rule in front of the shipped test rules.
struct LoadStack {
    stack: Stack,
    programs: Vec<web::Process>,
    _nginx: web::Process,
    plain_port: u16,
    slot_port: u16,
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().expect("port")
}

fn start_load_stack() -> LoadStack {
    let stack = Stack::start(Flavour::Nginx);
    let dir = stack.dir.path.clone();
    // Stop the stack's own nginx and program.
    let nginx_pid: u32 = fs::read_to_string(dir.join("nginx.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for pid in stack.program_pids().into_iter().chain([nginx_pid]) {
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        wait_gone(pid);
    }
    // The shipped config keeps FastCGI connections: the soak runs with keep-alive on.
    let site = fs::read_to_string(dir.join("site.conf")).unwrap();
    assert!(
        site.contains("keepalive 32;"),
        "upstream keepalive in the shipped config"
    );
    let snippet = fs::read_to_string(dir.join("snippets/xmpp-http-upload-fastcgi.conf")).unwrap();
    assert!(
        snippet.contains("fastcgi_keep_conn on;"),
        "fastcgi_keep_conn on in the shipped snippet"
    );
    // The program's config, with a quota rule first.
    let config = fs::read_to_string(dir.join("config.toml")).unwrap();
    let quota_rule = format!(
        "[[rules]]\nmatch = '^quota@example\\.org$'\nmax_total_size = {QUOTA_TOTAL}\n\
         uploads_per_window = {{ window = \"1h\", uploads = {QUOTA_UPLOADS} }}\n\n[[rules]]"
    );
    assert!(config.contains("[[rules]]"), "templating anchor");
    let config = config.replacen("[[rules]]", &quota_rule, 1);
    let config_path = dir.join("soak.toml");
    fs::write(&config_path, config).unwrap();
    // One listening socket, several processes on it (fd 0), as mod_fcgid / spawn-fcgi do.
    let socket = dir.join("fcgi.sock");
    let _ = fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).expect("bind the FastCGI socket");
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).unwrap();
    let mut programs = Vec::new();
    for i in 0..PROCESSES {
        let fd: OwnedFd = listener.try_clone().unwrap().into();
        let log = fs::File::create(dir.join(format!("program-{i}.log"))).unwrap();
        let child = Command::new(common::BIN)
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .env_remove("XMPP_HTTP_UPLOAD_CONFIG")
            .stdin(Stdio::from(fd))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the program");
        programs.push(web::Process::adopt("xmpp-http-upload", child));
    }
    drop(listener);
    // nginx with a master process and an extra plain listener on the public server.
    let public_port = port_of(&stack.public);
    let slot_port = port_of(&stack.slot_api);
    let plain_port = web::unused_port();
    let site = fs::read_to_string(dir.join("site.conf")).unwrap();
    let anchor = format!("listen 127.0.0.1:{public_port} ssl http2;");
    assert!(site.contains(&anchor), "templating anchor");
    fs::write(
        dir.join("site.conf"),
        site.replace(
            &anchor,
            &format!("{anchor}\n    listen 127.0.0.1:{plain_port};"),
        ),
    )
    .unwrap();
    let conf = fs::read_to_string(dir.join("nginx.conf")).unwrap();
    let conf = conf
        .replace(
            "master_process off;",
            "master_process on;\nuser root;\nworker_processes 2;",
        )
        .replace("worker_connections 256;", "worker_connections 1024;");
    fs::write(dir.join("nginx-soak.conf"), conf).unwrap();
    let nginx = web::Process::adopt(
        "nginx",
        Command::new("nginx")
            .arg("-p")
            .arg(format!("{}/", dir.display()))
            .arg("-c")
            .arg(dir.join("nginx-soak.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx"),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", plain_port)).is_err()
        || TcpStream::connect(("127.0.0.1", slot_port)).is_err()
    {
        assert!(Instant::now() < deadline, "nginx did not come up");
        thread::sleep(Duration::from_millis(50));
    }
    LoadStack {
        stack,
        programs,
        _nginx: nginx,
        plain_port,
        slot_port,
    }
}

/// A keep-alive HTTP/1.1 connection that reconnects when nginx closes it.
struct Http {
    port: u16,
    stream: Option<BufReader<TcpStream>>,
}

impl Http {
    fn new(port: u16) -> Http {
        Http { port, stream: None }
    }

    /// One request; `Err` only when the connection failed twice.
    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        match self.try_request(method, path, body) {
            Ok(answer) => Ok(answer),
            Err(_) => {
                self.stream = None;
                self.try_request(method, path, body)
                    .map_err(|e| format!("{method} {path}: {e}"))
            }
        }
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(("127.0.0.1", self.port))?;
            stream.set_read_timeout(Some(Duration::from_secs(60)))?;
            self.stream = Some(BufReader::new(stream));
        }
        let reader = self.stream.as_mut().unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let stream = reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let (mut length, mut chunked, mut close) = (0usize, false, false);
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            let (name, value) = trimmed.split_once(':').unwrap_or((trimmed, ""));
            let (name, value) = (name.to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => length = value.parse().unwrap_or(0),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if method == "HEAD" {
        } else if chunked {
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0u8; size + 2];
                reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            body.resize(length, 0);
            reader.read_exact(&mut body)?;
        }
        if close {
            self.stream = None;
        }
        Ok((status, body))
    }
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    slots: AtomicU64,
    uploads: AtomicU64,
    downloads: AtomicU64,
    bytes_up: AtomicU64,
    quota_refusals: AtomicU64,
    server_errors: Mutex<Vec<String>>,
    other_errors: Mutex<Vec<String>>,
    quota_granted: Mutex<(u64, u64)>,
    /// stored path (relative to the upload root) → SHA-256 of what was sent
    files: Mutex<HashMap<String, [u8; 32]>>,
}

fn worker(id: usize, load: &LoadStack, tally: &Tally, stop: &AtomicBool) {
    let mut slot_api = Http::new(load.slot_port);
    let mut public = Http::new(load.plain_port);
    let mut own: Vec<(String, [u8; 32])> = Vec::new();
    let mut n: u64 = 0;
    let note_error = |tally: &Tally, what: String, status: Option<u16>| {
        if status.is_some_and(|s| s >= 500) {
            tally.server_errors.lock().unwrap().push(what);
        } else {
            tally.other_errors.lock().unwrap().push(what);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let seed = ((id as u64) << 32) | n;
        let quota = n.is_multiple_of(8);
        let jid = if quota {
            QUOTA_JID.to_string()
        } else {
            format!("user{}@example.org", id % 16)
        };
        let size = 1024 + (seed.wrapping_mul(2_654_435_761) % (192 * 1024)) as usize;
        let name = format!("s{id}-{n}.bin");
        let path = format!("/http_upload/slot/?jid={jid}&name={name}&size={size}&secret={SECRET}");
        tally.requests.fetch_add(1, Ordering::Relaxed);
        let (status, answer) = match slot_api.request("GET", &path, b"") {
            Ok(a) => a,
            Err(e) => {
                note_error(tally, e, None);
                continue;
            }
        };
        match status {
            200 => {}
            402 | 403 if quota => {
                tally.quota_refusals.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            _ => {
                note_error(
                    tally,
                    format!("slot {status}: {}", String::from_utf8_lossy(&answer)),
                    Some(status),
                );
                continue;
            }
        }
        tally.slots.fetch_add(1, Ordering::Relaxed);
        if quota {
            let mut granted = tally.quota_granted.lock().unwrap();
            granted.0 += size as u64;
            granted.1 += 1;
        }
        let text = String::from_utf8_lossy(&answer).to_string();
        let put_url = text.lines().next().unwrap_or("");
        let put_path = put_url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap_or_default();
        // Any deterministic body does: the digest is what is checked.
        let body = common::body_of(size, seed as u32);
        let digest: [u8; 32] = Sha256::digest(&body).into();
        tally.requests.fetch_add(1, Ordering::Relaxed);
        match public.request("PUT", &put_path, &body) {
            Ok((201, _)) => {
                tally.uploads.fetch_add(1, Ordering::Relaxed);
                tally.bytes_up.fetch_add(size as u64, Ordering::Relaxed);
                let relative = put_path.trim_start_matches("/upload/").to_string();
                tally.files.lock().unwrap().insert(relative.clone(), digest);
                own.push((put_path.clone(), digest));
            }
            Ok((status, b)) => {
                note_error(
                    tally,
                    format!("PUT {status}: {}", String::from_utf8_lossy(&b)),
                    Some(status),
                );
                continue;
            }
            Err(e) => {
                note_error(tally, e, None);
                continue;
            }
        }
        // Download the new file and one earlier file of this worker.
        let earlier = own[(seed as usize * 7) % own.len()].clone();
        for (get_path, digest) in [(put_path.clone(), digest), earlier] {
            tally.requests.fetch_add(1, Ordering::Relaxed);
            match public.request("GET", &get_path, b"") {
                Ok((200, got)) => {
                    tally.downloads.fetch_add(1, Ordering::Relaxed);
                    let got: [u8; 32] = Sha256::digest(&got).into();
                    if got != digest {
                        note_error(tally, format!("GET {get_path}: wrong bytes"), None);
                    }
                }
                Ok((status, _)) => note_error(tally, format!("GET {status}"), Some(status)),
                Err(e) => note_error(tally, e, None),
            }
        }
    }
}

fn soak(default_secs: u64) {
    if !available(Flavour::Nginx) {
        return;
    }
    let secs = std::env::var("XHU_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_secs);
    let load = Arc::new(start_load_stack());
    let pids: Vec<u32> = load.programs.iter().map(|p| p.pid()).collect();
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut threads = Vec::new();
    for id in 0..CONNECTIONS {
        let (load, tally, stop) = (load.clone(), tally.clone(), stop.clone());
        threads.push(thread::spawn(move || worker(id, &load, &tally, &stop)));
    }
    // Memory: after a warm-up of a tenth of the run, then every second until the end.
    let warm_up = Duration::from_secs((secs / 10).max(3));
    let mut warm_rss: Option<Vec<u64>> = None;
    let mut peak_rss = vec![0u64; pids.len()];
    while started.elapsed() < Duration::from_secs(secs) {
        thread::sleep(Duration::from_secs(1));
        let now: Vec<u64> = pids.iter().map(|&p| rss(p)).collect();
        for (peak, value) in peak_rss.iter_mut().zip(&now) {
            *peak = (*peak).max(*value);
        }
        if warm_rss.is_none() && started.elapsed() >= warm_up {
            warm_rss = Some(now);
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("load thread");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let end_rss: Vec<u64> = pids.iter().map(|&p| rss(p)).collect();
    let warm_rss = warm_rss.unwrap_or_else(|| end_rss.clone());
    for &pid in &pids {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "program {pid} died"
        );
    }

    // Every file on disk is what was sent for it; nothing else is there.
    let files = tally.files.lock().unwrap().clone();
    let root: PathBuf = load.stack.upload_root.clone();
    let mut checked = 0;
    for (relative, digest) in &files {
        let content = fs::read(root.join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"));
        let got: [u8; 32] = Sha256::digest(&content).into();
        assert_eq!(&got, digest, "{relative}: stored bytes differ");
        checked += 1;
    }
    let (quota_bytes, quota_uploads) = *tally.quota_granted.lock().unwrap();
    let requests = tally.requests.load(Ordering::SeqCst);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "FIGURES soak: {secs} s, {CONNECTIONS} connections, {PROCESSES} processes: {requests} requests \
         ({:.0}/s): {} slots, {} uploads ({:.1} MiB), {} downloads; 5xx: {}; other errors: {}; \
         files checked: {checked}; quota JID granted {quota_uploads} slots / {} bytes (limits {QUOTA_UPLOADS} / {QUOTA_TOTAL}), \
         {} quota refusals; RSS per process MiB warm {:?} end {:?} peak {:?}",
        requests as f64 / elapsed,
        tally.slots.load(Ordering::SeqCst),
        tally.uploads.load(Ordering::SeqCst),
        mib(tally.bytes_up.load(Ordering::SeqCst)),
        tally.downloads.load(Ordering::SeqCst),
        tally.server_errors.lock().unwrap().len(),
        tally.other_errors.lock().unwrap().len(),
        quota_bytes,
        tally.quota_refusals.load(Ordering::SeqCst),
        warm_rss
            .iter()
            .map(|&b| format!("{:.1}", mib(b)))
            .collect::<Vec<_>>(),
        end_rss
            .iter()
            .map(|&b| format!("{:.1}", mib(b)))
            .collect::<Vec<_>>(),
        peak_rss
            .iter()
            .map(|&b| format!("{:.1}", mib(b)))
            .collect::<Vec<_>>(),
    );
    let server_errors = tally.server_errors.lock().unwrap().clone();
    assert!(
        server_errors.is_empty(),
        "{} 5xx, first: {:?}\n{}",
        server_errors.len(),
        &server_errors[..server_errors.len().min(5)],
        load.stack.logs()
    );
    let other_errors = tally.other_errors.lock().unwrap().clone();
    assert!(
        other_errors.is_empty(),
        "{} failed requests, first: {:?}",
        other_errors.len(),
        &other_errors[..other_errors.len().min(5)]
    );
    assert!(checked > 0, "nothing was uploaded");
    assert!(
        quota_bytes <= QUOTA_TOTAL && quota_uploads <= QUOTA_UPLOADS,
        "quota exceeded: {quota_uploads} uploads, {quota_bytes} bytes"
    );
    assert!(
        tally.quota_refusals.load(Ordering::SeqCst) > 0,
        "the quota was never reached, so it was not tested"
    );
    for i in 0..PROCESSES {
        let log = fs::read_to_string(load.stack.dir.path.join(format!("program-{i}.log")))
            .unwrap_or_default();
        assert!(
            !log.contains("panic") && !log.contains(" ERROR "),
            "program {i} logged a panic or an error:\n{log}"
        );
    }
    // Flat memory: no process grew by more than 16 MiB after the warm-up.
    for ((pid, warm), end) in pids.iter().zip(&warm_rss).zip(&end_rss) {
        assert!(
            *end <= warm + 16 * 1024 * 1024,
            "program {pid} grew from {warm} to {end} bytes"
        );
    }
}
