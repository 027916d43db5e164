//! `GET /metrics` rendering and the request-counting middleware.

use crate::metrics::global;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// Counts responses by class.
pub async fn track(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let class = match response.status().as_u16() {
        200..=399 => 0,
        400..=499 => 1,
        _ => 2,
    };
    if let Some(c) = global().http.get(class) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    response
}

/// The Prometheus text for runs by status, tenants' fuel and the process metrics.
pub fn render(
    runs: &[(String, i64)],
    tenants: &[crate::store::TenantRecord],
    open_streams: usize,
) -> String {
    let m = global();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP corral_runs Runs by status.\n# TYPE corral_runs gauge"
    );
    for (status, n) in runs {
        let _ = writeln!(out, "corral_runs{{status=\"{status}\"}} {n}");
    }
    let queued = runs
        .iter()
        .find(|(s, _)| s == "queued")
        .map(|(_, n)| *n)
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "# HELP corral_queue_depth Queued runs.\n# TYPE corral_queue_depth gauge\ncorral_queue_depth {queued}"
    );
    // `/metrics` needs no token, so it names no tenant: the fleet's total only. A
    // per-tenant breakdown is left to an authenticated route (not built yet).
    let fuel: i64 = tenants.iter().map(|t| t.fuel_used).sum();
    let _ = writeln!(
        out,
        "# HELP corral_tenants_fuel_used Fuel used by all tenants' runs.\n# TYPE corral_tenants_fuel_used counter\ncorral_tenants_fuel_used {fuel}"
    );
    let tokens: i64 = tenants.iter().map(|t| t.tokens_used).sum();
    #[allow(clippy::cast_precision_loss)] // a display figure
    let stored_cost = tenants.iter().map(|t| t.cost_micros).sum::<i64>() as f64 / 1e6;
    let _ = writeln!(
        out,
        "# HELP corral_tenants_tokens_used Model tokens used by all tenants' runs (stored, every host).
# TYPE corral_tenants_tokens_used counter
corral_tenants_tokens_used {tokens}
# HELP corral_tenants_model_cost Model cost of all tenants' runs at the configured prices (stored, every host).
# TYPE corral_tenants_model_cost counter
corral_tenants_model_cost {stored_cost}"
    );
    let _ = writeln!(
        out,
        "# HELP corral_fuel_used_total Fuel used by step attempts in this process.\n# TYPE corral_fuel_used_total counter\ncorral_fuel_used_total {}",
        m.fuel_used.load(Ordering::Relaxed)
    );
    #[allow(clippy::cast_precision_loss)] // a display figure
    let cost = m.model_cost_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(
        out,
        "# HELP corral_model_tokens_total Model tokens used by all tenants' calls in this process, as providers reported them.\n# TYPE corral_model_tokens_total counter\ncorral_model_tokens_total{{kind=\"input\"}} {}\ncorral_model_tokens_total{{kind=\"output\"}} {}\n# HELP corral_model_cache_hits_total Model calls answered from the host's cache.\n# TYPE corral_model_cache_hits_total counter\ncorral_model_cache_hits_total {}\n# HELP corral_model_cost_total Model cost at the configured prices, all tenants.\n# TYPE corral_model_cost_total counter\ncorral_model_cost_total {cost}",
        m.model_input_tokens.load(Ordering::Relaxed),
        m.model_output_tokens.load(Ordering::Relaxed),
        m.model_cache_hits.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP corral_open_streams Open SSE streams.\n# TYPE corral_open_streams gauge\ncorral_open_streams {open_streams}"
    );
    let _ = writeln!(
        out,
        "# HELP corral_http_responses_total HTTP responses by class.\n# TYPE corral_http_responses_total counter"
    );
    for (class, c) in ["2xx", "4xx", "5xx"].iter().zip(&m.http) {
        let _ = writeln!(
            out,
            "corral_http_responses_total{{class=\"{class}\"}} {}",
            c.load(Ordering::Relaxed)
        );
    }
    m.step_duration.render(
        "corral_step_duration_seconds",
        "Step attempt durations.",
        &mut out,
    );
    m.plugin_load.render(
        "corral_plugin_load_seconds",
        "Plugin load and compile times.",
        &mut out,
    );
    out
}
