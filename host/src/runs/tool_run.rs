//! One tool call made from outside a pipeline (an MCP client's `tools/call`), recorded as
//! a short run of its own: a run with one step, claimed by this host when it is created
//! (no scheduler ever takes it), whose step calls the tool through the same path a
//! pipeline step's `host.call-tool` takes (`StepServices`): arguments checked against the
//! tool's schema, a fresh sandbox, `tool_call` events, the fuel charged to the run and its
//! tenant. So the call shows in the run history, the dashboard and the tenant's fuel total
//! like any other run, and ends in exactly one terminal state, also when the host dies
//! mid-call (recovery fails it with `HOST_CRASH`: its spec is not a pipeline, so it gets
//! no second attempt).

use super::services::{StepServices, ToolGrant};
use super::{Live, RunError, Runner, StoreRegistry};
use crate::engine::{Deadline, ToolSpec};
use crate::store::{Change, NewRun, PluginRecord};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Fuel a tool call may use (a pipeline step's default).
pub const TOOL_CALL_FUEL: u64 = crate::engine::limits::DEFAULT_FUEL;
/// Wall-clock limit of a tool call (a pipeline step's default).
pub const TOOL_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How a tool call run ended.
#[derive(Debug, Clone)]
pub struct ToolCallRun {
    /// The run that records the call.
    pub run_id: String,
    /// The tool's JSON output, or its Corral error code and message.
    pub result: Result<String, (String, String)>,
}

/// The tools a tool plugin's stored self-description lists.
pub fn stored_specs(plugin: &PluginRecord) -> Vec<ToolSpec> {
    plugin
        .info
        .get("tools")
        .and_then(Value::as_array)
        .map(|specs| {
            specs
                .iter()
                .filter_map(|spec| {
                    Some(ToolSpec {
                        name: spec.get("name")?.as_str()?.to_string(),
                        description: spec
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        input_schema: spec.get("inputSchema")?.clone(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Runner {
    /// Calls `tool` of the tenant's tool plugin `plugin` with `arguments` (JSON text), as
    /// a short run. The call runs in its own task, so a caller that goes away (a client
    /// that disconnects) cannot leave the run unfinished. Refused before any run exists
    /// when the input is over the run input cap or the plugin cannot be loaded.
    pub async fn call_tool_run(
        &self,
        tenant_id: &str,
        plugin: &PluginRecord,
        tool: &str,
        arguments: &str,
    ) -> Result<ToolCallRun, RunError> {
        crate::engine::json::check("arguments", arguments, self.inner.config.max_input_bytes)
            .map_err(RunError::InvalidInput)?;
        let registry = StoreRegistry::new(self.inner.store.clone(), tenant_id);
        let loaded = pipeline_load(&registry, &self.inner.engine, &plugin.id).await?;
        // Its own manifest grants its call http, secrets and limits (nothing without one).
        let manifest = super::pipeline::tool_manifest(
            &super::pipeline::PluginRef::Id(plugin.id.clone()),
            Some(&registry),
            &format!("the manifest of `{}@{}`", plugin.name, plugin.version),
        )
        .await
        .map_err(RunError::InvalidPipeline)?;
        let specs = stored_specs(plugin);
        let step_name = tool.to_string();
        let spec = json!({
            "mcp_tool_call": {
                "plugin": format!("{}@{}", plugin.name, plugin.version),
                "plugin_id": plugin.id,
                "tool": tool,
            }
        });
        let new = NewRun {
            tenant_id: tenant_id.to_string(),
            pipeline_id: None,
            pipeline_name: format!("mcp:{}", plugin.name),
            spec: spec.to_string(),
            input: arguments.to_string(),
            steps: vec![(step_name.clone(), plugin.name.clone())],
        };
        let (run, queued) = self
            .inner
            .store
            .create_run_claimed(
                &new,
                &registry.used(),
                &self.inner.owner,
                self.inner.config.lease,
            )
            .await?;
        self.inner.bus.publish(queued);
        let runner = self.clone();
        let tool = super::pipeline::LoadedTool {
            name: plugin.name.clone(),
            plugin: loaded,
            specs,
            manifest,
        };
        let arguments = arguments.to_string();
        let task = tokio::spawn(async move {
            let result = runner
                .drive_tool_call(&run.as_ref(), &step_name, tool, &arguments)
                .await;
            ToolCallRun {
                run_id: run.id,
                result,
            }
        });
        task.await
            .map_err(|e| RunError::InvalidInput(format!("the tool call stopped: {e}")))
    }

    async fn drive_tool_call(
        &self,
        run: &crate::store::RunRef,
        step: &str,
        tool: super::pipeline::LoadedTool,
        arguments: &str,
    ) -> Result<String, (String, String)> {
        let cancel = tokio_util::sync::CancellationToken::new();
        let live = Live {
            interrupt: cancel.child_token(),
            cancel: cancel.clone(),
            answered: Arc::new(tokio::sync::Notify::new()),
            fuel: Arc::new(AtomicI64::new(0)),
            tokens: Arc::default(),
            pause: tokio_util::sync::CancellationToken::new(),
        };
        self.inner
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(run.id.clone(), live.clone());
        let qualified = tool
            .specs
            .iter()
            .find(|s| s.name == step)
            .map(|s| format!("{}/{}", tool.name, s.name))
            .unwrap_or_else(|| format!("{}/{step}", tool.name));
        let agent = tool.name.clone();
        let started = self
            .commit(
                run,
                &[Change::StepStart {
                    idx: 0,
                    generation: 0,
                    attempt: 1,
                    feedback: None,
                }],
                Some((
                    "running",
                    json!({
                        "step_id": step, "agent_type": agent, "progress_pct": 0,
                        "progress_label": "started", "attempt": 1,
                    }),
                )),
            )
            .await;
        let result = match started {
            Ok(true) => {
                let services = StepServices::new(
                    self.clone(),
                    run.clone(),
                    step.to_string(),
                    0,
                    0,
                    Deadline::after(TOOL_CALL_TIMEOUT),
                    live.clone(),
                    ToolGrant {
                        tools: vec![tool],
                        fuel: TOOL_CALL_FUEL,
                        timeout: TOOL_CALL_TIMEOUT,
                        run_budget: None,
                        models: Vec::new(),
                        tokens: None,
                        run_tokens: None,
                    },
                );
                services
                    .invoke_granted_tool(&qualified, arguments)
                    .await
                    .map_err(|(code, e)| (code.to_string(), plugin_error_text(&e)))
            }
            Ok(false) => Err(("CANCELLED".to_string(), "cancelled".to_string())),
            Err(e) => Err(("STORE_ERROR".to_string(), e.to_string())),
        };
        let fuel = live.fuel.load(Ordering::Relaxed);
        self.finish_tool_call(run, step, &agent, &result, fuel)
            .await;
        self.inner
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&run.id);
        result
    }

    /// The step's and the run's end with the final event, in one transaction, retried
    /// while the database is unreachable (like a pipeline run's end).
    async fn finish_tool_call(
        &self,
        run: &crate::store::RunRef,
        step: &str,
        agent: &str,
        result: &Result<String, (String, String)>,
        fuel: i64,
    ) {
        let (status, output, error) = match result {
            Ok(output) => ("succeeded", Some(output.clone()), None),
            Err((code, message)) if code == "CANCELLED" => {
                ("cancelled", None, Some((code.clone(), message.clone())))
            }
            Err((code, message)) => ("failed", None, Some((code.clone(), message.clone()))),
        };
        let step_change = match (&output, &error) {
            (Some(output), _) => Change::StepSucceeded {
                idx: 0,
                output: output.clone(),
            },
            (None, error) => Change::StepFailed {
                idx: 0,
                status: if status == "cancelled" {
                    "cancelled"
                } else {
                    "failed"
                },
                error_code: error.as_ref().map(|e| e.0.clone()).unwrap_or_default(),
                error_message: error.as_ref().map(|e| e.1.clone()).unwrap_or_default(),
            },
        };
        let changes = vec![
            Change::AttemptEnd {
                idx: 0,
                generation: 0,
                attempt: 1,
                status: if status == "succeeded" {
                    "succeeded"
                } else {
                    "failed"
                },
                fuel,
                error_code: error.as_ref().map(|e| e.0.clone()),
                error_message: error.as_ref().map(|e| e.1.clone()),
            },
            step_change,
            Change::RunFinish {
                status,
                output: output.clone(),
                error_code: error.as_ref().map(|e| e.0.clone()),
                error_message: error.as_ref().map(|e| e.1.clone()),
            },
            Change::SkipRemaining,
        ];
        let mut step_done =
            json!({"step_id": step, "agent_type": agent, "fuel_used": fuel, "attempt": 1});
        let mut complete = json!({
            "run_id": run.id, "all_done": true, "status": status,
            "error": status != "succeeded", "fuel_used": fuel, "tokens_used": 0,
        });
        if let (Some(obj), Some((code, message))) = (complete.as_object_mut(), &error) {
            obj.insert("error_code".into(), json!(code));
            obj.insert("message".into(), json!(message));
        }
        let mut events = vec![];
        if output.is_some() {
            if let Some(obj) = step_done.as_object_mut() {
                obj.insert(
                    "output_preview".into(),
                    json!(crate::capabilities::log::neutralise(
                        output.as_deref().unwrap_or_default(),
                        200
                    )),
                );
            }
            events.push(("complete", step_done));
        }
        // Like a pipeline run's: a cancelled run says so before its final event.
        if status == "cancelled" {
            events.push(("cancelled", json!({"run_id": run.id, "step_id": step})));
        }
        events.push(("complete", complete));
        super::executor::retry_end(&run.id, |_| self.commit_many(run, &changes, &events)).await;
        tracing::info!(run_id = %run.id, tenant = %run.tenant_id, status, fuel, "tool call run finished");
    }
}

/// A plugin error's message, for the caller.
fn plugin_error_text(e: &crate::engine::bindings::types::PluginError) -> String {
    use crate::engine::bindings::types::PluginError;
    match e {
        PluginError::Transient(m) | PluginError::Permanent(m) | PluginError::InvalidInput(m) => {
            m.clone()
        }
    }
}

/// Loads a registered plugin by id through the tenant's registry.
async fn pipeline_load(
    registry: &StoreRegistry,
    engine: &crate::engine::Engine,
    plugin_id: &str,
) -> Result<Arc<crate::engine::Plugin>, RunError> {
    use super::pipeline::Registry;
    registry
        .load(
            &super::pipeline::PluginRef::Id(plugin_id.to_string()),
            engine,
        )
        .await
        .map_err(RunError::InvalidPipeline)?
        .map_err(|f| RunError::InvalidPipeline(f.to_string()))
}
