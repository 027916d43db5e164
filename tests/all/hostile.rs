//! Hostile guests (SECURITY-CASES RES, SBX): each ends in its typed failure, the host
//! stays up, and the same engine runs `echo` correctly afterwards.

use crate::util::*;
use corral::engine::{ErrorCode, Invocation, Limits};
use std::time::{Duration, Instant};

#[tokio::test]
async fn res_01_infinite_loop_hits_fuel_budget() {
    let engine = engine();
    let limits = Limits {
        fuel: Some(100_000_000),
        ..limits()
    };
    let outcome = run_agent(&engine, "spin_loop", "{}", limits).await;
    let f = outcome.result.unwrap_err();
    assert_eq!(f.code, ErrorCode::BudgetExhausted, "{f}");
    assert!(
        outcome.fuel_used >= 100_000_000 - 1_000,
        "{}",
        outcome.fuel_used
    );
    assert_echo_still_works(&engine).await;
}

#[tokio::test]
async fn res_01_unmetered_loop_hits_the_wall_clock() {
    let engine = engine();
    let limits = Limits {
        fuel: None,
        timeout: Duration::from_secs(1),
        ..limits()
    };
    let started = Instant::now();
    let outcome = run_agent(&engine, "spin_loop", "{}", limits).await;
    assert_eq!(
        outcome.result.unwrap_err().code,
        ErrorCode::DeadlineExceeded
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_echo_still_works(&engine).await;
}

#[tokio::test]
async fn res_02_guest_blocked_on_a_clock_hits_the_wall_clock() {
    let engine = engine();
    let limits = Limits {
        timeout: Duration::from_secs(1),
        ..limits()
    };
    let started = Instant::now();
    let outcome = run_agent(&engine, "sleeper", r#"{"secs": 3600}"#, limits).await;
    let f = outcome.result.unwrap_err();
    assert_eq!(f.code, ErrorCode::DeadlineExceeded, "{f}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // Sleeping burns no fuel: fuel alone could never have stopped it.
    assert!(outcome.fuel_used < 10_000_000, "{}", outcome.fuel_used);
    assert_echo_still_works(&engine).await;
}

#[tokio::test]
async fn res_15_a_guest_stopped_by_its_deadline_or_a_cancel_is_charged_its_fuel() {
    let engine = engine();
    let plugin = load(&engine, "spin_loop").await;
    // Deadline: metered far beyond what a second can burn, so the clock stops it.
    let how = Invocation {
        limits: Limits {
            fuel: Some(u64::MAX / 2),
            timeout: Duration::from_secs(1),
            ..limits()
        },
        ..Invocation::default()
    };
    let outcome = engine.invoke(&plugin, run_call("{}"), how).await;
    assert_eq!(
        outcome.result.unwrap_err().code,
        ErrorCode::DeadlineExceeded
    );
    // A second of a tight loop is billions of units; even a starved guest burns far
    // more than the ~2,000 units charged before the loop began (the old bug).
    assert!(outcome.fuel_used > 50_000_000, "{}", outcome.fuel_used);

    // Cancel: the same, and unmetered calls (`corral call`) are measured too.
    let cancel = tokio_util::sync::CancellationToken::new();
    let how = Invocation {
        limits: Limits {
            fuel: None,
            timeout: Duration::from_secs(60),
            ..limits()
        },
        cancel: cancel.clone(),
        ..Invocation::default()
    };
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        cancel.cancel();
    });
    let outcome = engine.invoke(&plugin, run_call("{}"), how).await;
    canceller.await.unwrap();
    assert_eq!(outcome.result.unwrap_err().code, ErrorCode::Cancelled);
    assert!(outcome.fuel_used > 50_000_000, "{}", outcome.fuel_used);
    assert!(outcome.fuel_used < u64::MAX / 4, "{}", outcome.fuel_used);
    assert_echo_still_works(&engine).await;
}

#[tokio::test]
async fn res_03_memory_growth_is_refused_at_the_cap() {
    let engine = engine();
    let limits = Limits {
        memory_bytes: 64 << 20,
        ..limits()
    };
    let outcome = run_agent(&engine, "memory_hog", r#"{"mode":"vec"}"#, limits.clone()).await;
    let f = outcome.result.unwrap_err();
    assert_eq!(f.code, ErrorCode::MemoryLimit, "{f}");

    // Raw memory.grow: the guest sees the refusal (-1) and reports it itself; the
    // failure is still the memory cap's, with the guest's words kept.
    let outcome = run_agent(&engine, "memory_hog", r#"{"mode":"grow"}"#, limits).await;
    let f = outcome.result.unwrap_err();
    assert_eq!(f.code, ErrorCode::MemoryLimit, "{f}");
    assert!(f.message.contains("memory.grow refused"), "{f}");
    assert_echo_still_works(&engine).await;
}

#[tokio::test]
async fn res_05_unbounded_recursion_is_stack_overflow() {
    let engine = engine();
    let outcome = run_agent(&engine, "deep_recursion", "{}", limits()).await;
    let f = outcome.result.unwrap_err();
    assert_eq!(f.code, ErrorCode::StackOverflow, "{f}");
    assert_echo_still_works(&engine).await;
}

#[tokio::test]
async fn res_07_huge_return_value_is_output_too_large() {
    let engine = engine();
    // Bigger than what the guest may hand the host in one call: refused while lifting,
    // before the host allocates for it.
    let limits = Limits {
        memory_bytes: 512 << 20,
        max_transfer_bytes: 8 << 20,
        max_output_bytes: 1 << 20,
        ..limits()
    };
    let outcome = run_agent(
        &engine,
        "huge_output",
        r#"{"bytes": 40000000}"#,
        limits.clone(),
    )
    .await;
    let f = outcome.result.unwrap_err();
    assert_eq!(f.code, ErrorCode::OutputTooLarge, "{f}");

    // Within the transfer cap but over the output cap: refused after lifting.
    let outcome = run_agent(
        &engine,
        "huge_output",
        r#"{"bytes": 4000000}"#,
        limits.clone(),
    )
    .await;
    let f = outcome.result.unwrap_err();
    assert_eq!(f.code, ErrorCode::OutputTooLarge, "{f}");

    // A huge single log message is bounded the same way.
    let outcome = run_agent(
        &engine,
        "huge_output",
        r#"{"bytes": 40000000, "mode": "log"}"#,
        limits,
    )
    .await;
    let f = outcome.result.unwrap_err();
    assert_eq!(f.code, ErrorCode::OutputTooLarge, "{f}");
    assert_echo_still_works(&engine).await;
}

#[tokio::test]
async fn res_10_stdout_flood_is_capped_with_a_truncation_notice() {
    let engine = engine();
    let limits = Limits {
        max_log_bytes: 64 << 10,
        ..limits()
    };
    for input in [
        r#"{"bytes": 16777216}"#,
        r#"{"bytes": 4194304, "stderr": true}"#,
        r#"{"bytes": 16777216, "via": "log"}"#,
    ] {
        let outcome = run_agent(&engine, "stdout_flood", input, limits.clone()).await;
        let out = json_output(&outcome);
        assert!(out["written"].as_u64().unwrap() > 0, "{out}");
        assert!(outcome.logs_truncated, "{input}");
        let kept: usize = outcome.logs.iter().map(|l| l.message.len()).sum();
        assert!(kept <= 64 << 10, "{kept}");
    }
    assert_echo_still_works(&engine).await;
}

#[tokio::test]
async fn trap_a_panicking_guest_fails_with_its_own_message() {
    let engine = engine();
    let outcome = run_agent(&engine, "panicker", "{}", limits()).await;
    let f = outcome.result.unwrap_err();
    assert_eq!(f.code, ErrorCode::Trap);
    assert!(
        f.message.contains("boom: this guest panicked on purpose"),
        "{}",
        f.message
    );
    assert_echo_still_works(&engine).await;
}

#[tokio::test]
async fn sbx_01_04_07_escaper_reads_nothing_outside_its_scratch_dir() {
    let root = tempfile::tempdir().unwrap();
    let scratch_root = root.path().join("scratch");
    std::fs::create_dir_all(&scratch_root).unwrap();
    // The canary sits beside the scratch dirs, one `..` away from /work.
    std::fs::write(scratch_root.join("canary.txt"), "CANARY-7f3a").unwrap();
    std::fs::write(root.path().join("canary.txt"), "CANARY-7f3a").unwrap();
    let engine = engine_with_scratch(&scratch_root);
    let outcome = run_agent(&engine, "escaper", r#"{"canary": "canary.txt"}"#, limits()).await;
    let report = json_output(&outcome);
    assert_eq!(report["leaked"], serde_json::json!([]), "{report:#}");
    assert_eq!(
        report["inside_ok"], true,
        "the scratch dir itself works: {report:#}"
    );
    let text = report.to_string();
    assert!(
        !text.contains("CANARY-7f3a"),
        "canary content leaked: {report:#}"
    );
    assert!(
        !text.contains("root:x:0:0"),
        "/etc/passwd leaked: {report:#}"
    );
    assert!(
        report["attempts"].as_array().unwrap().len() >= 15,
        "{report:#}"
    );
    assert_echo_still_works(&engine).await;
}

#[tokio::test]
async fn sbx_06_scratch_dirs_are_fresh_per_invocation_and_removed_after() {
    let root = tempfile::tempdir().unwrap();
    let engine = engine_with_scratch(root.path());
    for _ in 0..2 {
        let outcome = run_agent(&engine, "escaper", "{}", limits()).await;
        let report = json_output(&outcome);
        // The escaper writes /work/inside.txt; a fresh dir means it never sees the last one.
        assert_eq!(report["inside_ok"], true, "{report:#}");
        // Removal happens off the call path: give it a moment (bounded).
        let mut left = Vec::new();
        for _ in 0..200 {
            left = std::fs::read_dir(root.path()).unwrap().collect::<Vec<_>>();
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(left.is_empty(), "scratch dirs left behind: {left:?}");
    }
}

#[tokio::test]
async fn sbx_10_guest_sees_no_env_vars_args_or_host_secrets() {
    let engine = engine();
    let outcome = run_agent(&engine, "env_prober", "{}", limits()).await;
    let report = json_output(&outcome);
    assert_eq!(report["env"], serde_json::json!([]), "{report:#}");
    let args = report["args"].as_array().unwrap();
    assert!(args.is_empty(), "{report:#}");
    let text = report.to_string();
    for secret in ["DATABASE_URL", "HOME", "PATH", "CORRAL_TEST_POSTGRES_URL"] {
        assert!(!text.contains(secret), "{secret} visible: {report:#}");
    }
    assert_echo_still_works(&engine).await;
}

#[tokio::test]
async fn sbx_08_raw_sockets_and_name_lookup_are_refused() {
    let engine = engine();
    let outcome = run_agent(&engine, "env_prober", "{}", limits()).await;
    let report = json_output(&outcome);
    let sockets = report["sockets"].as_array().unwrap();
    assert!(sockets.len() >= 3, "{report:#}");
    for s in sockets {
        assert_eq!(s["ok"], false, "socket allowed: {s}");
    }
    assert_eq!(report["dns"]["ok"], false, "{report:#}");
}

#[tokio::test]
async fn res_14_cpu_bound_guests_do_not_starve_each_other() {
    // As many spinning guests as cores, plus one more: echo still completes promptly
    // because every guest yields to the executor at each epoch tick.
    let engine = engine();
    let spinners: Vec<_> = (0..3)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let limits = Limits {
                    fuel: None,
                    timeout: Duration::from_secs(5),
                    ..limits()
                };
                run_agent(&engine, "spin_loop", "{}", limits).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    assert_echo_still_works(&engine).await;
    let echo_time = started.elapsed();
    for s in spinners {
        assert_eq!(
            s.await.unwrap().result.unwrap_err().code,
            ErrorCode::DeadlineExceeded
        );
    }
    assert!(
        echo_time < Duration::from_secs(4),
        "echo waited {echo_time:?} behind spinning guests"
    );
}

#[tokio::test]
async fn sbx_11_memory_left_by_one_run_is_never_seen_by_the_next_in_the_same_slot() {
    // One pool slot: the second invocation necessarily reuses the first one's memory slot.
    let dir = tempfile::tempdir().unwrap();
    let engine = corral::engine::Engine::new(corral::engine::EngineConfig {
        cache_dir: Some(cache_dir()),
        scratch_root: dir.path().to_path_buf(),
        max_concurrent: 1,
        ..Default::default()
    })
    .unwrap();
    let control = json_output(
        &run_agent(
            &engine,
            "memory_hog",
            r#"{"mode":"mark-and-scan"}"#,
            limits(),
        )
        .await,
    );
    assert!(
        control["markers_found"].as_u64().unwrap() > 1000,
        "the scanner finds markers: {control}"
    );
    let marked =
        json_output(&run_agent(&engine, "memory_hog", r#"{"mode":"mark"}"#, limits()).await);
    assert_eq!(marked["marked_bytes"], 8 << 20);
    let scanned =
        json_output(&run_agent(&engine, "memory_hog", r#"{"mode":"scan"}"#, limits()).await);
    assert!(
        scanned["scanned_bytes"].as_u64().unwrap() >= 8 << 20,
        "{scanned}"
    );
    assert_eq!(scanned["markers_found"], 0, "{scanned}");
}

#[tokio::test]
async fn res_08_a_guest_holding_ever_more_handles_hits_the_cap() {
    let engine = engine();
    let limits = Limits {
        max_handles: 1_000,
        ..limits()
    };
    let outcome = run_agent(&engine, "handle_hog", "{}", limits).await;
    let f = outcome.result.unwrap_err();
    assert_eq!(f.code, ErrorCode::ResourceLimit, "{f}");
    assert!(f.message.contains("more than 1000 handles"), "{f}");
    assert_echo_still_works(&engine).await;
}

fn disk_filler_limits(bytes: u64, entries: u64) -> Limits {
    Limits {
        scratch_bytes: bytes,
        scratch_entries: entries,
        ..limits()
    }
}

/// A write through an output stream was refused. The stream's error carries
/// `insufficient-space` for a guest that asks (`filesystem-error-code`); Rust's std does
/// not ask and reports every stream error as EIO (wasi errno 29), so either is a refusal.
fn assert_stream_write_refused(report: &serde_json::Value) {
    let errno = report["errno"].as_i64();
    assert!(
        errno == Some(29) || errno == Some(51),
        "expected EIO or ENOSPC: {report:#}"
    );
}

#[tokio::test]
async fn res_16_a_guest_writing_past_its_scratch_quota_gets_a_write_error() {
    let engine = engine();
    let quota = 8 << 20;
    // 64 MiB against an 8 MiB quota, 1 MiB at a time and in odd-sized pieces.
    for chunk in [1 << 20, 12_345] {
        let input = format!(r#"{{"mode":"write","bytes":{},"chunk":{chunk}}}"#, 64 << 20);
        let outcome = run_agent(
            &engine,
            "disk_filler",
            &input,
            disk_filler_limits(quota, 1_000),
        )
        .await;
        let report = json_output(&outcome);
        assert_stream_write_refused(&report);
        let on_disk = report["bytes_on_disk"].as_u64().unwrap();
        assert!(on_disk <= quota, "{on_disk} bytes on disk: {report:#}");
        assert!(
            on_disk >= quota - (1 << 20),
            "the quota is usable: {report:#}"
        );
        assert!(report["done"].as_u64().unwrap() <= quota, "{report:#}");
    }
    // The default quota (64 MiB) holds without any setting.
    let input = format!(r#"{{"mode":"write","bytes":{}}}"#, 80 << 20);
    let outcome = run_agent(&engine, "disk_filler", &input, limits()).await;
    let report = json_output(&outcome);
    assert_stream_write_refused(&report);
    assert!(
        report["bytes_on_disk"].as_u64().unwrap() <= 64 << 20,
        "{report:#}"
    );
    assert_echo_still_works(&engine).await;
}

#[tokio::test]
async fn res_16_a_sparse_file_cannot_dodge_the_scratch_quota() {
    let engine = engine();
    let input = format!(r#"{{"mode":"set_len","bytes":{}}}"#, 1u64 << 40);
    let outcome = run_agent(
        &engine,
        "disk_filler",
        &input,
        disk_filler_limits(8 << 20, 1_000),
    )
    .await;
    let report = json_output(&outcome);
    assert_eq!(report["error"], "StorageFull", "{report:#}");
    assert_eq!(report["bytes_on_disk"], 0, "{report:#}");
}

#[tokio::test]
async fn res_16_a_guest_creating_millions_of_files_stops_at_the_entry_cap() {
    let engine = engine();
    for mode in ["files", "dirs"] {
        let input = format!(r#"{{"mode":"{mode}","count":1000000}}"#);
        let outcome = run_agent(&engine, "disk_filler", &input, limits()).await;
        let report = json_output(&outcome);
        // EDQUOT (wasi `quota`): the default cap of 1000 entries.
        assert_eq!(report["error"], "QuotaExceeded", "{mode}: {report:#}");
        assert_eq!(report["done"], 1_000, "{mode}: {report:#}");
        assert_eq!(report["entries_on_disk"], 1_000, "{mode}: {report:#}");
    }
    assert_echo_still_works(&engine).await;
}

#[tokio::test]
async fn res_16_rewriting_or_replacing_files_does_not_use_up_the_quota() {
    let engine = engine();
    let quota = disk_filler_limits(4 << 20, 10);
    // 1 MiB rewritten 40 times: a truncated file's bytes come back.
    let input = format!(r#"{{"mode":"rewrite","bytes":{},"count":40}}"#, 1 << 20);
    let report = json_output(&run_agent(&engine, "disk_filler", &input, quota.clone()).await);
    assert_eq!(report["error"], serde_json::Value::Null, "{report:#}");
    assert_eq!(report["done"], 40, "{report:#}");
    // A file created and deleted 100 times: a deleted entry comes back.
    let input = r#"{"mode":"churn","count":100}"#;
    let report = json_output(&run_agent(&engine, "disk_filler", input, quota).await);
    assert_eq!(report["error"], serde_json::Value::Null, "{report:#}");
    assert_eq!(report["done"], 100, "{report:#}");
}

#[tokio::test]
async fn res_16_a_guest_that_traps_on_the_quota_fails_with_resource_limit() {
    let engine = engine();
    let input = format!(r#"{{"mode":"panic","bytes":{}}}"#, 16 << 20);
    let outcome = run_agent(
        &engine,
        "disk_filler",
        &input,
        disk_filler_limits(1 << 20, 1_000),
    )
    .await;
    let f = outcome.result.unwrap_err();
    assert_eq!(f.code, ErrorCode::ResourceLimit, "{f}");
    assert!(f.message.contains("quota of 1048576 bytes"), "{f}");
    assert_echo_still_works(&engine).await;
}
