//! What notes read out of markdown: the YAML frontmatter, the `[[wikilinks]]` (found outside
//! code, inline HTML and math, by CommonMark's own parse, so a link shown in a code block is not
//! a link), the sentence around a position, word counts, and the rewriting of link targets.

use std::ops::Range;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use serde_json::{Map, Value};

/// The frontmatter of a body, when it has one.
#[derive(Debug, Clone, PartialEq)]
pub enum Frontmatter {
    /// No `---` block at the top.
    None,
    /// A mapping, as JSON, and where the markdown after it starts.
    Parsed(Map<String, Value>, usize),
    /// A `---` block that is not a YAML mapping: why. The block stays part of the body.
    Invalid(String),
}

/// Reads the frontmatter: `---` on the first line, a YAML mapping, `---` (or `...`) alone on a
/// later line.
pub fn frontmatter(body: &str) -> Frontmatter {
    let first = body.split_inclusive('\n').next().unwrap_or_default();
    if first.trim_end() != "---" {
        return Frontmatter::None;
    }
    let mut offset = first.len();
    let start = offset;
    for line in body[start..].split_inclusive('\n') {
        let t = line.trim_end();
        if t == "---" || t == "..." {
            let yaml = &body[start..offset];
            let end = offset + line.len();
            return match serde_norway::from_str::<Value>(yaml) {
                Ok(Value::Object(m)) => Frontmatter::Parsed(m, end),
                Ok(Value::Null) => Frontmatter::Parsed(Map::new(), end),
                Ok(_) => Frontmatter::Invalid("the frontmatter is not a mapping of keys to values".into()),
                Err(e) => Frontmatter::Invalid(format!("the frontmatter is not valid YAML: {e}")),
            };
        }
        offset += line.len();
    }
    Frontmatter::Invalid("the frontmatter has no closing --- line".into())
}

/// Where the markdown proper starts: after a parsed frontmatter, else at 0 (an invalid one is
/// body like the rest).
pub fn content_start(body: &str) -> usize {
    match frontmatter(body) {
        Frontmatter::Parsed(_, end) => end,
        _ => 0,
    }
}

/// One `[[wikilink]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Wikilink {
    /// The linked title, trimmed.
    pub title: String,
    /// `#Heading`.
    pub heading: Option<String>,
    /// `#^block`.
    pub block: Option<String>,
    /// `|alias`.
    pub alias: Option<String>,
    /// Where `[[` … `]]` sits in the body (bytes).
    pub span: Range<usize>,
    /// The sentence holding the link.
    pub context: String,
}

/// The parts of the body CommonMark reads as text: everything but code spans, code blocks,
/// HTML and math, as byte ranges of `body`, plus the ranges of the blocks (paragraphs,
/// headings, list items, table cells) for sentence context.
struct Layout {
    excluded: Vec<Range<usize>>,
    blocks: Vec<Range<usize>>,
}

fn layout(body: &str, start: usize) -> Layout {
    let text = &body[start..];
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_MATH | Options::ENABLE_FOOTNOTES;
    let mut excluded = Vec::new();
    let mut blocks = Vec::new();
    let shift = |r: Range<usize>| r.start + start..r.end + start;
    for (event, range) in Parser::new_ext(text, opts).into_offset_iter() {
        match event {
            Event::Code(_) | Event::Html(_) | Event::InlineHtml(_) | Event::InlineMath(_) | Event::DisplayMath(_) => {
                excluded.push(shift(range))
            }
            Event::Start(Tag::CodeBlock(_)) | Event::Start(Tag::HtmlBlock) => excluded.push(shift(range)),
            Event::Start(Tag::Paragraph | Tag::Heading { .. } | Tag::Item | Tag::TableCell) => blocks.push(shift(range)),
            Event::End(TagEnd::Paragraph) => {}
            _ => {}
        }
    }
    if start > 0 {
        excluded.push(0..start);
    }
    Layout { excluded, blocks }
}

