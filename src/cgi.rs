//! The plain CGI front end (shared hosting): one request from the environment and stdin, the
//! answer on stdout. The web server starts the program once per request.

use std::io::{self, BufWriter, Write};

use crate::App;
use crate::request::Request;
use crate::route;

/// True when the web server started us as CGI.
pub fn started_as_cgi() -> bool {
    std::env::var_os("GATEWAY_INTERFACE").is_some()
}

/// Answers the one request of this process.
pub fn serve_one(app: &App) -> io::Result<()> {
    // A variable that is not UTF-8 reads as absent: a missing required value is refused.
    let request = Request::from_params(|key| std::env::var(key).ok(), false);
    let stdin = io::stdin();
    let mut body = stdin.lock();
    let response = route::handle(app, &request, &mut body);
    // A refused PUT leaves its body unread; Apache's mod_cgid then loses our answer (the
    // client sees a reset). Read what is left first.
    let _ = io::copy(&mut body, &mut io::sink());
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    out.write_all(&response.cgi_head())?;
    response.write_body(&mut out)?;
    out.flush()
}
