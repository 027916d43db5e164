//! The guest side of language models (`corral:plugin/model@0.2.0`) and the two contract
//! versions: a 0.1.0 component still loads and runs; a 0.2.0 one importing `model` loads;
//! its chat call is refused without a grant, bounded before conversion (RES-09), and
//! converted both ways through `RunServices::model` (the seam the run lifecycle
//! implements); the `llm-agent` example loops model -> tool -> model under a step cap.

use crate::util::*;
use corral::capabilities::RunServices;
use corral::capabilities::log::Source;
use corral::engine::bindings::types::PluginError;
use corral::engine::{Call, ErrorCode, Invocation, RunContext, World};
use corral::models::{ChatRequest, ChatResponse, DeltaSink, FinishReason, Role, ToolCall, Usage};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

fn call_with_config(input: &Value, config: &Value) -> Call {
    Call::Run {
        ctx: RunContext {
            run_id: "test-run".into(),
            step: "test-step".into(),
            attempt: 1,
            config: config.to_string(),
            feedback: None,
        },
        input: input.to_string(),
    }
}

async fn probe(services: Option<Arc<dyn RunServices>>, input: Value) -> Value {
    let engine = engine();
    let plugin = load(&engine, "model_prober").await;
    let how = Invocation {
        limits: limits(),
        services,
        ..Invocation::default()
    };
    let outcome = engine
        .invoke(&plugin, call_with_config(&input, &json!({})), how)
        .await;
    json_output(&outcome)
}

