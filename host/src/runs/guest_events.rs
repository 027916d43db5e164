//! A step attempt's guest events (log lines, progress, HTTP records) on their way into
//! the run's event log.
//!
//! - Nothing within the budgets is lost: the guest never waits for the database, so
//!   events are queued, and what bounds the queue is the budgets themselves (the log
//!   budget in [`crate::capabilities::log::LogBuffer`], and [`MAX_OTHER_EVENTS`] here
//!   for progress and HTTP records), never a full channel.
//! - The order is the guest's: one queue, one committer, and every event the host
//!   commits for the attempt itself (a question, an artifact, a tool call) first waits
//!   for the queue to be committed up to that point ([`GuestEvents::flush`]).
//! - Few transactions: the committer writes whatever has queued up in one.

use super::Runner;
use crate::capabilities::log::{GuestEvent, Level, Observer, Source};
use crate::store::RunRef;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Progress and HTTP records one attempt may write; past it, one notice and the rest
/// are dropped. (Log lines are bounded by the log budget instead.)
pub(crate) const MAX_OTHER_EVENTS: usize = 2_000;
/// Progress reports closer together than this are coalesced: the latest one is kept
/// and written before the next event of another kind, or when the attempt ends.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Most events written in one transaction.
const BATCH: usize = 512;

enum Queued {
    Event(GuestEvent),
    /// Everything queued before this is committed when the sender is answered.
    Flush(oneshot::Sender<()>),
    /// The attempt ended: commit what is queued and stop.
    End,
}

/// What the sending side keeps to bound the queue.
#[derive(Default)]
struct Sending {
    /// Progress and HTTP records queued so far.
    other: usize,
    /// Whether the [`MAX_OTHER_EVENTS`] notice was queued.
    other_truncated: bool,
    last_progress: Option<Instant>,
    /// A coalesced progress report not yet queued.
    pending_progress: Option<GuestEvent>,
}

/// The sending side of one attempt's queue; cheap to clone.
#[derive(Clone)]
pub(crate) struct GuestEvents {
    tx: mpsc::UnboundedSender<Queued>,
    sending: Arc<Mutex<Sending>>,
}

impl GuestEvents {
    /// A queue for one attempt, and its committer (await it after [`GuestEvents::close`]:
    /// then every queued event is committed).
    pub(crate) fn start(
        runner: Runner,
        run: RunRef,
        step: String,
        agent: String,
        attempt: i64,
    ) -> (GuestEvents, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let committer = tokio::spawn(commit(
            runner,
            run,
            Labels {
                step,
                agent,
                attempt,
            },
            rx,
        ));
        let events = GuestEvents {
            tx,
            sending: Arc::new(Mutex::new(Sending::default())),
        };
        (events, committer)
    }

    /// The engine's observer: queues without ever blocking the guest.
    pub(crate) fn observer(&self) -> Observer {
        let events = self.clone();
        Arc::new(move |event| events.send(event))
    }

    fn send(&self, event: GuestEvent) {
        let mut s = self.sending.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match &event {
            GuestEvent::Log(_) | GuestEvent::LogTruncated => {
                // Bounded by the log budget; keeps its place after earlier progress.
                self.release_progress(&mut s);
                let _ = self.tx.send(Queued::Event(event));
                return;
            }
            GuestEvent::Progress { percent, .. } => {
                let recent = s
                    .last_progress
                    .is_some_and(|t| now.duration_since(t) < PROGRESS_EVERY);
                if recent && *percent < 100 {
                    s.pending_progress = Some(event);
                    return;
                }
                s.pending_progress = None;
                s.last_progress = Some(now);
            }
            GuestEvent::Http(_) => self.release_progress(&mut s),
        }
        self.queue_other(&mut s, event);
    }

    /// Queues a coalesced progress report, if there is one.
    fn release_progress(&self, s: &mut Sending) {
        if let Some(progress) = s.pending_progress.take() {
            s.last_progress = Some(Instant::now());
            self.queue_other(s, progress);
        }
    }

