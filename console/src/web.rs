//! The console's web page: the recordings report, newest first, with
//! filters, an audio player per row (streamed through the console with
//! HTTP Range support so seeking works), downloads of one MP3, of the
//! selected rows or of a whole day as a ZIP streamed while it is built.
//! Server-rendered HTML, no JavaScript. Nothing here writes to the store.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use maud::{DOCTYPE, Markup, html};
use object_store::GetRange;
use serde::Deserialize;

use crate::access::{Access, Who};
use crate::catalog::{
    Catalog, CatalogError, Filter, PAGE, Recording, clock, hms, valid_day, valid_id,
};
use crate::metrics::Metrics;
use crate::zip::{ZipWriter, dos_time};

/// What every handler shares.
pub struct App {
    /// The policy's recordings.
    pub catalog: Arc<Catalog>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Shown in the page title: the policy's storage prefix.
    pub title: String,
    /// Who may use the page.
    pub access: Arc<Access>,
    /// How big a ZIP may get.
    pub zip_limits: ZipLimits,
}

/// The most a ZIP may hold unless the console is told otherwise.
#[derive(Debug, Clone, Copy)]
pub struct ZipLimits {
    /// Recordings in one archive.
    pub recordings: usize,
    /// Bytes of MP3 in one archive.
    pub bytes: u64,
}

impl Default for ZipLimits {
    fn default() -> Self {
        Self {
            recordings: 2000,
            bytes: 4 << 30,
        }
    }
}

fn audit(action: &'static str, what: &str, who: &Who, app: &App) {
    app.metrics.access(action);
    tracing::info!(
        target: "earshot_console::audit",
        action,
        recording = what,
        who = %who.0,
        "audit"
    );
}

/// The console's routes (the page, audio, sidecars, ZIPs, health, metrics).
/// Every page route goes through [`access::check`]; serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/r/{y}/{m}/{d}/{file}", get(object))
        .route("/zip", get(zip_day).post(zip_selected))
        .route_layer(axum::middleware::from_fn_with_state(
            app.access.clone(),
            crate::access::check,
        ))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .with_state(app)
}

/// Only the health and metrics endpoints (the pod-network listener when the
/// page itself listens on loopback).
pub fn health_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .with_state(app)
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
}

/// Query of the page and of a day's ZIP.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    user: Option<String>,
    from: Option<String>,
    to: Option<String>,
    number: Option<String>,
    /// An SBC's id (SIPREC).
    srcid: Option<String>,
    status: Option<String>,
    page: Option<usize>,
    day: Option<String>,
}

