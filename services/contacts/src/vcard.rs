//! vCard 3.0 and 4.0 (RFC 2426, RFC 6350) to and from contacts, through the `calcard` crate's
//! parser and writer: names, nickname, organization and title, emails, phones, URLs, addresses,
//! birthday and anniversary (partial dates, Apple's `X-APPLE-OMIT-YEAR` and `X-ABDATE`), note,
//! categories as tags, UID and photo URL.

use calcard::vcard::{VCard, VCardEntry, VCardParameter, VCardParameterName, VCardParameterValue, VCardProperty, VCardType, VCardValue};
use calcard::{Entry, Parser};
use chrono::NaiveDate;
use worktruck_kit::{Error, Result};
use worktruck_proto::contacts::v1 as pb;

/// Most cards one import takes.
pub const MAX_CARDS: usize = 20_000;

/// A date of a card: (date_type, day, month, year, label).
pub type CardDate = (String, i32, i32, Option<i32>, Option<String>);
/// An organization of a card: (name, unit, title, role).
pub type CardOrg = (String, Option<String>, Option<String>, Option<String>);

/// What Worktruck takes from one card.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Card {
    /// UID.
    pub uid: Option<String>,
    /// FN (or a name made from N, ORG or EMAIL).
    pub display_name: String,
    /// person or organization (KIND, or X-ABShowAs:COMPANY).
    pub kind: &'static str,
    /// N components and the rest, by contact field name.
    pub fields: Vec<(&'static str, String)>,
    /// (type, value, label, preferred).
    pub channels: Vec<(&'static str, String, Option<String>, bool)>,
    /// ADR.
    pub addresses: Vec<pb::AddressInput>,
    /// (date_type, day, month, year, label).
    pub dates: Vec<CardDate>,
    /// ORG (first component), its unit, TITLE, ROLE.
    pub org: Option<CardOrg>,
    /// CATEGORIES.
    pub categories: Vec<String>,
}

fn texts(e: &VCardEntry) -> Vec<String> {
    e.values
        .iter()
        .map(|v| {
            v.as_text().map(str::to_owned).unwrap_or_else(|| match v {
                VCardValue::PartialDateTime(p) => format!("{p:?}"),
                VCardValue::Integer(i) => i.to_string(),
                VCardValue::Float(f) => f.to_string(),
                _ => String::new(),
            })
        })
        .collect()
}

fn first(e: &VCardEntry) -> String {
    texts(e).into_iter().next().unwrap_or_default().trim().to_owned()
}

/// The TYPE parameters of an entry, lower-cased (`work`, `cell`, `pref`, …), and PREF=1.
fn types(e: &VCardEntry) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let mut pref = false;
    for p in &e.params {
        match (&p.name, &p.value) {
            (VCardParameterName::Type, VCardParameterValue::Type(t)) => out.push(format!("{t:?}").to_lowercase()),
            (VCardParameterName::Type, VCardParameterValue::Text(t)) => out.extend(t.split(',').map(|s| s.trim().to_lowercase())),
            (VCardParameterName::Pref, v) => {
                pref |= matches!(v, VCardParameterValue::Integer(1)) || matches!(v, VCardParameterValue::Text(t) if t == "1")
            }
            _ => {}
        }
    }
    if out.iter().any(|t| t == "pref") {
        pref = true;
    }
    out.retain(|t| !matches!(t.as_str(), "pref" | "internet" | "voice" | "x400"));
    (out, pref)
}

fn label_of(types: &[String]) -> Option<String> {
    let l = types.join(",");
    (!l.is_empty()).then_some(l)
}

fn param_text<'a>(e: &'a VCardEntry, name: &str) -> Option<&'a str> {
    e.params.iter().find_map(|p| match (&p.name, &p.value) {
        (VCardParameterName::Other(n), VCardParameterValue::Text(t)) if n.eq_ignore_ascii_case(name) => Some(t.as_str()),
        _ => None,
    })
}

