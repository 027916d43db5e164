//! Webhook routes: registration (admins) and deliveries (public, signature-verified).

use super::AppState;
use super::auth::Admin;
use super::error::ApiError;
use super::extract::Path;
use super::handlers::Body;
use super::types::{DeliveryAccepted, NewWebhookBody, Reply, WebhookCreated, WebhookList};
use crate::engine::World;
use crate::runs::pipeline;
use crate::runs::webhooks::WebhookError;
use crate::store::NewWebhook;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

/// `POST /v1/webhooks`: registers a connector to receive signed deliveries, optionally
/// starting a pipeline per delivery (or per debounce window).
pub(super) async fn create_webhook(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Body(new): Body<NewWebhookBody>,
) -> Result<Reply<WebhookCreated>, ApiError> {
    let store = state.runner.store();
    if new.name.is_empty() || new.name.len() > 128 {
        return Err(ApiError::bad_request("name: 1 to 128 bytes"));
    }
    if new.signing_secrets.is_empty() || new.signing_secrets.len() > 2 {
        return Err(ApiError::bad_request(
            "signing_secrets: one secret name, or two while rotating",
        ));
    }
    let known: Vec<String> = store
        .secrets(&caller.tenant_id)
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    for name in &new.signing_secrets {
        crate::secrets::check_name(name).map_err(ApiError::bad_request)?;
        if !known.contains(name) {
            return Err(ApiError::bad_request(format!(
                "signing_secrets: there is no secret `{name}` (PUT /v1/secrets/{name} first)"
            )));
        }
    }
    let plugin_ref = pipeline::registered_plugin(&new.plugin)
        .map_err(|e| ApiError::bad_request(format!("plugin: {e}")))?;
    let registry = crate::runs::StoreRegistry::new(store.clone(), &caller.tenant_id);
    let bytes = pipeline::Registry::fetch(&registry, &plugin_ref)
        .await
        .map_err(|e| ApiError::bad_request(format!("plugin: {e}")))?;
    let plugin = state
        .runner
        .engine()
        .load_as(bytes, &caller.tenant_id)
        .await
        .map_err(|f| ApiError::bad_request(format!("plugin: {f}")))?;
    if plugin.world != World::Connector {
        return Err(ApiError::bad_request(format!(
            "plugin: `{}` is a {}, not a connector-plugin",
            new.plugin,
            plugin.world.as_str()
        )));
    }
    let pipeline_id = match &new.pipeline {
        None => None,
        Some(id) => Some(
            store
                .pipeline(&caller.tenant_id, id)
                .await?
                .ok_or_else(|| ApiError::bad_request(format!("pipeline: no pipeline `{id}`")))?
                .id,
        ),
    };
    let debounce_ms = match &new.debounce {
        None => 0,
        Some(text) => {
            let d = humantime::parse_duration(text)
                .map_err(|e| ApiError::bad_request(format!("debounce: `{text}`: {e}")))?;
            if d > std::time::Duration::from_secs(3600) {
                return Err(ApiError::bad_request("debounce: at most 1h"));
            }
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
        }
    };
    let record = store
        .create_webhook(
            &caller.tenant_id,
            &NewWebhook {
                name: new.name.clone(),
                plugin: new.plugin.clone(),
                signing_secrets: new.signing_secrets.clone(),
                pipeline_id,
                debounce_ms,
            },
        )
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "WEBHOOK_EXISTS",
                format!("a webhook named `{}` already exists", new.name),
            )
        })?;
    let url = format!("/v1/webhooks/{}", record.id);
    Ok(Reply::created(WebhookCreated {
        webhook: record,
        url,
    }))
}

/// `GET /v1/webhooks`.
pub(super) async fn list_webhooks(
    State(state): State<AppState>,
    Admin(caller): Admin,
) -> Result<Json<WebhookList>, ApiError> {
    let webhooks = state.runner.store().webhooks(&caller.tenant_id).await?;
    Ok(Json(WebhookList { webhooks }))
}

/// `DELETE /v1/webhooks/{id}`.
pub(super) async fn delete_webhook(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let found = state
        .runner
        .store()
        .delete_webhook(&caller.tenant_id, &id)
        .await?;
    ApiError::deleted(found, "WEBHOOK_NOT_FOUND", "webhook", &id)
}

/// `POST /v1/webhooks/{id}`: a delivery. No token: the signature is the credential, and
/// it is checked before the connector sees anything.
pub(super) async fn deliver(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Result<Reply<DeliveryAccepted>, ApiError> {
    // Read through our helper, so a body too large or too slow answers in our shape.
    let body = super::handlers::bytes(req).await?;
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_string(), v.to_string()))
        })
        .collect();
    match state.runner.deliver_webhook(&id, &pairs, &body).await {
        Ok(accepted) => Ok(Reply::accepted(DeliveryAccepted {
            items: accepted.items,
            run_id: accepted.run_id,
            batch_id: accepted.batch_id,
            woken: accepted.woken,
        })),
        Err(e) => Err(match e {
            WebhookError::NotFound(id) => ApiError::not_found("WEBHOOK_NOT_FOUND", "webhook", &id),
            WebhookError::BadRequest(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "INVALID_DELIVERY", m)
            }
            WebhookError::Unauthorized(m) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "INVALID_SIGNATURE", m)
            }
            WebhookError::Replay(d) => ApiError::new(
                StatusCode::CONFLICT,
                "REPLAYED_DELIVERY",
                format!("delivery `{d}` was already received"),
            ),
            WebhookError::Connector(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "CONNECTOR_FAILED", m)
            }
            WebhookError::Run(e) => ApiError::from(e),
            WebhookError::Store(e) => ApiError::from(e),
        }),
    }
}