fn nonempty(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl ListQuery {
    fn filter(&self) -> Result<Filter, String> {
        Filter {
            user: self.user.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            number: self.number.clone(),
            src_id: self.srcid.clone(),
            complete: match self.status.as_deref() {
                Some("complete") => Some(true),
                Some("truncated") => Some(false),
                _ => None,
            },
        }
        .checked()
    }

    fn with_page(&self, page: usize) -> String {
        let mut q: Vec<(&str, String)> = Vec::new();
        for (k, v) in [
            ("user", &self.user),
            ("from", &self.from),
            ("to", &self.to),
            ("number", &self.number),
            ("srcid", &self.srcid),
            ("status", &self.status),
        ] {
            if let Some(v) = nonempty(v) {
                q.push((k, v));
            }
        }
        q.push(("page", page.to_string()));
        q.iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn error_page(status: StatusCode, message: &str) -> Response {
    (
        status,
        page_shell(
            "Earshot",
            html! { p.error { (message) } p { a href="/" { "Back to the recordings" } } },
        ),
    )
        .into_response()
}

fn store_error(e: CatalogError) -> Response {
    match e {
        CatalogError::NotFound(_) => error_page(StatusCode::NOT_FOUND, "No such recording."),
        e => {
            tracing::error!(error = %e, "cannot read the recordings store");
            error_page(
                StatusCode::BAD_GATEWAY,
                "The recordings store cannot be read right now; try again shortly.",
            )
        }
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}\
h1{font-size:1.4rem}table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{padding:.35rem .5rem;border-bottom:1px solid #ddd;text-align:left;vertical-align:middle}\
th{background:#f4f4f4}tr.day td{background:#eef3fb;font-weight:600}\
form.filters{display:flex;gap:.6rem;flex-wrap:wrap;align-items:end;margin-bottom:1rem}\
form.filters label{display:flex;flex-direction:column;font-size:.8rem}\
.error{color:#b00}.muted{color:#777}.truncated{color:#b60}audio{height:2rem;width:16rem}\
nav{margin:1rem 0;display:flex;gap:1rem}";

fn page_shell(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                style { (STYLE) }
            }
            body { (body) }
        }
    }
}

fn party(number: &str, name: &str) -> String {
    if name.is_empty() || name == number {
        number.to_owned()
    } else {
        format!("{name} {number}")
    }
}

async fn index(
    State(app): State<Arc<App>>,
    Query(q): Query<ListQuery>,
    Extension(who): Extension<Who>,
) -> Response {
    let filter = match q.filter() {
        Ok(f) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    let page_no = q.page.unwrap_or(0);
    let page = match app.catalog.page(&filter, page_no, PAGE).await {
        Ok(p) => p,
        Err(e) => return store_error(e),
    };
    audit("list", "-", &who, &app);
    let v = |s: &Option<String>| s.clone().unwrap_or_default();
    let status = q.status.clone().unwrap_or_default();
    // Each day's first row gets a heading row with the day's ZIP.
    let mut last_day = String::new();
    let rows: Vec<(&Arc<Recording>, Option<String>)> = page
        .recordings
        .iter()
        .map(|r| {
            let day = r.day();
            let heading = (day != last_day).then(|| day.clone());
            last_day = day;
            (r, heading)
        })
        .collect();
    let body = html! {
        h1 { "Recordings " span.muted { (app.title) } }
        form.filters method="get" action="/" {
            label { "User (extension)" input name="user" value=(v(&q.user)) size="8"; }
            label { "From" input type="date" name="from" value=(v(&q.from)); }
            label { "To" input type="date" name="to" value=(v(&q.to)); }
            label { "Caller or callee number" input name="number" value=(v(&q.number)) size="14"; }
            label title="SIPREC: a Session-ID or an id of the SBC's (UCID, Cisco session id)" { "SBC call id" input name="srcid" value=(v(&q.srcid)) size="14"; }
            label { "Status" select name="status" {
                option value="" selected[status.is_empty()] { "all" }
                option value="complete" selected[status == "complete"] { "complete" }
                option value="truncated" selected[status == "truncated"] { "truncated" }
            } }
            button type="submit" { "Filter" }
            a href="/" { "Clear" }
        }
        @if page.recordings.is_empty() {
            p.muted { "No recordings match." }
        } @else {
            form method="post" action="/zip" {
                table {
                    thead { tr {
                        th { "" } th { "Caller" } th { "Callee" } th { "Duration" } th { "Start" }
                        th { "Answer" } th { "End" } th { "Recorded" } th title="caller / callee" { "Codec" }
                        th { "Play" } th { "Download" }
                    } }
                    tbody {
                        @for (r, heading) in &rows {
                            @if let Some(day) = heading {
                                tr.day { td colspan="11" {
                                    (day) " — "
                                    a href={ "/zip?day=" (day) "&" (q.with_page(0)) } { "download this day (ZIP)" }
                                } }
                            }
                            tr data-id=(r.id) {
                                td { input type="checkbox" name="id" value=(r.id) aria-label="select"; }
                                td {
                                    (party(r.caller(), r.caller_name()))
                                    @let ids: Vec<&str> = r.src_ids().collect();
                                    @if !ids.is_empty() { " " span.muted title=(ids.join(" ")) { "SIPREC" } }
                                }
                                td { (party(r.callee(), r.callee_name())) }
                                td { (hms(r.duration())) }
                                td { (clock(r.started())) }
                                td { (clock(r.answered())) }
                                td { (clock(r.ended())) }
                                td { (r.recorded_text()) @if !r.complete() { " " span.truncated { "(truncated)" } } }
                                td { (r.codecs()) }
                                td { audio controls preload="none" src={ "/r/" (r.id) ".mp3" } {} }
                                td { a href={ "/r/" (r.id) ".mp3?download=1" } download { "MP3" } }
                            }
                        }
                    }
                }
                p { button type="submit" { "Download selected (ZIP)" } }
            }
        }
        nav {
            @if page_no > 0 { a href={ "/?" (q.with_page(page_no - 1)) } { "← Newer" } }
            @if page.more { a href={ "/?" (q.with_page(page_no + 1)) } { "Older →" } }
        }
        p.muted { "Recordings cannot be changed or deleted here; they expire with the policy's retention." }
    };
    page_shell(&format!("Recordings — {}", app.title), body).into_response()
}

/// A `Range: bytes=...` header as a store range (one range; several are
/// answered with the whole object, as RFC 9110 allows).
fn parse_range(h: &str) -> Option<GetRange> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    match (a.trim(), b.trim()) {
        ("", n) => Some(GetRange::Suffix(n.parse().ok()?)),
        (a, "") => Some(GetRange::Offset(a.parse().ok()?)),
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
            (b >= a).then_some(GetRange::Bounded(a..b + 1))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ObjectQuery {
    download: Option<String>,
}

async fn object(
    State(app): State<Arc<App>>,
    Path((y, m, d, file)): Path<(String, String, String, String)>,
    Query(q): Query<ObjectQuery>,
    Extension(who): Extension<Who>,
    headers: HeaderMap,
) -> Response {
    let (stem, ext) = match file.rsplit_once('.') {
        Some((s, e)) if e == "mp3" || e == "json" => (s, e),
        _ => return error_page(StatusCode::NOT_FOUND, "No such recording."),
    };
    let id = format!("{y}/{m}/{d}/{stem}");
    if !valid_id(&id) {
        return error_page(StatusCode::NOT_FOUND, "No such recording.");
    }
    if ext == "json" {
        return match app.catalog.sidecar_bytes(&id).await {
            Ok(bytes) => {
                audit("sidecar", &id, &who, &app);
                ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
            }
            Err(e) => store_error(e),
        };
    }
    let requested = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range);
    let first_byte = match &requested {
        None => Some(0),
        Some(GetRange::Bounded(r)) => Some(r.start),
        Some(GetRange::Offset(a)) => Some(*a),
        Some(GetRange::Suffix(_)) => None,
    };
    let unsatisfiable = |size: u64| {
        Response::builder()
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{size}"))
            .body(Body::empty())
            .unwrap_or_default()
    };
    // One request to the store: it resolves the range against the size.
    let result = match app.catalog.mp3(&id, requested.clone()).await {
        Ok(r) if r.range.is_empty() => return unsatisfiable(r.meta.size),
        Ok(r) => r,
        Err(e @ CatalogError::NotFound(_)) => return store_error(e),
        // The store refuses a range that starts past the end: only then is
        // the size needed, to say so.
        Err(e) => match (first_byte, app.catalog.mp3_size(&id).await) {
            (Some(a), Ok(size)) if requested.is_some() && a >= size => {
                return unsatisfiable(size);
            }
            _ => return store_error(e),
        },
    };
    let download = q.download.is_some();
    if first_byte == Some(0) {
        audit(if download { "download" } else { "play" }, &id, &who, &app);
    }
    let (size, range) = (result.meta.size, result.range.clone());
    let metrics = app.clone();
    let stream = result.into_stream().map(move |chunk| {
        if let Ok(c) = &chunk {
            metrics.metrics.sent(c.len() as u64);
        }
        chunk
    });
    let mut resp = Response::builder()
        .status(if requested.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(header::CONTENT_TYPE, "audio/mpeg")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, range.end - range.start)
        .header(header::CACHE_CONTROL, "private, max-age=3600");
    if requested.is_some() {
        resp = resp.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", range.start, range.end - 1),
        );
    }
    if download {
        resp = resp.header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{stem}.mp3\""),
        );
    }
    resp.body(Body::from_stream(stream)).unwrap_or_default()
}

/// The bytes of a ZIP of `recordings` (MP3 and sidecar each), produced as
/// the store delivers them; at most a few chunks are held at a time.
pub fn zip_stream(
    catalog: Arc<Catalog>,
    metrics: Arc<Metrics>,
    recordings: Vec<Arc<Recording>>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        if let Err(ZipStop::Failed(e)) = write_zip(&catalog, &metrics, recordings, &tx).await {
            tracing::error!(error = %e, "ZIP stopped");
            let _ = tx.send(Err(std::io::Error::other(e))).await;
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

/// Why a ZIP stopped before its end.
enum ZipStop {
    /// The receiver went away.
    Gone,
    /// The store failed (what, for which recording).
    Failed(String),
}

type ZipSender = tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>;

async fn write_zip(
    catalog: &Catalog,
    metrics: &Metrics,
    recordings: Vec<Arc<Recording>>,
    tx: &ZipSender,
) -> Result<(), ZipStop> {
    let send = |b: bytes::Bytes| async move { tx.send(Ok(b)).await.map_err(|_| ZipStop::Gone) };
    let mut zip = ZipWriter::default();
    for r in recordings {
        let failed = |e: CatalogError| ZipStop::Failed(format!("recording {}: {e}", r.id));
        let name = format!("{}/{}", r.day(), r.file_stem());
        let time = dos_time(r.file_stem());
        let mut body = catalog
            .mp3(&r.id, None)
            .await
            .map_err(failed)?
            .into_stream();
        send(zip.begin(&format!("{name}.mp3"), time).into()).await?;
        let mut crc = crc32fast::Hasher::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let c = chunk.map_err(|e| failed(e.into()))?;
            crc.update(&c);
            size += c.len() as u64;
            metrics.sent(c.len() as u64);
            send(c).await?;
        }
        let json = catalog.sidecar_bytes(&r.id).await.map_err(failed)?;
        let mut tail = zip.end(crc.finalize(), size);
        tail.extend(zip.begin(&format!("{name}.json"), time));
        tail.extend_from_slice(&json);
        tail.extend(zip.end(crc32fast::hash(&json), json.len() as u64));
        send(tail.into()).await?;
    }
    send(zip.finish().into()).await
}

fn zip_response(app: Arc<App>, name: &str, recordings: Vec<Arc<Recording>>) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/zip")
        .header(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&format!("attachment; filename=\"{name}.zip\""))
                .unwrap_or(HeaderValue::from_static("attachment")),
        )
        .body(Body::from_stream(zip_stream(
            app.catalog.clone(),
            app.metrics.clone(),
            recordings,
        )))
        .unwrap_or_default()
}

/// The recordings of a ZIP request (each once already), if within the limits.
fn within_limits(
    recordings: Vec<Arc<Recording>>,
    limits: ZipLimits,
) -> Result<Vec<Arc<Recording>>, Box<Response>> {
    let bytes: u64 = recordings.iter().map(|r| r.mp3_bytes()).sum();
    if recordings.len() > limits.recordings || bytes > limits.bytes {
        return Err(Box::new(error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "That is {} recordings ({} MiB); one ZIP holds at most {} recordings and {} MiB. Narrow the filter or select fewer rows.",
                recordings.len(),
                bytes >> 20,
                limits.recordings,
                limits.bytes >> 20
            ),
        )));
    }
    Ok(recordings)
}