/// A date value: a parsed partial date, or text as `YYYY-MM-DD`, `YYYYMMDD`, `--MMDD`, `--MM-DD`.
fn date_of(e: &VCardEntry) -> Option<(i32, i32, Option<i32>)> {
    let (d, m, y) = match e.values.first()? {
        VCardValue::PartialDateTime(p) => (i32::from(p.day?), i32::from(p.month?), p.year.map(i32::from)),
        v => {
            let t = v.as_text()?.trim().replace('-', "");
            match t.len() {
                8 => (t[6..8].parse().ok()?, t[4..6].parse().ok()?, Some(t[0..4].parse().ok()?)),
                4 => (t[2..4].parse().ok()?, t[0..2].parse().ok()?, None),
                _ => {
                    let nd = NaiveDate::parse_from_str(v.as_text()?.get(..10)?, "%Y-%m-%d").ok()?;
                    (chrono::Datelike::day(&nd) as i32, chrono::Datelike::month(&nd) as i32, Some(chrono::Datelike::year(&nd)))
                }
            }
        }
    };
    // Apple writes a birthday without a year as 1604 with X-APPLE-OMIT-YEAR=1604.
    let omit = param_text(e, "X-APPLE-OMIT-YEAR").and_then(|y| y.parse::<i32>().ok());
    let y = y.filter(|y| Some(*y) != omit && *y != 0);
    Some((d, m, y))
}

