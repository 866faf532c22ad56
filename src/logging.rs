//! Logging through `tracing`, as text for people or JSON for log collectors.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the configured level.
pub fn init(config: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| filter(&directives))
        .or_else(|| filter(&config.level))
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}

/// ruma's state resolution logs each authorization check at INFO, two lines for every event sent:
/// noise that buries the server's own messages and costs a write per line on the send path. It is
/// held to warnings unless the directives name it (`ruma_state_res=debug`, `ruma=info`).
fn filter(directives: &str) -> Option<EnvFilter> {
    if directives.contains("ruma") {
        return EnvFilter::try_new(directives).ok();
    }
    EnvFilter::try_new(format!("ruma_state_res=warn,{directives}")).ok()
}
