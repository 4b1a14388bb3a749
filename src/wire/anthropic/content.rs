//! Message content on the way in: an OpenAI message's text and image
//! parts as Anthropic content blocks, with their cache points. Shared by
//! the conversation (`request`) and tool results (`tools`).

use serde_json::{json, Value};

use crate::wire::TranslateError;

/// The blocks of a string or an array of content parts.
pub(super) fn content_blocks(
    content: Option<&Value>,
    i: usize,
) -> Result<Vec<Value>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(text_block(text).into_iter().collect()),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                blocks.extend(part_block(part, i, j)?);
            }
            Ok(blocks)
        }
        Some(_) => Err(TranslateError::Messages(format!(
            "messages[{i}].content must be a string or an array of content parts"
        ))),
    }
}

fn part_block(part: &Value, i: usize, j: usize) -> Result<Option<Value>, TranslateError> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
    let text_of = |key: &str| {
        part.get(key).and_then(Value::as_str).ok_or_else(|| {
            TranslateError::Messages(format!("messages[{i}].content[{j}] has no string `{key}`"))
        })
    };
    let block = match kind {
        "text" => text_block(text_of("text")?),
        // An assistant's earlier refusal is still what it said.
        "refusal" => text_block(text_of("refusal")?),
        "image_url" => Some(image_block(part, i, j)?),
        other => {
            return Err(TranslateError::UnsupportedContent(format!(
                    "messages[{i}].content[{j}] is a `{other}` part, which the Anthropic adapter cannot send; use text and image_url parts"
                )))
        }
    };
    Ok(block.map(|b| with_cache_control(b, part.get("cache_control"))))
}

fn text_block(text: &str) -> Option<Value> {
    // Anthropic refuses empty text blocks, and they carry nothing.
    (!text.is_empty()).then(|| json!({ "type": "text", "text": text }))
}

/// Copies a client's prompt-caching breakpoint onto the translated block, so
/// Anthropic caches the same prefix the client marked.
fn with_cache_control(mut block: Value, cache_control: Option<&Value>) -> Value {
    if let (Some(cc), Value::Object(map)) = (cache_control.filter(|c| !c.is_null()), &mut block) {
        map.insert("cache_control".into(), cc.clone());
    }
    block
}

/// Some clients put `cache_control` on the message rather than on a part;
/// it then marks the end of that message, i.e. its last block.
pub(super) fn mark_cache_point(message: &Value, blocks: &mut [Value]) {
    let Some(cc) = message.get("cache_control").filter(|c| !c.is_null()) else {
        return;
    };
    if let Some(Value::Object(last)) = blocks.last_mut() {
        last.entry("cache_control").or_insert_with(|| cc.clone());
    }
}

/// OpenAI sends images as URLs: a `data:` URL becomes a base64 source, an
/// http(s) URL a `url` source that Anthropic fetches itself.
fn image_block(part: &Value, i: usize, j: usize) -> Result<Value, TranslateError> {
    let bad = |why: &str| TranslateError::Image(format!("messages[{i}].content[{j}]: {why}"));
    let url = match part.get("image_url") {
        Some(Value::String(url)) => Some(url.as_str()),
        Some(object) => object.get("url").and_then(Value::as_str),
        None => None,
    }
    .ok_or_else(|| bad("an image_url part needs `image_url.url`"))?;
    let source = if let Some(data_url) = url.strip_prefix("data:") {
        let (meta, data) = data_url
            .split_once(',')
            .ok_or_else(|| bad("the data URL has no `,` before its data"))?;
        let media_type = meta
            .strip_suffix(";base64")
            .and_then(|m| m.split(';').next())
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                bad("only base64 data URLs with a media type (data:image/png;base64,...) can be sent to Anthropic")
            })?;
        json!({ "type": "base64", "media_type": media_type, "data": data })
    } else if url.starts_with("https://") || url.starts_with("http://") {
        json!({ "type": "url", "url": url })
    } else {
        return Err(bad(
            "the image URL must be an http(s) URL or a base64 data URL",
        ));
    };
    Ok(json!({ "type": "image", "source": source }))
}