impl Card {
    /// Reads one card; `Err` says why it cannot be a contact.
    pub fn from_vcard(v: &VCard) -> std::result::Result<Card, String> {
        let mut c = Card { kind: "person", ..Default::default() };
        let mut n_name = String::new();
        let group_label = |g: &Option<String>| -> Option<String> {
            let g = g.as_ref()?;
            v.entries
                .iter()
                .find(|e| e.group.as_ref() == Some(g) && matches!(&e.name, VCardProperty::Other(n) if n.eq_ignore_ascii_case("X-ABLABEL")))
                .map(|e| {
                    let l = first(e);
                    l.trim_start_matches("_$!<").trim_end_matches(">!$_").to_owned()
                })
        };
        for e in &v.entries {
            match &e.name {
                VCardProperty::Uid => c.uid = Some(first(e)).filter(|s| !s.is_empty()),
                VCardProperty::Fn => c.display_name = first(e),
                VCardProperty::N => {
                    let parts = texts(e);
                    let names = ["family_name", "given_name", "middle_name", "prefix", "suffix"];
                    for (i, f) in names.iter().enumerate() {
                        if let Some(p) = parts.get(i).map(|s| s.trim()).filter(|s| !s.is_empty()) {
                            c.fields.push((f, p.to_owned()));
                        }
                    }
                    let given = parts.get(1).map(|s| s.trim()).unwrap_or_default();
                    let family = parts.first().map(|s| s.trim()).unwrap_or_default();
                    n_name = format!("{given} {family}").trim().to_owned();
                }
                VCardProperty::Nickname => {
                    if let Some(n) = texts(e).into_iter().map(|s| s.trim().to_owned()).find(|s| !s.is_empty()) {
                        c.fields.push(("nickname", n));
                    }
                }
                VCardProperty::Note => {
                    let n = texts(e).join(",");
                    if !n.trim().is_empty() {
                        c.fields.push(("bio", n.trim().to_owned()));
                    }
                }
                VCardProperty::Photo => {
                    let u = first(e);
                    if u.starts_with("https://") || u.starts_with("http://") {
                        c.fields.push(("avatar_url", u));
                    }
                }
                VCardProperty::Kind
                    if first(e).eq_ignore_ascii_case("org") || format!("{:?}", e.values.first()).to_lowercase().contains("org") =>
                {
                    c.kind = "organization";
                }
                VCardProperty::Other(n) if n.eq_ignore_ascii_case("X-ABSHOWAS") && first(e).eq_ignore_ascii_case("COMPANY") => {
                    c.kind = "organization"
                }
                VCardProperty::Email => {
                    let (t, pref) = types(e);
                    c.channels.push(("email", first(e), group_label(&e.group).or_else(|| label_of(&t)), pref));
                }
                VCardProperty::Tel => {
                    let (t, pref) = types(e);
                    let value = first(e);
                    let value = value.strip_prefix("tel:").unwrap_or(&value).to_owned();
                    c.channels.push(("phone", value, group_label(&e.group).or_else(|| label_of(&t)), pref));
                }
                VCardProperty::Url => {
                    let (t, pref) = types(e);
                    c.channels.push(("url", first(e), group_label(&e.group).or_else(|| label_of(&t)), pref));
                }
                VCardProperty::Impp => {
                    let v = first(e);
                    c.channels.push(("im", v, None, false));
                }
                VCardProperty::Socialprofile => {
                    let v = first(e);
                    let kind = if v.contains("twitter.com") || v.contains("x.com") {
                        "twitter"
                    } else if v.contains("linkedin.com") {
                        "linkedin"
                    } else {
                        "url"
                    };
                    c.channels.push((kind, v, None, false));
                }
                VCardProperty::Other(n) if n.eq_ignore_ascii_case("X-SOCIALPROFILE") => {
                    let v = first(e);
                    let (t, _) = types(e);
                    let kind = if t.iter().any(|t| t == "twitter") || v.contains("twitter.com") {
                        "twitter"
                    } else if t.iter().any(|t| t == "linkedin") || v.contains("linkedin.com") {
                        "linkedin"
                    } else {
                        "url"
                    };
                    c.channels.push((kind, v, None, false));
                }
                VCardProperty::Adr => {
                    let p = texts(e);
                    let get = |i: usize| p.get(i).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
                    let (t, pref) = types(e);
                    let country_code = e
                        .group
                        .as_ref()
                        .and_then(|g| {
                            v.entries
                                .iter()
                                .find(|x| {
                                    x.group.as_ref() == Some(g)
                                        && matches!(&x.name, VCardProperty::Other(n) if n.eq_ignore_ascii_case("X-ABADR"))
                                })
                                .map(first)
                        })
                        .or_else(|| param_text(e, "X-COUNTRY-CODE").map(str::to_owned));
                    let geo = e.params.iter().find_map(|p| match (&p.name, &p.value) {
                        (VCardParameterName::Geo, VCardParameterValue::Text(t)) => {
                            let (lat, lon) = t.trim_start_matches("geo:").split_once(',')?;
                            Some((lat.trim().parse::<f64>().ok()?, lon.trim().parse::<f64>().ok()?))
                        }
                        _ => None,
                    });
                    c.addresses.push(pb::AddressInput {
                        po_box: get(0),
                        extended: get(1),
                        street: get(2),
                        city: get(3),
                        region: get(4),
                        postal_code: get(5),
                        country: get(6),
                        country_code: country_code.filter(|cc| cc.len() == 2).map(|cc| cc.to_uppercase()),
                        label: group_label(&e.group).or_else(|| label_of(&t)),
                        is_primary: Some(pref),
                        latitude: geo.map(|g| g.0),
                        longitude: geo.map(|g| g.1),
                        ..Default::default()
                    });
                }
                VCardProperty::Bday => {
                    if let Some((d, m, y)) = date_of(e) {
                        c.dates.push(("birthday".into(), d, m, y, None));
                    }
                }
                VCardProperty::Anniversary => {
                    if let Some((d, m, y)) = date_of(e) {
                        c.dates.push(("anniversary".into(), d, m, y, None));
                    }
                }
                VCardProperty::Other(n) if n.eq_ignore_ascii_case("X-ANNIVERSARY") => {
                    if let Some((d, m, y)) = date_of(e) {
                        c.dates.push(("anniversary".into(), d, m, y, None));
                    }
                }
                VCardProperty::Other(n) if n.eq_ignore_ascii_case("X-ABDATE") => {
                    if let Some((d, m, y)) = date_of(e) {
                        let label = group_label(&e.group);
                        let is_anniversary = label.as_deref().is_some_and(|l| l.eq_ignore_ascii_case("anniversary"));
                        let ty = if is_anniversary { "anniversary" } else { "custom" };
                        c.dates.push((ty.into(), d, m, y, if is_anniversary { None } else { label }));
                    }
                }
                VCardProperty::Org => {
                    let p = texts(e);
                    let name = p.first().map(|s| s.trim().to_owned()).unwrap_or_default();
                    if !name.is_empty() {
                        let unit = p.get(1).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
                        let (title, role) = c.org.take().map(|o| (o.2, o.3)).unwrap_or_default();
                        c.org = Some((name, unit, title, role));
                    }
                }
                VCardProperty::Title | VCardProperty::Role => {
                    let t = first(e);
                    if !t.is_empty() {
                        let o = c.org.get_or_insert_with(|| (String::new(), None, None, None));
                        if e.name == VCardProperty::Title {
                            o.2 = Some(t);
                        } else {
                            o.3 = Some(t);
                        }
                    }
                }
                VCardProperty::Categories => {
                    c.categories.extend(texts(e).into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()));
                }
                _ => {}
            }
        }
        if c.display_name.is_empty() {
            c.display_name = if !n_name.is_empty() {
                n_name
            } else if let Some((o, ..)) = c.org.as_ref().filter(|o| !o.0.is_empty()) {
                o.clone()
            } else if let Some(e) = c.channels.iter().find(|x| x.0 == "email") {
                e.1.clone()
            } else {
                return Err("the card has no name (FN, N or ORG) and no email".into());
            };
        }
        if c.kind == "organization" {
            // An organization's ORG is itself, not an employer.
            c.org = None;
        }
        Ok(c)
    }
}

