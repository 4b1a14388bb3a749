//! Tool use on the way in: the tools a client offers and how it lets the
//! model choose, and the calls and results already in the conversation,
//! which Anthropic holds as blocks where OpenAI has fields and messages.

use serde_json::{json, Map, Value};

use super::content::content_blocks;
use super::{block_type, field};
use crate::wire::TranslateError;

/// `tools` and `tool_choice`. Without tools there is nothing to choose
/// from, so a lone `tool_choice` (often a client default) is dropped.
pub(super) fn tools(
    body: &Map<String, Value>,
    out: &mut Map<String, Value>,
) -> Result<(), TranslateError> {
    let definitions = match field(body, "tools") {
        None => return Ok(()),
        Some(Value::Array(tools)) => tools
            .iter()
            .enumerate()
            .map(|(i, tool)| tool_definition(tool, i))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(TranslateError::Tools("`tools` must be an array".into())),
    };
    if definitions.is_empty() {
        return Ok(());
    }
    out.insert("tools".into(), Value::Array(definitions));

    let serial = field(body, "parallel_tool_calls") == Some(&Value::Bool(false));
    let choice = match field(body, "tool_choice") {
        Some(choice) => Some(tool_choice(choice)?),
        // Anthropic puts the parallel switch on `tool_choice`, so one is
        // needed to carry it; `auto` is the default it stands for.
        None if serial => Some(json!({ "type": "auto" })),
        None => None,
    };
    if let Some(mut choice) = choice {
        // `none` takes no parallel switch: it allows no tool use at all.
        if serial && block_type(&choice) != "none" {
            if let Value::Object(map) = &mut choice {
                map.insert("disable_parallel_tool_use".into(), Value::Bool(true));
            }
        }
        out.insert("tool_choice".into(), choice);
    }
    Ok(())
}

fn tool_definition(tool: &Value, i: usize) -> Result<Value, TranslateError> {
    let kind = tool
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("function");
    let function = tool
        .get("function")
        .filter(|_| kind == "function")
        .ok_or_else(|| {
            TranslateError::Tools(format!(
                "tools[{i}] must be a `function` tool with a `function` object"
            ))
        })?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            TranslateError::Tools(format!("tools[{i}].function has no string `name`"))
        })?;
    let mut out = Map::new();
    out.insert("name".into(), Value::from(name));
    if let Some(description) = function.get("description").and_then(Value::as_str) {
        out.insert("description".into(), Value::from(description));
    }
    // Anthropic requires a schema; a function without parameters takes none.
    let schema = function
        .get("parameters")
        .filter(|p| !p.is_null())
        .cloned()
        .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
    out.insert("input_schema".into(), schema);
    // Anthropic's strict tool use is OpenAI's strict function calling.
    if function.get("strict") == Some(&Value::Bool(true)) {
        out.insert("strict".into(), Value::Bool(true));
    }
    if let Some(cc) = tool.get("cache_control").filter(|c| !c.is_null()) {
        out.insert("cache_control".into(), cc.clone());
    }
    Ok(Value::Object(out))
}

fn tool_choice(choice: &Value) -> Result<Value, TranslateError> {
    let named = choice
        .pointer("/function/name")
        .and_then(Value::as_str)
        .filter(|_| choice.get("type").and_then(Value::as_str) == Some("function"));
    match (choice.as_str(), named) {
        (Some("auto"), _) => Ok(json!({ "type": "auto" })),
        (Some("none"), _) => Ok(json!({ "type": "none" })),
        (Some("required"), _) => Ok(json!({ "type": "any" })),
        (None, Some(name)) => Ok(json!({ "type": "tool", "name": name })),
        _ => Err(TranslateError::ToolChoice("`tool_choice` must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}".into())),
    }
}

/// An earlier call of the assistant's, as the `tool_use` block that a
/// later `tool_result` answers by id.
pub(super) fn tool_use_block(call: &Value, i: usize, j: usize) -> Result<Value, TranslateError> {
    let at = format!("messages[{i}].tool_calls[{j}]");
    let string = |pointer: &str| {
        call.pointer(pointer)
            .and_then(Value::as_str)
            .ok_or_else(|| {
                TranslateError::Messages(format!(
                    "{at} has no string `{}`",
                    &pointer[1..].replace('/', ".")
                ))
            })
    };
    let id = string("/id")?;
    let name = string("/function/name")?;
    let input = tool_input(call.pointer("/function/arguments"), &at)?;
    Ok(json!({ "type": "tool_use", "id": id, "name": name, "input": input }))
}

/// OpenAI carries a call's arguments as a JSON string, Anthropic as the
/// object itself; arguments that are not a JSON object cannot be sent.
fn tool_input(arguments: Option<&Value>, at: &str) -> Result<Value, TranslateError> {
    let parsed = match arguments {
        None | Some(Value::Null) => return Ok(json!({})),
        // Some clients send "" for a call without arguments.
        Some(Value::String(text)) if text.trim().is_empty() => return Ok(json!({})),
        Some(Value::String(text)) => serde_json::from_str::<Value>(text).map_err(|e| {
            TranslateError::ToolArguments(format!("{at}.function.arguments is not valid JSON ({e}); Anthropic needs the arguments as a JSON object"))
        })?,
        Some(other) => other.clone(),
    };
    if parsed.is_object() {
        Ok(parsed)
    } else {
        Err(TranslateError::ToolArguments(format!(
            "{at}.function.arguments must encode a JSON object"
        )))
    }
}

