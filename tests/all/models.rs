//! Models through the host's gateway (`corral::models`), against a provider on loopback
//! that speaks both real protocols.

use crate::support::provider::FakeProvider;
use corral::models::{
    CallContext, ChatRequest, FinishReason, HttpGateway, Message, ModelConfig, ModelError,
    ModelGateway, ModelsConfig, Provider, Role, StaticKeys, ToolDefinition,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const KEY: &str = "sk-test-very-secret-key-0123456789";

fn alias(provider: Provider, base_url: &str, stream: bool) -> ModelConfig {
    ModelConfig {
        provider,
        base_url: base_url.to_string(),
        model: "m-1".into(),
        key_secret: Some("llm_key".into()),
        max_tokens: Some(100),
        input_price_per_million: None,
        output_price_per_million: None,
        log_prompts: false,
        stream: Some(stream),
        timeout_secs: Some(30),
    }
}

fn gateway(fake: &FakeProvider) -> HttpGateway {
    let mut aliases = BTreeMap::new();
    for (name, p, stream) in [
        ("oa", Provider::Openai, false),
        ("oa-stream", Provider::Openai, true),
        ("an", Provider::Anthropic, false),
        ("an-stream", Provider::Anthropic, true),
    ] {
        let url = match p {
            Provider::Openai => fake.openai_url(),
            Provider::Anthropic => fake.base_url.clone(),
        };
        aliases.insert(name.to_string(), alias(p, &url, stream));
    }
    let mut keys = StaticKeys::default();
    keys.0
        .insert(("t1".into(), "llm_key".into()), KEY.to_string());
    HttpGateway::new(
        ModelsConfig {
            aliases,
            ..ModelsConfig::default()
        },
        Arc::new(keys),
    )
    .unwrap()
}

fn ctx() -> CallContext {
    CallContext {
        tenant: "t1".into(),
        run_id: None,
    }
}

fn msg(role: Role, content: &str) -> Message {
    Message {
        role,
        content: content.into(),
        tool_calls: vec![],
        tool_call_id: None,
    }
}

fn request(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![msg(Role::System, "be brief"), msg(Role::User, text)],
        ..ChatRequest::default()
    }
}

const ALIASES: [&str; 4] = ["oa", "oa-stream", "an", "an-stream"];

#[tokio::test]
async fn res_20_both_protocols_answer_and_report_usage_streaming_and_not() {
    let fake = FakeProvider::start().await;
    let gw = gateway(&fake);
    for a in ALIASES {
        let got = Mutex::new(String::new());
        let sink = |d: &str| got.lock().unwrap().push_str(d);
        let answer = gw
            .complete(&ctx(), a, &request("hello there"), &sink)
            .await
            .unwrap_or_else(|e| panic!("{a}: {e}"));
        assert_eq!(answer.content, "echo: hello there", "{a}");
        assert_eq!(answer.finish_reason, FinishReason::Stop, "{a}");
        assert!(answer.usage.input_tokens > 0, "{a}: {answer:?}");
        assert_eq!(answer.usage.output_tokens, 3, "{a}");
        assert!(!answer.cached);
        assert_eq!(*got.lock().unwrap(), answer.content, "{a}: deltas");
    }
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 4);
    // OpenAI: bearer key, the default max_tokens, stream options when streaming.
    let oa = &reqs[0];
    assert_eq!(oa.path, "/v1/chat/completions");
    assert_eq!(oa.headers["authorization"], format!("Bearer {KEY}"));
    assert_eq!(oa.body["max_tokens"], 100);
    assert_eq!(oa.body["messages"][0]["role"], "system");
    assert!(oa.body.get("stream").is_none());
    assert_eq!(reqs[1].body["stream"], true);
    assert_eq!(reqs[1].body["stream_options"]["include_usage"], true);
    // Anthropic: x-api-key, a version, the system prompt apart from the messages.
    let an = &reqs[2];
    assert_eq!(an.path, "/v1/messages");
    assert_eq!(an.headers["x-api-key"], KEY);
    assert!(an.headers.get("authorization").is_none());
    assert!(an.headers.get("anthropic-version").is_some());
    assert_eq!(an.body["system"], "be brief");
    assert_eq!(an.body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(an.body["messages"][0]["role"], "user");
    assert_eq!(reqs[3].body["stream"], true);
}

