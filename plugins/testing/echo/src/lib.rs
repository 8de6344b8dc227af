//! A plugin for the host's tests: it echoes every chunk it receives, closes the
//! connection on `quit`, and panics on `panic` (to show that a panic stops only it).

// `export_plugin!` emits the `#[unsafe(no_mangle)]` entry point.
#![allow(unsafe_code)]

use concord_plugin_abi::pb::{action::Action, host_event::Event};
use concord_plugin_abi::sdk::{self, SansIoPlugin, actions};

#[derive(Debug)]
pub struct Echo {
    greeting: String,
}

impl SansIoPlugin for Echo {
    fn create(config_json: &str) -> Result<Self, String> {
        let settings: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(config_json).map_err(|e| format!("bad settings: {e}"))?;
        let mut greeting = String::new();
        for (key, value) in settings {
            match (key.as_str(), value) {
                ("greeting", serde_json::Value::String(text)) => greeting = text,
                (key, _) => {
                    return Err(format!(
                        "unknown setting `{key}` (known: greeting, a string)"
                    ));
                }
            }
        }
        Ok(Echo { greeting })
    }

    fn handle(&mut self, event: Event) -> Vec<Action> {
        match event {
            Event::Opened(opened) if !self.greeting.is_empty() => {
                vec![actions::write(
                    opened.connection,
                    format!("{}\n", self.greeting).into_bytes(),
                )]
            }
            Event::Received(received) => match received.data.as_slice() {
                b"panic\n" => panic!("asked to panic"),
                b"quit\n" => vec![actions::close(received.connection)],
                _ => {
                    sdk::log_info(&format!("echo: {} bytes", received.data.len()));
                    vec![actions::write(received.connection, received.data)]
                }
            },
            _ => Vec::new(),
        }
    }
}

concord_plugin_abi::export_plugin!(Echo, "echo");
