//! Reading a TOML file with positions kept, so every config error names file, line and key.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One problem in one config file: where it is, which key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as the user named it.
    pub file: PathBuf,
    /// 1-based line of the key (or of the table holding a missing key); `None` when unknown.
    pub line: Option<usize>,
    /// Dotted key path such as `mesh.seeds[1]`; empty for whole-file problems.
    pub key: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A list of config errors, displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A parsed file that can still answer "on which line is key X?".
pub struct Source {
    file: PathBuf,
    text: String,
}

impl Source {
    /// Reads `path` from disk.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read file: {e}"),
        })?;
        Ok(Self::from_text(path, text))
    }

    /// Wraps text that did not come from disk (tests, built-in configs).
    pub fn from_text(path: &Path, text: String) -> Self {
        Self {
            file: path.to_path_buf(),
            text,
        }
    }

    /// The file name used in messages.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Deserializes the whole document, turning serde/TOML failures into a located error.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        self.parse_ignoring(&[]).map(|(t, _)| t)
    }

    /// Like [`Source::parse`], with the keys of `ignored` (dotted paths, `[]` for any array item,
    /// see [`super::fly::FLY_IGNORED`]) removed first; returns the ignored keys found.
    pub fn parse_ignoring<T: DeserializeOwned>(
        &self,
        ignored: &[&str],
    ) -> Result<(T, Vec<String>), ConfigError> {
        let mut table =
            DeTable::parse(&self.text).map_err(|e| self.toml_error(&e, String::new()))?;
        let found = super::fly::strip_ignored(table.get_mut(), ignored);
        let de = toml::de::Deserializer::from(table);
        let value = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = clean_path(&e.path().to_string());
            self.toml_error(e.inner(), key)
        })?;
        Ok((value, found))
    }

    fn toml_error(&self, e: &toml::de::Error, key: String) -> ConfigError {
        // The key path points at the exact element (`seeds[1]`); toml's own span may only cover
        // the enclosing array, so it is the fallback.
        let by_key = (!key.is_empty()).then(|| self.line_of_key(&key)).flatten();
        let line = by_key.or_else(|| e.span().map(|s| self.line_of(s.start)));
        let mut message = e.message().trim().to_string();
        if let Some(name) = super::fly::did_you_mean(&message, &key) {
            message = format!("{message} (did you mean `{name}`?)");
        }
        ConfigError {
            file: self.file.clone(),
            line,
            key,
            message,
        }
    }

    /// An error about `key`, located by looking the key up in the document.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.line_of_key(key),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// Line of the deepest part of `key` present in the document (`a.b[2].c`).
    pub fn line_of_key(&self, key: &str) -> Option<usize> {
        let root = DeTable::parse(&self.text).ok()?;
        let span = locate(root.get_ref(), root.span(), &segments(key));
        Some(self.line_of(span.start))
    }
}

/// Removes serde_path_to_error's placeholder for the document root.
fn clean_path(p: &str) -> String {
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(key: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Seg::Key(name));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(close) = stripped.find(']') else {
                break;
            };
            if let Ok(i) = stripped[..close].parse() {
                out.push(Seg::Index(i));
            }
            rest = &stripped[close + 1..];
        }
    }
    out
}

/// Walks as far down `path` as the document goes; returns the span of the last part found
/// (the key's own span for table entries, so the line is where the user wrote the key).
fn locate(table: &DeTable<'_>, table_span: Range<usize>, path: &[Seg<'_>]) -> Range<usize> {
    let Some((Seg::Key(name), rest)) = path.split_first() else {
        return table_span;
    };
    let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref() == name) else {
        return table_span;
    };
    if rest.is_empty() {
        return k.span();
    }
    locate_value(v, k.span(), rest)
}

fn locate_value(
    v: &Spanned<DeValue<'_>>,
    fallback: Range<usize>,
    path: &[Seg<'_>],
) -> Range<usize> {
    match (v.get_ref(), path.split_first()) {
        (_, None) => fallback,
        (DeValue::Table(t), Some((Seg::Key(_), _))) => {
            let span = if v.span().is_empty() {
                fallback
            } else {
                v.span()
            };
            locate(t, span, path)
        }
        (DeValue::Array(a), Some((Seg::Index(i), rest))) => match a.get(*i) {
            Some(item) if rest.is_empty() => {
                if item.span().is_empty() {
                    fallback
                } else {
                    item.span()
                }
            }
            Some(item) => locate_value(item, item.span(), rest),
            None => fallback,
        },
        _ => fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_array_items() {
        let text = "[node]\nname = \"a\"\n\n[mesh]\nseeds = [\n  \"x\",\n  \"y\",\n]\n\n[[instances]]\nid = \"i1\"\n\n[[instances]]\nid = \"i2\"\n";
        let s = Source::from_text(Path::new("n.toml"), text.to_string());
        assert_eq!(s.line_of_key("node.name"), Some(2));
        assert_eq!(s.line_of_key("mesh.seeds[1]"), Some(7));
        assert_eq!(s.line_of_key("instances[1].id"), Some(14));
        assert_eq!(s.line_of_key("instances[0].id"), Some(11));
        // Missing key: falls back to the nearest enclosing thing that exists.
        assert_eq!(s.line_of_key("mesh.bind"), Some(4));
    }
}
