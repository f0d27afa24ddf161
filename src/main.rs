//! The command line: `serve` (FastCGI or CGI), `runserver` (development HTTP server),
//! `cleanup`, `check-config`, and the admin commands `files`, `purge`, `usage`, `check`
//! (`admin`). Parses arguments (clap: `--help`, usage errors and man pages from one
//! definition), sets up logging, loads the configuration, and hands over to the library.
//! Started as CGI, the program reads no argument at all (`cgi::run`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use xmpp_http_upload::config::{CONFIG_ENV, Config, DEFAULT_CONFIG_PATH};
use xmpp_http_upload::fcgi::{self, Listen};
use xmpp_http_upload::{App, admin, cgi, cleanup, devserver, unix_now};

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
        listen: Option<String>,
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

/// What `serve` and `runserver` read of the command line.
struct Args {
    config: Option<PathBuf>,
    listen: Option<String>,
    data: Option<PathBuf>,
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

fn load_config(args: &Args) -> Result<Config, String> {
    Config::load(&config_path(args)).map_err(|e| e.to_string())
}

fn open_app(config: Config) -> Result<Arc<App>, String> {
    App::open(config).map(Arc::new).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // A panic in a request thread must reach the log, not a terminal nobody reads (SPEC 8).
    std::panic::set_hook(Box::new(|info| log::error!("panic: {info}")));
    // Under CGI the request is the only input. A web server hands a query without `=` to a
    // CGI program as its command line (RFC 3875 §4.4): `?runserver+--listen+...` must not
    // start anything, so argv is not even parsed there.
    if cgi::started_as_cgi() {
        return cgi::run();
    }
    let result = parse_args().and_then(run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xmpp-http-upload: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let config = cli.config;
    let args = |listen, data| Args {
        config: config.clone(),
        listen,
        data,
    };
    let now = unix_now();
    match cli.command.unwrap_or(Command::Serve { listen: None }) {
        Command::Serve { listen } => serve(&args(listen, None)),
        Command::Runserver { listen, data } => runserver(&args(listen, data)),
        Command::CheckConfig => {
            let args = args(None, None);
            let config = load_config(&args)?;
            println!("{}: OK", config_path(&args).display());
            for warning in config.warnings() {
                println!("warning: {warning}");
            }
            print!("{}", config.describe());
            Ok(())
        }
        Command::Cleanup { reapply_rules } => {
            let app = open_app(load_config(&args(None, None))?)?;
            if reapply_rules {
                let reapplied = cleanup::reapply_rules(&app).map_err(|e| e.to_string())?;
                println!("{reapplied}");
            }
            let report = cleanup::run(&app, now).map_err(|e| e.to_string())?;
            println!("{report}");
            Ok(())
        }
        Command::Files { jid, json } => {
            let jid = admin::jid_argument(&jid)?;
            let app = open_app(load_config(&args(None, None))?)?;
            let files = admin::files(&app, &jid).map_err(|e| e.to_string())?;
            print_report(&files, json)
        }
        Command::Purge { jid, dry_run, json } => {
            let jid = admin::jid_argument(&jid)?;
            let app = open_app(load_config(&args(None, None))?)?;
            let report = admin::purge(&app, &jid, dry_run, now).map_err(|e| e.to_string())?;
            print_report(&report, json)?;
            report.result()
        }
        Command::Usage { top, json } => {
            let app = open_app(load_config(&args(None, None))?)?;
            let report = admin::usage(&app, top, now).map_err(|e| e.to_string())?;
            print_report(&report, json)
        }
        Command::Check {
            repair,
            dry_run,
            json,
        } => {
            let app = open_app(load_config(&args(None, None))?)?;
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
        println!("{text}");
    } else {
        print!("{report}");
    }
    Ok(())
}

fn serve(args: &Args) -> Result<(), String> {
    let config = load_config(args)?;
    for warning in config.warnings() {
        log::warn!("{warning}");
    }
    let listen = args
        .listen
        .as_deref()
        .or(config.listen.as_deref())
        .map(Listen::parse)
        .or_else(|| fcgi::inherited_socket().map(Listen::Inherited))
        .or_else(|| fcgi::stdin_is_listening_socket().then_some(Listen::Inherited(0)));
    let workers = config.workers;
    let app = open_app(config)?;
    match listen {
        Some(listen) => {
            fcgi::serve(app, listen, workers).map_err(|e| format!("cannot listen: {e}"))
        }
        // (Started as CGI, `main` answered the request before any of this.)
        None => Err(
            "nothing to serve: fd 0 is not a socket and GATEWAY_INTERFACE is not set; \
             give --listen (e.g. --listen unix:/run/xmpp-http-upload/fcgi.sock)"
                .into(),
        ),
    }
}

fn runserver(args: &Args) -> Result<(), String> {
    let addr = args
        .listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:8000".into());
    let config = match &args.config {
        Some(_) => load_config(args)?,
        None => {
            let data = args
                .data
                .clone()
                .unwrap_or_else(|| PathBuf::from("xmpp-http-upload-dev"));
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
