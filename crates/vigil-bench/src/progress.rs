//! Progress on stderr so a long run never looks hung.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A spinner with a status line; invisible when disabled or stderr is not a terminal.
#[derive(Debug, Clone)]
pub(crate) struct Progress(ProgressBar);

impl Progress {
    pub(crate) fn new(enabled: bool) -> Progress {
        let bar = if enabled {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Progress(bar)
    }

    pub(crate) fn say(&self, msg: String) {
        self.0.set_message(msg);
    }

    pub(crate) fn finish(&self) {
        self.0.finish_and_clear();
    }
}
