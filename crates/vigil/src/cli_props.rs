//! `-D` MQTT 5 properties in Mosquitto's syntax: `-D publish user-property k v`.

use anyhow::bail;
use bytes::Bytes;

/// Properties for PUBLISH collected from `-D` flags.
#[derive(Debug, Default, Clone)]
pub(crate) struct PublishProps {
    pub(crate) properties: vigil_proto::Properties,
}

impl PublishProps {
    /// Parses the flat list clap collected (3 or 4 values per `-D`).
    pub(crate) fn parse(values: &[String]) -> anyhow::Result<PublishProps> {
        let mut out = PublishProps::default();
        let p = &mut out.properties;
        let mut i = 0;
        while i < values.len() {
            let (command, name) = (
                values[i].as_str(),
                values.get(i + 1).map(String::as_str).unwrap_or(""),
            );
            let value = values.get(i + 2).cloned().unwrap_or_default();
            if command != "publish" {
                bail!("-D {command}: only 'publish' properties are supported");
            }
            let mut used = 3;
            match name {
                "user-property" => {
                    let v2 = values.get(i + 3).cloned().unwrap_or_default();
                    p.user_properties.push((value, v2));
                    used = 4;
                }
                "message-expiry-interval" => p.message_expiry_interval = Some(value.parse()?),
                "content-type" => p.content_type = Some(value),
                "response-topic" => p.response_topic = Some(value),
                "correlation-data" => p.correlation_data = Some(Bytes::from(value)),
                "payload-format-indicator" => p.payload_format_indicator = Some(value.parse()?),
                other => bail!("-D publish {other}: unknown property"),
            }
            i += used;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mosquitto_style_properties() {
        let v: Vec<String> = [
            "publish",
            "user-property",
            "k",
            "v",
            "publish",
            "message-expiry-interval",
            "60",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = PublishProps::parse(&v).unwrap().properties;
        assert_eq!(p.user_properties, vec![("k".to_string(), "v".to_string())]);
        assert_eq!(p.message_expiry_interval, Some(60));
    }
}
