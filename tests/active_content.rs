//! Uploaded scripts never run (issue 11, item 2): through the shipped Apache vhost and nginx
//! site, started beside the handlers an admin's server typically has, every upload comes back
//! as its exact bytes and no script handler ever sees a request.
//!
//! Apache gets what Debian's packages and old habits put at server level: php8.2-fpm's
//! `<FilesMatch ".+\.ph(?:ar|p|tml)$"> SetHandler "proxy:unix:...|fcgi://localhost"`, the
//! `<If "-f %{REQUEST_FILENAME}">` variant its comment recommends, an `AddHandler` for `.php`
//! (which also matches `pic.php.png`), mod_lua's `lua-script`, mod_asis' `send-as-is` and
//! mod_negotiation's `type-map`. Each "PHP" handler points at a stub FastCGI listener run here,
//! which counts the connections it gets: it must get none. nginx gets a
//! `location ~ \.php$ { fastcgi_pass <stub>; }` in the site's server block.
//!
//! What this file does not cover: a server-level `ProxyPassMatch` (it maps the URL before any
//! section of the vhost is looked at; INSTALL.md tells the admin to check for one) and the
//! shared-hosting `.htaccess` files (tested with the CGI front end).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::web;
use web::{Flavour, Settings, Stack, Surroundings, available, curl};

const ALICE: &str = "alice@example.org";

/// What a script handler would answer: seeing it means the upload ran.
const EXECUTED: &str = "EXECUTED-BY-A-SCRIPT-HANDLER";

/// A FastCGI "PHP server" that must never be asked anything: it counts its connections and
/// answers each with [`EXECUTED`], so that a failing test also shows what a client would see.
struct StubFastCgi {
    /// Connections accepted so far.
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Where it listens: a socket path (Apache) or `127.0.0.1:<port>` (nginx).
    address: String,
    /// The socket file, removed on drop.
    socket: Option<PathBuf>,
}

impl StubFastCgi {
    /// Listens on a Unix socket at `path`, connectable by Apache's children.
    fn unix(path: &Path) -> StubFastCgi {
        let _ = fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind the stub FastCGI socket");
        fs::set_permissions(path, fs::Permissions::from_mode(0o777)).expect("chmod the socket");
        listener.set_nonblocking(true).expect("non-blocking stub");
        let accept = move || listener.accept().map(|(s, _)| Box::new(s) as Box<dyn Conn>);
        let mut stub = StubFastCgi::run(accept);
        stub.address = path.display().to_string();
        stub.socket = Some(path.to_path_buf());
        stub
    }