#[tokio::test]
async fn a_0_1_0_component_still_loads_and_runs() {
    let engine = engine();
    let plugin = load(&engine, "echo_v0_1").await;
    assert_eq!(plugin.world, World::Agent);
    assert!(
        plugin
            .imports
            .iter()
            .any(|i| i == "corral:plugin/host@0.1.0"),
        "{:?}",
        plugin.imports
    );
    assert!(
        plugin
            .exports
            .iter()
            .any(|e| e == "corral:plugin/agent@0.1.0")
    );

    let outcome = engine
        .invoke(&plugin, run_call(r#"{"hi":1}"#), Invocation::default())
        .await;
    assert_eq!(
        json_output(&outcome),
        json!({"contract": "0.1.0", "step": "test-step", "state": false, "input": {"hi": 1}})
    );
    assert!(
        outcome
            .logs
            .iter()
            .any(|l| l.source == Source::Log && l.message.contains("echo-v0-1: step test-step")),
        "{:?}",
        outcome.logs
    );

    // Its plugin-error and its describe come through the 0.1.0 exports too.
    let failed = engine
        .invoke(&plugin, run_call(r#"{"fail":1}"#), Invocation::default())
        .await;
    let f = failed.result.unwrap_err();
    assert_eq!(f.code, ErrorCode::PluginError);
    assert!(f.message.contains("asked to fail"), "{}", f.message);
    match engine.describe(&plugin).await.result {
        Ok(corral::engine::Output::AgentInfo(info)) => assert_eq!(info.name, "echo-v0-1"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_0_2_0_component_importing_model_loads() {
    let engine = engine();
    let plugin = load(&engine, "model_prober").await;
    assert_eq!(plugin.world, World::Agent);
    assert!(
        plugin
            .imports
            .iter()
            .any(|i| i == "corral:plugin/model@0.2.0"),
        "{:?}",
        plugin.imports
    );
    assert!(
        plugin
            .exports
            .iter()
            .any(|e| e == "corral:plugin/agent@0.2.0")
    );
    // The SDK's other plugins are 0.2.0 components too, and still run.
    assert_echo_still_works(&engine).await;
}

#[tokio::test]
async fn model_chat_without_services_is_not_granted() {
    let out = probe(None, json!({"alias": "fast"})).await;
    assert_eq!(out["error"]["kind"], "permanent", "{out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("not granted: model `fast`"),
        "{message}"
    );
}

/// `corral call --json` on a fixture: its exit code and its JSON document.
fn corral_call(name: &str, input: &Value) -> (i32, Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .env("CORRAL_DATA_DIR", root().join("target/test-data"))
        .env_remove("RUST_LOG")
        .arg("call")
        .arg(plugin_path(name))
        .args(["--json", "--input", &input.to_string()])
        .output()
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), doc)
}

#[test]
fn corral_call_runs_a_0_1_0_component_and_refuses_an_ungranted_model() {
    let (code, doc) = corral_call("echo_v0_1", &json!({"hi": 1}));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["output"]["contract"], "0.1.0", "{doc:#}");

    // Nothing configured: every alias is not granted, and the plugin sees why.
    let (code, doc) = corral_call("model_prober", &json!({"alias": "fast"}));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["output"]["error"]["kind"], "permanent", "{doc:#}");
    assert!(
        doc["output"]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("not granted: model `fast`"),
        "{doc:#}"
    );
}

#[tokio::test]
async fn res_09_oversize_model_requests_are_invalid_input_before_conversion() {
    // A service that would answer: none of these requests may reach it.
    let services = Arc::new(Scripted::answering("should not be asked"));
    let cases = [
        (json!({"messages": 257}), "257 messages"),
        (json!({"messages": 0}), "0 messages"),
        (json!({"messages": 2, "content_bytes": 600_000}), "text"),
        (json!({"tools": 65}), "65 tools"),
        (json!({"tools": 1, "schema_bytes": 70_000}), "parameters"),
        (json!({"alias": "a".repeat(65)}), "alias"),
        (json!({"temperature": 2.5}), "temperature"),
    ];
    for (input, expected) in cases {
        let out = probe(Some(services.clone()), input.clone()).await;
        assert_eq!(out["error"]["kind"], "invalid-input", "{input}: {out}");
        let message = out["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{input}: {message}");
    }
    assert!(services.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_chat_call_is_converted_to_the_run_services_and_back() {
    let services = Arc::new(Scripted::answering("hello there"));
    let out = probe(
        Some(services.clone()),
        json!({"alias": "smart", "tools": 1, "temperature": 0.0}),
    )
    .await;
    assert_eq!(out["content"], "hello there", "{out}");
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 10, "output_tokens": 5})
    );
    assert_eq!(out["cached"], false);
    let requests = services.requests.lock().unwrap();
    let (alias, req) = requests.first().unwrap();
    assert_eq!(alias, "smart");
    assert_eq!(req.messages.len(), 1);
    assert_eq!(req.messages.first().unwrap().role, Role::User);
    assert_eq!(req.tools.first().unwrap().name, "tool-0");
    assert_eq!(req.temperature, Some(0.0));
}

#[tokio::test]
async fn the_llm_agent_loops_model_tool_model_until_the_model_answers() {
    let services = Arc::new(Scripted::new(vec![
        tool_call_reply("c1", "text__word_count", r#"{"text":"a b c"}"#),
        ChatResponse {
            content: "There are 3 words.".into(),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage: Usage {
                input_tokens: 30,
                output_tokens: 6,
            },
            cached: false,
        },
    ]));
    let config = json!({
        "model": "fast",
        "tools": [{"tool": "text/word_count", "description": "Counts words",
                   "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}],
        "max_steps": 4,
    });
    let out = run_llm_agent(services.clone(), &config).await;
    let out = json_output(&out);
    assert_eq!(out["answer"], "There are 3 words.", "{out}");
    assert_eq!(out["steps"], 2);
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 40, "output_tokens": 8})
    );
    assert_eq!(out["tool_calls"][0]["tool"], "text/word_count");

    assert_eq!(
        *services.tools.lock().unwrap(),
        vec![("text/word_count".to_string(), json!({"text": "a b c"}))]
    );
    let requests = services.requests.lock().unwrap();
    let (_, second) = requests.get(1).unwrap();
    let roles: Vec<Role> = second.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::System, Role::User, Role::Assistant, Role::Tool]
    );
    let assistant = second.messages.get(2).unwrap();
    assert_eq!(assistant.tool_calls.first().unwrap().id, "c1");
    let tool = second.messages.get(3).unwrap();
    assert_eq!(tool.tool_call_id.as_deref(), Some("c1"));
    assert_eq!(
        serde_json::from_str::<Value>(&tool.content).unwrap(),
        json!({"words": 3})
    );
    assert_eq!(second.tools.first().unwrap().name, "text__word_count");
}

