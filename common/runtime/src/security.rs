//! Small security helpers shared by the HTTP servers.

/// Whether an `Authorization` header value is `Bearer <expected>`, compared in constant time.
pub fn bearer_matches(expected: &str, authorization: Option<&str>) -> bool {
    let Some(given) = authorization.and_then(|v| v.strip_prefix("Bearer ")) else {
        return false;
    };
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The rule every server of the project follows: a token (given, else from `env_var`, empty
/// meaning none) is optional on loopback and required on any other address. `Err` carries
/// the address that would have been exposed without one.
pub fn token_for_bind(
    bind: std::net::SocketAddr,
    given: Option<&str>,
    env_var: &str,
) -> Result<Option<String>, std::net::SocketAddr> {
    let token = given
        .map(str::to_owned)
        .or_else(|| std::env::var(env_var).ok())
        .filter(|t| !t.is_empty());
    if !bind.ip().is_loopback() && token.is_none() {
        return Err(bind);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_required_only_beyond_loopback() {
        let env = "BIKESHARE_TEST_TOKEN_NEVER_SET";
        let lo: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let any: std::net::SocketAddr = "0.0.0.0:0".parse().unwrap();
        assert_eq!(token_for_bind(lo, None, env), Ok(None));
        assert_eq!(token_for_bind(any, None, env), Err(any));
        assert_eq!(token_for_bind(any, Some(""), env), Err(any));
        assert_eq!(token_for_bind(any, Some("t"), env), Ok(Some("t".into())));
    }

    #[test]
    fn only_the_exact_bearer_token_matches() {
        assert!(bearer_matches("abc", Some("Bearer abc")));
        for bad in [
            None,
            Some("abc"),
            Some("Bearer abd"),
            Some("Bearer abcd"),
            Some("bearer abc"),
            Some("Bearer "),
        ] {
            assert!(!bearer_matches("abc", bad), "{bad:?}");
        }
    }
}
