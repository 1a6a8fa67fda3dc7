//! A real Garage S3 server on loopback for the tests: one node with a
//! generated config, a layout, a bucket and a key, started and stopped by the
//! test (`make test` installs Garage through scripts/test-deps.sh).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;

use crate::{free_ports, require};

/// A running single-node Garage.
pub struct Garage {
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    /// S3 endpoint URL.
    pub endpoint: String,
    /// The bucket created for the test.
    pub bucket: String,
    /// Access key id with read/write on the bucket.
    pub key_id: String,
    /// Its secret.
    pub secret: String,
}

fn garage(config: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("garage")
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "garage {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Garage {
    /// Starts Garage in `dir` and creates `bucket` with a key for it.
    pub fn start(dir: &Path, bucket: &str) -> Self {
        Self::start_on(dir, bucket, std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// Like `start`, with the S3 API on `s3_ip` (an address of a test's own
    /// network, e.g. the host end of a node's veth, so pods reach it); RPC
    /// and admin stay on loopback.
    pub fn start_on(dir: &Path, bucket: &str, s3_ip: std::net::IpAddr) -> Self {
        require("garage");
        let ports = free_ports(3);
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("garage.toml");
        let secret: String = (0..64)
            .map(|i| b"0123456789abcdef"[(i * 7 + ports as usize) % 16] as char)
            .collect();
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\n\
                 [s3_api]\napi_bind_addr = \"{s3_ip}:{s3}\"\ns3_region = \"garage\"\nroot_domain = \".s3.garage.localhost\"\n\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                meta = dir.join("meta").display(),
                data = dir.join("data").display(),
                rpc = ports,
                s3 = ports + 1,
                admin = ports + 2,
            ),
        )
        .unwrap();
        let mut g = Garage {
            child: None,
            log: dir.join("garage.log"),
            config,
            endpoint: format!("http://{s3_ip}:{}", ports + 1),
            bucket: bucket.to_owned(),
            key_id: String::new(),
            secret: String::new(),
        };
        g.spawn();
        let id = garage(&g.config, &["node", "id", "-q"]).expect("garage node id");
        let id = id.trim().split('@').next().unwrap_or_default().to_owned();
        garage(
            &g.config,
            &["layout", "assign", "-z", "dc1", "-c", "1G", &id],
        )
        .expect("layout assign");
        garage(&g.config, &["layout", "apply", "--version", "1"]).expect("layout apply");
        garage(&g.config, &["bucket", "create", bucket]).expect("bucket create");
        (g.key_id, g.secret) = g.create_key("earshot-test");
        garage(
            &g.config,
            &[
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                bucket,
                "--key",
                "earshot-test",
            ],
        )
        .expect("bucket allow");
        g.wait_s3();
        g
    }

    fn create_key(&self, name: &str) -> (String, String) {
        let key = garage(&self.config, &["key", "create", name]).expect("key create");
        let field = |name: &str| {
            key.lines()
                .find(|l| l.trim_start().starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} in: {key}"))
        };
        (field("Key ID"), field("Secret key"))
    }

    /// A new key that may only read the bucket: (key id, secret).
    pub fn read_only_key(&self) -> (String, String) {
        self.key_with("earshot-read-only", &["--read"])
    }

    /// A new key named `name` with `permissions` on the bucket (`--read`,
    /// `--write`, `--owner`): (key id, secret).
    pub fn key_with(&self, name: &str, permissions: &[&str]) -> (String, String) {
        let (id, secret) = self.create_key(name);
        let mut args = vec!["bucket", "allow"];
        args.extend_from_slice(permissions);
        args.extend_from_slice(&[self.bucket.as_str(), "--key", name]);
        garage(&self.config, &args).expect("bucket allow");
        (id, secret)
    }

    /// Reads an object with another key: its bytes, or the store's refusal.
    pub fn get_as(&self, key: &str, id: &str, secret: &str) -> Result<Vec<u8>, String> {
        let client = self.client_as(id, secret);
        Self::runtime().block_on(async {
            let got = client.get(&key.into()).await.map_err(|e| e.to_string())?;
            got.bytes()
                .await
                .map(|b| b.to_vec())
                .map_err(|e| e.to_string())
        })
    }

    /// Writes an object (test fixtures).
    pub fn put(&self, key: &str, bytes: Vec<u8>) {
        let client = self.client();
        Self::runtime().block_on(async {
            client
                .put(&ObjectPath::from(key), bytes.into())
                .await
                .expect("put object");
        });
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new("garage")
                .arg("-c")
                .arg(&self.config)
                .arg("server")
                .env("RUST_LOG", "garage=warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start garage"),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while garage(&self.config, &["status"]).is_err() {
            assert!(
                Instant::now() < deadline,
                "garage did not start: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_s3(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.list("").is_err() {
            assert!(Instant::now() < deadline, "garage S3 API not answering");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the server (the store becomes unreachable).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
        self.wait_s3();
    }

    /// The host whose subdomains name buckets (virtual-hosted requests):
    /// Garage's `root_domain`, as the config `start_on` writes sets it.
    pub const ROOT_DOMAIN: &'static str = "s3.garage.localhost";

    /// The S3 endpoint for virtual-hosted requests,
    /// `http://s3.garage.localhost:<port>`: a request for bucket `b` goes
    /// to `b.s3.garage.localhost`, and Garage takes the bucket from that
    /// `Host`. No resolver on the machine need know the name: see
    /// [`Garage::proxy_env`] and [`Garage::s3_addr`].
    pub fn virtual_hosted_endpoint(&self) -> String {
        format!("http://{}:{}", Self::ROOT_DOMAIN, self.s3_addr().port())
    }

    /// The address the S3 API listens on.
    pub fn s3_addr(&self) -> std::net::SocketAddr {
        let authority = self
            .endpoint
            .strip_prefix("http://")
            .expect("start_on writes an http:// endpoint");
        authority
            .parse()
            .expect("start_on writes <ip>:<port> as the endpoint")
    }

    /// Environment that makes a child process's HTTP client (reqwest, as in
    /// object_store) send every `http://` request through Garage as its
    /// proxy. A proxied request carries the whole URL and its `Host`
    /// (`recordings.s3.garage.localhost:<port>`); Garage, like every
    /// HTTP/1.1 server, accepts that absolute form and takes the bucket
    /// from `Host`, so the request goes through its virtual-hosted path
    /// while the client never resolves the name (this machine's resolver
    /// does not know `*.localhost`, and no machine file is touched).
    /// `NO_PROXY` is emptied so an inherited one cannot exempt the name.
    pub fn proxy_env(&self) -> [(&'static str, &str); 4] {
        [
            ("HTTP_PROXY", self.endpoint.as_str()),
            ("http_proxy", self.endpoint.as_str()),
            ("NO_PROXY", ""),
            ("no_proxy", ""),
        ]
    }

    /// Creates another bucket, `name`, on which the test's key may read
    /// and write (e.g. the bucket a misaddressed request would reach).
    pub fn create_bucket(&self, name: &str) {
        garage(&self.config, &["bucket", "create", name]).expect("bucket create");
        garage(
            &self.config,
            &[
                "bucket",
                "allow",
                "--read",
                "--write",
                name,
                "--key",
                "earshot-test",
            ],
        )
        .expect("bucket allow");
    }

    /// Keys under `prefix` in `bucket` (the test's, or one of
    /// [`Garage::create_bucket`]'s).
    pub fn list_bucket(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, String> {
        use futures::TryStreamExt;
        let client = self.client_of(bucket, &self.key_id, &self.secret);
        let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        Self::runtime().block_on(async {
            client
                .list(prefix.as_ref())
                .map_ok(|m| m.location.to_string())
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| e.to_string())
        })
    }

    /// The recorder's `storage:` value for this bucket under `prefix`.
    pub fn storage_yaml(&self, prefix: &str) -> String {
        format!(
            "{{ s3: {{ endpoint: \"{}\", bucket: \"{}\", region: garage, pathStyle: true }}, prefix: \"{prefix}\" }}",
            self.endpoint, self.bucket
        )
    }

    /// Credentials as environment variables.
    pub fn env(&self) -> [(&'static str, &str); 2] {
        [
            ("AWS_ACCESS_KEY_ID", self.key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.as_str()),
        ]
    }

    fn client(&self) -> object_store::aws::AmazonS3 {
        self.client_as(&self.key_id, &self.secret)
    }

    /// A client of the bucket with the key `id`.
    fn client_as(&self, id: &str, secret: &str) -> object_store::aws::AmazonS3 {
        self.client_of(&self.bucket, id, secret)
    }

    /// A client of `bucket` with the key `id` (path style).
    fn client_of(&self, bucket: &str, id: &str, secret: &str) -> object_store::aws::AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(bucket)
            .with_region("garage")
            .with_access_key_id(id)
            .with_secret_access_key(secret)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .expect("S3 client")
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Keys under a prefix.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, String> {
        self.list_bucket(&self.bucket, prefix)
    }

    /// An object's bytes.
    pub fn get(&self, key: &str) -> Vec<u8> {
        let client = self.client();
        Self::runtime().block_on(async {
            client
                .get(&ObjectPath::from(key))
                .await
                .expect("get object")
                .bytes()
                .await
                .expect("object body")
                .to_vec()
        })
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
