//! `listen`: the address FastCGI is served on when one is named (the `listen` key, or `serve
//! --listen`), parsed once into `ListenAddress`, so that nothing downstream switches on a
//! `unix:` prefix again. Not here: opening the socket, or a socket inherited from systemd or
//! mod_fcgid (both `fcgi::Listen`, which holds a `ListenAddress` or an inherited descriptor).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A FastCGI address as an admin writes it: `host:port` or `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    /// `host:port`, as `TcpListener::bind` resolves it (`127.0.0.1:9000`, `[::1]:9000`,
    /// `localhost:9000`).
    Tcp(String),
    /// `unix:/path`: a Unix socket the program creates (mode 0660: give the web server our
    /// group).
    Unix(PathBuf),
}

impl ListenAddress {
    /// Parses `unix:/path` or `host:port`; the error says what is missing, for a message that
    /// quotes the value.
    pub fn parse(text: &str) -> Result<ListenAddress, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!(
                    "{text:?} names no socket path: write unix:/path, e.g. \
                     unix:/run/xmpp-http-upload/fcgi.sock"
                ));
            }
            return Ok(ListenAddress::Unix(PathBuf::from(path)));
        }
        let has_port = text
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !has_port {
            return Err(format!(
                "{text:?} is neither host:port (e.g. 127.0.0.1:9000) nor unix:/path"
            ));
        }
        Ok(ListenAddress::Tcp(text.to_string()))
    }
}

impl FromStr for ListenAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<ListenAddress, String> {
        ListenAddress::parse(text)
    }
}

/// As it is written: `host:port` or `unix:/path`.
impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Tcp(addr) => f.write_str(addr),
            ListenAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_path() {
        assert_eq!(
            ListenAddress::parse("unix:/run/x/fcgi.sock"),
            Ok(ListenAddress::Unix("/run/x/fcgi.sock".into()))
        );
    }

    #[test]
    fn tcp_host_port() {
        for text in ["127.0.0.1:9000", "[::1]:9000", "localhost:9000"] {
            assert_eq!(
                ListenAddress::parse(text),
                Ok(ListenAddress::Tcp(text.into()))
            );
        }
    }

    #[test]
    fn written_back_as_given() {
        for text in ["unix:/run/x/fcgi.sock", "127.0.0.1:9000"] {
            assert_eq!(ListenAddress::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn invalid() {
        for text in [
            "",
            "unix:",
            "9000",
            ":9000",
            "localhost",
            "host:port",
            "h:70000",
        ] {
            let error = ListenAddress::parse(text).unwrap_err();
            assert!(error.contains(&format!("{text:?}")), "{error}");
        }
    }
}
