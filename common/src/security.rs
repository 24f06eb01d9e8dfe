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

#[cfg(test)]
mod tests {
    use super::*;

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