#[tokio::test]
async fn res_20_tool_calls_and_their_streamed_arguments_round_trip() {
    let fake = FakeProvider::start().await;
    let gw = gateway(&fake);
    for a in ALIASES {
        let mut req = request("please CALL_TOOL");
        req.tools = vec![ToolDefinition {
            name: "lookup".into(),
            description: "looks things up".into(),
            parameters: r#"{"type":"object","properties":{"text":{"type":"string"}}}"#.into(),
        }];
        let answer = gw.complete(&ctx(), a, &req, &|_| {}).await.unwrap();
        assert_eq!(answer.finish_reason, FinishReason::ToolCalls, "{a}");
        assert_eq!(answer.tool_calls.len(), 1, "{a}");
        let call = &answer.tool_calls[0];
        assert_eq!(call.name, "lookup", "{a}");
        let args: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
        assert_eq!(args, serde_json::json!({"text": "x"}), "{a}");
        // The conversation continues with the tool's result.
        req.messages.push(Message {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: answer.tool_calls.clone(),
            tool_call_id: None,
        });
        req.messages.push(Message {
            role: Role::Tool,
            content: "42".into(),
            tool_calls: vec![],
            tool_call_id: Some(call.id.clone()),
        });
        let answer = gw.complete(&ctx(), a, &req, &|_| {}).await.unwrap();
        assert_eq!(answer.finish_reason, FinishReason::Stop, "{a}");
        assert!(answer.tool_calls.is_empty(), "{a}");
    }
    let reqs = fake.requests();
    // OpenAI's tools are functions; Anthropic's carry input_schema, results are blocks.
    assert_eq!(reqs[0].body["tools"][0]["type"], "function");
    assert_eq!(reqs[1].body["messages"][3]["role"], "tool");
    assert_eq!(reqs[1].body["messages"][3]["tool_call_id"], "call_1");
    assert_eq!(reqs[4].body["tools"][0]["input_schema"]["type"], "object");
    let an = &reqs[5].body["messages"];
    assert_eq!(an[1]["content"][0]["type"], "tool_use");
    assert_eq!(an[2]["content"][0]["type"], "tool_result");
    assert_eq!(an[2]["content"][0]["tool_use_id"], "toolu_1");
}