/// The wikilinks of `body`, in order. The frontmatter, code and HTML hold none.
pub fn wikilinks(body: &str) -> Vec<Wikilink> {
    let start = content_start(body);
    let lay = layout(body, start);
    let mut out = Vec::new();
    let bytes = body.as_bytes();
    let mut i = start;
    while let Some(found) = body[i..].find("[[") {
        let open = i + found;
        if lay.excluded.iter().any(|r| r.contains(&open)) || (open > 0 && bytes[open - 1] == b'\\') {
            i = open + 2;
            continue;
        }
        let inner_start = open + 2;
        let Some(close_rel) = body[inner_start..].find("]]") else { break };
        let inner = &body[inner_start..inner_start + close_rel];
        let end = inner_start + close_rel + 2;
        // A link does not span lines or nest, and `[[]]` is nothing.
        if inner.contains('\n') || inner.contains("[[") {
            i = inner_start;
            continue;
        }
        if let Some(link) = parse_inner(inner) {
            let context = sentence(body, open..end, &lay.blocks);
            out.push(Wikilink { span: open..end, context, ..link });
        }
        i = end;
    }
    out
}

/// `Title#Heading|alias`, `Title#^block`, `Title|alias`, `Title`.
fn parse_inner(inner: &str) -> Option<Wikilink> {
    let (target, alias) = match inner.split_once('|') {
        Some((t, a)) => (t, Some(a.trim()).filter(|a| !a.is_empty()).map(str::to_owned)),
        None => (inner, None),
    };
    let (title, heading, block) = match target.split_once('#') {
        Some((t, rest)) => match rest.strip_prefix('^') {
            Some(b) => (t, None, Some(b.trim().to_owned()).filter(|b| !b.is_empty())),
            None => (t, Some(rest.trim().to_owned()).filter(|h| !h.is_empty()), None),
        },
        None => (target, None, None),
    };
    let title = title.trim();
    if title.is_empty() || title.chars().count() > 500 {
        return None;
    }
    Some(Wikilink { title: title.to_owned(), heading, block, alias, span: 0..0, context: String::new() })
}

/// The sentence of `body` around `at`, inside the innermost block that holds it, whitespace
/// collapsed, at most 300 characters.
pub fn sentence(body: &str, at: Range<usize>, blocks: &[Range<usize>]) -> String {
    let block = blocks
        .iter()
        .filter(|b| b.start <= at.start && at.end <= b.end)
        .min_by_key(|b| b.end - b.start)
        .cloned()
        .unwrap_or_else(|| line_of(body, at.clone()));
    let before = &body[block.start..at.start];
    let from = before
        .char_indices()
        .rev()
        .find(|&(i, c)| matches!(c, '.' | '!' | '?') && before[i + c.len_utf8()..].starts_with(char::is_whitespace))
        .map(|(i, c)| block.start + i + c.len_utf8())
        .unwrap_or(block.start);
    let after = &body[at.end..block.end];
    let to = after
        .char_indices()
        .find(|&(i, c)| {
            matches!(c, '.' | '!' | '?') && after[i + c.len_utf8()..].chars().next().is_none_or(char::is_whitespace)
        })
        .map(|(i, c)| at.end + i + c.len_utf8())
        .unwrap_or(block.end);
    let s: Vec<&str> = body[from..to].split_whitespace().collect();
    let s = s.join(" ");
    let s = s.trim_start_matches(['#', '-', '*', '>', ' ']).trim();
    if s.chars().count() > 300 { format!("{}…", s.chars().take(299).collect::<String>()) } else { s.to_owned() }
}

