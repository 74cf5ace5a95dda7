//! Bottlerocket: TOML settings; `settings.kubernetes.max-pods`, edited in place so comments and
//! formatting of everything else stay.

use toml_edit::{DocumentMut, Item, Table, value};

use super::{UserDataError, UserDataFormat};

fn malformed(reason: impl Into<String>) -> UserDataError {
    UserDataError::Malformed {
        format: UserDataFormat::Bottlerocket,
        reason: reason.into(),
    }
}

fn parse(text: &str) -> Result<DocumentMut, UserDataError> {
    text.parse::<DocumentMut>()
        .map_err(|e| malformed(format!("TOML: {e}")))
}

pub(crate) fn is_bottlerocket(text: &str) -> bool {
    parse(text).is_ok_and(|doc| doc.get("settings").is_some_and(Item::is_table_like))
}

pub fn read_max_pods(text: &str) -> Result<Option<u32>, UserDataError> {
    let doc = parse(text)?;
    let Some(item) = doc
        .get("settings")
        .and_then(|s| s.get("kubernetes"))
        .and_then(|k| k.get("max-pods"))
    else {
        return Ok(None);
    };
    item.as_integer()
        .and_then(|v| u32::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| malformed("settings.kubernetes.max-pods is not a number"))
}

pub fn set_max_pods(text: &str, max_pods: u32) -> Result<String, UserDataError> {
    if read_max_pods(text)? == Some(max_pods) {
        return Ok(text.to_owned());
    }
    let mut doc = parse(text)?;
    let settings = doc
        .entry("settings")
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_like_mut()
        .ok_or_else(|| malformed("settings is not a table"))?;
    let kubernetes = settings
        .entry("kubernetes")
        .or_insert(Item::Table(Table::new()))
        .as_table_like_mut()
        .ok_or_else(|| malformed("settings.kubernetes is not a table"))?;
    match kubernetes.get_mut("max-pods") {
        Some(existing) => {
            let decor = existing.as_value().map(|v| v.decor().clone());
            *existing = value(i64::from(max_pods));
            if let (Some(decor), Some(v)) = (decor, existing.as_value_mut()) {
                *v.decor_mut() = decor;
            }
        }
        None => {
            kubernetes.insert("max-pods", value(i64::from(max_pods)));
        }
    }
    Ok(doc.to_string())
}
