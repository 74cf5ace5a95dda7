//! A byte-preserving view of a MIME multi-part document: its parts with their content types and
//! byte offsets in the original text. It only reads; the AL2023 and AL2 rewriters use the offsets
//! to insert or replace one part while every other byte stays where it was. (Mail parsers
//! decode; they do not give back the original bytes, which is what this needs.)

/// A part: its raw header block and body, as slices of the original text.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// Offset of the delimiter line that opens the part.
    pub delimiter_start: usize,
    /// Offset just past the part's last byte (the line break before the next delimiter).
    pub end: usize,
    pub headers: &'a str,
    pub body: &'a str,
}

/// The value of header `name` in a header block, unfolded (RFC 5322 section 2.2.3: a line that
/// starts with a space or a tab continues the header above it; cloud-init reads such headers,
/// so `Content-Type: multipart/mixed;` with `boundary=...` on the next line is common).
fn header_value(block: &str, name: &str) -> Option<String> {
    let mut lines = block.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if line.starts_with([' ', '\t']) || !key.trim().eq_ignore_ascii_case(name) {
            continue;
        }
        let mut value = value.trim().to_owned();
        while let Some(next) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
            value.push(' ');
            value.push_str(next.trim());
        }
        return Some(value);
    }
    None
}

impl<'a> Part<'a> {
    fn header(&self, name: &str) -> Option<String> {
        header_value(self.headers, name)
    }

    pub fn content_type(&self) -> String {
        self.header("Content-Type")
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|| "text/plain".to_owned())
    }

    pub(crate) fn is_node_config(&self) -> bool {
        self.content_type() == "application/node.eks.aws"
    }

    pub(crate) fn is_shell(&self) -> bool {
        self.content_type() == "text/x-shellscript"
    }

    /// The part this operator owns carries this header.
    pub(crate) fn is_owned(&self) -> bool {
        self.header(OWNER_HEADER)
            .is_some_and(|v| v.eq_ignore_ascii_case(OWNER_VALUE))
    }
}

pub(crate) const OWNER_HEADER: &str = "X-Managed-By";
pub(crate) const OWNER_VALUE: &str = "vpc-cni-tuner";

#[derive(Debug, Clone)]
pub struct Multipart<'a> {
    pub boundary: String,
    pub parts: Vec<Part<'a>>,
    /// Offset of the closing delimiter line (`--boundary--`), if there is one.
    pub closing: Option<usize>,
}

impl<'a> Multipart<'a> {
    /// Parses `text` when its top-level headers declare a multipart content type.
    pub fn parse(text: &'a str) -> Option<Self> {
        let header_end = find_blank_line(text, 0)?;
        let content_type = header_value(&text[..header_end], "Content-Type")?;
        if !content_type.to_ascii_lowercase().starts_with("multipart/") {
            return None;
        }
        let boundary = boundary_param(&content_type)?;
        let delimiter = format!("--{boundary}");
        let mut delimiters = Vec::new();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let trimmed = line.trim_end_matches(['\r', '\n']).trim_end();
            if trimmed == delimiter {
                delimiters.push((offset, offset + line.len(), false));
            } else if trimmed == format!("{delimiter}--") {
                delimiters.push((offset, offset + line.len(), true));
                break;
            }
            offset += line.len();
        }
        let mut parts = Vec::new();
        let mut closing = None;
        for (i, (line_start, line_end, is_closing)) in delimiters.iter().enumerate() {
            if *is_closing {
                closing = Some(delimiters[i].0);
                break;
            }
            let end = delimiters.get(i + 1).map_or(text.len(), |d| d.0);
            let raw = &text[*line_end..end];
            let (headers, body) = match find_blank_line(raw, 0) {
                Some(h) => (&raw[..h], &raw[skip_blank_line(raw, h)..]),
                None => (raw, ""),
            };
            parts.push(Part {
                delimiter_start: *line_start,
                end,
                headers,
                body,
            });
        }
        Some(Self {
            boundary,
            parts,
            closing,
        })
    }
}

fn boundary_param(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|b| valid_boundary(b))
    })
}

/// RFC 2046 section 5.1.1: 1 to 70 of `bchars` (digits, letters, `'()+_,-./:=?` and space), not
/// ending in a space. Anything else (a CR inside the quotes, say) could not be matched against
/// the delimiter lines, which are compared without trailing whitespace.
fn valid_boundary(boundary: &str) -> bool {
    (1..=70).contains(&boundary.len())
        && !boundary.ends_with(' ')
        && boundary
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "'()+_,-./:=? ".contains(c))
}

/// Offset of the first empty line at or after `from` (the end of a header block).
fn find_blank_line(text: &str, from: usize) -> Option<usize> {
    let mut offset = from;
    for line in text[from..].split_inclusive('\n') {
        if line.trim_end_matches(['\r', '\n']).is_empty() {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

fn skip_blank_line(text: &str, at: usize) -> usize {
    let rest = &text[at..];
    if rest.starts_with("\r\n") {
        at + 2
    } else if rest.starts_with('\n') {
        at + 1
    } else {
        at
    }
}

/// Offset of `inner` (a sub-slice of `outer`) within `outer`.
pub(crate) fn offset_in(outer: &str, inner: &str) -> usize {
    (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize)
}
