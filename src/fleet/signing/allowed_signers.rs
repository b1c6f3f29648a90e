//! The `allowed_signers` file format (man ssh-keygen, ALLOWED SIGNERS), read as `ssh-keygen -Y
//! verify` reads it: quoting, the options, times and OpenSSH's wildcard patterns, so that one
//! signers file means the same to handoff, to git and to ssh-keygen. What handoff will not read
//! the way OpenSSH does (a certificate authority, a time in the host's own zone) is refused
//! here, naming the line, rather than read some other way.

use std::path::Path;

use ssh_key::public::KeyData;
use ssh_key::{Algorithm, PublicKey};

use super::NAMESPACE;

/// One key line of an `allowed_signers` file.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    line: usize,
    pub(super) principals: String,
    pub(super) key: KeyData,
    /// The `namespaces="…"` pattern list; `None`: every namespace.
    namespaces: Option<String>,
    /// Seconds since the epoch, both ends allowed, as OpenSSH compares them.
    valid_after: Option<u64>,
    valid_before: Option<u64>,
}

impl Entry {
    /// Why this line does not allow a signature at `now` (seconds since the epoch), if it does not.
    pub(super) fn refusal(&self, now: u64, origin: &Path) -> Option<String> {
        let at = format!("{}:{}", origin.display(), self.line);
        if let Some(namespaces) = &self.namespaces {
            if !matches_pattern_list(NAMESPACE, namespaces) {
                return Some(format!(
                    "key of {} not allowed for namespace {NAMESPACE:?} \
                     (namespaces=\"{namespaces}\", {at})",
                    self.principals
                ));
            }
        }
        if let Some(after) = self.valid_after.filter(|after| now < *after) {
            return Some(format!(
                "key of {} not valid before {} ({at})",
                self.principals,
                format_utc(after)
            ));
        }
        if let Some(before) = self.valid_before.filter(|before| now > *before) {
            return Some(format!(
                "key of {} not valid after {} ({at})",
                self.principals,
                format_utc(before)
            ));
        }
        None
    }
}

const CERT_AUTHORITY_REFUSED: &str =
    "cert-authority: handoff does not verify certificates; list the signer's own key instead";

/// `principals [options] keytype base64-key [comment]`, already trimmed and not a comment.
pub(super) fn parse_line(line: &str, number: usize) -> Result<Entry, String> {
    let (principals, rest) = field(line)?;
    if principals.is_empty() {
        return Err("empty principals".to_string());
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    if rest.is_empty() {
        return Err(format!(
            "no key after {principals:?} (expected: principals [options] keytype base64-key)"
        ));
    }
    let (second, after_second) = field(rest)?;
    let (options, key) = if is_options(second) {
        (
            parse_options(second)?,
            after_second.trim_start_matches([' ', '\t']),
        )
    } else {
        (Options::default(), rest)
    };
    if options.cert_authority {
        return Err(CERT_AUTHORITY_REFUSED.to_string());
    }
    Ok(Entry {
        line: number,
        principals: principals.to_string(),
        key: parse_key(key)?,
        namespaces: options.namespaces,
        valid_after: options.valid_after,
        valid_before: options.valid_before,
    })
}

/// The next whitespace-separated field and the rest; double quotes protect whitespace. A field
/// wholly in quotes (principals) comes back without them.
fn field(text: &str) -> Result<(&str, &str), String> {
    if let Some(inner) = text.strip_prefix('"') {
        let end = inner
            .find('"')
            .ok_or_else(|| format!("unterminated quote in {text:?}"))?;
        let rest = &inner[end + 1..];
        if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
            return Err(format!("text right after the closing quote in {text:?}"));
        }
        return Ok((&inner[..end], rest));
    }
    let mut quoted = false;
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        match c {
            '\\' if quoted && !escaped => {
                escaped = true;
                continue;
            }
            '"' if !escaped => quoted = !quoted,
            ' ' | '\t' if !quoted => return Ok((&text[..at], &text[at..])),
            _ => {}
        }
        escaped = false;
    }
    if quoted {
        return Err(format!("unterminated quote in {text:?}"));
    }
    Ok((text, ""))
}

/// Whether the field after the principals is options rather than a key type: key types never
/// hold `=` or `"`, and the one option without a value is `cert-authority`.
fn is_options(field: &str) -> bool {
    let first = field.split(',').next().unwrap_or_default();
    field.contains(['=', '"']) || first.eq_ignore_ascii_case("cert-authority")
}

#[derive(Debug, Default)]
struct Options {
    cert_authority: bool,
    namespaces: Option<String>,
    valid_after: Option<u64>,
    valid_before: Option<u64>,
}