/// Splits a file into cards; `validation_failed` when it holds none (it is not vCard) or too many.
pub fn parse_file(text: &str) -> Result<Vec<std::result::Result<VCard, String>>> {
    let mut parser = Parser::new(text);
    let mut out = Vec::new();
    let mut invalid_before_any = false;
    loop {
        match parser.entry() {
            Entry::VCard(v) => out.push(Ok(v)),
            Entry::Eof => break,
            Entry::InvalidLine(_) if out.is_empty() => invalid_before_any = true,
            Entry::InvalidLine(_) => {}
            Entry::UnterminatedComponent(_) => out.push(Err("the card has no END:VCARD".into())),
            Entry::UnexpectedComponentEnd { .. } => out.push(Err("the card's END does not match its BEGIN".into())),
            _ => out.push(Err("not a vCard (an iCalendar or other component)".into())),
        }
        if out.len() > MAX_CARDS {
            return Err(Error::validation(format!("an import takes at most {MAX_CARDS} cards")));
        }
    }
    if !out.iter().any(Result::is_ok) {
        let why = if invalid_before_any { "its lines are not vCard properties" } else { "it holds no BEGIN:VCARD … END:VCARD" };
        return Err(Error::validation(format!("the file is not a vCard file: {why}")));
    }
    Ok(out)
}

fn text_entry(p: VCardProperty, v: &str) -> VCardEntry {
    VCardEntry::new(p).with_value(v.to_owned())
}

fn typed(mut e: VCardEntry, label: Option<&str>, primary: bool) -> VCardEntry {
    if let Some(l) = label {
        for t in l.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let known = match t.to_lowercase().as_str() {
                "work" => Some(VCardType::Work),
                "home" => Some(VCardType::Home),
                "cell" | "mobile" => Some(VCardType::Cell),
                "fax" => Some(VCardType::Fax),
                "voice" => Some(VCardType::Voice),
                "text" => Some(VCardType::Text),
                "pager" => Some(VCardType::Pager),
                _ => None,
            };
            e = match known {
                Some(k) => e.with_param(VCardParameter::new(VCardParameterName::Type, k)),
                None => e.with_param(VCardParameter::new(VCardParameterName::Type, t.to_owned())),
            };
        }
    }
    if primary {
        e = e.with_param(VCardParameter::new(VCardParameterName::Pref, 1u32));
    }
    e
}

fn date_text(d: &pb::ContactDate) -> String {
    match d.date_year {
        Some(y) => format!("{y:04}{:02}{:02}", d.date_month, d.date_day),
        None => format!("--{:02}{:02}", d.date_month, d.date_day),
    }
}

