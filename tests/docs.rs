//! The two READMEs stay at parity: README.zh-CN.md has every top-level (`## `) section
//! of README.md, in the same order, and no other. Each `## ` heading of the Chinese
//! README is preceded by a line `<!-- en: HEADING -->` naming the README.md section it
//! translates, so a section added to one file and not the other fails here with its
//! name and line.

use std::path::Path;

/// A `## ` heading: its line number and text (code blocks skipped).
#[derive(Debug)]
struct Heading {
    line: usize,
    text: String,
    /// The `<!-- en: … -->` line just before it, if any.
    en: Option<String>,
}

fn headings(text: &str) -> Vec<Heading> {
    let mut out = Vec::new();
    let mut fenced = false;
    let mut previous = "";
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            if let Some(h) = line.strip_prefix("## ") {
                let en = previous
                    .trim()
                    .strip_prefix("<!-- en:")
                    .and_then(|r| r.strip_suffix("-->"))
                    .map(|r| r.trim().to_string());
                out.push(Heading {
                    line: i + 1,
                    text: h.trim().to_string(),
                    en,
                });
            }
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    out
}

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What is wrong between the English headings and the Chinese ones, one line each.
fn parity_problems(en: &[Heading], zh: &[Heading]) -> Vec<String> {
    let mut problems = Vec::new();
    for h in zh.iter().filter(|h| h.en.is_none()) {
        problems.push(format!(
            "README.zh-CN.md:{}: `## {}` has no `<!-- en: … -->` line before it naming the README.md section it translates",
            h.line, h.text
        ));
    }
    let english: Vec<&str> = en.iter().map(|h| h.text.as_str()).collect();
    let mapped: Vec<&str> = zh.iter().filter_map(|h| h.en.as_deref()).collect();
    for h in en {
        if !mapped.contains(&h.text.as_str()) {
            problems.push(format!(
                "README.md:{}: section `## {}` is missing from README.zh-CN.md",
                h.line, h.text
            ));
        }
    }
    for h in zh {
        if let Some(e) = &h.en {
            if !english.contains(&e.as_str()) {
                problems.push(format!(
                    "README.zh-CN.md:{}: `## {}` names `{e}`, which is not a `## ` section of README.md (expected one of: {})",
                    h.line,
                    h.text,
                    english.join(" | ")
                ));
            }
        }
    }
    if problems.is_empty() && mapped != english {
        problems.push(format!(
            "the sections are in another order:\n  README.md:       {}\n  README.zh-CN.md: {}",
            english.join(" | "),
            mapped.join(" | ")
        ));
    }
    problems
}

#[test]
fn the_chinese_readme_has_every_section_of_the_english_one_in_order() {
    let en = headings(&read("README.md"));
    let zh = headings(&read("README.zh-CN.md"));
    assert!(en.len() >= 10, "README.md has only {} sections?", en.len());
    let problems = parity_problems(&en, &zh);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_missing_extra_or_moved_section_is_named() {
    let en = headings("# t\n\n## Why\n\n```\n## not a heading\n```\n\n## Exit codes\n");
    assert_eq!(en.len(), 2, "a heading inside a code block does not count");
    let ok = headings("<!-- en: Why -->\n## 为什么\n\n<!-- en: Exit codes -->\n## 退出码\n");
    assert!(parity_problems(&en, &ok).is_empty());

    let missing = headings("<!-- en: Why -->\n## 为什么\n");
    let p = parity_problems(&en, &missing);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("`## Exit codes` is missing"), "{p:?}");

    let unnamed = headings("<!-- en: Why -->\n## 为什么\n\n## 退出码\n");
    let p = parity_problems(&en, &unnamed);
    assert!(
        p[0].contains("README.zh-CN.md:4: `## 退出码` has no"),
        "{p:?}"
    );

    let stale = headings("<!-- en: Why -->\n## 为什么\n\n<!-- en: Exit status -->\n## 退出码\n");
    let p = parity_problems(&en, &stale);
    assert!(
        p.iter()
            .any(|l| l.contains("names `Exit status`, which is not")),
        "{p:?}"
    );

    let moved = headings("<!-- en: Exit codes -->\n## 退出码\n\n<!-- en: Why -->\n## 为什么\n");
    let p = parity_problems(&en, &moved);
    assert_eq!(p.len(), 1);
    assert!(p[0].contains("another order"), "{p:?}");
}
