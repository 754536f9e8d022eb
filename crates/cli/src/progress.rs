//! A progress bar over `stasis_user::Progress`, drawn on stderr only when it
//! is a terminal and the operation moves more than ~256 MiB of page data.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Below this much page data no bar is drawn.
pub const THRESHOLD: u64 = 256 << 20;

pub struct Bar {
    bar: ProgressBar,
    enabled: bool,
    verb: &'static str,
}

impl Bar {
    /// `verb` is shown before the bar ("checkpoint", "restart").
    pub fn new(verb: &'static str, quiet: bool) -> Bar {
        Bar {
            bar: ProgressBar::hidden(),
            enabled: !quiet && std::io::stderr().is_terminal(),
            verb,
        }
    }

    /// Remove the bar from the terminal (before printing a summary or an error).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl stasis_user::Progress for Bar {
    fn set_total(&self, bytes: u64) {
        self.bar.set_length(bytes);
        if self.enabled && bytes > THRESHOLD && self.bar.is_hidden() {
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:40}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            self.bar.set_style(style);
            self.bar.set_prefix(self.verb);
            // Drawn on progress only, no steady tick: once a restored process
            // owns the terminal, nothing may redraw over its output.
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        // Done: clear it now, not when the engine returns (a waited-for
        // restart returns only when the restored process exits, and that
        // process may be using this terminal).
        if self
            .bar
            .length()
            .is_some_and(|len| self.bar.position() >= len)
        {
            self.bar.finish_and_clear();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
