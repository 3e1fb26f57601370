//! Room-name patterns for per-room settings: `*` matches any run of characters
//! (`chat:*`, `*:private`, `*`).

/// A glob over room names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPattern(String);

impl RoomPattern {
    /// A pattern; `*` is the only special character.
    pub fn new(pattern: &str) -> RoomPattern {
        RoomPattern(pattern.to_owned())
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative matcher with single-star backtracking: linear for the patterns we use.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The setting of the first rule whose pattern matches `room`, else `default`.
pub fn first_match<T: Copy>(
    rules: &[(RoomPattern, T)],
    room: &switchboard_native_proto::RoomName,
    default: T,
) -> T {
    rules
        .iter()
        .find(|(pattern, _)| pattern.matches(room.as_str()))
        .map_or(default, |(_, setting)| *setting)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_match_any_run() {
        assert!(RoomPattern::new("*").matches("anything"));
        assert!(RoomPattern::new("chat:*").matches("chat:general"));
        assert!(!RoomPattern::new("chat:*").matches("news:general"));
        assert!(RoomPattern::new("*:private").matches("a:b:private"));
        assert!(RoomPattern::new("user:*:inbox").matches("user:42:inbox"));
        assert!(!RoomPattern::new("user:*:inbox").matches("user:42:outbox"));
        assert!(RoomPattern::new("exact").matches("exact"));
        assert!(!RoomPattern::new("exact").matches("exactly"));
    }
}