async fn zip_selected(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Who>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    // The form repeats `id` once per ticked row; a hand-made request may
    // repeat one id many times.
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<String> = fields
        .into_iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v)
        .filter(|v| seen.insert(v.clone()))
        .collect();
    if ids.is_empty() {
        return error_page(StatusCode::BAD_REQUEST, "Select at least one recording.");
    }
    if ids.len() > app.zip_limits.recordings {
        // Refused before the store is asked about any of them.
        return error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "That is {} recordings; one ZIP holds at most {}. Select fewer rows.",
                ids.len(),
                app.zip_limits.recordings
            ),
        );
    }
    let mut recordings = Vec::with_capacity(ids.len());
    for id in &ids {
        match app.catalog.get(id).await {
            Ok(r) => recordings.push(r),
            Err(e) => return store_error(e),
        }
    }
    let recordings = match within_limits(recordings, app.zip_limits) {
        Ok(r) => r,
        Err(too_big) => return *too_big,
    };
    for r in &recordings {
        audit("zip", &r.id, &who, &app);
    }
    zip_response(app, &format!("recordings-{}", recordings.len()), recordings)
}

async fn zip_day(
    State(app): State<Arc<App>>,
    Query(q): Query<ListQuery>,
    Extension(who): Extension<Who>,
) -> Response {
    let Some(day) = nonempty(&q.day).filter(|d| valid_day(d)) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "day must be a date like 2026-12-02",
        );
    };
    let mut filter = match q.filter() {
        Ok(f) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    filter.from = Some(day.clone());
    filter.to = Some(day.clone());
    let recordings = match app.catalog.all(&filter).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    let recordings = match within_limits(recordings, app.zip_limits) {
        Ok(r) => r,
        Err(too_big) => return *too_big,
    };
    for r in &recordings {
        audit("zip", &r.id, &who, &app);
    }
    zip_response(app, &format!("recordings-{day}"), recordings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99"), Some(GetRange::Bounded(0..100)));
        assert_eq!(parse_range("bytes=100-"), Some(GetRange::Offset(100)));
        assert_eq!(parse_range("bytes=-500"), Some(GetRange::Suffix(500)));
        assert_eq!(parse_range("bytes=5-1"), None);
        assert_eq!(parse_range("bytes=0-1,5-6"), None);
        assert_eq!(parse_range("items=0-1"), None);
    }

    #[test]
    fn query_values_encode() {
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