/// A `tool` message as a `tool_result` block, which Anthropic carries in
/// the user's turn.
pub(super) fn tool_result(message: &Value, i: usize) -> Result<Value, TranslateError> {
    let id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            TranslateError::Messages(format!(
                "messages[{i}] is a tool message without a string `tool_call_id`"
            ))
        })?;
    let mut block = Map::new();
    block.insert("type".into(), Value::from("tool_result"));
    block.insert("tool_use_id".into(), Value::from(id));
    let content = match message.get("content") {
        Some(Value::String(text)) => (!text.is_empty()).then(|| Value::from(text.as_str())),
        other => {
            let blocks = content_blocks(other, i)?;
            (!blocks.is_empty()).then_some(Value::Array(blocks))
        }
    };
    if let Some(content) = content {
        block.insert("content".into(), content);
    }
    Ok(Value::Object(block))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::anthropic::test_support::{refused, text, translated, user};

    fn weather_tool() -> Value {
        json!({"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }})
    }

    #[test]
    fn tools_become_input_schemas() {
        let body = translated(json!({"messages": [user("hi")], "tools": [
            weather_tool(),
            {"type": "function", "function": {"name": "now", "strict": true}},
        ]}));
        assert_eq!(
            body["tools"],
            json!([
                {"name": "get_weather", "description": "Current weather in a city.",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "now", "input_schema": {"type": "object", "properties": {}}, "strict": true},
            ])
        );
        assert!(body.get("tool_choice").is_none());
    }

    #[test]
    fn tool_choice_variants() {
        let cases = [
            (json!("auto"), None, json!({"type": "auto"})),
            (json!("none"), None, json!({"type": "none"})),
            (json!("required"), None, json!({"type": "any"})),
            (
                json!({"type": "function", "function": {"name": "get_weather"}}),
                None,
                json!({"type": "tool", "name": "get_weather"}),
            ),
            (
                json!("required"),
                Some(false),
                json!({"type": "any", "disable_parallel_tool_use": true}),
            ),
            (
                json!({"type": "function", "function": {"name": "get_weather"}}),
                Some(false),
                json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}),
            ),
            // `none` takes no parallel switch.
            (json!("none"), Some(false), json!({"type": "none"})),
            (json!("auto"), Some(true), json!({"type": "auto"})),
        ];
        for (choice, parallel, expected) in cases {
            let mut body =
                json!({"messages": [user("hi")], "tools": [weather_tool()], "tool_choice": choice});
            if let Some(parallel) = parallel {
                body["parallel_tool_calls"] = Value::Bool(parallel);
            }
            assert_eq!(
                translated(body)["tool_choice"],
                expected,
                "{choice} {parallel:?}"
            );
        }
    }

    #[test]
    fn serial_tool_calls_without_tool_choice_use_auto() {
        let body = translated(json!({"messages": [user("hi")], "tools": [weather_tool()],
            "parallel_tool_calls": false}));
        assert_eq!(
            body["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
    }

    #[test]
    fn tool_choice_without_tools_is_dropped() {
        let body =
            translated(json!({"messages": [user("hi")], "tool_choice": "none", "tools": []}));
        assert!(body.get("tool_choice").is_none());
        assert!(body.get("tools").is_none());
    }

    #[test]
    fn bad_tools_and_choices_are_refused() {
        let error = refused(
            json!({"messages": [user("hi")], "tools": [weather_tool()], "tool_choice": "any"}),
        );
        assert_eq!(error.code, "invalid_tool_choice");
        let error = refused(
            json!({"messages": [user("hi")], "tools": [{"type": "custom", "custom": {"name": "x"}}]}),
        );
        assert_eq!(error.code, "invalid_tools");
        let error = refused(json!({"messages": [user("hi")], "functions": [{"name": "f"}]}));
        assert_eq!(error.code, "unsupported_parameter");
    }

    #[test]
    fn tool_calls_and_results_round_trip() {
        let body = translated(json!({"messages": [
            user("Weather in Paris and Oslo?"),
            {"role": "assistant", "content": "Checking both.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "4C, snow"}]},
            user("Which is warmer?"),
        ]}));
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [text("Weather in Paris and Oslo?")]},
                {"role": "assistant", "content": [
                    text("Checking both."),
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Oslo"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, sunny"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [text("4C, snow")]},
                    text("Which is warmer?"),
                ]},
            ])
        );
    }

    #[test]
    fn tool_results_go_first_in_their_turn() {
        let body = translated(json!({"messages": [
            user("go"),
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": ""}},
            ]},
            user("(still waiting)"),
            {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
        ]}));
        assert_eq!(
            body["messages"][1]["content"],
            json!([{"type": "tool_use", "id": "call_1", "name": "now", "input": {}}])
        );
        assert_eq!(
            body["messages"][2]["content"],
            json!([
                {"type": "tool_result", "tool_use_id": "call_1", "content": "noon"},
                text("(still waiting)"),
            ])
        );
    }

    #[test]
    fn invalid_tool_arguments_are_refused() {
        for arguments in ["{\"city\": ", "[1, 2]"] {
            let error = refused(json!({"messages": [
                user("go"),
                {"role": "assistant", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}},
                ]},
            ]}));
            assert_eq!(error.code, "invalid_tool_arguments", "{arguments}");
            assert!(
                error.message.contains("messages[1].tool_calls[0]"),
                "{}",
                error.message
            );
        }
        let error = refused(json!({"messages": [{"role": "tool", "content": "x"}]}));
        assert_eq!(error.code, "invalid_messages");
    }
}