    /// Listens on a TCP port on loopback.
    fn tcp() -> StubFastCgi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stub FastCGI port");
        let address = listener.local_addr().expect("stub address").to_string();
        listener.set_nonblocking(true).expect("non-blocking stub");
        let accept = move || listener.accept().map(|(s, _)| Box::new(s) as Box<dyn Conn>);
        let mut stub = StubFastCgi::run(accept);
        stub.address = address;
        stub
    }

    fn run(accept: impl Fn() -> std::io::Result<Box<dyn Conn>> + Send + 'static) -> StubFastCgi {
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (hits2, stop2) = (hits.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match accept() {
                    Ok(conn) => {
                        hits2.fetch_add(1, Ordering::SeqCst);
                        answer_executed(conn);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        StubFastCgi {
            hits,
            stop,
            thread: Some(thread),
            address: String::new(),
            socket: None,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for StubFastCgi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(socket) = &self.socket {
            let _ = fs::remove_file(socket);
        }
    }
}

/// A connection of either kind.
trait Conn: Read + Write {
    fn set_timeout(&self, timeout: Duration);
}

impl Conn for std::os::unix::net::UnixStream {
    fn set_timeout(&self, timeout: Duration) {
        let _ = self.set_nonblocking(false);
        let _ = self.set_read_timeout(Some(timeout));
    }
}

impl Conn for std::net::TcpStream {
    fn set_timeout(&self, timeout: Duration) {
        let _ = self.set_nonblocking(false);
        let _ = self.set_read_timeout(Some(timeout));
    }
}

/// Reads the request up to its end (the empty FCGI_STDIN record), then answers a FastCGI
/// response whose body is [`EXECUTED`], and closes.
fn answer_executed(mut conn: Box<dyn Conn>) {
    conn.set_timeout(Duration::from_secs(5));
    let id = loop {
        let mut header = [0u8; 8];
        if conn.read_exact(&mut header).is_err() {
            return;
        }
        let len = u16::from_be_bytes([header[4], header[5]]) as usize + header[6] as usize;
        let mut content = vec![0u8; len];
        if conn.read_exact(&mut content).is_err() {
            return;
        }
        // FCGI_STDIN, empty: the request is complete.
        if header[1] == 5 && header[4] == 0 && header[5] == 0 {
            break [header[2], header[3]];
        }
    };
    let body = format!("Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n{EXECUTED}\n");
    let len = body.len() as u16;
    let mut out = Vec::new();
    // FCGI_STDOUT with the body, an empty FCGI_STDOUT, FCGI_END_REQUEST.
    out.extend_from_slice(&[1, 6, id[0], id[1], (len >> 8) as u8, len as u8, 0, 0]);
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(&[1, 6, id[0], id[1], 0, 0, 0, 0]);
    out.extend_from_slice(&[1, 3, id[0], id[1], 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let _ = conn.write_all(&out);
}

/// One upload: its file name, what it holds, the type it is declared with.
struct Sample {
    name: &'static str,
    bytes: Vec<u8>,
}

fn samples() -> Vec<Sample> {
    let php = format!("<?php echo '{EXECUTED}'; ?>\n").into_bytes();
    vec![
        // Debian's FilesMatch and the AddHandler.
        Sample {
            name: "shell.php",
            bytes: php.clone(),
        },
        // Debian's FilesMatch only.
        Sample {
            name: "x.phtml",
            bytes: php.clone(),
        },
        // AddHandler: mod_mime looks at every extension, not only the last.
        Sample {
            name: "pic.php.png",
            bytes: php.clone(),
        },
        // The `<If "-f %{REQUEST_FILENAME}">` variant of the FilesMatch.
        Sample {
            name: "checked.php7",
            bytes: php,
        },
        Sample {
            name: "t.lua",
            bytes: format!(
                "function handle(r)\n  r.content_type = 'text/plain'\n  r:puts('{EXECUTED}')\n  \
                 return apache2.OK\nend\n"
            )
            .into_bytes(),
        },
        // mod_asis would send this head as the response's: a redirect with a cookie.
        Sample {
            name: "t.asis.png",
            bytes: format!(
                "Status: 302 Found\nLocation: https://evil.example/\nSet-Cookie: session=stolen\n\
                 Content-Type: text/html\n\n{EXECUTED}\n"
            )
            .into_bytes(),
        },
        // A type map would serve another file, with the uploader's Content-Type.
        Sample {
            name: "t.var",
            bytes:
                b"URI: t.var\nContent-Type: text/html\n\nURI: shell.php\nContent-Type: text/html\n"
                    .to_vec(),
        },
    ]
}

/// Uploads every sample through `stack`, downloads it back, and checks it is its bytes and
/// that `stub` was never asked.
fn every_upload_comes_back_as_bytes(stack: &Stack, stub: &StubFastCgi) {
    let scratch = stack.dir.path.join("scratch");
    fs::create_dir_all(&scratch).expect("scratch dir");
    for sample in samples() {
        let file = scratch.join(sample.name);
        fs::write(&file, &sample.bytes).expect("write sample");
        let slot = stack.slot(
            ALICE,
            sample.name,
            sample.bytes.len() as u64,
            "application/octet-stream",
        );
        assert_eq!(
            slot.name, sample.name,
            "the program keeps the name as it is"
        );
        let path = file.display().to_string();
        let put = curl(&[
            "-T",
            &path,
            "-H",
            "Content-Type: application/octet-stream",
            &slot.put_url,
        ]);
        if put.status != 201 {
            stack.fail(&format!("PUT {}: {put:?}", sample.name));
        }
        for method in ["GET", "HEAD"] {
            let get = if method == "GET" {
                curl(&[&slot.get_url])
            } else {
                curl(&["-I", &slot.get_url])
            };
            if get.status != 200 {
                stack.fail(&format!("{method} {}: {get:?}", sample.name));
            }
            if method == "GET" && get.body != sample.bytes {
                stack.fail(&format!(
                    "GET {} did not return the uploaded bytes: {get:?}",
                    sample.name
                ));
            }
            assert_eq!(
                get.header("content-length"),
                Some(sample.bytes.len().to_string().as_str()),
                "{method} {}: {get:?}",
                sample.name
            );
            for leaked in ["location", "set-cookie"] {
                assert!(
                    get.header(leaked).is_none(),
                    "{method} {}: an uploaded head must not become the response's: {get:?}",
                    sample.name
                );
            }
        }
        if stub.hits() != 0 {
            stack.fail(&format!(
                "the PHP stub was asked {} time(s) by the time {} was downloaded",
                stub.hits(),
                sample.name
            ));
        }
    }
    // URLs under the upload prefixes that are no upload: 404, never the PHP handler.
    for stray in [
        "/upload/not-a-token/shell.php",
        "/upload/shell.php",
        "/share/shell.php",
        "/file_share/shell.php",
        "/file_share/a/b/shell.php",
    ] {
        let answer = curl(&[&format!("{}{stray}", stack.public)]);
        if answer.status != 404 || stub.hits() != 0 {
            stack.fail(&format!(
                "GET {stray}: expected a 404 of our own, the stub asked {} time(s): {answer:?}",
                stub.hits()
            ));
        }
    }
}

/// Server-level configuration as Debian's PHP and module packages write it, every handler
/// pointed at `socket`, and a plain virtual host on `probe_port` serving `probe_root`, where
/// the handlers do run (which shows that they are live).
fn apache_handlers(socket: &str, probe_port: u16, probe_root: &Path) -> Surroundings {
    let fpm = format!("proxy:unix:{socket}|fcgi://localhost");
    let probe = probe_root.display();
    Surroundings {
        apache_modules: vec![
            ("proxy_module", "mod_proxy.so"),
            ("proxy_fcgi_module", "mod_proxy_fcgi.so"),
            ("lua_module", "mod_lua.so"),
            ("asis_module", "mod_asis.so"),
            ("negotiation_module", "mod_negotiation.so"),
        ],
        apache_server: format!(
            r#"# /etc/apache2/conf-available/php8.2-fpm.conf (Debian 12), socket moved
<FilesMatch ".+\.ph(?:ar|p|tml)$">
    SetHandler "{fpm}"
</FilesMatch>
# The variant that file's comment recommends
<FilesMatch ".+\.php7$">
    <If "-f %{{REQUEST_FILENAME}}">
        SetHandler "{fpm}"
    </If>
</FilesMatch>
# The older habit: AddHandler (matches pic.php.png too)
AddHandler "{fpm}" .php
# /etc/apache2/mods-available/lua.conf, asis, negotiation
AddHandler lua-script .lua
AddHandler send-as-is asis
AddHandler type-map var
# Somebody's PHP site on the same server
Listen 127.0.0.1:{probe_port}
<VirtualHost 127.0.0.1:{probe_port}>
    DocumentRoot {probe}
    <Directory {probe}>
        Require all granted
    </Directory>
</VirtualHost>
"#
        ),
        nginx_server: String::new(),
    }
}

#[test]
fn apache_serves_uploaded_scripts_as_bytes() {
    if !available(Flavour::ApacheDav) {
        return;
    }
    // Reachable by Apache's children (www-data when the tests run as root).
    let stub_dir = common::TempDir::labelled("stub-apache");
    let dir = &stub_dir.path;
    let stub = StubFastCgi::unix(&dir.join("php-fpm.sock"));
    let probe_root = dir.join("site");
    fs::create_dir_all(&probe_root).expect("create the probe site");
    for name in ["index.php", "pic.php.png", "checked.php7"] {
        fs::write(probe_root.join(name), "<?php ?>").expect("write a probe file");
    }
    let probe_port = web::unused_port();
    let settings = Settings {
        around: apache_handlers(&stub.address, probe_port, &probe_root),
        ..Settings::default()
    };
    let stack = Stack::start_with(Flavour::ApacheDav, &settings);
    // The handlers are live: on another site of the same server they take each style of name.
    for name in ["index.php", "pic.php.png", "checked.php7"] {
        let probe = curl(&[&format!("http://127.0.0.1:{probe_port}/{name}")]);
        if probe.body != format!("{EXECUTED}\n").into_bytes() {
            stack.fail(&format!(
                "the PHP handlers must run {name} elsewhere: {probe:?}"
            ));
        }
    }
    assert_eq!(stub.hits(), 3, "the stub counts what reaches it");
    stub.hits.store(0, Ordering::SeqCst);
    every_upload_comes_back_as_bytes(&stack, &stub);
}

#[test]
fn nginx_php_location_does_not_take_upload_urls() {
    if !available(Flavour::Nginx) {
        return;
    }
    let stub = StubFastCgi::tcp();
    let settings = Settings {
        around: Surroundings {
            nginx_server: format!(
                "    # An admin's PHP location, elsewhere in the server\n    \
                 location ~ \\.ph(?:ar|p|tml|p7)$ {{\n        fastcgi_pass {};\n    }}\n    \
                 location ~ \\.(lua|asis|var|png)$ {{\n        fastcgi_pass {};\n    }}\n",
                stub.address, stub.address
            ),
            ..Surroundings::default()
        },
        ..Settings::default()
    };
    let stack = Stack::start_with(Flavour::Nginx, &settings);
    // The injected location is live: outside the upload prefixes it takes .php.
    let outside = curl(&[&format!("{}/index.php", stack.public)]);
    assert_eq!(
        outside.body,
        format!("{EXECUTED}\n").into_bytes(),
        "the PHP location must answer outside the upload prefixes: {outside:?}"
    );
    assert_eq!(stub.hits(), 1, "the stub counts what reaches it");
    stub.hits.store(0, Ordering::SeqCst);
    every_upload_comes_back_as_bytes(&stack, &stub);
}
