//! A minimal Server-Sent Events reader over a reqwest response: how the dashboard (and the
//! tests of `/admin/stream`) read the gateway's live feed.

/// One event: its id, its type and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub kind: String,
    pub data: String,
}

#[derive(Debug)]
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        Self { response, buffer: String::new() }
    }

    /// The next event, or `None` when the stream ends.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent { id: None, kind: "message".into(), data: String::new() };
                let mut has_fields = false;
                for line in block.lines() {
                    let (field, value) = line.split_once(':').map_or((line, ""), |(f, v)| (f, v.trim_start()));
                    match field {
                        "id" => event.id = value.parse().ok(),
                        "event" => event.kind = value.to_owned(),
                        "data" => event.data.push_str(value),
                        _ => continue, // comments (keep-alives) and unknown fields
                    }
                    has_fields = true;
                }
                if has_fields {
                    return Some(event);
                }
                continue;
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
