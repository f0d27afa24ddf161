//! The command line: `serve` (FastCGI or CGI), `runserver` (development HTTP server),
//! `cleanup`, `check-config`, and the admin commands `files`, `purge`, `usage`, `check`
//! (`admin`). Parses arguments (clap: `--help`, usage errors and man pages from one
//! definition), sets up logging, loads the configuration, and hands over to the library.
//! Started as CGI, the program reads no argument at all (`cgi::run`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use xmpp_http_upload::config::{
    APACHE_SITE, CONFIG_ENV, Config, DEFAULT_CONFIG_PATH, ListenAddress, NGINX_FILES_SNIPPET,
};
use xmpp_http_upload::fcgi::{self, Listen};
use xmpp_http_upload::{App, admin, cgi, cleanup, devserver, store, unix_now};

/// The HTTP side of XMPP HTTP File Upload (XEP-0363). Without a command: serve.
#[derive(Parser)]
#[command(version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file [default: $XMPP_HTTP_UPLOAD_CONFIG, else /etc/xmpp-http-upload/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
}

/// The commands; each doc line is its `--help` text.
#[derive(Subcommand)]
enum Command {
    /// Answer FastCGI (fd 0, systemd socket, or --listen) or one CGI request (the default)
    Serve {
        /// host:port or unix:/path
        #[arg(long, value_name = "ADDR")]
        listen: Option<ListenAddress>,
    },
    /// Development HTTP server on 127.0.0.1:8000, no web server or config needed
    Runserver {
        /// host:port
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Data directory when no --config is given [default: ./xmpp-http-upload-dev]
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
    },
    /// Remove unused slots, failed uploads and files past retention
    Cleanup {
        /// First record for every upload the retention of the rule that allows its JID now
        /// (uploads keep the retention of the rule that allowed them until asked)
        #[arg(long)]
        reapply_rules: bool,
    },
    /// Validate the configuration and print what was understood
    CheckConfig,
    /// List the files of one JID (URL, name, size, uploaded at, expires at)
    Files {
        /// The bare JID (any resource is cut off; case does not matter)
        #[arg(long)]
        jid: String,
        /// One JSON document instead of text
        #[arg(long)]
        json: bool,
    },
    /// Delete every file, directory and record of one JID (e.g. on account deletion)
    Purge {
        /// The bare JID (any resource is cut off; case does not matter)
        #[arg(long)]
        jid: String,
        /// Say what would be removed, remove nothing
        #[arg(long)]
        dry_run: bool,
        /// One JSON document instead of text
        #[arg(long)]
        json: bool,
    },
    /// Totals (files, bytes, slots waiting) and the JIDs storing the most
    Usage {
        /// How many JIDs to list (0: all of them)
        #[arg(long, default_value_t = 10, value_name = "N")]
        top: usize,
        /// One JSON document instead of text
        #[arg(long)]
        json: bool,
    },
    /// Compare the database and the upload directory both ways
    Check {
        /// Fix what can be fixed without losing an upload
        #[arg(long)]
        repair: bool,
        /// With --repair: say what would be repaired, change nothing
        #[arg(long)]
        dry_run: bool,
        /// One JSON document instead of text
        #[arg(long)]
        json: bool,
    },
}

/// Where the commands find their configuration: `--config`, else the environment, else the
/// default path.
struct Args {
    config: Option<PathBuf>,
}

/// Parses argv with clap. `--help` and `--version` print and exit 0; a usage error becomes
/// one line (clap's first), with a pointer to `--help`.
fn parse_args() -> Result<Cli, String> {
    Cli::try_parse().map_err(|error| {
        if matches!(
            error.kind(),
            clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        ) {
            let _ = error.print();
            std::process::exit(0);
        }
        // clap's message is its first paragraph (a list of missing arguments continues on
        // indented lines); the usage and tip that follow are left to --help.
        let rendered = error.render().to_string();
        let message: Vec<&str> = rendered
            .lines()
            .take_while(|line| !line.trim().is_empty())
            .map(str::trim)
            .collect();
        let message = message.join(" ");
        format!(
            "{}; try --help",
            message.strip_prefix("error: ").unwrap_or(&message)
        )
    })
}

