//! The command line: `serve` (FastCGI or CGI), `runserver` (development HTTP server),
//! `cleanup` and `check-config`. Parses arguments, sets up logging, loads the configuration,
//! and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use xmpp_http_upload::config::{CONFIG_ENV, Config, DEFAULT_CONFIG_PATH};
use xmpp_http_upload::fcgi::{self, Listen};
use xmpp_http_upload::{App, cgi, cleanup, devserver, unix_now};

const USAGE: &str = "\
usage: xmpp-http-upload [COMMAND] [OPTIONS]

commands:
  serve          answer FastCGI (fd 0, systemd socket, or --listen) or one CGI request (default)
  runserver      development HTTP server on 127.0.0.1:8000, no web server or config needed
  cleanup        remove unused slots, failed uploads and files past retention
  check-config   validate the configuration and print what was understood

options:
  --config PATH         configuration file (else $XMPP_HTTP_UPLOAD_CONFIG, else /etc/xmpp-http-upload/config.toml)
  --listen ADDR         serve: host:port or unix:/path; runserver: host:port
  --data DIR            runserver: data directory (default ./xmpp-http-upload-dev)
";

/// The parsed command line.
struct Args {
    command: String,
    config: Option<PathBuf>,
    listen: Option<String>,
    data: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        command: "serve".into(),
        config: None,
        listen: None,
        data: None,
    };
    let mut iter = std::env::args().skip(1);
    let mut command_seen = false;
    while let Some(arg) = iter.next() {
        let mut value = |name: &str| iter.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--config" => args.config = Some(PathBuf::from(value("--config")?)),
            "--listen" => args.listen = Some(value("--listen")?),
            "--data" => args.data = Some(PathBuf::from(value("--data")?)),
            "-h" | "--help" | "help" => args.command = "help".into(),
            "-V" | "--version" => args.command = "version".into(),
            command if !command_seen && !command.starts_with('-') => {
                args.command = command.to_string();
                command_seen = true;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
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
    let result = parse_args().and_then(run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xmpp-http-upload: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    match args.command.as_str() {
        "help" => {
            print!("{USAGE}");
            Ok(())
        }
        "version" => {
            println!("xmpp-http-upload {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        "check-config" => {
            let config = load_config(&args)?;
            println!("{}: OK", config_path(&args).display());
            print!("{}", config.describe());
            Ok(())
        }
        "cleanup" => {
            let app = open_app(load_config(&args)?)?;
            let report = cleanup::run(&app, unix_now()).map_err(|e| e.to_string())?;
            println!("{report}");
            Ok(())
        }
        "serve" => serve(&args),
        "runserver" => runserver(&args),
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}

fn serve(args: &Args) -> Result<(), String> {
    let config = load_config(args)?;
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
        None if cgi::started_as_cgi() => cgi::serve_one(&app).map_err(|e| e.to_string()),
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
