//! What may be printed of a target or a URL. Every message, log line or debug string about a
//! target or a URL goes through one of these functions, which remove userinfo and secret query
//! parameters whatever the shape of the text, and keep the scheme as written.

/// Whether a query parameter's value is a secret: the options marked secret (`password`,
/// `secret_key`) and whatever Nacos requests carry (`accessToken`, `signature`), or any key
/// that says it holds one.
pub(crate) fn is_secret_param(key: &str) -> bool {
    if crate::config::is_secret(key) {
        return true;
    }
    let key = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "signature"]
        .iter()
        .any(|word| key.contains(word))
}

/// A target as the caller wrote it, which may be malformed in any way, as it may be printed.
///
/// A password may hold `/`, `?` or `@`, and a query value may hold `@`, so the text is read the
/// way that shows least: everything up to the last `@` is userinfo (`***@`); the query is never
/// shown; and when the last `@` comes after a `?`, the `@` may belong to a query value (a secret
/// one, perhaps) or to a password holding `?`, so nothing after the scheme is shown.
pub fn target(text: &str) -> String {
    target_read(text).shown
}

/// How `target` read a text.
pub(crate) struct TargetReading {
    /// What may be printed.
    pub shown: String,
    /// An `@` follows a `?`: what reads as a query may be part of a password holding `?`, so
    /// nothing of it may be named.
    pub query_unclear: bool,
}

/// `target`, saying also whether the query could be part of a password.
pub(crate) fn target_read(text: &str) -> TargetReading {
    let (head, rest) = split_scheme(text);
    let query = rest.find('?').unwrap_or(rest.len());
    let (shown, query_unclear) = match rest.rfind('@') {
        Some(at) if at > query => (format!("{head}***"), true),
        Some(at) => (format!("{head}***@{}", &rest[at + 1..query]), false),
        None => (format!("{head}{}", &rest[..query]), false),
    };
    TargetReading {
        shown,
        query_unclear,
    }
}

/// A target that `Target::parse` accepted, as it may be printed: such a target has no `@`
/// before its query (userinfo is refused, and no host or service name holds one), so only the
/// query, which may hold secrets, is removed. `target` would show nothing of a target whose
/// query holds `@` (`?username=a@b`).
pub fn accepted_target(text: &str) -> String {
    let (head, rest) = split_scheme(text);
    let query = rest.find('?').unwrap_or(rest.len());
    format!("{head}{}", &rest[..query])
}

/// A URL the library is about to request (built from a checked target, options, an address
/// server's answer or the environment), as it may be printed: userinfo before the path becomes
/// `***@`, and secret query parameters are left out (the others stay, as they help to tell one
/// request from another).
pub fn url(url: &str) -> String {
    let (head, rest) = split_scheme(url);
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (rest, None),
    };
    let mut shown = String::with_capacity(url.len());
    shown.push_str(head);
    match base.rfind('@') {
        Some(at) => {
            shown.push_str("***@");
            shown.push_str(&base[at + 1..]);
        }
        None => shown.push_str(base),
    }
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
                !pair.is_empty() && !is_secret_param(key)
            })
            .collect();
        if !kept.is_empty() {
            shown.push('?');
            shown.push_str(&kept.join("&"));
        }
    }
    shown
}

/// `("scheme://", rest)` when the text starts with a scheme (letters, digits, `+`, `-`, `.`,
/// starting with a letter), else `("", text)`: text before a `://` that is not a scheme may be
/// userinfo.
fn split_scheme(text: &str) -> (&str, &str) {
    if let Some(at) = text.find("://") {
        let scheme = &text[..at];
        let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if is_scheme {
            return text.split_at(at + 3);
        }
    }
    ("", text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Targets whose secret is `S3CRET`, in every shape a caller may write one.
    const LEAKY: &[&str] = &[
        "eas://user:S3CRET@127.0.0.1:1",
        "eas://user:S3CRET@127.0.0.1:1/svc",
        "eas+https://user:S3CRET@eas.example.com/svc",
        "nacos://nacos:S3CRET@10.0.0.1:8848,10.0.0.2/svc",
        "nacos+endpoint://u:S3CRET@addr.example.com/svc",
        "nacos+https://u:S3CRET@h/group@@svc",
        "dns://user:S3CRET@host:80",
        "static://user:S3CRET@127.0.0.1:80",
        "static://127.0.0.1:80,user:S3CRET@127.0.0.1:81",
        "user:S3CRET@127.0.0.1:80",
        "u:S3CRET@h://x/y",
        "eas://user:S3/CRET@host/svc",
        "eas://user:S3?CRET@host/svc",
        "eas://user:S3?CRET/x@host/svc",
        "eas://user:S3@CRET@host/svc",
        "eas://user:S3/x?CRET@host/svc",
        "eas://host/svc?password=S3CRET",
        "eas://host/svc?password=S3@CRET",
        "eas://host/svc?pass%77ord=S3@CRET",
        "nacos://h/svc?username=u&password=S3CRET&group=g",
        "nacos://h/svc?secret_key=S3CRET",
        "eas://u:a?password=S3@CRET@host/svc",
        "eas://host/svc?password=S3&CRET=1",
    ];

    fn no_fragment_of_the_secret(shown: &str, text: &str) {
        for fragment in ["S3CRET", "S3", "CRET", "user:"] {
            assert!(
                !shown.contains(fragment),
                "{text:?} printed as {shown:?} shows {fragment:?}"
            );
        }
    }

    #[test]
    fn no_shape_of_target_shows_its_secret() {
        for text in LEAKY {
            no_fragment_of_the_secret(&target(text), text);
        }
    }

    #[test]
    fn targets_keep_their_scheme_and_hosts() {
        assert_eq!(target("eas://user:pw@127.0.0.1:1"), "eas://***@127.0.0.1:1");
        assert_eq!(target("eas://user:p/w@h/svc"), "eas://***@h/svc");
        assert_eq!(target("eas://user:p?w@h/svc"), "eas://***");
        assert_eq!(target("user:pw@h:80"), "***@h:80");
        assert_eq!(
            target("eas://h:80/svc?refresh_interval_ms=5"),
            "eas://h:80/svc"
        );
        assert_eq!(target("nothing"), "nothing");
        assert_eq!(target("FTP+x://h/y"), "FTP+x://h/y");
    }

    #[test]
    fn accepted_targets_lose_only_their_query() {
        assert_eq!(
            accepted_target("nacos://h/svc?username=a@b&password=x"),
            "nacos://h/svc"
        );
        assert_eq!(
            accepted_target("static://10.0.0.1:80"),
            "static://10.0.0.1:80"
        );
    }

    #[test]
    fn urls_lose_userinfo_and_secret_parameters_only() {
        assert_eq!(
            url("http://u:S3CRET@h:8080/nacos/v3/client/ns/instance/list?serviceName=g@@s&accessToken=S3CRET&namespaceId=public"),
            "http://***@h:8080/nacos/v3/client/ns/instance/list?serviceName=g@@s&namespaceId=public"
        );
        assert_eq!(
            url("http://h/api/svc?token=S3CRET&internal=true"),
            "http://h/api/svc?internal=true"
        );
        assert_eq!(url("http://h/x?signature=S3CRET"), "http://h/x");
        assert_eq!(url("http://u:S3/CRET@h/x"), "http://***@h/x");
        for secret in [
            "password",
            "Password",
            "secret_key",
            "accessToken",
            "signature",
            "token",
        ] {
            assert!(is_secret_param(secret), "{secret}");
        }
        assert!(!is_secret_param("username") && !is_secret_param("serviceName"));
    }
}
