//! JSON read as `serde_json::Value`, refusing an object that names a key
//! twice. RFC 8259 leaves such an object's meaning to each parser (serde
//! keeps the last value, others the first), so a body that is forwarded
//! as it came must not have one: p402 would price and check one request
//! and the provider answer another.

use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A JSON value with no duplicate object keys anywhere in it.
pub struct Unique(pub Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Unique(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(A::Error::custom(format!("the key `{key}` appears twice")));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_as_serde_json_unless_a_key_is_written_twice() {
        for text in [
            r#"{"model": "m", "messages": [{"role": "user", "content": "hi \u00e9"}], "n": 1, "t": 0.5, "x": null, "big": 18446744073709551615, "neg": -3, "nested": {"a": [true, false, {}]}}"#,
            "[]",
            "\"text\"",
            "1e2",
        ] {
            let unique: Unique = serde_json::from_str(text).expect("parsed");
            let plain: Value = serde_json::from_str(text).expect("parsed");
            assert_eq!(unique.0, plain, "{text}");
        }
        for text in [
            r#"{"model": "a", "model": "b"}"#,
            r#"{"messages": [{"role": "user", "role": "system"}]}"#,
        ] {
            assert!(serde_json::from_str::<Unique>(text).is_err(), "{text}");
        }
    }
}
