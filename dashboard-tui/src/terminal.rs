//! The one task that owns the terminal: it draws the model at a fixed rate and feeds key presses
//! to the model. `ratatui::init` puts the terminal back on panic; `restore` does on every exit.

use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyEventKind};

use crate::Config;
use crate::model::Msg;
use crate::runtime::Dashboard;

const FRAME: Duration = Duration::from_millis(100);

pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut dashboard = Dashboard::start(config);
    let keys = dashboard.sender();
    // Reading keys blocks, so it gets a thread of its own; it stops when the dashboard is gone.
    std::thread::spawn(move || {
        while !keys.is_closed() {
            match event::poll(Duration::from_millis(200)) {
                Ok(true) => {
                    if let Ok(Event::Key(key)) = event::read()
                        && key.kind == KeyEventKind::Press
                        && keys.blocking_send(Msg::Key(key)).is_err()
                    {
                        return;
                    }
                }
                Ok(false) => {}
                Err(_) => return,
            }
        }
    });

    let mut terminal = ratatui::init();
    let mut frames = tokio::time::interval(FRAME);
    let outcome = loop {
        tokio::select! {
            msg = dashboard.next(FRAME) => {
                if let Some(msg) = msg {
                    dashboard.handle(msg);
                }
            }
            _ = frames.tick() => {
                dashboard.handle(Msg::Tick(chrono::Utc::now()));
                if let Err(error) = terminal.draw(|frame| crate::view::view(&dashboard.model, frame)) {
                    break Err(error.into());
                }
            }
        }
        if dashboard.model.quit {
            break Ok(());
        }
    };
    ratatui::restore();
    outcome
}
