//! What a WebSocket request asks of the session layer: `petrel_session=<id>` and
//! `petrel_resume=<n>` in its query (SPEC §10).

/// A request's session parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// The session id: 22–128 characters of `[A-Za-z0-9_-]`, chosen by the client.
    pub id: String,
    /// Instance→client messages the client has already received, when it resumes.
    pub resume: Option<u64>,
}

impl Ask {
    /// The parameters in `uri`'s query: `Ok(None)` when it names no session, `Err` (a `400`
    /// reason) when it names one badly.
    pub fn from_uri(uri: &http::Uri) -> Result<Option<Self>, &'static str> {
        let mut id = None;
        let mut resume = None;
        for pair in uri.query().unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "petrel_session" if id.replace(v).is_some() => {
                    return Err("petrel_session given more than once");
                }
                "petrel_resume" if resume.replace(v).is_some() => {
                    return Err("petrel_resume given more than once");
                }
                _ => {}
            }
        }
        let Some(id) = id else {
            return match resume {
                Some(_) => Err("petrel_resume needs petrel_session"),
                None => Ok(None),
            };
        };
        if !valid_id(id) {
            return Err(
                "petrel_session must be 22 to 128 characters of A-Z, a-z, 0-9, '_' and '-'",
            );
        }
        let resume = match resume {
            None => None,
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                Some(n.parse().map_err(|_| "petrel_resume is out of range")?)
            }
            Some(_) => return Err("petrel_resume must be a count of messages (digits only)"),
        };
        Ok(Some(Ask {
            id: id.to_string(),
            resume,
        }))
    }
}

/// `uri` without its `petrel_session` and `petrel_resume` query parameters (the rest as sent).
pub fn without_session_params(uri: &http::Uri) -> http::Uri {
    let Some(q) = uri.query() else {
        return uri.clone();
    };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|p| {
            let k = p.split_once('=').map_or(*p, |(k, _)| k);
            k != "petrel_session" && k != "petrel_resume"
        })
        .collect();
    let pq = match kept.is_empty() {
        true => uri.path().to_string(),
        false => format!("{}?{}", uri.path(), kept.join("&")),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    http::Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// 22–128 characters of `[A-Za-z0-9_-]` (a 128-bit random id in base64url is 22).
pub fn valid_id(id: &str) -> bool {
    (22..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(q: &str) -> Result<Option<Ask>, &'static str> {
        Ask::from_uri(&format!("/ws?{q}").parse().unwrap())
    }

    #[test]
    fn ids_and_counts_are_read_and_checked() {
        let id = "abcdefghijklmnopqrstuv";
        assert_eq!(ask("x=1").unwrap(), None);
        assert_eq!(
            ask(&format!("petrel_session={id}&x=1")).unwrap(),
            Some(Ask {
                id: id.into(),
                resume: None
            })
        );
        assert_eq!(
            ask(&format!("petrel_session={id}&petrel_resume=100"))
                .unwrap()
                .unwrap()
                .resume,
            Some(100)
        );
        assert!(ask("petrel_session=short").is_err());
        assert!(ask(&format!("petrel_session={id}!")).is_err());
        assert!(ask(&format!("petrel_session={}", "a".repeat(129))).is_err());
        assert!(ask(&format!("petrel_session={id}&petrel_resume=-1")).is_err());
        assert!(ask(&format!("petrel_session={id}&petrel_resume=")).is_err());
        assert!(ask(&format!("petrel_session={id}&petrel_session={id}")).is_err());
        assert!(ask("petrel_resume=3").is_err());
        assert!(ask(&format!(
            "petrel_session={id}&petrel_resume=99999999999999999999"
        ))
        .is_err());
    }
}