/// A contact as a vCard 4.0 (CRLF lines, folded by the library).
pub fn to_vcard(c: &pb::Contact) -> String {
    let mut v = VCard { entries: Vec::new() };
    v.entries.push(VCardEntry::new(VCardProperty::Version).with_value("4.0".to_owned()));
    let uid = c.vcard_uid.clone().unwrap_or_else(|| format!("urn:uuid:{}", c.id));
    v.entries.push(text_entry(VCardProperty::Uid, &uid));
    if c.kind == pb::ContactKind::Organization as i32 {
        v.entries.push(text_entry(VCardProperty::Kind, "org"));
    } else if c.kind == pb::ContactKind::Group as i32 {
        v.entries.push(text_entry(VCardProperty::Kind, "group"));
    }
    v.entries.push(text_entry(VCardProperty::Fn, &c.display_name));
    let o = |x: &Option<String>| x.clone().unwrap_or_default();
    if [&c.family_name, &c.given_name, &c.middle_name, &c.prefix, &c.suffix].iter().any(|x| x.is_some()) {
        v.entries.push(
            VCardEntry::new(VCardProperty::N).with_values(
                [o(&c.family_name), o(&c.given_name), o(&c.middle_name), o(&c.prefix), o(&c.suffix)]
                    .into_iter()
                    .map(VCardValue::from)
                    .collect(),
            ),
        );
    }
    if let Some(n) = &c.nickname {
        v.entries.push(text_entry(VCardProperty::Nickname, n));
    }
    if let Some(b) = &c.bio {
        v.entries.push(text_entry(VCardProperty::Note, b));
    }
    if let Some(u) = &c.avatar_url {
        v.entries.push(text_entry(VCardProperty::Photo, u));
    }
    for ch in &c.channels {
        let prop = match pb::ChannelType::try_from(ch.r#type).unwrap_or_default() {
            pb::ChannelType::Email => VCardProperty::Email,
            pb::ChannelType::Phone => VCardProperty::Tel,
            pb::ChannelType::Url => VCardProperty::Url,
            pb::ChannelType::Im => VCardProperty::Impp,
            pb::ChannelType::Twitter | pb::ChannelType::Linkedin => VCardProperty::Socialprofile,
            _ => VCardProperty::Other("X-WORKTRUCK-CHANNEL".into()),
        };
        let value = match pb::ChannelType::try_from(ch.r#type).unwrap_or_default() {
            pb::ChannelType::Twitter => format!("https://twitter.com/{}", ch.canonical_value),
            // E.164 reads the same in every region, so a card moved elsewhere keeps its numbers.
            pb::ChannelType::Phone => ch.canonical_value.clone(),
            _ => ch.value.clone(),
        };
        v.entries.push(typed(text_entry(prop, &value), ch.label.as_deref(), ch.is_primary));
    }
    for a in &c.addresses {
        let e = VCardEntry::new(VCardProperty::Adr).with_values(
            [o(&a.po_box), o(&a.extended), o(&a.street), o(&a.city), o(&a.region), o(&a.postal_code), o(&a.country)]
                .into_iter()
                .map(VCardValue::from)
                .collect(),
        );
        let mut e = typed(e, a.label.as_deref(), a.is_primary);
        if let Some(cc) = &a.country_code {
            e = e.with_param(VCardParameter::new(VCardParameterName::Other("X-COUNTRY-CODE".into()), cc.clone()));
        }
        if let (Some(lat), Some(lon)) = (a.latitude, a.longitude) {
            e = e.with_param(VCardParameter::new(VCardParameterName::Geo, format!("geo:{lat},{lon}")));
        }
        v.entries.push(e);
    }
    for d in &c.dates {
        let prop = match d.date_type.as_str() {
            "birthday" => VCardProperty::Bday,
            "anniversary" => VCardProperty::Anniversary,
            _ => VCardProperty::Other("X-ABDATE".into()),
        };
        v.entries.push(text_entry(prop, &date_text(d)));
    }
    if let Some(a) = c.affiliations.iter().find(|a| a.is_current).or(c.affiliations.first()) {
        let mut vals = vec![VCardValue::from(a.organization_name.clone())];
        if let Some(d) = &a.department {
            vals.push(VCardValue::from(d.clone()));
        }
        v.entries.push(VCardEntry::new(VCardProperty::Org).with_values(vals));
        if let Some(t) = &a.title {
            v.entries.push(text_entry(VCardProperty::Title, t));
        }
        if let Some(r) = &a.role {
            v.entries.push(text_entry(VCardProperty::Role, r));
        }
    }
    if !c.tags.is_empty() {
        v.entries.push(
            VCardEntry::new(VCardProperty::Categories).with_values(c.tags.iter().map(|t| VCardValue::from(t.name.clone())).collect()),
        );
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_prose_is_not_vcard() {
        assert!(parse_file("hello\nworld\n").is_err());
        assert!(parse_file("").is_err());
        assert_eq!(parse_file("BEGIN:VCARD\r\nVERSION:4.0\r\nFN:A\r\nEND:VCARD\r\n").unwrap().len(), 1);
    }
}