#[tokio::test]
async fn the_llm_agent_stops_at_its_step_cap() {
    // A model that never stops calling tools.
    let services = Arc::new(Scripted::new(Vec::new()));
    let config = json!({"tools": ["text/word_count"], "max_steps": 3});
    let outcome = run_llm_agent(services.clone(), &config).await;
    let f = outcome.result.unwrap_err();
    assert_eq!(f.code, ErrorCode::PluginError);
    assert!(f.message.contains("after 3 model calls"), "{}", f.message);
    assert_eq!(services.requests.lock().unwrap().len(), 3);
}

async fn run_llm_agent(services: Arc<Scripted>, config: &Value) -> corral::engine::Outcome {
    let engine = engine();
    let plugin = load(&engine, "llm_agent").await;
    let how = Invocation {
        limits: limits(),
        services: Some(services),
        ..Invocation::default()
    };
    engine
        .invoke(
            &plugin,
            call_with_config(&json!({"task": "How many words in 'a b c'?"}), config),
            how,
        )
        .await
}

fn tool_call_reply(id: &str, name: &str, arguments: &str) -> ChatResponse {
    ChatResponse {
        content: String::new(),
        tool_calls: vec![ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }],
        finish_reason: FinishReason::ToolCalls,
        usage: Usage {
            input_tokens: 10,
            output_tokens: 2,
        },
        cached: false,
    }
}

/// Run services whose model answers from a script (the provider side is the other half
/// of the seam, tested with real providers on loopback), and whose one tool counts words.
struct Scripted {
    replies: Mutex<VecDeque<ChatResponse>>,
    requests: Mutex<Vec<(String, ChatRequest)>>,
    tools: Mutex<Vec<(String, Value)>>,
}

impl Scripted {
    /// Answers from `replies` in turn; once they are used up, calls a tool every time.
    fn new(replies: Vec<ChatResponse>) -> Self {
        Scripted {
            replies: Mutex::new(replies.into()),
            requests: Mutex::new(Vec::new()),
            tools: Mutex::new(Vec::new()),
        }
    }

    fn answering(content: &str) -> Self {
        Scripted::new(vec![ChatResponse {
            content: content.into(),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage: Usage {
                input_tokens: 10,
                output_tokens: 5,
            },
            cached: false,
        }])
    }
}

#[async_trait::async_trait]
impl RunServices for Scripted {
    async fn call_tool(&self, name: &str, arguments: &str) -> Result<String, PluginError> {
        let args: Value = serde_json::from_str(arguments).unwrap();
        let words = args["text"]
            .as_str()
            .unwrap_or("")
            .split_whitespace()
            .count();
        self.tools.lock().unwrap().push((name.into(), args));
        Ok(json!({ "words": words }).to_string())
    }
    async fn put_artifact(&self, _: &str, _: &str, _: &[u8]) -> Result<String, PluginError> {
        Err(PluginError::Permanent("no artifacts here".into()))
    }
    async fn ask(&self, _: &str, _: Option<&str>) -> Result<String, PluginError> {
        Err(PluginError::Permanent("nobody to ask here".into()))
    }
    async fn state_get(&self, _: &str) -> Option<Vec<u8>> {
        None
    }
    async fn state_set(&self, _: &str, _: &[u8]) -> Result<(), PluginError> {
        Err(PluginError::Permanent("no state here".into()))
    }
    async fn model(
        &self,
        alias: &str,
        request: &ChatRequest,
        _deltas: DeltaSink<'_>,
    ) -> Result<ChatResponse, PluginError> {
        self.requests
            .lock()
            .unwrap()
            .push((alias.into(), request.clone()));
        Ok(self
            .replies
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| tool_call_reply("again", "text__word_count", r#"{"text":"x"}"#)))
    }
}