fn config_path(args: &Args) -> PathBuf {
    args.config
        .clone()
        .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

/// Loads the configuration and compiles every rule's pattern now, so that a pattern only
/// compiling can refuse (over the compiled size limit) stops the command at start. (A CGI
/// process leaves them to their first use: `cgi::run`.)
fn load_config(args: &Args) -> Result<Config, String> {
    let path = config_path(args);
    let config = Config::load(&path).map_err(|e| e.to_string())?;
    for (i, rule) in config.rules.iter().enumerate() {
        rule.pattern.compile().map_err(|text| {
            format!(
                "{}: rules[{i}].match: invalid regular expression {:?}: {}",
                path.display(),
                rule.pattern.as_str(),
                text.lines().last().unwrap_or("").trim()
            )
        })?;
    }
    Ok(config)
}

fn open_app(config: Config) -> Result<Arc<App>, String> {
    App::open(config).map(Arc::new).map_err(|e| e.to_string())
}

/// One malloc arena for the whole process. glibc gives threads arenas of their own (up to
/// 8 per core) so that they never wait for each other in `malloc`; each arena keeps what its
/// thread once used. The program's threads allocate little and briefly (small blocks, served
/// from each thread's cache without a lock): measured under 64 connections, peak RSS 11.4 →
/// 9.9 MiB, with requests/s unchanged.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena() {
    // SAFETY: `mallopt` takes two integers and touches no memory of ours. glibc marks it
    // MT-Unsafe (it changes malloc's settings without a lock): it is sound only while no
    // other thread can be in malloc, and this is the first statement of `main`, before the
    // program starts any thread (Rust starts none before `main`). Its result (1 on success)
    // only tells whether the setting took: it is not needed.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}

/// The log on stderr: env_logger's usual line (`[time LEVEL module] message`), with the
/// control characters of the message written as escapes (`\u{1b}`, `\n`), so that nothing a
/// request carries (a raw path, a decoded segment quoted in an error) can move a terminal's
/// cursor or forge a log line of its own. env_logger's colour support did this by stripping
/// escape codes from every line, which cost 4 % of a slot request's CPU (Cargo.toml).
fn init_log() {
    use std::io::Write;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            write!(
                buf,
                "[{} {:<5} {}] ",
                buf.timestamp(),
                record.level(),
                record.target()
            )?;
            write_escaped(buf, *record.args())?;
            writeln!(buf)
        })
        .init();
}

/// Writes `message` to `out` with each control character as its escape, straight into the
/// log's buffer (no `String` of the message first: one allocation less per log line).
fn write_escaped(
    out: &mut impl std::io::Write,
    message: std::fmt::Arguments,
) -> std::io::Result<()> {
    struct Escaping<'a, W> {
        out: &'a mut W,
        failed: Option<std::io::Error>,
    }
    impl<W: std::io::Write> std::fmt::Write for Escaping<'_, W> {
        fn write_str(&mut self, text: &str) -> std::fmt::Result {
            let written = if text.chars().any(char::is_control) {
                text.chars().try_for_each(|c| {
                    if c.is_control() {
                        write!(self.out, "{}", c.escape_default())
                    } else {
                        self.out.write_all(c.encode_utf8(&mut [0; 4]).as_bytes())
                    }
                })
            } else {
                self.out.write_all(text.as_bytes())
            };
            written.map_err(|e| {
                self.failed = Some(e);
                std::fmt::Error
            })
        }
    }
    let mut escaping = Escaping { out, failed: None };
    std::fmt::write(&mut escaping, message).map_err(|_| {
        escaping
            .failed
            .take()
            .unwrap_or_else(|| std::io::Error::other("formatting a log message failed"))
    })
}

