//! AL2: the `/etc/eks/bootstrap.sh` call in a shell script (plain, or a MIME
//! `text/x-shellscript` part). The call gets `--use-max-pods false` and exactly one `--max-pods=N`
//! in `--kubelet-extra-args`.

use super::mime::{Multipart, offset_in};
use super::{UserDataError, UserDataFormat};

const BOOTSTRAP: &str = "/etc/eks/bootstrap.sh";

fn malformed(reason: impl Into<String>) -> UserDataError {
    UserDataError::Malformed {
        format: UserDataFormat::Al2,
        reason: reason.into(),
    }
}

/// A shell word: its byte span (quotes included) and its value (quotes removed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    start: usize,
    end: usize,
    value: String,
    quote: Option<char>,
}

/// Whether `text` has a bootstrap.sh call outside comments.
pub(crate) fn calls_bootstrap(text: &str) -> bool {
    find_call(text).is_some()
}

/// Offset of the bootstrap.sh word of the first call that is not in a comment.
fn find_call(text: &str) -> Option<usize> {
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        if let Some(pos) = line.find(BOOTSTRAP) {
            let before = &line[..pos];
            if !before.contains('#') {
                // The word starts at the last whitespace (or quote) before the path.
                let word_start = before
                    .rfind(|c: char| {
                        c.is_whitespace() || c == ';' || c == '&' || c == '|' || c == '('
                    })
                    .map_or(0, |i| i + 1);
                return Some(line_start + word_start);
            }
        }
        line_start += line.len();
    }
    None
}

