//! The TOML parser's messages said in the operator's words: a close key
//! suggested for a mistyped one, types as a person names them.
//!
//! toml (through serde) hands over its errors as text only, so this reads
//! serde's fixed phrasings (`unknown field`, `invalid type`, `missing
//! field`); an unknown phrasing is passed on as it is.

/// The message to show for the parser's `message`.
pub fn operator_words(message: &str) -> String {
    unknown_field(message)
        .or_else(|| invalid_type(message))
        .or_else(|| missing_field(message))
        .unwrap_or_else(|| message.to_string())
}

/// The top-level keys: a mistyped one is a section, not a key.
pub const SECTIONS: [&str; 7] = [
    "deployment",
    "database",
    "master",
    "workers",
    "dependents",
    "prerequisites",
    "hosts",
];

/// `unknown field `exec_strat`, expected one of `a`, `b`` (or `expected `a``).
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let section = !expected.is_empty() && expected.iter().all(|e| SECTIONS.contains(e));
    let noun = if section { "section" } else { "key" };
    Some(match closest(field, &expected) {
        Some(best) if section => {
            format!("unknown section `{field}`: did you mean `{best}`?")
        }
        Some(best) => format!("unknown key `{field}`: did you mean `{best}`?"),
        None if expected.is_empty() => format!("unknown {noun} `{field}`: no key is allowed here"),
        None => format!(
            "unknown {noun} `{field}`; allowed here: {}",
            expected.join(", ")
        ),
    })
}

/// The nearest of `candidates` to `word`, if near enough to be a typo.
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&word, c), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1) || c.contains(word.as_str()) && word.len() >= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `invalid type: string "4", expected i64`.
fn invalid_type(message: &str) -> Option<String> {
    let rest = message.strip_prefix("invalid type: ")?;
    let (found, expected) = rest.rsplit_once(", expected ")?;
    Some(format!(
        "must be {}, not {}",
        expected_words(expected),
        found_words(found)
    ))
}

/// `missing field `name``: a key the table needs.
fn missing_field(message: &str) -> Option<String> {
    let field = message.strip_prefix("missing field `")?.strip_suffix('`')?;
    Some(format!("missing key `{field}` in this section"))
}

fn expected_words(expected: &str) -> String {
    match expected.trim() {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "an integer" => {
            "a whole number (such as 4)".into()
        }
        "f32" | "f64" | "a float" => "a number".into(),
        "a string" | "a borrowed string" => "text in quotes".into(),
        "a boolean" => "true or false".into(),
        "a sequence" => "a list in brackets (such as [\"a\", \"b\"])".into(),
        "a map" => "a table".into(),
        e if e.starts_with("struct ") => "a table".into(),
        other => other.to_string(),
    }
}

fn found_words(found: &str) -> String {
    let found = found.trim();
    if let Some(v) = found.strip_prefix("string ") {
        return format!("text {v}");
    }
    if let Some(v) = found.strip_prefix("integer ") {
        return format!("the number {}", v.trim_matches('`'));
    }
    if let Some(v) = found.strip_prefix("floating point ") {
        return format!("the number {}", v.trim_matches('`'));
    }
    if let Some(v) = found.strip_prefix("boolean ") {
        return v.trim_matches('`').to_string();
    }
    match found {
        "sequence" => "a list".into(),
        "map" => "a table".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mistyped_key_gets_the_closest_one() {
        let m = operator_words("unknown field `exec_strat`, expected one of `host`, `exec_start`, `exec_reload`, `user`");
        assert_eq!(m, "unknown key `exec_strat`: did you mean `exec_start`?");
        let m = operator_words("unknown field `zzz`, expected one of `host`, `user`");
        assert_eq!(m, "unknown key `zzz`; allowed here: host, user");
    }

    #[test]
    fn a_mistyped_section_is_a_section() {
        let m = operator_words("unknown field `worker`, expected one of `deployment`, `database`, `master`, `workers`, `dependents`, `prerequisites`, `hosts`");
        assert_eq!(m, "unknown section `worker`: did you mean `workers`?");
    }

    #[test]
    fn types_in_words() {
        assert_eq!(
            operator_words("invalid type: string \"4\", expected i64"),
            "must be a whole number (such as 4), not text \"4\""
        );
        assert_eq!(
            operator_words("invalid type: integer `5`, expected a string"),
            "must be text in quotes, not the number 5"
        );
        assert_eq!(operator_words("something else"), "something else");
    }
}
