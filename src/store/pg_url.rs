//! A PostgreSQL `database` URL as text: cut into its parts as the client's own parser cuts it,
//! and shown without its password. Everything that reads such a URL before the client does
//! (`pg_tls` takes its TLS settings out of it) or shows it (`Location`'s display, errors,
//! `check-config`) goes through here, so that none of them can take a piece of a password
//! for a parameter. It does not check the URL (the client's parser does).

/// A `postgres://` URL in its parts, cut as the client's parser cuts it: the user part ends at
/// the first `@` (a password may hold an unencoded `/` or `?`), the query begins at the first
/// `?` after it. `redact` and `pg_tls::read_url` both read URLs through this, so that neither
/// can take a piece of a password for a parameter.
pub struct UrlParts<'a> {
    /// `postgres` or `postgresql` (empty when there is no `://`).
    pub scheme: &'a str,
    /// `user` or `user:password`, before the `@`.
    pub user: Option<&'a str>,
    /// Hosts, port and database: between the user part and the query.
    pub place: &'a str,
    /// After the `?`.
    pub query: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    pub fn of(url: &'a str) -> UrlParts<'a> {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let (user, rest) = match rest.split_once('@') {
            Some((user, rest)) => (Some(user), rest),
            None => (None, rest),
        };
        let (place, query) = match rest.split_once('?') {
            Some((place, query)) => (place, Some(query)),
            None => (rest, None),
        };
        UrlParts {
            scheme,
            user,
            place,
            query,
        }
    }

    /// The URL again, with `user` and `query` as given.
    pub fn join(&self, user: Option<&str>, query: Option<&str>) -> String {
        let mut url = format!("{}://", self.scheme);
        if let Some(user) = user {
            url.push_str(user);
            url.push('@');
        }
        url.push_str(self.place);
        if let Some(query) = query {
            url.push('?');
            url.push_str(query);
        }
        url
    }
}

/// A query's parameters with their names percent-decoded (the client matches names so).
pub fn query_params(query: &str) -> impl Iterator<Item = (String, &str, &str)> {
    query.split('&').filter(|p| !p.is_empty()).map(|param| {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let name = percent_encoding::percent_decode_str(key)
            .decode_utf8_lossy()
            .into_owned();
        (name, value, param)
    })
}

/// `url` with the password of its user part and any `password=` parameter replaced by `***`
/// (`UrlParts`).
pub fn redact(url: &str) -> String {
    let parts = UrlParts::of(url);
    let user = parts.user.map(|user| match user.split_once(':') {
        Some((name, _)) => format!("{name}:***"),
        None => user.to_string(),
    });
    let query = parts.query.map(|query| {
        query_params(query)
            .map(|(name, _, param)| match param.split_once('=') {
                Some((key, _)) if name == "password" => format!("{key}=***"),
                _ => param.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    parts.join(user.as_deref(), query.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_starred_out_wherever_it_stands() {
        // The user part ends at the first `@`: a `?` before it is the password's.
        assert_eq!(
            redact("postgres://u:ab?sslmode=disable@db/x?sslmode=require"),
            "postgres://u:***@db/x?sslmode=require"
        );
        assert_eq!(
            redact("postgres://u@db/x?password=hunter2&sslmode=verify-full"),
            "postgres://u@db/x?password=***&sslmode=verify-full"
        );
        // A percent-encoded parameter name is the name the client reads.
        assert_eq!(
            redact("postgres://u@db/x?pass%77ord=hunter2"),
            "postgres://u@db/x?pass%77ord=***"
        );
        let parts = UrlParts::of("postgresql://u:p@h1,h2:5432/db?a=1");
        assert_eq!(
            (parts.scheme, parts.user, parts.place, parts.query),
            ("postgresql", Some("u:p"), "h1,h2:5432/db", Some("a=1"))
        );
        assert_eq!(
            parts.join(parts.user, parts.query),
            "postgresql://u:p@h1,h2:5432/db?a=1"
        );
    }
}