/// `option[,option…]`: `cert-authority`, `namespaces="…"`, `valid-after="…"`,
/// `valid-before="…"`, names in any case, each at most once (as OpenSSH's `sshsigopt_parse`).
fn parse_options(text: &str) -> Result<Options, String> {
    let mut options = Options::default();
    let mut rest = text;
    loop {
        if let Some(after) = strip_prefix_ignore_case(rest, "cert-authority")
            .filter(|after| after.is_empty() || after.starts_with(','))
        {
            options.cert_authority = true;
            rest = after;
        } else if let Some(after) = strip_prefix_ignore_case(rest, "namespaces=") {
            let (value, after) = dequote(after, "namespaces")?;
            once(&mut options.namespaces, value, "namespaces")?;
            rest = after;
        } else if let Some(after) = strip_prefix_ignore_case(rest, "valid-after=") {
            let (value, after) = dequote(after, "valid-after")?;
            let valid_after = parse_time(&value, "valid-after")?;
            once(&mut options.valid_after, valid_after, "valid-after")?;
            rest = after;
        } else if let Some(after) = strip_prefix_ignore_case(rest, "valid-before=") {
            let (value, after) = dequote(after, "valid-before")?;
            let valid_before = parse_time(&value, "valid-before")?;
            once(&mut options.valid_before, valid_before, "valid-before")?;
            rest = after;
        } else {
            let name = rest.split([',', '=']).next().unwrap_or_default();
            return Err(format!(
                "unknown option {name:?} (known: cert-authority, namespaces, valid-after, \
                 valid-before)"
            ));
        }
        if rest.is_empty() {
            break;
        }
        rest = rest
            .strip_prefix(',')
            .ok_or_else(|| format!("unexpected {rest:?} after an option"))?;
        if rest.is_empty() {
            return Err("options end with a comma".to_string());
        }
    }
    if let (Some(after), Some(before)) = (options.valid_after, options.valid_before) {
        if before <= after {
            return Err("valid-before is not after valid-after".to_string());
        }
    }
    Ok(options)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn once<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{name} given twice"));
    }
    *slot = Some(value);
    Ok(())
}

/// `"value"` (with `\"` for a quote inside) at the start of `text`: the value and the rest.
fn dequote<'a>(text: &'a str, name: &str) -> Result<(String, &'a str), String> {
    let inner = text
        .strip_prefix('"')
        .ok_or_else(|| format!("{name}= needs a quoted value, as {name}=\"…\""))?;
    let mut value = String::new();
    let mut chars = inner.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &inner[at + 1..])),
            '\\' if inner[at + 1..].starts_with('"') => {
                chars.next();
                value.push('"');
            }
            c => value.push(c),
        }
    }
    Err(format!("unterminated quote after {name}="))
}

/// `YYYYMMDD[HHMM[SS]]Z` (or `UTC` for `Z`, in any case, as OpenSSH), seconds since the epoch.
pub(super) fn parse_time(value: &str, name: &str) -> Result<u64, String> {
    let invalid = || format!("{name}=\"{value}\" is not a time: expected YYYYMMDD[HHMM[SS]]Z");
    let lower = value.to_ascii_lowercase();
    let (digits, utc) = if let Some(digits) = lower.strip_suffix('z') {
        (digits, true)
    } else if let Some(digits) = lower.strip_suffix("utc") {
        (digits, true)
    } else {
        (lower.as_str(), false)
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    // Checked above to be ASCII digits; a part the value does not have (hours, seconds) is 0.
    let number = |range: std::ops::Range<usize>| -> u64 {
        digits.get(range).map_or(0, |part| {
            part.bytes()
                .fold(0, |number, digit| number * 10 + u64::from(digit - b'0'))
        })
    };
    let (year, month, day) = (number(0..4), number(4..6), number(6..8));
    let (hour, minute, second) = (number(8..10), number(10..12), number(12..14));
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(invalid());
    }
    if !utc {
        return Err(format!(
            "{name}=\"{value}\" has no time zone: OpenSSH reads it in each host's local time, \
             so hosts in different zones would disagree; write it in UTC: {name}=\"{value}Z\""
        ));
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    if seconds == 0 {
        // OpenSSH reads 0 as "no limit" and refuses to be given it.
        return Err(invalid());
    }
    Ok(seconds)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date from 1970 on (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `2027-01-01T00:00:00Z`.
pub(super) fn format_utc(seconds: u64) -> String {
    // Hinnant's `civil_from_days`, for days since 1970 (never negative here).
    let z = seconds / 86_400 + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    let time = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        time / 3_600,
        time / 60 % 60,
        time % 60
    )
}

/// `keytype base64-key [comment]`.
fn parse_key(text: &str) -> Result<KeyData, String> {
    let mut words = text.split_whitespace();
    let (Some(kind), Some(base64)) = (words.next(), words.next()) else {
        return Err(format!(
            "no key in {text:?} (expected: principals [options] keytype base64-key)"
        ));
    };
    if Algorithm::new(kind).is_err() {
        return Err(format!("unknown key type or option {kind:?}"));
    }
    PublicKey::from_openssh(&format!("{kind} {base64}"))
        .map(|key| key.key_data().clone())
        .map_err(|e| format!("invalid {kind} key: {e}"))
}

/// OpenSSH's `match_pattern_list`: comma-separated patterns with `*` and `?`; a matching `!pattern`
/// refuses whatever else matches.
fn matches_pattern_list(text: &str, list: &str) -> bool {
    let mut matched = false;
    for pattern in list.split(',') {
        match pattern.strip_prefix('!') {
            Some(negated) if matches_pattern(text, negated) => return false,
            Some(_) => {}
            None => matched |= matches_pattern(text, pattern),
        }
    }
    matched
}

/// `*` any run of characters, `?` any one; the classic linear-backtracking wildcard match.
fn matches_pattern(text: &str, pattern: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            t += 1;
            p += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}
