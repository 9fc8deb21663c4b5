//! The cutover over the operator interface: [`LocalNode`] is where a task runs, so the
//! cutover machine stops and starts the task's directions through it.

use super::local::LocalNode;
use super::{Control, ControlError};
use crate::cutover::machine::{CutoverError, Machine, TaskHost};
use crate::cutover::{CutoverRequest, CutoverView};
use crate::engine::metrics::DirectionState;

impl From<CutoverError> for ControlError {
    fn from(e: CutoverError) -> Self {
        match e {
            CutoverError::UnknownTask { task } => ControlError::NotFound { what: format!("task {task:?}") },
            e @ CutoverError::Refused { .. } => ControlError::Conflict { message: e.to_string() },
            CutoverError::Store(e) => ControlError::Store(e),
        }
    }
}

/// Already paused or already running is what the machine wants: not an error.
fn settled(r: Result<super::TaskView, ControlError>) -> Result<(), String> {
    match r {
        Ok(_) | Err(ControlError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

impl TaskHost for LocalNode {
    async fn stop_task(&self, actor: &str, task: &str) -> Result<(), String> {
        settled(self.pause(actor, task).await)
    }

    async fn start_task(&self, actor: &str, task: &str) -> Result<(), String> {
        settled(self.resume(actor, task).await)
    }

    async fn lag_seconds(&self, task: &str) -> Option<f64> {
        self.directions()
            .await
            .iter()
            .map(|m| m.status())
            .filter(|s| s.task == task && s.state == DirectionState::Streaming)
            .filter_map(|s| s.lag_seconds)
            .reduce(f64::max)
    }
}

impl LocalNode {
    fn machine(&self) -> Machine<'_, LocalNode> {
        Machine { config: self.config(), store: self.store(), host: self }
    }

    /// [`Control::cutover_status`] in-process.
    pub async fn cutover_view(&self, task: &str) -> Result<CutoverView, ControlError> {
        let view = self.machine().view(task).await?;
        self.note_view(task, &view);
        Ok(view)
    }

    /// [`Control::cutover`] in-process.
    pub async fn cutover_act(&self, actor: &str, task: &str, req: CutoverRequest) -> Result<CutoverView, ControlError> {
        let result = self.machine().act(actor, task, req).await;
        // A failed or refused step may have frozen or lifted a freeze all the same.
        match &result {
            Ok(view) => self.note_view(task, view),
            Err(_) => {
                if let Ok(view) = self.machine().view(task).await {
                    self.note_view(task, &view);
                }
            }
        }
        Ok(result?)
    }

    /// The freezes a cutover view saw, on both endpoints of its task.
    fn note_view(&self, task: &str, view: &CutoverView) {
        if let Some(t) = self.config().task(task) {
            self.note_frozen(&[t.from.as_str(), t.to.as_str()], &view.live.frozen);
        }
    }
}