/// The words of the command starting at `from`, up to the end of the command.
fn words(text: &str, from: usize) -> Result<Vec<Word>, UserDataError> {
    let bytes = text.as_bytes();
    let mut words = Vec::new();
    let mut i = from;
    let mut current: Option<(usize, String, Option<char>)> = None;
    let finish =
        |current: &mut Option<(usize, String, Option<char>)>, end: usize, words: &mut Vec<Word>| {
            if let Some((start, value, quote)) = current.take() {
                words.push(Word {
                    start,
                    end,
                    value,
                    quote,
                });
            }
        };
    while i < bytes.len() {
        let c = bytes[i] as char;
        match c {
            ' ' | '\t' => {
                finish(&mut current, i, &mut words);
                i += 1;
            }
            '\\' => {
                if text[i + 1..].starts_with("\r\n") {
                    finish(&mut current, i, &mut words);
                    i += 3;
                } else if text[i + 1..].starts_with('\n') {
                    finish(&mut current, i, &mut words);
                    i += 2;
                } else {
                    let next = text[i + 1..].chars().next().unwrap_or('\\');
                    current.get_or_insert((i, String::new(), None)).1.push(next);
                    i += 1 + next.len_utf8();
                }
            }
            '\'' | '"' => {
                let close = text[i + 1..].find(c).ok_or_else(|| {
                    malformed(format!("unterminated {c} quote in the bootstrap.sh call"))
                })?;
                let inner = &text[i + 1..i + 1 + close];
                let word = current.get_or_insert((i, String::new(), Some(c)));
                word.1.push_str(inner);
                i += close + 2;
            }
            '\n' | '\r' | ';' | '&' | '|' | ')' => break,
            '#' if current.is_none() => break,
            _ => {
                let ch = text[i..].chars().next().unwrap_or(' ');
                current.get_or_insert((i, String::new(), None)).1.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    finish(&mut current, i, &mut words);
    Ok(words)
}

/// `--max-pods` in a kubelet-extra-args value.
fn max_pods_in_args(args: &str) -> Result<Option<u32>, UserDataError> {
    let mut found = None;
    let mut tokens = args.split_whitespace();
    while let Some(token) = tokens.next() {
        let value = if let Some(v) = token.strip_prefix("--max-pods=") {
            Some(v)
        } else if token == "--max-pods" {
            tokens.next()
        } else {
            None
        };
        if let Some(v) = value {
            found = Some(
                v.parse::<u32>()
                    .map_err(|_| malformed(format!("--max-pods value {v:?} is not a number")))?,
            );
        }
    }
    Ok(found)
}

/// The args with exactly one `--max-pods=N` (where the first one was, or at the end).
fn args_with_max_pods(args: &str, max_pods: u32) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut placed = false;
    let mut tokens = args.split_whitespace();
    while let Some(token) = tokens.next() {
        let is_max_pods = token.starts_with("--max-pods=") || token == "--max-pods";
        if token == "--max-pods" {
            tokens.next();
        }
        if is_max_pods {
            if !placed {
                out.push(format!("--max-pods={max_pods}"));
                placed = true;
            }
        } else {
            out.push(token.to_owned());
        }
    }
    if !placed {
        out.push(format!("--max-pods={max_pods}"));
    }
    out.join(" ")
}

fn quoted(value: &str, style: Option<char>) -> String {
    match style {
        Some('"') if !value.contains('"') => format!("\"{value}\""),
        _ if !value.contains('\'') => format!("'{value}'"),
        _ => format!("\"{}\"", value.replace('"', "\\\"")),
    }
}

/// (kubelet-extra-args value word index, `--use-max-pods` value) of a call.
struct Call {
    words: Vec<Word>,
}

impl Call {
    fn option_value(&self, name: &str) -> Option<(usize, String)> {
        let prefix = format!("{name}=");
        self.words.iter().enumerate().find_map(|(i, w)| {
            if w.value == name {
                self.words.get(i + 1).map(|v| (i + 1, v.value.clone()))
            } else {
                w.value.strip_prefix(&prefix).map(|v| (i, v.to_owned()))
            }
        })
    }
}

fn call_in(text: &str) -> Result<Option<Call>, UserDataError> {
    match find_call(text) {
        Some(start) => Ok(Some(Call {
            words: words(text, start)?,
        })),
        None => Ok(None),
    }
}

fn script_read(text: &str) -> Result<Option<u32>, UserDataError> {
    let Some(call) = call_in(text)? else {
        return Ok(None);
    };
    match call.option_value("--kubelet-extra-args") {
        Some((_, args)) => max_pods_in_args(&args),
        None => Ok(None),
    }
}

fn script_set(text: &str, max_pods: u32) -> Result<String, UserDataError> {
    let call = call_in(text)?.ok_or_else(|| malformed(format!("no {BOOTSTRAP} call found")))?;
    let path_end = call
        .words
        .first()
        .ok_or_else(|| malformed(format!("the {BOOTSTRAP} call has no words")))?
        .end;
    // (start, end, replacement), applied from the back.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut inserted = String::new();
    match call.option_value("--use-max-pods") {
        Some((i, value)) if value != "false" => {
            let w = &call.words[i];
            let replacement = if w.value.starts_with("--use-max-pods=") {
                "--use-max-pods=false".to_owned()
            } else {
                "false".to_owned()
            };
            edits.push((w.start, w.end, replacement));
        }
        Some(_) => {}
        None => inserted.push_str(" --use-max-pods false"),
    }
    match call.option_value("--kubelet-extra-args") {
        Some((i, args)) => {
            let wanted = args_with_max_pods(&args, max_pods);
            if max_pods_in_args(&args)? != Some(max_pods) || args.matches("--max-pods").count() != 1
            {
                let w = &call.words[i];
                let replacement = match w.value.strip_prefix("--kubelet-extra-args=") {
                    Some(_) => format!("--kubelet-extra-args={}", quoted(&wanted, w.quote)),
                    None => quoted(&wanted, w.quote),
                };
                edits.push((w.start, w.end, replacement));
            }
        }
        None => inserted.push_str(&format!(" --kubelet-extra-args '--max-pods={max_pods}'")),
    }
    if !inserted.is_empty() {
        edits.push((path_end, path_end, inserted));
    }
    edits.sort_by_key(|edit| std::cmp::Reverse(edit.0));
    let mut out = text.to_owned();
    // Applied from the back, each edit must end where the one after it starts, at the latest:
    // two options read from the same word (found by the fuzzer) would overlap.
    let mut limit = text.len();
    for (start, end, replacement) in edits {
        if end > limit {
            return Err(malformed(format!(
                "the {BOOTSTRAP} call's options overlap; write --use-max-pods and \
                 --kubelet-extra-args as separate arguments"
            )));
        }
        out.replace_range(start..end, &replacement);
        limit = start;
    }
    Ok(out)
}

pub fn read_max_pods(text: &str) -> Result<Option<u32>, UserDataError> {
    match Multipart::parse(text) {
        Some(multipart) => {
            for part in multipart.parts.iter().filter(|p| p.is_shell()) {
                if calls_bootstrap(part.body) {
                    return script_read(part.body);
                }
            }
            Ok(None)
        }
        None => script_read(text),
    }
}

pub fn set_max_pods(text: &str, max_pods: u32) -> Result<String, UserDataError> {
    let Some(multipart) = Multipart::parse(text) else {
        return script_set(text, max_pods);
    };
    let part = multipart
        .parts
        .iter()
        .find(|p| p.is_shell() && calls_bootstrap(p.body))
        .ok_or_else(|| malformed(format!("no text/x-shellscript part calls {BOOTSTRAP}")))?;
    let start = offset_in(text, part.body);
    let end = start + part.body.len();
    let mut out = text.to_owned();
    out.replace_range(start..end, &script_set(part.body, max_pods)?);
    Ok(out)
}