#[tokio::test]
async fn res_20_a_response_schema_becomes_response_format_or_a_system_instruction() {
    let fake = FakeProvider::start().await;
    let gw = gateway(&fake);
    let mut req = request("hi");
    req.response_schema = Some(r#"{"type":"object"}"#.into());
    req.stop = vec!["END".into()];
    gw.complete(&ctx(), "oa", &req, &|_| {}).await.unwrap();
    gw.complete(&ctx(), "an", &req, &|_| {}).await.unwrap();
    let reqs = fake.requests();
    let rf = &reqs[0].body["response_format"];
    assert_eq!(rf["type"], "json_schema");
    assert_eq!(rf["json_schema"]["schema"]["type"], "object");
    assert_eq!(reqs[0].body["stop"][0], "END");
    assert!(
        reqs[1].body["system"]
            .as_str()
            .unwrap()
            .contains("JSON Schema")
    );
    assert_eq!(reqs[1].body["stop_sequences"][0], "END");
}

#[tokio::test]
async fn res_20_cache_hits_cost_no_tokens_and_say_so() {
    let fake = FakeProvider::start().await;
    let gw = gateway(&fake);
    for a in ALIASES {
        let mut req = request(&format!("cache me {a}"));
        req.temperature = Some(0.0);
        let first = gw.complete(&ctx(), a, &req, &|_| {}).await.unwrap();
        assert!(!first.cached);
        assert!(first.usage.total() > 0);
        let got = Mutex::new(String::new());
        let second = gw
            .complete(&ctx(), a, &req, &|d| got.lock().unwrap().push_str(d))
            .await
            .unwrap();
        assert!(second.cached, "{a}");
        assert_eq!(second.usage.total(), 0, "{a}");
        assert_eq!(second.content, first.content);
        assert_eq!(*got.lock().unwrap(), first.content);
    }
    assert_eq!(fake.requests().len(), 4, "each alias sent once");
    // Another tenant does not share the cache, and a non-zero temperature is not cached.
    let mut req = request("cache me oa");
    req.temperature = Some(0.0);
    let other = CallContext {
        tenant: "t2".into(),
        run_id: None,
    };
    // t2 has no key secret: the call is refused before anything is sent.
    let e = gw.complete(&other, "oa", &req, &|_| {}).await.unwrap_err();
    assert!(matches!(e, ModelError::Permanent(_)), "{e:?}");
    req.temperature = Some(0.5);
    let warm = gw.complete(&ctx(), "oa", &req, &|_| {}).await.unwrap();
    assert!(!warm.cached);
    assert_eq!(fake.requests().len(), 5);
}

#[tokio::test]
async fn res_20_provider_failures_map_to_transient_or_permanent_and_never_quote_the_key() {
    let fake = FakeProvider::start().await;
    let gw = gateway(&fake);
    for a in ALIASES {
        for (code, transient) in [
            (429, true),
            (500, true),
            (503, true),
            (400, false),
            (401, false),
        ] {
            let e = gw
                .complete(&ctx(), a, &request(&format!("STATUS_{code}")), &|_| {})
                .await
                .unwrap_err();
            assert_eq!(
                matches!(e, ModelError::Transient(_)),
                transient,
                "{a} {code}: {e:?}"
            );
            assert!(!matches!(e, ModelError::Transient(_)) || transient);
            assert!(e.to_string().contains(&code.to_string()), "{e}");
            assert!(!e.to_string().contains(KEY));
        }
    }
    let e = gw
        .complete(&ctx(), "nope", &request("x"), &|_| {})
        .await
        .unwrap_err();
    assert_eq!(e, ModelError::UnknownAlias("nope".into()));
    // Nothing listening: transient.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut aliases = BTreeMap::new();
    aliases.insert(
        "gone".to_string(),
        alias(Provider::Openai, &format!("http://{dead}/v1"), true),
    );
    let gw = HttpGateway::new(
        ModelsConfig {
            aliases,
            ..ModelsConfig::default()
        },
        Arc::new(StaticKeys::default()),
    )
    .unwrap();
    let mut no_key = request("x");
    no_key.max_tokens = Some(5);
    let e = gw
        .complete(&ctx(), "gone", &no_key, &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(e, ModelError::Permanent(_)),
        "missing key first: {e:?}"
    );
    let mut aliases = BTreeMap::new();
    let mut keyless = alias(Provider::Openai, &format!("http://{dead}/v1"), true);
    keyless.key_secret = None;
    aliases.insert("gone".to_string(), keyless);
    let gw = HttpGateway::new(
        ModelsConfig {
            aliases,
            ..ModelsConfig::default()
        },
        Arc::new(StaticKeys::default()),
    )
    .unwrap();
    let e = gw
        .complete(&ctx(), "gone", &no_key, &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(e, ModelError::Transient(_)),
        "refused connection: {e:?}"
    );
}

#[tokio::test]
async fn res_20_bad_config_is_refused_before_any_call() {
    for (base_url, model) in [
        ("ftp://x/v1", "m"),
        ("http://user:pw@127.0.0.1/v1", "m"),
        ("not a url", "m"),
        ("http://127.0.0.1/v1", ""),
    ] {
        let mut aliases = BTreeMap::new();
        let mut m = alias(Provider::Openai, base_url, false);
        m.model = model.into();
        aliases.insert("a".to_string(), m);
        let cfg = ModelsConfig {
            aliases,
            ..ModelsConfig::default()
        };
        assert!(
            HttpGateway::new(cfg, Arc::new(StaticKeys::default())).is_err(),
            "{base_url}"
        );
    }
    // A hosted provider over https is a good config (the client verifies its certificate).
    let mut aliases = BTreeMap::new();
    aliases.insert(
        "a".to_string(),
        alias(Provider::Openai, "https://api.openai.com/v1", false),
    );
    let cfg = ModelsConfig {
        aliases,
        ..ModelsConfig::default()
    };
    assert!(HttpGateway::new(cfg, Arc::new(StaticKeys::default())).is_ok());
    let mut aliases = BTreeMap::new();
    aliases.insert(
        "Bad Alias".to_string(),
        alias(Provider::Openai, "http://x/v1", false),
    );
    let cfg = ModelsConfig {
        aliases,
        ..ModelsConfig::default()
    };
    assert!(HttpGateway::new(cfg, Arc::new(StaticKeys::default())).is_err());
}

/// `examples/llm-agent`, end to end as its README runs it: `corral serve` with the alias
/// `fast` mapped to the loopback provider and the key a tenant secret, then `corral run
/// --server`, which uploads the agent, its manifest and the text tools. The model asks for
/// a tool, the agent calls it through the host, the model answers. Usage is real in the
/// run's result and events, and the key reaches the provider and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn res_20_the_llm_agent_example_runs_end_to_end_against_a_loopback_provider() {
    use crate::util::{Server, root};
    let fake = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corral.toml");
    std::fs::write(
        &config,
        format!(
            "[models.fast]\nprovider = \"openai\"\nbase_url = \"{}\"\nmodel = \"test-model\"\n\
             key_secret = \"OPENAI_API_KEY\"\ninput_price_per_million = 1000.0\n\
             output_price_per_million = 2000.0\n",
            fake.openai_url()
        ),
    )
    .unwrap();
    let config_path = config.to_str().unwrap().to_string();
    let server =
        tokio::task::spawn_blocking(move || Server::start(&[("CORRAL_CONFIG", &config_path)]))
            .await
            .unwrap();
    assert!(
        server.admin_token.starts_with("crl_"),
        "no first-start token"
    );
    let http = reqwest::Client::new();
    let put = http
        .put(format!("{}/v1/secrets/OPENAI_API_KEY", server.url))
        .bearer_auth(&server.admin_token)
        .json(&serde_json::json!({"value": KEY}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());

    let (url, token) = (server.url.clone(), server.admin_token.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
            .arg("run")
            .arg(root().join("examples/llm-agent/pipeline.toml"))
            .args([
                "--input",
                r#"{"task": "How many words are in x? CALL_TOOL"}"#,
            ])
            .args(["-o", "json", "--server", &url, "--token", &token])
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let doc: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    assert_eq!(doc["status"], "succeeded", "{doc:#}\n{stderr}");
    let output = &doc["output"];
    assert!(
        output["answer"]
            .as_str()
            .is_some_and(|a| a.starts_with("echo: ")),
        "{output:#}"
    );
    assert_eq!(
        output["tool_calls"][0]["tool"], "text/word_count",
        "{output:#}"
    );
    assert_eq!(output["tool_calls"][0]["ok"], true, "{output:#}");
    assert!(doc["tokens_used"].as_u64().unwrap_or(0) > 0, "{doc:#}");
    assert_eq!(
        doc["steps"][0]["tokens_used"], doc["tokens_used"],
        "{doc:#}"
    );
    // Prices in the config give the run and the step a cost (millionths of the currency).
    assert!(doc["cost_micros"].as_i64().unwrap_or(0) > 0, "{doc:#}");
    assert_eq!(
        doc["steps"][0]["cost_micros"], doc["cost_micros"],
        "{doc:#}"
    );

    // The same example with a run budget too small for one call: refused before anything
    // is sent, and the run fails once with BUDGET_EXHAUSTED.
    let example = std::fs::read_to_string(root().join("examples/llm-agent/pipeline.toml")).unwrap();
    let plugins = root().join("target/plugins");
    let tight = example
        .replace("tokens = 50_000", "tokens = 50")
        .replace("../../target/plugins", plugins.to_str().unwrap());
    assert!(tight.contains("tokens = 50 "), "{tight}");
    let tight_file = dir.path().join("tight.toml");
    std::fs::write(&tight_file, tight).unwrap();
    let before = fake.requests().len();
    let (url, token) = (server.url.clone(), server.admin_token.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
            .arg("run")
            .arg(&tight_file)
            .args(["--input", r#"{"task": "CALL_TOOL"}"#])
            .args(["-o", "json", "--server", &url, "--token", &token])
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let failed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert_eq!(failed["error"]["code"], "BUDGET_EXHAUSTED", "{failed:#}");
    assert_eq!(
        fake.requests().len(),
        before,
        "a refused call reached the provider"
    );
    let failed_id = failed["run_id"].as_str().unwrap();
    let failed_events = http
        .get(format!("{}/v1/runs/{failed_id}/events", server.url))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let terminal = failed_events
        .lines()
        .filter(|l| l.contains("\"all_done\":true"))
        .count();
    assert_eq!(terminal, 1, "{failed_events}");

    // Two model calls, each with the key as the bearer token and the tools offered.
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for r in &requests {
        assert_eq!(
            r.headers.get("authorization").and_then(|v| v.to_str().ok()),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert_eq!(r.body["model"], "test-model");
        assert!(r.body["tools"].as_array().is_some_and(|t| !t.is_empty()));
    }

    // The run's events: model calls with real usage, and the key nowhere.
    let run_id = doc["run_id"].as_str().unwrap();
    let events = http
        .get(format!("{}/v1/runs/{run_id}/events", server.url))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        events.matches("\"type\":\"model_call\"").count(),
        2,
        "{events}"
    );
    assert!(!events.contains(KEY), "the key is in the events");
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY));

    // /metrics has the tenants' stored tokens (a fleet total: it names no tenant).
    let metrics = http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let stored: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("corral_tenants_tokens_used "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert_eq!(Some(stored), doc["tokens_used"].as_i64(), "{metrics}");
    assert!(!metrics.contains("tenant="), "{metrics}");

    // Nor is it in clear anywhere in the server's data directory (its database included).
    let data = server.stop();
    let mut stack = vec![data.path().to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if let Ok(bytes) = std::fs::read(&p) {
            assert!(
                !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
                "the key is in clear in {}",
                p.display()
            );
        }
    }
}

/// RES-20 on the deadline path: a model call still in flight when the step's wall clock
/// runs out is stopped with the step, and stays charged the tokens reserved for it (the
/// prompt estimate plus its max-tokens) instead of going free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn res_20_a_model_call_cut_off_by_the_deadline_stays_charged_its_reservation() {
    use crate::util::{Server, root};
    let fake = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corral.toml");
    std::fs::write(
        &config,
        format!(
            "[models.fast]\nprovider = \"openai\"\nbase_url = \"{}\"\nmodel = \"m\"\n",
            fake.openai_url()
        ),
    )
    .unwrap();
    let example = std::fs::read_to_string(root().join("examples/llm-agent/pipeline.toml")).unwrap();
    let plugins = root().join("target/plugins");
    let pipeline = example
        .replace("../../target/plugins", plugins.to_str().unwrap())
        .replace(
            "[budget]",
            "[defaults]\ntimeout = \"2s\"\nmax_attempts = 1\n\n[budget]",
        );
    let file = dir.path().join("hang.toml");
    std::fs::write(&file, pipeline).unwrap();
    let config_path = config.to_str().unwrap().to_string();
    let server =
        tokio::task::spawn_blocking(move || Server::start(&[("CORRAL_CONFIG", &config_path)]))
            .await
            .unwrap();
    let (url, token) = (server.url.clone(), server.admin_token.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
            .arg("run")
            .arg(&file)
            .args(["--input", r#"{"task": "HANG"}"#])
            .args(["-o", "json", "--server", &url, "--token", &token])
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(doc["status"], "failed", "{doc:#}");
    assert_eq!(doc["error"]["code"], "DEADLINE_EXCEEDED", "{doc:#}");
    assert_eq!(fake.requests().len(), 1, "the call was sent");
    let run_id = doc["run_id"].as_str().unwrap();
    let run: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/runs/{run_id}", server.url))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The reservation: at least the default max-tokens (1024) plus the prompt.
    let charged = run["run"]["tokens_used"].as_i64().unwrap_or(0);
    assert!(charged > 1024, "{run:#}");
    assert_eq!(
        run["steps"][0]["tokens_used"].as_i64(),
        Some(charged),
        "{run:#}"
    );
}
