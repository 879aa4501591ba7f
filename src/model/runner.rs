//! The model runs on its own OS thread behind a bounded queue: candle never runs inside
//! an async handler, and a full queue is answered at once (HTTP 429) instead of piling up.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

use tokio::sync::oneshot;

use super::{LoadOptions, LocalModel, ModelError, ModelInfo};

type Job = Box<dyn FnOnce(&mut LocalModel) + Send>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    #[error("the model queue is full ({0} waiting); retry shortly")]
    Full(usize),
    #[error("the model thread has stopped")]
    Stopped,
}

/// A cheap, clonable handle to the model thread.
#[derive(Clone)]
pub struct ModelHandle {
    tx: SyncSender<Job>,
    capacity: usize,
    pub info: ModelInfo,
    pub context_length: usize,
}

impl ModelHandle {
    /// Loads the model on a new thread and returns once it is ready (or failed).
    pub fn spawn(spec: &str, opts: &LoadOptions, capacity: usize) -> Result<Self, ModelError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (tx, rx) = sync_channel::<Job>(capacity.max(1));
        let spec = spec.to_string();
        let opts = opts.clone();
        std::thread::Builder::new()
            .name("model".into())
            .spawn(move || {
                let mut model = match LocalModel::load(&spec, &opts) {
                    Ok(m) => {
                        let _ = ready_tx.send(Ok((m.info.clone(), m.context_length())));
                        m
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    job(&mut model);
                }
            })
            .map_err(|e| ModelError::BadInput(format!("cannot start the model thread: {e}")))?;
        let (info, context_length) = ready_rx
            .recv()
            .map_err(|_| ModelError::BadInput("the model thread died while loading".into()))??;
        Ok(Self {
            tx,
            capacity,
            info,
            context_length,
        })
    }

    /// Runs `f` on the model thread and awaits its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&mut LocalModel) -> T + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: Job = Box::new(move |m| {
            let _ = reply_tx.send(f(m));
        });
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(QueueError::Full(self.capacity)),
            Err(TrySendError::Disconnected(_)) => return Err(QueueError::Stopped),
        }
        reply_rx.await.map_err(|_| QueueError::Stopped)
    }
}
