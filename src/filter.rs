//! `--filter key=value`: select cells of a plan (all filters must match).

use crate::plan::{field_matches, Cell};

pub const KEYS: &[&str] = &[
    "python",
    "cuda",
    "cudnn",
    "flavor",
    "os",
    "platform",
    "variant",
    "base",
    "miniconda",
    "tag",
    "id",
];

#[derive(Clone, Debug)]
pub struct Filter {
    pub key: String,
    pub pattern: String,
}

impl std::str::FromStr for Filter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not KEY=VALUE (keys: {})", KEYS.join(", ")))?;
        if !KEYS.contains(&k) {
            let hint = crate::diag::did_you_mean(k, KEYS)
                .map(|h| format!("did you mean `{h}`? "))
                .unwrap_or_default();
            return Err(format!(
                "unknown filter key `{k}` ({hint}expected one of: {})",
                KEYS.join(", ")
            ));
        }
        if v.is_empty() {
            return Err(format!("filter `{s}` has an empty value"));
        }
        Ok(Filter {
            key: k.to_string(),
            pattern: v.to_string(),
        })
    }
}

impl Filter {
    pub fn matches(&self, c: &Cell) -> bool {
        if self.key == "tag" {
            let pat = wildmatch::WildMatch::new(&self.pattern);
            return c.tags.iter().any(|t| {
                pat.matches(t) || t.split_once(':').is_some_and(|(_, tag)| pat.matches(tag))
            });
        }
        field_matches(c, &self.key, &self.pattern)
    }
}

pub fn select<'a>(cells: &'a [Cell], filters: &[Filter]) -> Vec<&'a Cell> {
    cells
        .iter()
        .filter(|c| filters.iter().all(|f| f.matches(c)))
        .collect()
}
