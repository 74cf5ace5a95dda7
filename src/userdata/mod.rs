//! Rewriting kubelet `maxPods` in EC2 user data, for the three EKS AMI families:
//!
//! - AL2023 (nodeadm): a MIME multi-part document with `application/node.eks.aws` NodeConfig
//!   parts (or a plain NodeConfig YAML). The operator owns one NodeConfig part, added last
//!   because later parts win, holding only `spec.kubelet.config.maxPods`; every other part stays
//!   byte-for-byte as it was.
//! - AL2: a shell script calling `/etc/eks/bootstrap.sh` (possibly inside a MIME
//!   `text/x-shellscript` part); the call gets `--use-max-pods false` and `--max-pods=N` in
//!   `--kubelet-extra-args`, replacing existing values rather than adding more.
//! - Bottlerocket: TOML; `settings.kubernetes.max-pods`, edited with a format-preserving editor.
//!
//! Pure: bytes in, bytes out. Anything it cannot rewrite safely is an error, never a guess.

mod al2;
mod al2023;
mod bottlerocket;
mod mime;

use std::fmt;

use serde::{Deserialize, Serialize};

/// EC2's limit on user data: 16 KB before base64 encoding.
pub(crate) const USER_DATA_LIMIT: usize = 16 * 1024;

/// The AMI family a user-data document is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UserDataFormat {
    #[serde(rename = "AL2023")]
    Al2023,
    #[serde(rename = "AL2")]
    Al2,
    Bottlerocket,
}

impl fmt::Display for UserDataFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Al2023 => "AL2023",
            Self::Al2 => "AL2",
            Self::Bottlerocket => "Bottlerocket",
        })
    }
}

/// Why user data cannot be read or rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    #[error(
        "the user data is gzip-compressed; the operator does not rewrite compressed user data: store it uncompressed"
    )]
    Compressed,
    #[error("the user data is not text (UTF-8)")]
    NotText,
    #[error(
        "the user data is not in a recognised format (AL2023 NodeConfig / MIME, AL2 bootstrap.sh script, Bottlerocket TOML): set userDataFormat explicitly"
    )]
    Unrecognised,
    /// kOps nodes boot with nodeup, which takes kubelet's maxPods from the kOps cluster or
    /// instance-group spec (kops: pkg/model/resources/nodeup.go renders this script).
    #[error(
        "the user data is kOps' nodeup bootstrap: kubelet maxPods comes from the kOps instance group or cluster spec, not from the launch template"
    )]
    Kops,
    #[error("the user data is not valid {format}: {reason}")]
    Malformed {
        format: UserDataFormat,
        reason: String,
    },
    #[error("the rewritten user data would be {size} bytes, over EC2's 16 KB limit")]
    TooLarge { size: usize },
}

/// The result of setting maxPods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub format: UserDataFormat,
    /// The maxPods the document gave before (None: not set, the AMI computes its own).
    pub previous_max_pods: Option<u32>,
    pub data: Vec<u8>,
    /// Whether `data` differs from the input.
    pub changed: bool,
}

/// Works out the format from the content.
pub fn detect(data: &[u8]) -> Result<UserDataFormat, UserDataError> {
    let text = as_text(data)?;
    if let Some(multipart) = mime::Multipart::parse(text) {
        if multipart
            .parts
            .iter()
            .any(|p| p.is_shell() && is_kops_nodeup(p.body))
        {
            return Err(UserDataError::Kops);
        }
        if multipart.parts.iter().any(|p| p.is_node_config()) {
            return Ok(UserDataFormat::Al2023);
        }
        if multipart
            .parts
            .iter()
            .any(|p| p.is_shell() && al2::calls_bootstrap(p.body))
        {
            return Ok(UserDataFormat::Al2);
        }
        return Err(UserDataError::Unrecognised);
    }
    if is_kops_nodeup(text) {
        return Err(UserDataError::Kops);
    }
    if al2023::is_node_config(text) {
        return Ok(UserDataFormat::Al2023);
    }
    if al2::calls_bootstrap(text) {
        return Ok(UserDataFormat::Al2);
    }
    if bottlerocket::is_bottlerocket(text) {
        return Ok(UserDataFormat::Bottlerocket);
    }
    Err(UserDataError::Unrecognised)
}

/// The maxPods the document sets, if any.
pub fn read_max_pods(data: &[u8], format: UserDataFormat) -> Result<Option<u32>, UserDataError> {
    let text = as_text(data)?;
    match format {
        UserDataFormat::Al2023 => al2023::read_max_pods(text),
        UserDataFormat::Al2 => al2::read_max_pods(text),
        UserDataFormat::Bottlerocket => bottlerocket::read_max_pods(text),
    }
}

/// Sets maxPods, detecting the format unless `format` forces one. Applying the same value twice
/// changes nothing the second time.
pub fn set_max_pods(
    data: &[u8],
    format: Option<UserDataFormat>,
    max_pods: u32,
) -> Result<Rewrite, UserDataError> {
    let format = match format {
        Some(format) => {
            as_text(data)?;
            format
        }
        None => detect(data)?,
    };
    let text = as_text(data)?;
    let previous_max_pods = read_max_pods(data, format)?;
    let rewritten = match format {
        UserDataFormat::Al2023 => al2023::set_max_pods(text, max_pods)?,
        UserDataFormat::Al2 => al2::set_max_pods(text, max_pods)?,
        UserDataFormat::Bottlerocket => bottlerocket::set_max_pods(text, max_pods)?,
    };
    // Never hand back a document that does not say what was asked: where the reader and the
    // writer would disagree (a bootstrap call inside an unbalanced quote, say), refuse.
    if read_max_pods(rewritten.as_bytes(), format) != Ok(Some(max_pods)) {
        return Err(UserDataError::Malformed {
            format,
            reason: format!(
                "the rewritten user data would not read back maxPods {max_pods} (an ambiguous \
                 bootstrap call, such as one inside unbalanced quotes); fix the user data"
            ),
        });
    }
    if rewritten.len() > USER_DATA_LIMIT {
        return Err(UserDataError::TooLarge {
            size: rewritten.len(),
        });
    }
    let changed = rewritten.as_bytes() != data;
    Ok(Rewrite {
        format,
        previous_max_pods,
        data: rewritten.into_bytes(),
        changed,
    })
}

/// kOps' node bootstrap script: it downloads nodeup from `NODEUP_URL_AMD64` / `NODEUP_URL_ARM64`
/// and runs it (kops: pkg/model/resources/nodeup.go, `nodeUpTemplate`).
fn is_kops_nodeup(script: &str) -> bool {
    script.starts_with("#!")
        && script.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with("NODEUP_URL_AMD64=") || l.starts_with("NODEUP_URL_ARM64=")
        })
}

fn as_text(data: &[u8]) -> Result<&str, UserDataError> {
    if data.starts_with(&[0x1f, 0x8b]) {
        return Err(UserDataError::Compressed);
    }
    std::str::from_utf8(data).map_err(|_| UserDataError::NotText)
}

/// The line ending a document uses (CRLF when its first line break is one).
fn line_ending(text: &str) -> &'static str {
    match text.find('\n') {
        Some(i) if i > 0 && text.as_bytes()[i - 1] == b'\r' => "\r\n",
        _ => "\n",
    }
}

#[cfg(test)]
mod tests;