fn main() -> ExitCode {
    one_malloc_arena();
    init_log();
    // A panic in a request thread must reach the log, not a terminal nobody reads (BEHAVIOUR.md §8).
    std::panic::set_hook(Box::new(|info| log::error!("panic: {info}")));
    // Under CGI the request is the only input. A web server hands a query without `=` to a
    // CGI program as its command line (RFC 3875 §4.4): `?runserver+--listen+...` must not
    // start anything, so argv is not even parsed there.
    if cgi::started_as_cgi() {
        return cgi::run();
    }
    let result = parse_args().and_then(run);
    match result {
        Ok(()) if OUTPUT_CUT.load(Ordering::Relaxed) => ExitCode::from(OUTPUT_CUT_STATUS),
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xmpp-http-upload: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Writes an admin command's output to stdout (`say!` adds a newline, `say_raw!` does not).
/// A reader that went away (`check-config | head -n 1`) is no error of the command: it does
/// all its work (`cleanup --reapply-rules` prints one report before it cleans up), the rest of
/// its output goes unwritten, and it ends with its own failure if it has one (1, its line on
/// stderr), else with 141, as SIGPIPE ends `ls` or `grep` (128 + 13), so that `pipefail`
/// still sees that the output was cut.
/// (`println!` panics there: Rust ignores SIGPIPE, so the write fails with EPIPE, and the
/// panic reached the log.) Not for `serve`: a web server hanging up never ends that process.
macro_rules! say_raw {
    ($($arg:tt)*) => { write_out(format_args!($($arg)*)) };
}
macro_rules! say {
    ($($arg:tt)*) => { write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

fn write_out(text: std::fmt::Arguments) {
    use std::io::Write;
    if OUTPUT_CUT.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(text).and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            OUTPUT_CUT.store(true, Ordering::Relaxed);
        }
        Err(e) => {
            eprintln!("xmpp-http-upload: writing the output: {e}");
            std::process::exit(1);
        }
    }
}

/// Set once stdout's reader went away (`write_out`).
static OUTPUT_CUT: AtomicBool = AtomicBool::new(false);

/// What a shell shows for a command that SIGPIPE ended (128 + 13).
const OUTPUT_CUT_STATUS: u8 = 141;

fn run(cli: Cli) -> Result<(), String> {
    let args = Args { config: cli.config };
    let now = unix_now();
    match cli.command.unwrap_or(Command::Serve { listen: None }) {
        Command::Serve { listen } => serve(&args, listen),
        Command::Runserver { listen, data } => runserver(&args, listen, data),
        Command::CheckConfig => {
            let config = load_config(&args)?;
            let path = config_path(&args);
            // What this user cannot reach, the program running as this user cannot either:
            // run it as the program's user to know whether the program will work.
            let uid = nix::unistd::geteuid();
            let problems = config.unreachable();
            if !problems.is_empty() {
                return Err(format!(
                    "{}: not usable by uid {uid}: {}",
                    path.display(),
                    problems.join("; ")
                ));
            }
            // PostgreSQL: connected to and read, as this user would start the program on it.
            let database = store::Store::check(&config.database)
                .map_err(|problem| format!("{}: not usable: {problem}", path.display()))?;
            match database {
                None => say!(
                    "{}: OK (uid {uid} can reach the upload root and the database)",
                    path.display()
                ),
                Some(found) => say!(
                    "{}: OK (uid {uid} can reach the upload root; {found})",
                    path.display()
                ),
            }
            if uid.is_root() {
                say!(
                    "warning: checked as root, who can reach everything; check as the user the \
                     program runs as: runuser -u _xmpp-http-upload -- xmpp-http-upload check-config"
                );
            }
            for warning in config.warnings() {
                say!("warning: {warning}");
            }
            // Slots the web server in front would refuse (its body limit, read where installed).
            let limits = config.web_server_body_limits(
                std::path::Path::new(NGINX_FILES_SNIPPET),
                std::path::Path::new(APACHE_SITE),
            );
            for warning in config.body_limit_warnings(&limits) {
                say!("warning: {warning}");
            }
            say_raw!("{}", config.describe());
            Ok(())
        }
        Command::Cleanup { reapply_rules } => {
            let app = open_app(load_config(&args)?)?;
            if reapply_rules {
                let reapplied = cleanup::reapply_rules(&app).map_err(|e| e.to_string())?;
                say!("{reapplied}");
            }
            let report = cleanup::run(&app, now).map_err(|e| e.to_string())?;
            say!("{report}");
            Ok(())
        }
        Command::Files { jid, json } => {
            let jid = admin::jid_argument(&jid)?;
            let app = open_app(load_config(&args)?)?;
            let files = admin::files(&app, &jid).map_err(|e| e.to_string())?;
            print_report(&files, json)
        }
        Command::Purge { jid, dry_run, json } => {
            let jid = admin::jid_argument(&jid)?;
            let app = open_app(load_config(&args)?)?;
            let report = admin::purge(&app, &jid, dry_run, now).map_err(|e| e.to_string())?;
            print_report(&report, json)?;
            report.result()
        }
        Command::Usage { top, json } => {
            let app = open_app(load_config(&args)?)?;
            let report = admin::usage(&app, top, now).map_err(|e| e.to_string())?;
            print_report(&report, json)
        }
        Command::Check {
            repair,
            dry_run,
            json,
        } => {
            let app = open_app(load_config(&args)?)?;
            let report = admin::check(&app, repair && !dry_run, now).map_err(|e| e.to_string())?;
            print_report(&report, json)?;
            report.result()
        }
    }
}

/// Prints a report as text, or as one JSON document.
fn print_report<T: std::fmt::Display + serde::Serialize>(
    report: &T,
    json: bool,
) -> Result<(), String> {
    if json {
        let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        say!("{text}");
    } else {
        say_raw!("{report}");
    }
    Ok(())
}

/// `serve`: FastCGI on `listen` (`--listen`), else on the config's `listen`, else on an
/// inherited socket.
fn serve(args: &Args, listen: Option<ListenAddress>) -> Result<(), String> {
    let config = load_config(args)?;
    for warning in config.warnings() {
        log::warn!("{warning}");
    }
    let listen = listen
        .or_else(|| config.listen.clone())
        .map(Listen::At)
        .or_else(|| fcgi::inherited_socket().map(Listen::Inherited))
        .or_else(|| fcgi::stdin_is_listening_socket().then_some(Listen::Inherited(0)));
    let workers = config.workers;
    let app = open_app(config)?;
    match listen {
        Some(listen) => {
            // The error alone ("No such file or directory") would not say which path.
            let shown = listen.to_string();
            fcgi::serve(app, listen, workers).map_err(|e| format!("cannot listen on {shown}: {e}"))
        }
        // (Started as CGI, `main` answered the request before any of this.)
        None => Err(
            "nothing to serve: fd 0 is not a socket and GATEWAY_INTERFACE is not set; \
             give --listen (e.g. --listen unix:/run/xmpp-http-upload/fcgi.sock)"
                .into(),
        ),
    }
}

/// `runserver`: the development HTTP server on `listen` (`host:port`), with `--config` or a
/// development configuration in `data`.
fn runserver(args: &Args, listen: Option<String>, data: Option<PathBuf>) -> Result<(), String> {
    let addr = listen.unwrap_or_else(|| "127.0.0.1:8000".into());
    let config = match &args.config {
        Some(_) => load_config(args)?,
        None => {
            let data = data.unwrap_or_else(|| PathBuf::from("xmpp-http-upload-dev"));
            let data =
                std::path::absolute(&data).map_err(|e| format!("{}: {e}", data.display()))?;
            Config::for_development(&data)
        }
    };
    println!(
        "development server on http://{addr}/ (files in {}, database {})\n\
         try:\n  curl 'http://{addr}{slot}/slot/?jid=user@example.com&name=hello.txt&size=6'\n  \
         curl -T hello.txt <PUT URL>\n  curl <GET URL>",
        config.upload_root.display(),
        config.database.display(),
        slot = config.slot_prefix
    );
    let app = open_app(config)?;
    devserver::run(app, &addr).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    //! The man pages in debian/man/ are rendered from the clap definition above, so that they
    //! say what `--help` says. `XHU_WRITE_MAN=1 cargo test --bin xmpp-http-upload man_pages`
    //! writes them after a change of the command line. Also: the log's escaping.

    use super::{Cli, write_escaped};
    use clap::CommandFactory;
    use std::collections::BTreeMap;
    use std::path::Path;

    /// What the main page says beyond `--help`: files, environment, exit status, other pages.
    const MAIN_PAGE_EXTRA: &str = r#".SH FILES
.TP
\fI/etc/xmpp-http-upload/config.toml\fR
The configuration (\fBxmpp\-http\-upload.toml\fR(5)), owner root, group _xmpp\-http\-upload,
mode 0640: it may hold secrets.
.TP
\fI/var/lib/xmpp\-http\-upload/files/\fR
The upload root (setgid, group www\-data, mode 2770): \fI<token>/<name>\fR.
.TP
\fI/var/lib/xmpp\-http\-upload/db/\fR
The SQLite database of slots and uploads (mode 0700).
.TP
\fI/run/xmpp\-http\-upload/fcgi.sock\fR
The FastCGI socket nginx connects to (\fBxmpp\-http\-upload.socket\fR).
.TP
\fI/etc/nginx/sites\-available/xmpp\-http\-upload\fR, \fI/etc/nginx/snippets/xmpp\-http\-upload\-*.conf\fR
The nginx server block (not enabled) and the snippets it includes.
.TP
\fI/usr/share/doc/xmpp\-http\-upload/INSTALL.md\fR
How to set it all up, for nginx, Apache and shared hosting.
.SH ENVIRONMENT
.TP
\fBXMPP_HTTP_UPLOAD_CONFIG\fR
The configuration file when \fB\-\-config\fR is not given.
.TP
\fBRUST_LOG\fR
How much to log on standard error: \fBerror\fR, \fBwarn\fR, \fBinfo\fR (the default), \fBdebug\fR.
.TP
\fBGATEWAY_INTERFACE\fR
Set by a web server that runs the program as CGI: then it answers that one request and reads
no argument.
.SH EXIT STATUS
0 on success; 1 on a usage error, an unusable configuration, or (\fBcheck\fR, \fBpurge\fR)
differences or failures that remain, each told in one line on standard error.
.SH SEE ALSO
\fBxmpp\-http\-upload.toml\fR(5), \fBnginx\fR(8), \fBsystemctl\fR(1)
"#;

    /// Every page, by file name: the command's (with the extra sections) and one per command.
    fn pages() -> BTreeMap<String, Vec<u8>> {
        let mut cli = Cli::command().disable_help_subcommand(true);
        cli.build();
        let version = cli.get_version().unwrap_or_default().to_string();
        let man = |cmd: clap::Command| {
            clap_mangen::Man::new(cmd)
                .section("8")
                .manual("System Administration")
                .source(format!("xmpp-http-upload {version}"))
        };
        let mut pages = BTreeMap::new();
        let main = man(cli.clone());
        let mut page = Vec::new();
        main.render_title(&mut page).unwrap();
        main.render_name_section(&mut page).unwrap();
        main.render_synopsis_section(&mut page).unwrap();
        main.render_description_section(&mut page).unwrap();
        main.render_options_section(&mut page).unwrap();
        main.render_subcommands_section(&mut page).unwrap();
        page.extend_from_slice(MAIN_PAGE_EXTRA.as_bytes());
        main.render_version_section(&mut page).unwrap();
        pages.insert(main.get_filename(), page);
        for sub in cli.get_subcommands() {
            let sub = man(sub.clone());
            let mut page = Vec::new();
            sub.render(&mut page).unwrap();
            let see_also = ".SH \"SEE ALSO\"\n\\fBxmpp\\-http\\-upload\\fR(8)\n";
            page.extend_from_slice(see_also.as_bytes());
            pages.insert(sub.get_filename(), page);
        }
        pages
    }

    #[test]
    fn man_pages_are_in_step_with_help() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/man");
        let pages = pages();
        assert!(
            pages.contains_key("xmpp-http-upload.8"),
            "{:?}",
            pages.keys()
        );
        assert!(pages.contains_key("xmpp-http-upload-check-config.8"));
        if std::env::var_os("XHU_WRITE_MAN").is_some() {
            for (name, page) in &pages {
                std::fs::write(dir.join(name), page).unwrap();
            }
        }
        for (name, page) in &pages {
            let shipped = std::fs::read(dir.join(name)).unwrap_or_default();
            assert!(
                shipped == *page,
                "debian/man/{name} is not what the command line says: \
                 XHU_WRITE_MAN=1 cargo test --bin xmpp-http-upload man_pages"
            );
        }
        // No page for a command that is gone.
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".8") {
                assert!(
                    pages.contains_key(&name),
                    "debian/man/{name}: no such command"
                );
            }
        }
    }

    #[test]
    fn every_command_has_help_and_the_version_is_the_package_version() {
        let mut cli = Cli::command();
        cli.build();
        assert_eq!(cli.get_version(), Some(env!("CARGO_PKG_VERSION")));
        for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
            assert!(
                sub.get_about().is_some(),
                "{} has no help text",
                sub.get_name()
            );
            for arg in sub.get_arguments() {
                let named = arg.get_id().as_str();
                assert!(
                    arg.get_help().is_some() || named == "help" || named == "version",
                    "{} --{named} has no help text",
                    sub.get_name()
                );
            }
        }
    }

    #[test]
    fn log_messages_carry_no_control_characters() {
        let escaped = |args: std::fmt::Arguments| {
            let mut out = Vec::new();
            write_escaped(&mut out, args).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            escaped(format_args!("slot granted: {}", "a@b")),
            "slot granted: a@b"
        );
        let path = "/upload/\u{1b}[2J\u{1b}]0;pwned\u{7}x\nfake line";
        assert_eq!(
            escaped(format_args!("refused GET {path}")),
            "refused GET /upload/\\u{1b}[2J\\u{1b}]0;pwned\\u{7}x\\nfake line"
        );
        assert_eq!(escaped(format_args!("naïve {}", "✓")), "naïve ✓");
    }
}
