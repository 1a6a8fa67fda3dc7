//! A recorded call into Garage with each addressing the policy can give:
//! path style (`<endpoint>/<bucket>/<key>`) and virtual-hosted
//! (`<bucket>.<endpoint host>/<key>`). The recording must land in the bucket
//! the config names, at its key — not in a bucket named after the key's
//! first segment (where a request with the bucket in neither host nor path
//! goes), which each test creates as a decoy and finds empty.
//!
//! Garage serves virtual-hosted requests for its `root_domain`,
//! `s3.garage.localhost`, and takes the bucket from the `Host` header. That
//! name is in no resolver of this machine and no machine file is touched:
//! the recorder's HTTP client is given Garage itself as its HTTP proxy
//! (`HTTP_PROXY`), so it connects to Garage's address and sends the whole
//! URL and `Host: recordings.s3.garage.localhost:<port>`, which Garage
//! accepts as any HTTP/1.1 server must (see `Garage::proxy_env`).

mod common;

use std::time::Duration;

use common::*;
use earshot_tests::garage::Garage;
use earshot_tests::pcap::RtpStream;

const PREFIX: &str = "tenant-a/office/";
/// The bucket a request without the bucket in host or path would reach.
const DECOY: &str = "tenant-a";

/// Garage with the bucket `recordings` and the decoy.
fn mk_garage(dir: &earshot_tests::TempDir) -> Garage {
    let g = Garage::start(&dir.path().join("garage"), "recordings");
    g.create_bucket(DECOY);
    g
}

/// A recorder storing into `bucket` at `g`, addressed as `path_style` says.
fn mk_setup(name: &str, g: &Garage, bucket: &str, path_style: bool) -> Setup {
    let endpoint = if path_style {
        g.endpoint.clone()
    } else {
        g.virtual_hosted_endpoint()
    };
    let storage = format!(
        "{{ s3: {{ endpoint: \"{endpoint}\", bucket: \"{bucket}\", region: garage, pathStyle: {path_style} }}, prefix: \"{PREFIX}\" }}"
    );
    let mut env = g.env().to_vec();
    if !path_style {
        env.extend(g.proxy_env());
    }
    setup_with(name, &users(), Some(&storage), &env)
}

fn call(s: &Setup) {
    let caller = RtpStream::new(1).tone(440.0, 2000);
    let callee = RtpStream::new(2).tone(1000.0, 2000);
    s.call("008", "500", &caller, &callee, 2000, None);
}

fn wait_objects(g: &Garage, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let keys = g.list(PREFIX).unwrap_or_default();
        if keys.len() >= n {
            return keys;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} objects under {PREFIX} in bucket recordings after 20 s; decoy bucket {DECOY} holds {:?}",
            keys.len(),
            g.list_bucket(DECOY, "")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One call, addressed as `path_style` says: the MP3 and its sidecar are
/// in bucket `recordings` under the prefix, the sidecar names the MP3's
/// key, the MP3 decodes to the call's length, and the decoy is empty.
fn lands_in_the_named_bucket(name: &str, path_style: bool) {
    let dir = earshot_tests::TempDir::new(name);
    let g = mk_garage(&dir);
    let s = mk_setup(name, &g, "recordings", path_style);
    call(&s);
    let keys = wait_objects(&g, 2);
    stored_recording(&g, &keys, "tenant-a/office/20", s.dir.path());
    assert_eq!(g.list_bucket(DECOY, "").unwrap(), Vec::<String>::new());
    assert_eq!(s.metric("earshot_recordings_stored_total"), 1.0);
}

#[test]
fn virtual_hosted_recordings_land_in_the_named_bucket() {
    lands_in_the_named_bucket("style-vhost", false);
}

#[test]
fn path_style_recordings_land_in_the_named_bucket() {
    lands_in_the_named_bucket("style-path", true);
}

#[test]
fn virtual_hosted_uploads_to_a_missing_bucket_fail_and_write_nowhere() {
    // Same endpoint, key and keys as the test that lands: only the bucket
    // in the Host differs, and Garage has none of that name.
    let dir = earshot_tests::TempDir::new("style-vhost-missing");
    let g = mk_garage(&dir);
    let s = mk_setup("style-vhost-missing", &g, "missing", false);
    call(&s);
    wait_for("the upload refused for its bucket", || {
        s.metric("earshot_upload_failures_total{reason=\"not_found\"}") >= 1.0
    });
    assert_eq!(s.metric("earshot_recordings_stored_total"), 0.0);
    assert_eq!(g.list("").unwrap(), Vec::<String>::new());
    assert_eq!(g.list_bucket(DECOY, "").unwrap(), Vec::<String>::new());
}