    fn queue_other(&self, s: &mut Sending, event: GuestEvent) {
        if s.other >= MAX_OTHER_EVENTS {
            if !s.other_truncated {
                s.other_truncated = true;
                let notice = GuestEvent::Log(crate::capabilities::log::LogLine {
                    level: Level::Warn,
                    source: Source::Host,
                    message: format!(
                        "more than {MAX_OTHER_EVENTS} progress reports and HTTP records from \
                         one attempt: later ones are not recorded"
                    ),
                });
                let _ = self.tx.send(Queued::Event(notice));
            }
            return;
        }
        s.other += 1;
        let _ = self.tx.send(Queued::Event(event));
    }

    /// Waits until every event queued so far is committed, so an event the host commits
    /// next comes after them in the run's log.
    pub(crate) async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        {
            let mut s = self.sending.lock().unwrap_or_else(PoisonError::into_inner);
            self.release_progress(&mut s);
            if self.tx.send(Queued::Flush(ack)).is_err() {
                return;
            }
        }
        // An error means the committer is gone; there is nothing left to wait for.
        let _ = done.await;
    }

    /// Ends the queue when the attempt ends: the coalesced progress report, if any, is
    /// queued, and the committer stops after committing everything before it. Events
    /// sent later are not recorded.
    pub(crate) fn close(&self) {
        let mut s = self.sending.lock().unwrap_or_else(PoisonError::into_inner);
        self.release_progress(&mut s);
        let _ = self.tx.send(Queued::End);
    }
}

/// What every event of the attempt names.
struct Labels {
    step: String,
    agent: String,
    attempt: i64,
}

async fn commit(
    runner: Runner,
    run: RunRef,
    labels: Labels,
    mut rx: mpsc::UnboundedReceiver<Queued>,
) {
    let mut queued = Vec::with_capacity(BATCH);
    let mut batch: Vec<(&'static str, Value)> = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut queued, BATCH).await > 0 {
        for item in queued.drain(..) {
            match item {
                Queued::Event(event) => batch.push(payload(&labels, event)),
                Queued::Flush(ack) => {
                    write(&runner, &run, &mut batch).await;
                    let _ = ack.send(());
                }
                Queued::End => {
                    write(&runner, &run, &mut batch).await;
                    return;
                }
            }
        }
        write(&runner, &run, &mut batch).await;
    }
}

async fn write(runner: &Runner, run: &RunRef, batch: &mut Vec<(&'static str, Value)>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = runner.commit_events(run, batch).await {
        tracing::warn!(
            run_id = %run.id,
            "could not record {} guest events: {e}",
            batch.len()
        );
    }
    batch.clear();
}

fn payload(labels: &Labels, event: GuestEvent) -> (&'static str, Value) {
    let step = &labels.step;
    match event {
        GuestEvent::Log(line) => (
            "log",
            json!({
                "step_id": step,
                "level": level_str(line.level),
                "source": source_str(line.source),
                "message": line.message,
            }),
        ),
        GuestEvent::Progress { percent, label } => (
            "running",
            json!({
                "step_id": step,
                "agent_type": labels.agent,
                "progress_pct": percent,
                "progress_label": label,
                "attempt": labels.attempt,
            }),
        ),
        GuestEvent::LogTruncated => (
            "log",
            json!({"step_id": step, "level": "warn", "source": "host",
                   "message": "log truncated: the plugin's log budget is spent"}),
        ),
        GuestEvent::Http(record) => {
            let mut payload = serde_json::to_value(&record).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut payload {
                map.insert("step_id".into(), Value::String(step.clone()));
                map.insert("attempt".into(), json!(labels.attempt));
            }
            ("http", payload)
        }
    }
}

fn level_str(l: Level) -> &'static str {
    match l {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

fn source_str(s: Source) -> &'static str {
    match s {
        Source::Log => "log",
        Source::Stdout => "stdout",
        Source::Stderr => "stderr",
        Source::Host => "host",
    }
}