fn line_of(body: &str, at: Range<usize>) -> Range<usize> {
    let start = body[..at.start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let end = body[at.end..].find('\n').map(|i| at.end + i).unwrap_or(body.len());
    start..end
}

/// Words in the markdown after a parsed frontmatter: text and code, not markup.
pub fn word_count(body: &str) -> i32 {
    let start = content_start(body);
    // Text events split inside words (at `[`, `_`, entities), so words are counted on the
    // joined text, with a space at every break and block end.
    let mut text = String::new();
    for event in Parser::new_ext(&body[start..], Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH) {
        match event {
            Event::Text(t) | Event::Code(t) => text.push_str(&t),
            Event::SoftBreak | Event::HardBreak | Event::End(_) | Event::Rule => text.push(' '),
            _ => {}
        }
    }
    let n = text.split_whitespace().filter(|w| w.chars().any(char::is_alphanumeric)).count();
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The title key links resolve by: trimmed, whitespace collapsed, lower case (Unicode).
pub fn title_key(title: &str) -> String {
    title.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// `body` with every wikilink whose title has one of the keys `old_keys` pointing at
/// `new_title` instead (heading, block and alias kept); `None` when nothing changed.
pub fn rewrite_links(body: &str, old_keys: &[String], new_title: &str) -> Option<String> {
    let mut out = String::with_capacity(body.len());
    let mut last = 0;
    for link in wikilinks(body) {
        if !old_keys.contains(&title_key(&link.title)) {
            continue;
        }
        out.push_str(&body[last..link.span.start]);
        out.push_str("[[");
        out.push_str(new_title);
        if let Some(h) = &link.heading {
            out.push('#');
            out.push_str(h);
        }
        if let Some(b) = &link.block {
            out.push_str("#^");
            out.push_str(b);
        }
        if let Some(a) = &link.alias {
            out.push('|');
            out.push_str(a);
        }
        out.push_str("]]");
        last = link.span.end;
    }
    if last == 0 {
        return None;
    }
    out.push_str(&body[last..]);
    Some(out)
}

/// The sentences of `body` that name `title` (case-insensitively, as whole words) outside
/// links, code and HTML.
pub fn mentions(body: &str, title: &str) -> Vec<String> {
    let key = title_key(title);
    if key.is_empty() {
        return Vec::new();
    }
    let start = content_start(body);
    let lay = layout(body, start);
    let links: Vec<Range<usize>> = wikilinks(body).into_iter().map(|l| l.span).collect();
    // Offsets must stay the body's: when Unicode lower-casing changes byte lengths, fall back
    // to ASCII case folding, which never does.
    let lower = body.to_lowercase();
    let (hay, needle) = if lower.len() == body.len() {
        (lower, key)
    } else {
        (body.to_ascii_lowercase(), title.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_lowercase())
    };
    let mut out = Vec::new();
    let mut i = start;
    while let Some(f) = hay[i..].find(&needle) {
        let at = i + f;
        let end = at + needle.len();
        let word_before = body[..at].chars().next_back().is_some_and(char::is_alphanumeric);
        let word_after = body[end..].chars().next().is_some_and(char::is_alphanumeric);
        let hidden = lay.excluded.iter().chain(links.iter()).any(|r| r.contains(&at));
        if !word_before && !word_after && !hidden {
            let s = sentence(body, at..end, &lay.blocks);
            if !out.contains(&s) {
                out.push(s);
            }
        }
        i = end;
    }
    out
}

/// The text around the first place `body` matches a word of `q` (as a prefix, like the
/// search), about 160 characters on word boundaries, with `…` where it was cut; the start of the
/// body when no word matches it (the title did).
pub fn snippet(body: &str, q: &str) -> String {
    let start = content_start(body);
    let text: String = body[start..].split_whitespace().collect::<Vec<_>>().join(" ");
    let words: Vec<String> =
        q.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
    let tokens: Vec<(usize, &str)> = text.split(' ').scan(0, |pos, w| {
        let at = *pos;
        *pos += w.len() + 1;
        Some((at, w))
    }).collect();
    let hit = tokens.iter().position(|(_, w)| {
        let w = w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
        words.iter().any(|q| w.starts_with(q.as_str()))
    });
    let first = hit.map(|h| h.saturating_sub(8)).unwrap_or(0);
    let mut out = String::new();
    if first > 0 {
        out.push('…');
    }
    let mut last = first;
    for (i, (_, w)) in tokens.iter().enumerate().skip(first) {
        if out.chars().count() + w.chars().count() > 160 {
            break;
        }
        if i > first {
            out.push(' ');
        }
        out.push_str(w);
        last = i;
    }
    if last + 1 < tokens.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_link_forms_parse() {
        let b = "See [[Alpha]], [[Beta|the B]], [[Gamma#Setup]] and [[Delta#^abc123|a block]].";
        let l = wikilinks(b);
        assert_eq!(l.len(), 4);
        assert_eq!(l[0].title, "Alpha");
        assert_eq!((l[1].title.as_str(), l[1].alias.as_deref()), ("Beta", Some("the B")));
        assert_eq!((l[2].title.as_str(), l[2].heading.as_deref()), ("Gamma", Some("Setup")));
        assert_eq!((l[3].block.as_deref(), l[3].alias.as_deref()), (Some("abc123"), Some("a block")));
        assert_eq!(&b[l[0].span.clone()], "[[Alpha]]");
    }

    #[test]
    fn links_in_code_html_and_frontmatter_are_not_links() {
        let b = "---\nsee: \"[[Fm]]\"\n---\nText [[Real]].\n\n```\n[[Fenced]]\n```\n\n    [[Indented]]\n\nInline `[[Code]]`, \\[[Escaped]].\n\n<div>\n[[Html]]\n</div>\n";
        let titles: Vec<_> = wikilinks(b).into_iter().map(|l| l.title).collect();
        assert_eq!(titles, ["Real"]);
    }

    #[test]
    fn context_is_the_sentence_of_the_link() {
        let b = "# Head\n\nFirst sentence here. We met [[Ana]] at the fair! Last one.\n\n- item with [[Bo]]\n";
        let l = wikilinks(b);
        assert_eq!(l[0].context, "We met [[Ana]] at the fair!");
        assert_eq!(l[1].context, "item with [[Bo]]");
    }

    #[test]
    fn frontmatter_parses_or_is_reported() {
        match frontmatter("---\ntitle: x\ntags: [a, b]\ncount: 3\n---\nbody") {
            Frontmatter::Parsed(m, end) => {
                assert_eq!(m["count"], 3);
                assert_eq!(m["tags"], serde_json::json!(["a", "b"]));
                assert_eq!(end, "---\ntitle: x\ntags: [a, b]\ncount: 3\n---\n".len());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(frontmatter("---\n: : [\n---\nx"), Frontmatter::Invalid(_)));
        assert!(matches!(frontmatter("---\n- a list\n---\nx"), Frontmatter::Invalid(_)));
        assert!(matches!(frontmatter("---\nno end"), Frontmatter::Invalid(_)));
        assert_eq!(frontmatter("no frontmatter\n---\n"), Frontmatter::None);
        // An invalid frontmatter is body: its words count and its links link.
        assert_eq!(word_count("---\na: [\n---\nhello [[x]] foo_bar"), 4);
        assert_eq!(word_count("---\na: 1\n---\nhello world"), 2);
    }

    #[test]
    fn rewriting_keeps_heading_block_and_alias() {
        let b = "a [[old title#H|x]] b [[Old Title]] c [[Other]] `[[old title]]`";
        assert_eq!(
            rewrite_links(b, &["old title".into()], "New").unwrap(),
            "a [[New#H|x]] b [[New]] c [[Other]] `[[old title]]`"
        );
        assert!(rewrite_links("nothing", &["old title".into()], "New").is_none());
    }

    #[test]
    fn mentions_are_whole_words_outside_links_and_code() {
        let b = "Rust is fun. Rusty is not. We like [[Rust]]. `Rust` in code.\n\nAnd rust again.";
        assert_eq!(mentions(b, "Rust"), ["Rust is fun.", "And rust again."]);
        assert_eq!(title_key("  Big   Idea "), "big idea");
    }

    #[test]
    fn snippets_centre_on_the_first_match() {
        let body = format!("{} needle here {}", "word ".repeat(40), "tail ".repeat(40));
        let s = snippet(&body, "NEEDL");
        assert!(s.starts_with('…') && s.ends_with('…') && s.contains("needle here"), "{s}");
        assert!(s.chars().count() <= 162);
        assert_eq!(snippet("short body", "title"), "short body");
    }
}
